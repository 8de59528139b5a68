//! One client connection's IO (spec §5): TCP options, the write deadline, our answer in place
//! of hyper's to a head it cannot parse (spec §2), and why a connection ended, for `/metrics`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::StatusCode;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Sleep, sleep};

use super::{App, router};

/// What polling the socket gives.
type IoPoll<T> = Poll<io::Result<T>>;

/// A client that accepts none of its response for this long is cut off (spec §5)...
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// ...with this error, by which [`cut`] knows it.
const STALLED: &str = "the client accepted no data for 10s";

/// TCP keepalive on client connections: a peer that vanished while its response
/// streams out is found within about 30 + 3 × 10 s, even when no deadline runs.
const KEEPALIVE: TcpKeepalive = TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10))
    .with_retries(3);

/// Sets what every accepted socket gets: no Nagle delay (responses go whole), keepalive.
pub fn configure(stream: &TcpStream) {
    stream.set_nodelay(true).unwrap_or_else(|err| log::debug!("TCP_NODELAY: {err}"));
    let keepalive = SockRef::from(stream).set_tcp_keepalive(&KEEPALIVE);
    keepalive.unwrap_or_else(|err| log::debug!("TCP keepalive: {err}"));
}

/// Which deadline, if any, ended a connection that failed with `err` after `requests`
/// requests, as `/metrics` labels it (docs/operations.md).
pub fn cut(err: &hyper::Error, requests: u64) -> Option<&'static str> {
    if err.is_timeout() {
        // hyper's header timer runs while a kept-alive connection waits too.
        return Some(if requests == 0 { "header_timeout" } else { "idle_timeout" });
    }
    std::iter::successors(std::error::Error::source(err), |err| err.source())
        .filter_map(|err| err.downcast_ref::<io::Error>()?.get_ref())
        .any(|inner| inner.to_string() == STALLED)
        .then_some("write_timeout")
}

/// A client connection's stream as hyper sees it. Writes fail after [`WRITE_TIMEOUT`] without
/// progress (so a slow but steady reader is served to the end). hyper's own answer to a head
/// it cannot parse (hyper 1 has no hook for it) is swapped for router.rs's.
pub struct ClientIo {
    inner: TcpStream,
    stalled_since: Option<Pin<Box<Sleep>>>,
    app: Arc<App>,
    /// Bytes of ours still to write before anything else: the swapped answer.
    pending: Vec<u8>,
}

impl ClientIo {
    /// Wraps `inner`, a client of `app`.
    pub fn new(inner: TcpStream, app: Arc<App>) -> Self {
        ClientIo { inner, stalled_since: None, app, pending: Vec::new() }
    }

    fn track<R>(&mut self, cx: &mut Context<'_>, poll: IoPoll<R>) -> IoPoll<R> {
        if poll.is_ready() {
            self.stalled_since = None;
            return poll;
        }
        let timer = self.stalled_since.get_or_insert_with(|| Box::pin(sleep(WRITE_TIMEOUT)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, STALLED)))
    }

    /// Writes what is pending, if anything; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> IoPoll<()> {
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

    /// Writes what is pending, then does `op` on the stream, both under the deadline.
    fn write<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> IoPoll<R>,
    ) -> IoPoll<R> {
        ready!(self.poll_pending(cx))?;
        let poll = op(Pin::new(&mut self.inner), cx);
        self.track(cx, poll)
    }
}

/// Where hyper's own answer to an unparsable head starts at the end of `bytes`, and its
/// status: `HTTP/1.1 <status> <reason>`, then exactly `connection: close`, `content-length: 0`
/// and `date`. Ours always carry an `x-request-id`, so none looks like this.
fn bare_answer(bytes: &[u8]) -> Option<(usize, StatusCode)> {
    let head = bytes.strip_suffix(b"\r\n\r\n")?;
    let from = head.len().saturating_sub(256);
    let at = from + head[from..].windows(9).rposition(|w| w == b"HTTP/1.1 ")?;
    let mut lines = std::str::from_utf8(&head[at..]).ok()?.split("\r\n");
    let status = StatusCode::from_bytes(lines.next()?.get(9..12)?.as_bytes()).ok()?;
    match lines.collect::<Vec<_>>().as_slice() {
        ["connection: close", "content-length: 0", date] if date.starts_with("date: ") => {
            Some((at, status))
        }
        _ => None,
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> IoPoll<()> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> IoPoll<usize> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> IoPoll<usize> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        // hyper's bare answer ends the last buffer: queue them with ours in its place, say written.
        if let Some(last) = bufs.iter().rev().find(|buf| !buf.is_empty())
            && let Some((at, status)) = bare_answer(last)
        {
            let mut bytes: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let written = bytes.len();
            bytes.truncate(written - (last.len() - at));
            bytes.extend(router::unparsed(&this.app, status));
            this.pending = bytes;
            return Poll::Ready(Ok(written));
        }
        this.write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    // Forwarded, or hyper would copy every body chunk instead of writing it vectored.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> IoPoll<()> {
        self.get_mut().write(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> IoPoll<()> {
        self.get_mut().write(cx, |io, cx| io.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_answer_is_recognised() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
            content-length: 0\r\ndate: Sun, 06 Dec 2026 00:33:59 GMT\r\n\r\n";
        assert_eq!(bare_answer(bare), Some((0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)));
        let mut after_a_body = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec();
        after_a_body.extend(bare);
        let at = bare_answer(&after_a_body).map(|(at, _)| at);
        assert_eq!(at, Some(after_a_body.len() - bare.len()));
        for ours in [
            &b"HTTP/1.1 204 No Content\r\nx-request-id: a\r\n\
                date: Sun, 06 Dec 2026 00:33:59 GMT\r\n\r\n"[..],
            b"{\"title\":\"HTTP/1.1 400 x\"}\r\n0\r\n\r\n",
        ] {
            assert_eq!(bare_answer(ours), None);
        }
    }
}
