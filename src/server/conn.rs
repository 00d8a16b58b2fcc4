//! A client connection: the byte stream (plain or TLS, upgradable by
//! STARTTLS) and a fixed-capacity input buffer with hard line limits.

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future};
use futures_rustls::TlsAcceptor;

/// A TCP connection in the clear or inside TLS (`T`: the server's or the
/// client's TLS stream), upgradable by STARTTLS.
pub enum MaybeTls<T> {
    Plain(Async<TcpStream>),
    Tls(Box<T>),
    /// Between taking the plain stream and finishing a TLS handshake, or
    /// after a failed one.
    Closed,
}

/// A connection a client made to us.
pub type Stream = MaybeTls<futures_rustls::server::TlsStream<Async<TcpStream>>>;

impl<T> MaybeTls<T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// The plain stream, for a TLS handshake; the connection is `Closed`
    /// until the caller puts the TLS stream back.
    pub fn take_plain(&mut self) -> io::Result<Async<TcpStream>> {
        match std::mem::replace(self, MaybeTls::Closed) {
            MaybeTls::Plain(tcp) => Ok(tcp),
            other => {
                *self = other;
                Err(io::Error::other("TLS is already active"))
            }
        }
    }
}

impl Stream {
    /// Runs the server side of a TLS handshake on a plain stream.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor, timeout: Duration) -> io::Result<()> {
        let tcp = self.take_plain()?;
        let tls = with_timeout(timeout, acceptor.accept(tcp)).await?;
        *self = MaybeTls::Tls(Box::new(tls));
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Closed => Poll::Ready(Ok(0)),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Closed => Poll::Ready(Ok(())),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            MaybeTls::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Fails with `TimedOut` if `fut` takes longer than `limit`.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    future::or(fut, async {
        Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

/// What [`Input::read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its CRLF (or bare LF), as a range of the buffer.
    Complete(std::ops::Range<usize>),
    /// A line longer than the limit; it was discarded up to and including
    /// its LF without being buffered.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

/// What waiting for a client's next command line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Line(std::ops::Range<usize>),
    TooLong,
    Eof,
    /// Silent for longer than the timeout.
    Timeout,
    /// The server began to shut down while the session was idle.
    Shutdown,
}

/// A bounded input buffer: it starts at `initial` bytes, grows (doubling)
/// up to `limit` only while a long line or literal needs it, and shrinks
/// back when a new line starts with nothing buffered, so an idle session
/// holds `initial` bytes. Nothing a client sends makes it exceed `limit`.
pub struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    initial: usize,
    limit: usize,
}

impl Input {
    /// A buffer of fixed size.
    pub fn new(capacity: usize) -> Input {
        Input::with_sizes(capacity, capacity)
    }

    pub fn with_sizes(initial: usize, limit: usize) -> Input {
        let initial = initial.clamp(1, limit.max(1));
        Input {
            buf: vec![0; initial],
            start: 0,
            end: 0,
            initial,
            limit: limit.max(initial),
        }
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn get(&self, r: std::ops::Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// Forgets buffered input: after STARTTLS, anything the client sent in
    /// the clear before the handshake must not be acted upon (RFC 3207 4.2,
    /// the command-injection attack).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads more bytes after what is buffered; returns how many (0 at EOF).
    pub async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= self.limit {
                return Err(io::Error::other("input buffer full"));
            }
            let len = (self.buf.len() * 2).min(self.limit);
            self.buf.resize(len, 0);
        }
        let n = stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Waits for the next command line of an idle session: gives up after
    /// `timeout`, or as soon as the server begins to shut down.
    pub async fn next_command<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
        timeout: Duration,
        server: &super::Server,
    ) -> io::Result<Incoming> {
        let line = future::or(
            async { Some(with_timeout(timeout, self.read_line(stream, max)).await) },
            async {
                server.shutting_down().await;
                None
            },
        )
        .await;
        Ok(match line {
            None => Incoming::Shutdown,
            Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut => Incoming::Timeout,
            Some(Err(e)) => return Err(e),
            Some(Ok(Line::Eof)) => Incoming::Eof,
            Some(Ok(Line::TooLong)) => Incoming::TooLong,
            Some(Ok(Line::Complete(r))) => Incoming::Line(r),
        })
    }

