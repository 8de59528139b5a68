//! One client connection's own limits (spec §5): TCP options, the write deadline that
//! cuts off a client who does not read, and why a connection ended, for `/metrics`.
//! The header and body deadlines are hyper's and body.rs's; the connection cap is
//! mod.rs's.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

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

/// A stream whose writes fail once they have made no progress for [`WRITE_TIMEOUT`].
/// The timer starts when a write (or flush) is first refused and stops at the next
/// progress, so a client that reads slowly but steadily is served to the end.
pub struct WriteDeadline<T> {
    inner: T,
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        WriteDeadline {
            inner,
            stalled_since: None,
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
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track(cx, poll)
    }

    // Forwarded, or hyper would copy every body chunk instead of writing it vectored.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.track(cx, poll)
    }
}
