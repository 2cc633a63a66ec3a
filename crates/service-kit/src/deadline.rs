//! Deadlines on a connection's socket: a write that makes no progress for `write` fails, and
//! (when set) so does a read that waits longer than `read`. hyper has neither: a client that
//! stops reading would hold its connection, its task and the kernel's buffered bytes for ever.
//!
//! The timer exists only while an operation waits: an idle connection costs no timer entry.
//! The gateway wraps every socket in it; [`crate::http::serve`] does for the other services.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// A socket whose waits are bounded.
#[derive(Debug)]
pub struct Deadline<T> {
    io: T,
    write: Duration,
    read: Option<Duration>,
    write_wait: Option<Pin<Box<Sleep>>>,
    read_wait: Option<Pin<Box<Sleep>>>,
}

impl<T> Deadline<T> {
    /// `io` with writes bounded by `write` and, if given, reads by `read`.
    pub fn new(io: T, write: Duration, read: Option<Duration>) -> Self {
        Deadline {
            io,
            write,
            read,
            write_wait: None,
            read_wait: None,
        }
    }
}

/// Pending: starts (or checks) the wait; past it, a `TimedOut` error naming `what`.
fn waited(slot: &mut Option<Pin<Box<Sleep>>>, limit: Duration, cx: &mut Context<'_>, what: &str) -> Poll<io::Error> {
    let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    ready!(sleep.as_mut().poll(cx));
    *slot = None;
    Poll::Ready(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} made no progress for {limit:?}"),
    ))
}

impl<T: AsyncWrite + Unpin> Deadline<T> {
    fn bounded<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.write_wait = None;
                Poll::Ready(r)
            }
            Poll::Pending => match waited(&mut self.write_wait, self.write, cx, "a write") {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read_wait = None;
                Poll::Ready(r)
            }
            Poll::Pending => match this.read {
                None => Poll::Pending,
                Some(limit) => match waited(&mut this.read_wait, limit, cx, "a read") {
                    Poll::Ready(e) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                },
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.bounded(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.bounded(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.bounded(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.bounded(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_its_deadline() {
        let (a, _b) = tokio::io::duplex(64);
        let mut a = Deadline::new(a, LIMIT, None);
        let started = std::time::Instant::now();
        let err = a.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Not before the deadline; the upper bound only guards against a wait for ever.
        assert!((LIMIT..LIMIT * 50).contains(&started.elapsed()));
    }

    #[tokio::test]
    async fn progress_resets_the_deadline_and_reads_wait_only_if_bounded() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Deadline::new(a, LIMIT, Some(LIMIT));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            // 64 bytes every 50 ms: 16 waits of the writer, each shorter than its deadline,
            // 800 ms in all, longer than one deadline.
            while got.len() < 1024 {
                tokio::time::sleep(LIMIT / 4).await;
                let n = b.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            (got.len(), b)
        });
        a.write_all(&[1u8; 1024]).await.unwrap();
        let (n, b) = reader.await.unwrap();
        assert_eq!(n, 1024);
        let err = a.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Unbounded reads just wait.
        let mut c = Deadline::new(b, LIMIT, None);
        assert!(tokio::time::timeout(LIMIT * 3, c.read(&mut [0u8; 8])).await.is_err());
    }
}