    /// Reads one line of at most `max` bytes including its line ending.
    pub async fn read_line<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
    ) -> io::Result<Line> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > self.initial {
                self.buf.truncate(self.initial);
                self.buf.shrink_to_fit();
            }
        }
        let max = max.min(self.limit);
        let mut scanned = 0;
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let lf = self.start + scanned + i;
                if lf + 1 - self.start > max {
                    self.consume(lf + 1 - self.start);
                    return Ok(Line::TooLong);
                }
                let mut line_end = lf;
                if line_end > self.start && self.buf[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                let range = self.start..line_end;
                self.start = lf + 1;
                return Ok(Line::Complete(range));
            }
            scanned = avail.len();
            if scanned >= max {
                // Over the limit: throw away what we have and everything up
                // to the next LF, never holding more than the buffer.
                self.clear();
                loop {
                    if self.fill(stream).await? == 0 {
                        return Ok(Line::Eof);
                    }
                    if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                        self.consume(i + 1);
                        return Ok(Line::TooLong);
                    }
                    self.clear();
                }
            }
            if self.fill(stream).await? == 0 {
                return Ok(Line::Eof);
            }
        }
    }
}

/// Buffered replies, flushed when the client has nothing more pipelined
/// (RFC 2920 3.1: the server may batch replies while commands are queued).
pub struct Output {
    buf: Vec<u8>,
}

impl Output {
    pub fn new() -> Output {
        Output {
            buf: Vec::with_capacity(256),
        }
    }
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub async fn flush<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        timeout: Duration,
    ) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        with_timeout(timeout, async {
            stream.write_all(&self.buf).await?;
            stream.flush().await
        })
        .await?;
        self.buf.clear();
        if self.buf.capacity() > 4096 {
            self.buf.shrink_to(256);
        }
        Ok(())
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_grows_for_long_lines_and_shrinks_when_idle() {
        let mut long = vec![b'x'; 3000];
        long.extend_from_slice(b"\r\nshort\r\n");
        let mut stream = futures_lite::io::Cursor::new(long);
        let mut input = Input::with_sizes(64, 4096);
        let line = futures_lite::future::block_on(input.read_line(&mut stream, 4096)).unwrap();
        let Line::Complete(r) = line else {
            panic!("{line:?}")
        };
        assert_eq!(r.len(), 3000);
        assert!(input.buf.len() >= 3002 && input.buf.len() <= 4096);
        let line = futures_lite::future::block_on(input.read_line(&mut stream, 4096)).unwrap();
        let Line::Complete(r) = line else {
            panic!("{line:?}")
        };
        assert_eq!(input.get(r), b"short");
        // Nothing buffered at the next line: back to the initial size.
        let line = futures_lite::future::block_on(input.read_line(&mut stream, 4096)).unwrap();
        assert_eq!(line, Line::Eof);
        assert_eq!(input.buf.len(), 64);
        // Over the limit: refused without growing past it.
        let mut stream =
            futures_lite::io::Cursor::new([vec![b'y'; 10_000], b"\r\nok\r\n".to_vec()].concat());
        let mut input = Input::with_sizes(64, 1024);
        let line = futures_lite::future::block_on(input.read_line(&mut stream, 1024)).unwrap();
        assert_eq!(line, Line::TooLong);
        assert!(input.buf.len() <= 1024);
        let line = futures_lite::future::block_on(input.read_line(&mut stream, 1024)).unwrap();
        let Line::Complete(r) = line else { panic!() };
        assert_eq!(input.get(r), b"ok");
    }
}
