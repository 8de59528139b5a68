//! Running many: a drain delay behind a load balancer, a database that turns read-only
//! (a failover), and logs an aggregator can read (`LOG_FORMAT=json`, `traceparent`).
//! The fleet itself (HAProxy, a standby) is `make test-fleet`.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::helpers::{
    ADMIN_URL, TestDb, connect, send, spawn_app_with, spawn_server, wait_until, with_dbname,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread")]
async fn after_sigterm_it_fails_ready_serves_on_for_the_delay_then_drains() {
    let mut app = spawn_app_with(&[("SHUTDOWN_DELAY", "2")]).await;
    assert_eq!(app.get("/ready").await.status, 200);
    let signalled = Instant::now();
    app.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["status"], "stopping");
    // Still accepting and serving, each answer telling the client to go elsewhere.
    let created = app.post("/tasks", r#"{"title":"during the delay"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("connection"), Some("close"));
    assert_eq!(app.get("/health").await.status, 200);
    // Then it stops accepting, and exits 0.
    let status = app.wait(Duration::from_secs(6)).await;
    assert!(status.success(), "{status}: {}", app.output());
    assert!(signalled.elapsed() >= Duration::from_secs(2), "{:?}", signalled.elapsed());
    assert!(TcpStream::connect(app.addr).await.is_err());
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn with_no_delay_sigterm_stops_accepting_at_once() {
    let mut app = spawn_app_with(&[]).await;
    app.terminate();
    let status = app.wait(Duration::from_secs(2)).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_turned_read_only_gives_503s_then_writes_resume_without_a_restart() {
    let db = TestDb::create().await;
    let url = db.url();
    let (_child, addr, output) = spawn_server(&[("DATABASE_URL", &url)]).await;
    let post = |title: &'static str| {
        send(
            addr,
            Method::POST,
            "/tasks",
            &[("content-type", "application/json")],
            format!(r#"{{"title":"{title}"}}"#),
        )
    };
    assert_eq!(post("before").await.status, 201);
    // As a failover does: the sessions end, and the server they reconnect to is a
    // standby, which takes no writes.
    let admin = connect(&with_dbname(&ADMIN_URL, "postgres")).await;
    let set =
        |on: &str| format!("ALTER DATABASE {} SET default_transaction_read_only = {on}", db.name);
    admin.batch_execute(&set("on")).await.unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{}' AND application_name = 'task-api'",
            db.name
        ))
        .await
        .unwrap();
    let refused = wait_until(Duration::from_secs(5), || async {
        let ready = send(addr, Method::GET, "/ready", &[], "").await;
        ready.status == 503 && ready.json()["checks"]["database"] == "read-only"
    })
    .await;
    assert!(refused, "/ready never said read-only");
    for _ in 0..3 {
        let create = post("refused").await;
        assert_eq!(create.status, 503, "{}", create.body);
        assert_eq!(create.header("retry-after"), Some("1"));
    }
    // Reads still work on it.
    assert_eq!(send(addr, Method::GET, "/tasks", &[], "").await.status, 200);
    admin.batch_execute(&set("off")).await.unwrap();
    // Connections refused a write were dropped: new ones take writes, no restart.
    let resumed =
        wait_until(Duration::from_secs(5), || async { post("after").await.status == 201 }).await;
    assert!(resumed, "{}", output.lock().unwrap());
    assert_eq!(send(addr, Method::GET, "/ready", &[], "").await.status, 200);
    let logged = output.lock().unwrap().clone();
    assert!(!logged.contains(" 500 "), "a 500 was answered:\n{logged}");
    assert!(!logged.contains("one by one"), "{logged}");
    let stored: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM tasks WHERE title = 'refused'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_access_fields() {
    let app = spawn_app_with(&[("LOG_FORMAT", "json")]).await;
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let traced = app
        .request(
            Method::GET,
            "/health",
            &[("traceparent", &traceparent), ("x-request-id", "a \"quoted\" id")],
            "",
        )
        .await;
    assert_eq!(traced.status, 200);
    let untraced = app.request(Method::GET, "/nowhere", &[("traceparent", "00-garbage")], "").await;
    assert_eq!(untraced.status, 404);
    app.post("/tasks", r#"{"title":"json-body-marker"}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = app.output();
    let lines: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} missing: {line}");
        }
    }
    let access = |path: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "access" && l["path"] == path)
            .unwrap_or_else(|| panic!("no access line for {path}:\n{output}"))
    };
    let health = access("/health");
    assert_eq!(health["method"], "GET");
    assert_eq!(health["status"], 200);
    assert!(health["duration_ms"].is_number(), "{health}");
    assert_eq!(health["request_id"], "a \"quoted\" id");
    assert_eq!(health["trace_id"], TRACE_ID);
    assert_eq!(health["level"], "INFO");
    // An invalid traceparent is ignored.
    let nowhere = access("/nowhere");
    assert_eq!(nowhere["status"], 404);
    assert!(nowhere.get("trace_id").is_none(), "{nowhere}");
    assert!(!output.contains("json-body-marker"));
    assert!(
        lines
            .iter()
            .any(|l| { l["message"].as_str().is_some_and(|m| m.starts_with("listening on")) })
    );
}

#[tokio::test]
async fn the_text_access_line_names_the_callers_trace() {
    let app = spawn_app_with(&[]).await;
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    app.request(Method::GET, "/health", &[("traceparent", &traceparent)], "").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = app.output();
    let line = output.lines().find(|l| l.contains("GET /health 200")).expect("an access line");
    assert!(line.ends_with(&format!(" trace_id={TRACE_ID}")), "{line}");
}
