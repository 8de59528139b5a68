//! What a client can hold (spec §5): a body that stalls, a response nobody reads, more
//! connections than MAX_CONNECTIONS, a low file-descriptor limit, and where the server
//! listens by default. Each is cut or refused, counted in /metrics, while /health
//! stays answered.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    BIN, TestApp, TestDb, free_port, send, server_env, spawn_app, spawn_app_with, spawn_server,
    wait_until,
};
use crate::metrics::{scrape, value};

/// How many connections the server ended for `reason`, as /metrics counts them.
async fn cut_count(app: &TestApp, reason: &str) -> f64 {
    let samples = scrape(app).await;
    value(&samples, &format!(r#"task_api_http_connections_closed_total{{reason="{reason}"}}"#))
}

/// Reads until the server closes the connection or `limit` passes; what was read,
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&seen).into_owned(), closed)
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_the_connection_closes() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 65536\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (response, closed) = read_until_closed(&mut stream, Duration::from_secs(15)).await;
    assert!(closed, "still open after 15 s: {response:?}");
    assert!(started.elapsed() >= Duration::from_secs(9), "cut too soon: {:?}", started.elapsed());
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    assert_eq!(cut_count(&app, "body_timeout").await, 1.0);
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn a_client_that_never_reads_its_response_is_cut_off() {
    let app = spawn_app().await;
    // A page far larger than the socket buffers: 200 tasks whose text becomes six
    // bytes of JSON per character (\u0001), about 6 MB.
    app.db
        .client()
        .await
        .batch_execute(
            "INSERT INTO tasks (title, description)
             SELECT repeat(chr(1), 200), repeat(chr(1), 5000) FROM generate_series(1, 200)",
        )
        .await
        .unwrap();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /tasks?limit=1000 HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    // Never read: the server's writes stall, and after 10 s it gives up.
    let cut = wait_until(Duration::from_secs(20), || async {
        cut_count(&app, "write_timeout").await == 1.0
    })
    .await;
    assert!(cut, "the non-reader was not cut off within 20 s");
    assert_eq!(app.get("/health").await.status, 200);
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the connection is still open");
}

#[tokio::test]
async fn over_max_connections_a_client_gets_503_and_the_others_are_served() {
    let app = spawn_app_with(&[("MAX_CONNECTIONS", "2")]).await;
    // Two clients hold both slots: connected, silent.
    let first = TcpStream::connect(app.addr).await.unwrap();
    let second = TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = app.get("/health").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(refused.header("x-request-id").is_some());
    assert!(!refused.detail().is_empty());
    // One leaves: the next client is served.
    drop(first);
    let served =
        wait_until(Duration::from_secs(3), || async { app.get("/health").await.status == 200 })
            .await;
    assert!(served, "a freed slot was not given to the next client");
    // The last /health may still hold its slot for a moment: close the other one, and
    // scrape once a slot is free.
    drop(second);
    let counted = wait_until(Duration::from_secs(3), || async {
        // /metrics itself may be refused while the last slot frees: then try again.
        let metrics = app.get("/metrics").await;
        let series = r#"task_api_http_connections_closed_total{reason="over_capacity"} "#;
        metrics.status == 200
            && metrics.body.lines().any(|line| {
                line.strip_prefix(series)
                    .and_then(|count| count.parse::<f64>().ok())
                    .is_some_and(|count| count >= 1.0)
            })
    })
    .await;
    assert!(counted, "the refused client was not counted");
}

#[tokio::test]
async fn a_low_soft_fd_limit_is_raised_to_the_hard_one() {
    let app = spawn_app().await;
    let url = app.db.url();
    let port = free_port().to_string();
    let mut env = server_env(&[("DATABASE_URL", url.as_str())]);
    env.retain(|(key, _)| *key != "PORT");
    env.push(("PORT", port.as_str()));
    // prlimit (util-linux) starts the binary with a soft limit of 256, hard unchanged.
    let mut child = tokio::process::Command::new("prlimit")
        .args(["--nofile=256:", BIN, "serve"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prlimit (util-linux) runs task-api");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up =
        wait_until(Duration::from_secs(30), || async { TcpStream::connect(addr).await.is_ok() })
            .await;
    assert!(up, "task-api never listened");
    // More clients than 256 descriptors allow, all held open at once.
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut answered = 0;
    for stream in held.iter_mut().step_by(40) {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (response, _) = read_until_closed(stream, Duration::from_secs(5)).await;
        answered += usize::from(response.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(answered, 10, "clients past the soft limit went unanswered");
    child.kill().await.ok();
}

#[tokio::test]
async fn with_no_host_set_it_listens_on_ipv4_and_ipv6() {
    let db = TestDb::create().await;
    let url = db.url();
    // An empty HOST counts as unset.
    let (mut child, addr, output) = spawn_server(&[("DATABASE_URL", &url), ("HOST", "")]).await;
    let output = output.lock().unwrap().clone();
    assert!(output.contains("listening on http://[::]:"), "{output}");
    let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port());
    assert_eq!(send(v4, Method::GET, "/health", &[], "").await.status, 200);
    // Where the machine has an IPv6 loopback at all.
    if std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port());
        assert_eq!(send(v6, Method::GET, "/health", &[], "").await.status, 200);
    }
    child.kill().await.ok();
}
