//! One client connection's own IO (spec §5): TCP options, the write deadline that
//! cuts off a client who does not read, the full answer that replaces hyper's bare one
//! to a head it cannot parse (spec §2), and why a connection ended, for `/metrics`.
//! The header and body deadlines are hyper's and body.rs's; the connection cap is
//! mod.rs's.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::StatusCode;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A client that accepts none of its response for this long is cut off (spec §5).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keepalive on client connections: a peer that vanished while its response
/// streams out is found within about 30 + 3 × 10 s, even when no deadline runs.
const KEEPALIVE: TcpKeepalive = TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10))
    .with_retries(3);

/// Sets what every accepted socket gets: no Nagle delay (responses are written
/// whole), and TCP keepalive.
pub fn configure(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY: {err}");
    }
    if let Err(err) = SockRef::from(stream).set_tcp_keepalive(&KEEPALIVE) {
        log::debug!("TCP keepalive: {err}");
    }
}

/// Why the server ended a connection, as `/metrics` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// No whole request head within the header deadline, on a new connection.
    HeaderTimeout,
    /// A kept-alive connection sent no next request within the same deadline.
    IdleTimeout,
    /// The body did not arrive within its deadline (body.rs answers 408).
    BodyTimeout,
    /// The client did not read its response within [`WRITE_TIMEOUT`].
    WriteTimeout,
    /// Served a 503 and closed: the server was at `MAX_CONNECTIONS`.
    OverCapacity,
    /// A request head hyper could not parse: answered 400 and closed.
    Malformed,
    /// A request head over the limit (16 KiB): answered 431 and closed.
    HeadTooLarge,
}

impl Cut {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header_timeout",
            Cut::IdleTimeout => "idle_timeout",
            Cut::BodyTimeout => "body_timeout",
            Cut::WriteTimeout => "write_timeout",
            Cut::OverCapacity => "over_capacity",
            Cut::Malformed => "malformed",
            Cut::HeadTooLarge => "head_too_large",
        }
    }

    /// Which cut, if any, ended a connection that failed with `err` after serving
    /// `requests` requests.
    pub fn of(err: &hyper::Error, requests: u64) -> Option<Cut> {
        if err.is_timeout() {
            // hyper's header timer also runs while a kept-alive connection waits.
            return Some(match requests {
                0 => Cut::HeaderTimeout,
                _ => Cut::IdleTimeout,
            });
        }
        let mut cause = std::error::Error::source(err);
        while let Some(err) = cause {
            let stalled = err
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<WriteStalled>());
            if stalled {
                return Some(Cut::WriteTimeout);
            }
            cause = err.source();
        }
        None
    }
}

/// The error a stalled write ends with.
#[derive(Debug)]
struct WriteStalled;

impl fmt::Display for WriteStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the client accepted no data for {WRITE_TIMEOUT:?}")
    }
}

impl std::error::Error for WriteStalled {}

/// What answers a head hyper could not parse: the bytes of a whole response (a JSON
/// `detail`, an `x-request-id`), given the status hyper chose; it also logs and counts.
pub type Unparsed = Arc<dyn Fn(StatusCode) -> Vec<u8> + Send + Sync>;

/// A client connection's stream as hyper sees it. Writes fail once they have made no
/// progress for [`WRITE_TIMEOUT`]: the timer starts when a write (or flush) is first
/// refused and stops at the next progress, so a client that reads slowly but steadily
/// is served to the end. And the answer hyper writes by itself to a request head it
/// cannot parse (a status line, `content-length: 0`, no body, and the connection
/// closed: hyper 1 has no hook for it) is swapped for `unparsed`'s.
pub struct ClientIo<T> {
    inner: T,
    stalled_since: Option<Pin<Box<Sleep>>>,
    unparsed: Unparsed,
    /// Bytes of ours still to write before anything else: the swapped answer.
    pending: Vec<u8>,
}

impl<T> ClientIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, unparsed: Unparsed) -> Self {
        ClientIo {
            inner,
            stalled_since: None,
            unparsed,
            pending: Vec::new(),
        }
    }

    fn track<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled_since = None;
            return poll;
        }
        let timer = self.stalled_since.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(Instant::now() + WRITE_TIMEOUT))
        });
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, WriteStalled)))
    }

    /// If `bufs` end with hyper's bare answer, queues them with ours in its place and
    /// says they were written.
    fn swap(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<usize> {
        let last = bufs.iter().rev().find(|buf| !buf.is_empty())?;
        let (at, status) = bare_answer(last)?;
        let mut bytes: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
        let written = bytes.len();
        bytes.truncate(written - (last.len() - at));
        bytes.extend((self.unparsed)(status));
        self.pending = bytes;
        Some(written)
    }
}

impl<T: AsyncWrite + Unpin> ClientIo<T> {
    /// Writes what is pending, if anything; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let poll = Pin::new(&mut self.inner).poll_write(cx, &self.pending);
            let n = ready!(self.track(cx, poll))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

/// Where hyper's own answer to an unparsable head starts at the end of `bytes`, and its
/// status: `HTTP/1.1 <status> <reason>`, then exactly `connection: close`,
/// `content-length: 0` and `date`, and the blank line. Responses of ours always carry
/// an `x-request-id`, so none looks like this.
fn bare_answer(bytes: &[u8]) -> Option<(usize, StatusCode)> {
    const MOST: usize = 256;
    if !bytes.ends_with(b"\r\n\r\n") {
        return None;
    }
    let from = bytes.len().saturating_sub(MOST);
    let at = from + bytes[from..].windows(9).rposition(|w| w == b"HTTP/1.1 ")?;
    let head = std::str::from_utf8(&bytes[at..bytes.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let rest: Vec<&str> = lines.collect();
    match rest.as_slice() {
        ["connection: close", "content-length: 0", date] if date.starts_with("date: ") => {
            Some((at, StatusCode::from_u16(status).ok()?))
        }
        _ => None,
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(written) = this.swap(&[io::IoSlice::new(buf)]) {
            return Poll::Ready(Ok(written));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(written) = this.swap(bufs) {
            return Poll::Ready(Ok(written));
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track(cx, poll)
    }

    // Forwarded, or hyper would copy every body chunk instead of writing it vectored.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.track(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_answer_is_recognised() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
            content-length: 0\r\ndate: Sun, 06 Dec 2026 00:33:59 GMT\r\n\r\n";
        assert_eq!(
            bare_answer(bare),
            Some((0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE))
        );
        let mut after_a_body = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec();
        after_a_body.extend(bare);
        assert_eq!(
            bare_answer(&after_a_body).map(|(at, _)| at),
            Some(after_a_body.len() - bare.len())
        );
        let ours = b"HTTP/1.1 204 No Content\r\nx-request-id: a\r\n\
            date: Sun, 06 Dec 2026 00:33:59 GMT\r\n\r\n";
        assert_eq!(bare_answer(ours), None);
        assert_eq!(
            bare_answer(b"{\"title\":\"HTTP/1.1 400 x\"}\r\n0\r\n\r\n"),
            None
        );
    }
}
