//! The raw-socket SSE clients of the benchmark and the soak (cheap on purpose: no HTTP
//! library between the client and the bytes): opening a stream, and HTTP/1.1 chunked decoding.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Connects to 127.0.0.1:`port`, sends `GET path` with `Accept: text/event-stream` and the
/// `extra` header lines (each ending in CRLF), and reads the response head (64 KiB at most).
/// Returns the socket, whether the body is chunked, and the body bytes already read; an answer
/// other than 200 is an error naming its status line.
pub async fn open_stream(port: u16, path: &str, extra: &str) -> std::io::Result<(TcpStream, bool, Vec<u8>)> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await?;
    sock.set_nodelay(true)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{extra}\r\n");
    sock.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let mut head = Vec::new();
    let body_start = loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the response head"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > 64 * 1024 {
            return Err(std::io::Error::other("response head over 64 KiB"));
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        return Err(std::io::Error::other(format!(
            "not 200: {}",
            text.lines().next().unwrap_or("")
        )));
    }
    let chunked = text.contains("transfer-encoding: chunked");
    Ok((sock, chunked, head[body_start..].to_vec()))
}

/// Where the decoder is.
#[derive(Debug)]
enum State {
    /// Reading the hex size line.
    Size,
    /// This many data bytes left in the chunk.
    Data(usize),
    /// This many bytes of the CRLF after the data left to skip.
    Crlf(usize),
    /// The last (empty) chunk arrived: the response is over.
    Done,
}

/// A chunked body decoder.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    size_line: Vec<u8>,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            size_line: Vec::new(),
        }
    }
}

impl Chunked {
    /// Decodes `bytes`, handing each run of body bytes to `body`; true once the response has
    /// ended (the empty last chunk: a proxy ends a stream so and keeps the connection).
    pub fn feed(&mut self, mut bytes: &[u8], mut body: impl FnMut(&[u8])) -> bool {
        while !bytes.is_empty() {
            match self.state {
                State::Done => return true,
                State::Crlf(left) => {
                    let take = left.min(bytes.len());
                    bytes = &bytes[take..];
                    self.state = if left == take {
                        State::Size
                    } else {
                        State::Crlf(left - take)
                    };
                }
                State::Data(left) => {
                    let take = left.min(bytes.len());
                    let (data, rest) = bytes.split_at(take);
                    body(data);
                    self.state = if left == take {
                        State::Crlf(2)
                    } else {
                        State::Data(left - take)
                    };
                    bytes = rest;
                }
                State::Size => {
                    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                        self.size_line.extend_from_slice(bytes);
                        return false;
                    };
                    self.size_line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let text = String::from_utf8_lossy(&self.size_line).trim().to_owned();
                    self.size_line.clear();
                    match usize::from_str_radix(text.split(';').next().unwrap_or(""), 16) {
                        Ok(0) => self.state = State::Done,
                        Ok(size) => self.state = State::Data(size),
                        // A stray blank line: read on.
                        Err(_) => {}
                    }
                }
            }
        }
        matches!(self.state, State::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_split_chunks_and_sees_the_end() {
        let wire = b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Chunked::default();
            let mut out = Vec::new();
            let first = d.feed(&wire[..split], |b| out.extend_from_slice(b));
            let end = d.feed(&wire[split..], |b| out.extend_from_slice(b));
            assert_eq!(out, b"hello world", "split at {split}");
            assert!(end, "split at {split}");
            assert!(!first || split >= wire.len() - 4, "ended early at {split}");
        }
    }
}
