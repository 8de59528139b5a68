//! `task-api healthcheck` (spec §3) against a real server, a closed port and a
//! listener that never answers: exit codes and the one line it prints. The probe
//! during a database outage is in lifecycle.rs.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::helpers::{free_port, run_cli, spawn_app, text};

#[tokio::test]
async fn healthcheck_passes_against_a_serving_app() {
    let app = spawn_app().await;
    let port = app.addr.port().to_string();
    let url = format!("http://127.0.0.1:{port}/health");
    for (args, expected) in [
        (&["healthcheck"][..], format!("OK: {url}")),
        (&["healthcheck", "--ready"][..], format!("OK: http://127.0.0.1:{port}/ready")),
        (&["healthcheck", "--url", &url][..], format!("OK: {url}")),
    ] {
        let output = run_cli(args, &[("PORT", &port)]).await;
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{args:?}: {stdout}{stderr}");
        assert_eq!(stdout.trim_end(), expected, "{args:?}");
    }
}

#[tokio::test]
async fn healthcheck_fails_with_one_line_when_nothing_listens() {
    let port = free_port().to_string();
    let output = run_cli(&["healthcheck"], &[("PORT", &port)]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("task-api: healthcheck failed: "), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}/health")), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[tokio::test]
async fn healthcheck_gives_up_on_a_server_that_never_answers() {
    // Accepts connections and holds them, never writing a byte.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let env = [("PORT", port.as_str())];
    let probe = run_cli(&["healthcheck", "--timeout", "1"], &env);
    let output = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .expect("the probe gave up within 5 s");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no answer within 1s"), "{stderr}");
    silent.abort();
}

#[tokio::test]
async fn healthcheck_with_a_bad_timeout_is_a_usage_error() {
    let output = run_cli(&["healthcheck", "--timeout", "x"], &[("PORT", "1")]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--timeout"), "{stderr}");
}
