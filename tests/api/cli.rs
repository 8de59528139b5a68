//! The command line and configuration as an operator meets them (spec §3–4, §6):
//! exit codes, one-line errors naming the variable, `DATABASE_URL_FILE`, `migrate`,
//! and what the logs hold and never hold.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;
use tokio::net::TcpStream;

use crate::helpers::{
    TestDb, all_at_once, assert_no_password, command, free_port, passwords, run_cli, send,
    send_raw, server_env, spawn_app, spawn_app_with, spawn_server, spawn_server_args, text,
};

#[tokio::test]
async fn version_and_help_exit_0() {
    for flag in ["--version", "-V"] {
        let output = run_cli(&[flag], &[]).await;
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(text(&output).0, format!("task-api {}\n", env!("CARGO_PKG_VERSION")));
    }
    let output = run_cli(&["--help"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    let (help, _) = text(&output);
    for word in
        ["serve", "migrate", "healthcheck", "--ready", "--url", "--timeout", "DATABASE_URL_FILE"]
    {
        assert!(help.contains(word), "{word} missing from --help");
    }
}

#[tokio::test]
async fn bad_usage_exits_2_with_one_line_naming_the_flag() {
    for (args, needle) in [
        (&["frobnicate"][..], "frobnicate"),
        (&["serve", "--bogus"][..], "--bogus"),
        (&["healthcheck", "--timeout"][..], "--timeout"),
        (&["healthcheck", "--timeout", "soon"][..], "--timeout"),
        (&["healthcheck", "--url", "ftp://x/"][..], "--url"),
        (&["healthcheck", "--timeout", "-1"][..], "--timeout"),
        (&["migrate", "now"][..], "now"),
    ] {
        let output = run_cli(args, &[]).await;
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("task-api: ") && stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stdout, "");
    }
}

#[tokio::test]
async fn healthcheck_timeout_takes_fractions_of_a_second() {
    // Nothing listens on port 1: with --timeout parsed, this is a failed probe, not bad usage.
    let args = ["healthcheck", "--ready", "--timeout", "0.5", "--url", "http://127.0.0.1:1/"];
    let output = run_cli(&args, &[]).await;
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("http://127.0.0.1:1/"), "{stderr}");
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_variable_before_connecting() {
    let url = "postgres://app:pa55word-xyz@127.0.0.1:1/db";
    for (env, var) in [
        (&[][..], "DATABASE_URL"),
        (&[("DATABASE_URL", "mysql://u@h/d")][..], "DATABASE_URL"),
        (&[("DATABASE_URL", "postgres://app:pa55word-xyz@h/d?sslmode=verify")][..], "DATABASE_URL"),
        (&[("DATABASE_URL", "postgres://app:pa55word-xyz@h:notaport/d")][..], "DATABASE_URL"),
        (&[("DATABASE_URL", url), ("PORT", "http")][..], "PORT"),
        (&[("DATABASE_URL", url), ("HOST", "localhost")][..], "HOST"),
        (&[("DATABASE_URL", url), ("LOG_LEVEL", "chatty")][..], "LOG_LEVEL"),
        (&[("DATABASE_URL", url), ("DATABASE_POOL_SIZE", "0")][..], "DATABASE_POOL_SIZE"),
        (
            &[("DATABASE_URL", url), ("DATABASE_STARTUP_TIMEOUT", "-1")][..],
            "DATABASE_STARTUP_TIMEOUT",
        ),
        (&[("DATABASE_URL", url), ("SHUTDOWN_TIMEOUT", "soon")][..], "SHUTDOWN_TIMEOUT"),
        (&[("DATABASE_URL_FILE", "/nonexistent/secret")][..], "DATABASE_URL_FILE"),
        (&[("DATABASE_URL", url), ("DATABASE_URL_FILE", "/x")], "DATABASE_URL_FILE"),
        (&[("DATABASE_URL", url), ("PORT", "70000")], "PORT"),
        (&[("DATABASE_URL", url), ("MAX_CONNECTIONS", "0")], "MAX_CONNECTIONS"),
        (&[("DATABASE_URL", url), ("LOG_FORMAT", "yaml")], "LOG_FORMAT"),
        (&[("DATABASE_URL", url), ("DATABASE_STATEMENTS", "named")], "DATABASE_STATEMENTS"),
        (&[("DATABASE_URL", url), ("SHUTDOWN_DELAY", "soon")], "SHUTDOWN_DELAY"),
        (&[("DATABASE_URL", url), ("IDEMPOTENCY_KEY_TTL", "0")], "IDEMPOTENCY_KEY_TTL"),
    ] {
        for command in ["serve", "migrate"] {
            let started = Instant::now();
            let output = run_cli(&[command], env).await;
            let (stdout, stderr) = text(&output);
            assert_eq!(output.status.code(), Some(2), "{command} {env:?}: {stderr}");
            assert!(stderr.starts_with(&format!("task-api: {var}: ")), "{env:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                !stderr.contains("pa55word-xyz") && !stdout.contains("pa55word-xyz"),
                "{stderr}"
            );
            // Port 1 refuses connections; the default start-up wait is 60 s. A quick exit
            // shows nothing was connected to (or retried) before the check.
            assert!(started.elapsed() < Duration::from_secs(10), "{env:?}");
        }
    }
}

#[tokio::test]
async fn configuration_is_checked_before_the_port_is_bound() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let db = TestDb::create().await;
    let url = db.url();
    let output =
        run_cli(&["serve"], &[("DATABASE_URL", &url), ("PORT", &port), ("LOG_LEVEL", "x")]).await;
    assert_eq!(output.status.code(), Some(2), "{:?}", text(&output));
    // With good config, a taken port is a runtime failure: exit 1, saying so.
    let env = server_env(&[("DATABASE_URL", url.as_str()), ("PORT", port.as_str())]);
    let output = run_cli(&["serve"], &env).await;
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
}

