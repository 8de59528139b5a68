//! Where the server listens, and how many clients it may hold (spec §4, §5): the dual-stack
//! bind, the file-descriptor limit raised as far as allowed, and `MAX_CONNECTIONS`' default.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::SockRef;
use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel may queue for us while we are busy accepting.
const BACKLOG: u32 = 4096;
/// File descriptors kept back from clients: the pool, the log, the runtime, over-capacity answers.
const RESERVED_FDS: u64 = 256;
/// The default cap on clients, whatever the descriptors: 4,096 idle connections fit 64 MiB.
const MAX_DEFAULT_CONNECTIONS: u64 = 4096;
/// Binds `host:port`, or with no host `[::]` with IPv6-only off (IPv4 clients too), or
/// `0.0.0.0` where there is no IPv6.
pub fn bind(host: Option<IpAddr>, port: u16) -> io::Result<TcpListener> {
    match host {
        Some(ip) => listen(SocketAddr::new(ip, port)),
        None => match listen(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)) {
            Err(err) if no_ipv6(&err) => {
                log::info!("no IPv6 here ({err}); listening on IPv4 only");
                listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
            }
            other => other,
        },
    }
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        SockRef::from(&socket).set_only_v6(false)?;
    }
    // As TcpListener::bind does: a restarted server may reuse a port in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Whether binding `[::]` failed because the host has no IPv6.
fn no_ipv6(err: &io::Error) -> bool {
    let code = err.raw_os_error();
    matches!(code, Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL))
}

/// `MAX_CONNECTIONS`, or what the descriptor limit (raised first) allows beside the pool and the
/// rest, up to [`MAX_DEFAULT_CONNECTIONS`]; logged with that limit.
pub fn max_connections(configured: Option<usize>, pool_size: usize) -> usize {
    let fd_limit = raise_fd_limit()
        .inspect_err(|err| log::warn!("could not raise the file descriptor limit: {err}"))
        .ok();
    let max =
        configured.unwrap_or_else(|| default_max_connections(fd_limit.unwrap_or(1024), pool_size));
    let fd_limit = fd_limit.map_or("unknown".into(), |n| n.to_string());
    log::info!("file descriptor limit {fd_limit}; serving up to {max} connections");
    max
}

/// Raises the soft `RLIMIT_NOFILE` (often 1024) to the hard one; returns the limit in force.
fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

fn default_max_connections(fd_limit: u64, pool_size: usize) -> usize {
    let spare = fd_limit.saturating_sub(RESERVED_FDS + pool_size as u64);
    spare.clamp(1, MAX_DEFAULT_CONNECTIONS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_room_for_the_pool_and_stays_bounded() {
        assert_eq!(default_max_connections(1024, 8), 760);
        assert_eq!(default_max_connections(1_048_576, 8), 4096);
        assert_eq!(default_max_connections(100, 8), 1);
    }
}
