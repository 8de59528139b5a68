//! The client side of `task-api healthcheck` (spec §3): one GET with a deadline, exit 0 on 200,
//! else one line on stderr. It dials 127.0.0.1:$PORT: no DNS or CA bundle, fit for scratch.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::describe;
use crate::{Error, config};

/// What to probe, and how long to wait.
#[derive(Debug, PartialEq)]
pub struct Probe {
    /// Probe `/ready` (database included) instead of `/health`.
    pub ready: bool,
    /// Probe this `http://` URL instead; `--ready` then changes nothing.
    pub url: Option<String>,
    /// The whole probe's budget: connect, send, status line.
    pub timeout: Duration,
}

/// Runs the probe; `Ok` means the server answered 200 in time.
pub fn run(probe: Probe) -> Result<(), Error> {
    let path = if probe.ready { "ready" } else { "health" };
    let local = || config::probe_port().map(|port| format!("http://127.0.0.1:{port}/{path}"));
    let url = probe.url.map_or_else(local, Ok)?;
    let uri: Uri = url.parse().map_err(|err| Error::Usage(format!("--url: {err}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(Error::Usage("--url: only http:// URLs can be probed".into()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Probe(format!("tokio runtime: {err}")))?;
    let answer = runtime.block_on(async { tokio::time::timeout(probe.timeout, get(&uri)).await });
    let status = answer.unwrap_or_else(|_| Err(format!("no answer within {:?}", probe.timeout)));
    let status = status.map_err(|reason| Error::Probe(format!("{url}: {reason}")))?;
    if status != StatusCode::OK {
        return Err(Error::Probe(format!("{url}: HTTP {status}")));
    }
    println!("OK: {url}");
    Ok(())
}

async fn get(uri: &Uri) -> Result<StatusCode, String> {
    let host = uri.host().ok_or("no host in URL")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await,
        // A scratch image has no /etc/hosts; answer the one name everybody uses.
        Err(_) if host.eq_ignore_ascii_case("localhost") => {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await
        }
        // DNS only when the caller asked for a name.
        Err(_) => TcpStream::connect((host, port)).await,
    }
    .map_err(|err| describe(&err))?;
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await;
    let (mut sender, connection) = handshake.map_err(|err| describe(&err))?;
    tokio::spawn(connection);
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, uri.authority().map_or(host, |a| a.as_str()))
        .header(USER_AGENT, concat!("task-api-healthcheck/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|err| describe(&err))?;
    Ok(sender.send_request(request).await.map_err(|err| describe(&err))?.status())
}
