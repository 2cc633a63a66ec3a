//! Deadlines on a connection's socket: a write that makes no progress for `write` fails, and
//! (when set) so does a read that waits longer than `read`. hyper has neither: a client that
//! stops reading would hold its connection, its task and the kernel's buffered bytes for ever.
//!
//! The timer exists only while an operation waits: an idle connection costs no timer entry.
//! The gateway wraps every socket in it; [`crate::http::serve`] does for the other services.
//!
//! With [`Deadline::unsent`], a client that takes a trickle is bounded too: the bytes a write
//! could not hand the socket must all be gone within a set time, however much each write
//! takes meanwhile ([`TooSlow`]). The gateway's own write step keeps the same two rules for
//! the streams it writes itself (`sse-gateway`'s `transport/write.rs`).

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
    unsent: Option<Unsent>,
}

/// The rule of [`Deadline::unsent`], and the bytes it waits to see gone.
#[derive(Debug)]
struct Unsent {
    /// More unsent than this starts the clock...
    bytes: usize,
    /// ... and they must be gone within this.
    within: Duration,
    /// What was unsent when the clock started, less what was written since.
    owed: usize,
    by: Option<Pin<Box<Sleep>>>,
}

/// The error (inside an [`io::Error`] of kind `TimedOut`) of a write whose unsent bytes stayed
/// longer than [`Deadline::unsent`] allows: the client takes a trickle.
#[derive(Debug, thiserror::Error)]
#[error("more than {bytes} bytes stayed unsent for {within:?}")]
pub struct TooSlow {
    bytes: usize,
    within: Duration,
}

impl TooSlow {
    /// Whether `e` is one.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<TooSlow>())
    }
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
            unsent: None,
        }
    }

    /// Also fails a write ([`TooSlow`]) once more than `bytes` that a write could not hand the
    /// socket are not all gone within `within`: the clock starts when a write leaves more than
    /// `bytes` unsent, and stops when as many bytes as were unsent then have been written.
    pub fn unsent(mut self, bytes: usize, within: Duration) -> Self {
        self.unsent = Some(Unsent {
            bytes,
            within,
            owed: 0,
            by: None,
        });
        self
    }
}

impl Unsent {
    /// Counts a write of `offered` bytes that `r` tells of; an error once the clock ran out.
    fn count(&mut self, offered: usize, r: &Poll<io::Result<usize>>, cx: &mut Context<'_>) -> Option<io::Error> {
        let left = match r {
            Poll::Ready(Ok(n)) => {
                self.owed = self.owed.saturating_sub(*n);
                if self.owed == 0 {
                    self.by = None;
                }
                offered - n
            }
            Poll::Ready(Err(_)) => return None,
            Poll::Pending => offered,
        };
        if self.by.is_none() && left > self.bytes {
            self.owed = left;
            self.by = Some(Box::pin(tokio::time::sleep(self.within)));
        }
        let by = self.by.as_mut()?;
        by.as_mut().poll(cx).is_ready().then(|| {
            self.by = None;
            io::Error::new(
                io::ErrorKind::TimedOut,
                TooSlow {
                    bytes: self.bytes,
                    within: self.within,
                },
            )
        })
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

impl<T: AsyncWrite + Unpin> Deadline<T> {
    /// A write of `offered` bytes under both rules.
    fn written(&mut self, cx: &mut Context<'_>, offered: usize, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Some(e) = self.unsent.as_mut().and_then(|u| u.count(offered, &r, cx)) {
            self.write_wait = None;
            return Poll::Ready(Err(e));
        }
        self.bounded(cx, r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(cx, buf.len(), r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        let offered = bufs.iter().map(|b| b.len()).sum();
        self.written(cx, offered, r)
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

    /// Reads 64 bytes every `every` until the writer's end closes; how many it got.
    fn trickle(mut b: tokio::io::DuplexStream, every: Duration) -> tokio::task::JoinHandle<usize> {
        tokio::spawn(async move {
            let (mut n, mut buf) = (0, [0u8; 64]);
            loop {
                tokio::time::sleep(every).await;
                match b.read(&mut buf).await {
                    Ok(0) | Err(_) => return n,
                    Ok(k) => n += k,
                }
            }
        })
    }

    #[tokio::test]
    async fn a_trickle_fails_the_unsent_rule_though_every_write_makes_progress() {
        let (a, b) = tokio::io::duplex(64);
        // Progress every 10 ms: the write deadline alone never fires.
        let mut a = Deadline::new(a, LIMIT, None).unsent(0, LIMIT * 2);
        let reader = trickle(b, LIMIT / 20);
        let started = std::time::Instant::now();
        let err = a.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert!(TooSlow::is(&err), "{err}");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!((LIMIT * 2..LIMIT * 50).contains(&started.elapsed()));
        drop(a);
        let n = reader.await.unwrap();
        assert!(n > 64 && n < 64 * 1024, "the reader got some, not all: {n}");
    }

    #[tokio::test]
    async fn bytes_that_go_within_the_time_stop_the_clock_each_time() {
        let (a, b) = tokio::io::duplex(64);
        let mut a = Deadline::new(a, LIMIT, None).unsent(0, LIMIT * 2);
        // 64 bytes every 10 ms: each write of 256 bytes is gone in about 40 ms, well within,
        // and 40 of them (1.6 s in all) outlast the rule's time many times over.
        let reader = trickle(b, LIMIT / 20);
        for _ in 0..40 {
            a.write_all(&[0u8; 256]).await.unwrap();
        }
        drop(a);
        assert_eq!(reader.await.unwrap(), 40 * 256);
        // More unsent than the rule's bytes starts it; less does not.
        let (a, b) = tokio::io::duplex(64);
        let mut a = Deadline::new(a, LIMIT * 10, None).unsent(1024, LIMIT / 2);
        let reader = trickle(b, LIMIT / 20);
        a.write_all(&[0u8; 512]).await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), 512);
    }
}