#[tokio::test]
async fn migrate_applies_once_then_reports_nothing_pending() {
    let db = TestDb::create().await;
    let url = db.url();
    let output = run_cli(&["migrate"], &[("DATABASE_URL", &url)]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("applied V1__create_tasks"), "{stdout}");
    let output = run_cli(&["migrate"], &[("DATABASE_URL", &url)]).await;
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout.contains("no pending migrations") && !stdout.contains("applied V1"), "{stdout}");
    let client = db.client().await;
    let rows: i64 = client.query_one("SELECT count(*) FROM tasks", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn serve_is_the_default_command() {
    let db = TestDb::create().await;
    let url = db.url();
    let (mut child, addr, _) = spawn_server_args(&[], &[("DATABASE_URL", &url)]).await;
    let health = send(addr, Method::GET, "/health", &[], "").await;
    assert_eq!(health.status, 200);
    child.kill().await.ok();
}

#[tokio::test]
async fn database_url_file_is_read_like_a_docker_secret() {
    let db = TestDb::create().await;
    let path = std::env::temp_dir().join(format!("{}.url", db.name));
    std::fs::write(&path, format!("{}\n", db.url())).unwrap();
    let path_text = path.display().to_string();
    let (mut child, addr, _) = spawn_server(&[("DATABASE_URL_FILE", &path_text)]).await;
    let ready = send(addr, Method::GET, "/ready", &[], "").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    child.kill().await.ok();
    let url = db.url();
    let output =
        run_cli(&["serve"], &[("DATABASE_URL_FILE", &path_text), ("DATABASE_URL", &url)]).await;
    assert_eq!(output.status.code(), Some(2));
    std::fs::remove_file(&path).ok();
}

#[tokio::test]
async fn libpq_key_value_strings_work() {
    let db = TestDb::create().await;
    // Build host=… port=… from the test server's URL.
    let url = db.url();
    let after_scheme = url.split_once("://").unwrap().1;
    let (credentials, rest) = after_scheme.split_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    let (host_port, _) = rest.split_once('/').unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap();
    let key_values = format!(
        "host={host} port={port} user={user} password='{password}' dbname={} sslmode=disable",
        db.name
    );
    let output = run_cli(&["migrate"], &[("DATABASE_URL", &key_values)]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("applied V1__create_tasks"), "{stdout}");
    // Several hosts, tried in order as libpq does: nothing listens on port 1.
    let hosts = format!(
        "postgres://{credentials}@127.0.0.1:1,{host}:{port}/{}?sslmode=disable\
         &target_session_attrs=read-write",
        db.name
    );
    let output = run_cli(&["migrate"], &[("DATABASE_URL", &hosts)]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let target = format!("{user}@127.0.0.1,{host}:1,{port}/{} sslmode=disable", db.name);
    assert!(stdout.contains(&format!("connected to {target}")), "{stdout}");
}

#[tokio::test]
async fn access_log_has_one_line_per_request_and_never_a_body_or_password() {
    let app = spawn_app().await;
    let secret_title = "title-that-must-not-be-logged";
    let created = app.create_task(json!({"title": secret_title})).await;
    let response = app.get("/nowhere").await;
    let id = response.header("x-request-id").unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = app.output();
    let post_line = output.lines().find(|l| l.contains("POST /tasks 201")).expect("a POST line");
    assert!(post_line.contains("request_id="), "{post_line}");
    assert!(post_line.contains("ms"), "{post_line}");
    assert!(output.lines().any(|l| l.contains("GET /nowhere 404") && l.contains(&id)), "{output}");
    assert!(!output.contains(secret_title), "a body was logged:\n{output}");
    assert!(passwords().len() > 1, "the test server has no password");
    assert_no_password(&output);
    assert!(created["id"].as_i64().is_some());
}

#[tokio::test]
async fn every_access_line_is_written_whole_and_once_when_the_server_goes_idle() {
    // Lines go out in batches (past 8 KiB, and whenever a worker goes idle): 500 requests at
    // once make several batches, and what no batch filled is written with no request to push it.
    let app = spawn_app().await;
    let addr = app.addr;
    let requests = (0..500).map(|i| async move {
        let id = format!("line-{i}");
        send(addr, Method::GET, "/health", &[("x-request-id", &id)], "").await
    });
    assert!(all_at_once(requests.collect()).await.iter().all(|r| r.status == 200));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = app.output();
    for i in 0..500 {
        let id = format!(" request_id=line-{i}");
        let lines: Vec<_> = output.lines().filter(|l| l.ends_with(&id)).collect();
        assert_eq!(lines.len(), 1, "{id}: {lines:?}");
        assert!(lines[0].contains(" INFO  access: GET /health 200 "), "{}", lines[0]);
    }
}

#[tokio::test]
async fn log_level_warn_silences_the_access_log() {
    let db = TestDb::create().await;
    let (url, port) = (db.url(), free_port().to_string());
    let env = server_env(&[
        ("DATABASE_URL", url.as_str()),
        ("PORT", port.as_str()),
        ("LOG_LEVEL", "warn"),
    ]);
    // Not spawn_server: at warn there is no "listening on" line to wait for.
    let child = command(&["serve"], &env).stdout(Stdio::piped()).spawn().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "task-api never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(send(addr, Method::GET, "/health", &[], "").await.status, 200);
    crate::helpers::signal(&child, libc::SIGTERM);
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    assert!(!stdout.contains("GET /health"), "{stdout}");
    assert!(!stdout.contains("INFO"), "{stdout}");
}

#[tokio::test]
async fn a_client_can_neither_break_nor_forge_an_access_log_line() {
    let app = spawn_app().await;
    let forged = "1 status=500 user=admin";
    let response = app.request(Method::GET, "/health", &[("x-request-id", forged)], "").await;
    assert_eq!(response.header("x-request-id"), Some(forged));
    // Raw bytes on the wire: a line separator, NEL and a C1 control in the path.
    let raw = "GET /x\u{2028}y\u{85}z\u{9b}w HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    send_raw(app.addr, raw.as_bytes(), Duration::from_secs(2)).await;
    app.get("/tasks/\"quoted\"%20path").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = app.output();
    for c in ['\u{2028}', '\u{85}', '\u{9b}'] {
        assert!(!output.contains(c), "{c:?} reached the log:\n{output}");
    }
    let line = output.lines().find(|l| l.contains("GET /health 200")).expect("the access line");
    assert!(
        line.ends_with(&format!("request_id=\"{forged}\"")),
        "the id's fields are not quoted: {line}"
    );
    assert!(output.contains(r#"GET "/tasks/\"quoted\"%20path" 422"#), "{output}");
}

#[tokio::test]
async fn debug_logging_never_holds_a_request_body() {
    for (var, level, logs_bodies) in [
        ("LOG_LEVEL", "trace", false),
        ("RUST_LOG", "debug", false),
        // The operator's own choice, named: the driver's statement parameters.
        ("RUST_LOG", "info,tokio_postgres=debug", true),
    ] {
        let app = spawn_app_with(&[(var, level)]).await;
        let task = app
            .create_task(json!({"title": "body-marker-title", "description": "body-marker-desc"}))
            .await;
        let path = format!("/tasks/{}", task["id"]);
        assert_eq!(app.get(&path).await.status, 200);
        let patched = app.patch(&path, r#"{"title": "body-marker-patch"}"#).await;
        assert_eq!(patched.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let output = app.output();
        assert_eq!(output.contains("body-marker"), logs_bodies, "{var}={level}:\n{output}");
    }
}
