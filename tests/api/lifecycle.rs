//! Start-up, migrations, shutdown and database outages (spec §3, §5), seen from outside:
//! exit codes, what the process prints, and what clients get. The probe's own tests
//! are in probe.rs.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    PgServer, TestApp, TestDb, assert_no_password, free_port, migrate_at_once, post_task, run_cli,
    send, server_env, signal, spawn_app, spawn_app_with, spawn_server, text, try_send, wait_until,
};
use serde_json::json;

/// Every migration in sql/, as `migrate` names them.
const MIGRATIONS: [&str; 4] =
    ["V1__create_tasks", "V2__idempotency_keys", "V3__keys_on_tasks", "V4__prune_by_id"];

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_migrations_apply_each_exactly_once() {
    let db = TestDb::create().await;
    let (mut applied, mut nothing_pending) = (0, 0);
    for stdout in migrate_at_once(&db.url(), 8).await {
        applied += stdout
            .lines()
            .filter(|l| MIGRATIONS.iter().any(|m| *l == format!("applied {m}")))
            .count();
        nothing_pending += stdout.lines().filter(|l| *l == "no pending migrations").count();
    }
    // One of the eight applied every migration, once; the others found nothing to do.
    assert_eq!((applied, nothing_pending), (MIGRATIONS.len(), 7));
    let client = db.client().await;
    let history: i64 =
        client.query_one("SELECT count(*) FROM refinery_schema_history", &[]).await.unwrap().get(0);
    assert_eq!(history, MIGRATIONS.len() as i64);
    let tasks_exists: bool =
        client.query_one("SELECT to_regclass('tasks') IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(tasks_exists);
}

#[tokio::test]
async fn a_database_with_an_unknown_migration_is_refused() {
    let db = TestDb::create().await;
    let url = db.url();
    let env = server_env(&[("DATABASE_URL", url.as_str())]);
    assert!(run_cli(&["migrate"], &env).await.status.success());
    // As a newer task-api would leave it: a version this binary does not embed.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             SELECT 99, 'from_the_future', applied_on, '1'
             FROM refinery_schema_history WHERE version = 1",
        )
        .await
        .unwrap();
    for args in [&["serve"][..], &["migrate"][..]] {
        let output = run_cli(args, &env).await;
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("V99__from_the_future"), "{args:?}: {stderr}");
        assert!(!stdout.contains("listening on"), "{args:?}: {stdout}");
    }
}

#[tokio::test]
async fn newer_migrations_are_judged_by_their_compatibility_records() {
    let db = TestDb::create().await;
    let url = db.url();
    let env = server_env(&[("DATABASE_URL", url.as_str())]);
    assert!(run_cli(&["migrate"], &env).await.status.success());
    // A newer release's expand migration, recorded as working with every release since
    // 0.1.0: this one migrates and serves on it.
    let newer = |version: i32, name: &str, kind: &str, oldest: &str| {
        format!(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             SELECT {version}, '{name}', applied_on, '1' FROM refinery_schema_history
             WHERE version = 1;
             INSERT INTO task_api_compatibility VALUES ({version}, '{name}', '{kind}', '{oldest}');"
        )
    };
    let client = db.client().await;
    client.batch_execute(&newer(98, "add_due_at", "expand", "0.1.0")).await.unwrap();
    let output = run_cli(&["migrate"], &env).await;
    assert!(output.status.success(), "{:?}", text(&output));
    let mut app = crate::helpers::spawn_app_on(db).await;
    assert_eq!(app.get("/ready").await.status, 200);
    app.terminate();
    app.wait(Duration::from_secs(10)).await;
    // A contract one that needs a later release: refused, naming both.
    client.batch_execute(&newer(99, "drop_description", "contract", "99.0.0")).await.unwrap();
    for args in [&["serve"][..], &["migrate"][..]] {
        let output = run_cli(args, &env).await;
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("V99__drop_description") && stderr.contains("99.0.0"), "{stderr}");
        assert!(!stdout.contains("listening on"), "{args:?}: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_waits_for_a_database_that_comes_up_later() {
    let pg = PgServer::not_started();
    let url = pg.url("127.0.0.1", "sslmode=disable");
    let server = tokio::spawn(async move {
        spawn_server(&[("DATABASE_URL", &url), ("DATABASE_STARTUP_TIMEOUT", "60")]).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| pg.start_again(None));
    let (_child, addr, output) = server.await.expect("serve listened once the database was up");
    let output = output.lock().unwrap().clone();
    // The failed attempts came before the database existed: after that, connecting works.
    assert!(output.contains("not ready (attempt 1)"), "{output}");
    assert!(output.contains("Connection refused"), "{output}");
    for path in ["/health", "/ready"] {
        let response = send(addr, Method::GET, path, &[], Bytes::new()).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }
    assert_no_password(&output);
}

/// `task-api serve` against `url`, waiting for the database at most `startup_timeout`
/// seconds, which must exit 1 within 10 s; its stdout and stderr.
async fn serve_fails(url: &str, startup_timeout: &str) -> (String, String) {
    let env = server_env(&[("DATABASE_URL", url), ("DATABASE_STARTUP_TIMEOUT", startup_timeout)]);
    let output = tokio::time::timeout(Duration::from_secs(10), run_cli(&["serve"], &env))
        .await
        .expect("serve gave up within 10 s");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    (stdout, stderr)
}

#[tokio::test]
async fn serve_gives_up_after_the_startup_timeout() {
    let url = format!(
        "postgres://postgres:never-print-me@127.0.0.1:{}/tasks?sslmode=disable",
        free_port()
    );
    let (stdout, stderr) = serve_fails(&url, "1").await;
    assert!(stderr.contains("cannot connect to database"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stdout.contains("never-print-me") && !stderr.contains("never-print-me"));
}

#[tokio::test]
async fn a_database_that_accepts_but_never_answers_cannot_hold_start_up() {
    // Takes connections and holds them, never a byte: a TLS handshake or login that hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    for sslmode in ["disable", "require"] {
        let url = format!("postgres://postgres:pw@127.0.0.1:{port}/tasks?sslmode={sslmode}");
        let started = std::time::Instant::now();
        let (_, stderr) = serve_fails(&url, "2").await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{sslmode}: gave up after {:?}",
            started.elapsed()
        );
        assert!(stderr.contains("did not finish TLS or login"), "{stderr}");
    }
    silent.abort();
}

#[tokio::test]
async fn a_held_migration_lock_bounds_start_up_and_is_named() {
    let db = TestDb::create().await;
    let url = db.url();
    let holder = db.client().await;
    let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    holder.batch_execute("SET application_name = 'lock-holder'").await.unwrap();
    // The key every task-api agrees on (src/pg/migrate.rs).
    holder.execute("SELECT pg_advisory_lock($1)", &[&0x0074_6173_6b61_7069_i64]).await.unwrap();
    let started = std::time::Instant::now();
    let (_, stderr) = serve_fails(&url, "2").await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(
        stderr.contains(&format!("pid {pid} ")) && stderr.contains("\"lock-holder\""),
        "{stderr}"
    );
    // Once the holder lets go, start-up goes through.
    drop(holder);
    assert!(run_cli(&["migrate"], &[("DATABASE_URL", &url)]).await.status.success());
}

#[tokio::test]
async fn wrong_password_fails_at_once() {
    let db = TestDb::create().await;
    let url = with_password(&db.url(), "not-the-password");
    // Retrying cannot fix a password: it must not wait out the 60 s.
    let (stdout, stderr) = serve_fails(&url, "60").await;
    assert!(stderr.contains("authentication"), "{stderr}");
    let all = stdout + &stderr;
    assert!(!all.contains("not-the-password"), "{all}");
    assert_no_password(&all);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_slow_request_finish_and_exits_0() {
    let mut app = spawn_app().await;
    let locker = lock_tasks_table(&app).await;
    let addr = app.addr;
    let slow =
        tokio::spawn(async move { send(addr, Method::GET, "/tasks", &[], Bytes::new()).await });
    let create = tokio::spawn(post_task(addr, json!({"title": "in flight"})));
    wait_for_blocked_queries(&app.db, 2).await;
    app.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!slow.is_finished(), "GET /tasks was not in flight at SIGTERM");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "new connections are still accepted while draining"
    );
    // Released well inside the request's own 5 s budget.
    locker.batch_execute("COMMIT").await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("GET /tasks finished after the lock was released")
        .expect("GET /tasks got a response");
    let created = create.await.expect("POST /tasks got a response");
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["title"], "in flight");
    // Both waited on the lock; the list saw the new task or not, depending on which
    // went first.
    assert_eq!(response.status, 200, "{}", response.body);
    let listed = response.json();
    assert!(listed == json!([]) || listed == json!([created.json()]), "{listed}");
    let status = app.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}: {}", app.output());
    assert!(TcpStream::connect(addr).await.is_err());
    assert_no_password(&app.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_timeout_bounds_the_drain() {
    let mut app = spawn_app_with(&[("SHUTDOWN_TIMEOUT", "1")]).await;
    let _locker = lock_tasks_table(&app).await; // held until the test ends
    let addr = app.addr;
    let stuck = tokio::spawn(async move { try_send(addr, Method::GET, "/tasks", &[], "").await });
    wait_for_blocked_queries(&app.db, 1).await;
    app.terminate();
    // 1 s of drain plus slack; under 4 s, so the request's own 5 s budget ending
    // cannot be what let the process go.
    let status = app.wait(Duration::from_secs(4)).await;
    assert!(status.success(), "{status}: {}", app.output());
    let outcome = tokio::time::timeout(Duration::from_secs(2), stuck)
        .await
        .expect("the stuck request ended with the process")
        .unwrap();
    assert!(outcome.is_err(), "the stuck request got an answer: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_do_not_delay_shutdown() {
    let mut app = spawn_app().await;
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get("/health")
        .header(HOST, app.addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap(); // now the connection is idle
    app.terminate();
    let status = app.wait(Duration::from_secs(2)).await;
    assert!(status.success(), "{status}: {}", app.output());
    tokio::time::timeout(Duration::from_secs(1), connection)
        .await
        .expect("the server closed the idle connection")
        .unwrap()
        .ok();
    drop(sender); // kept until here, so the connection stayed open and idle
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let mut app = spawn_app().await;
    assert_eq!(app.get("/health").await.status, 200);
    signal(&app.child, libc::SIGINT);
    let status = app.wait(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}: {}", app.output());
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = [0; 1024];
    let early = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    assert!(early.is_err(), "answered or closed at once: {early:?}");
    // The header read timeout is 10 s; any end of the stream (EOF or reset) will do.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "connection still open 17 s after a partial header");
    assert_eq!(app.get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_and_requests_fail_fast_when_the_database_goes_away() {
    let pg = tokio::task::block_in_place(|| PgServer::start(None));
    let url = pg.url("127.0.0.1", "sslmode=disable");
    let (_child, addr, output) = spawn_server(&[("DATABASE_URL", &url)]).await;
    let get = |path: &'static str| send(addr, Method::GET, path, &[], Bytes::new());
    assert_eq!(get("/ready").await.status, 200);

    tokio::task::block_in_place(|| pg.stop());
    let ready = tokio::time::timeout(Duration::from_secs(2), get("/ready"))
        .await
        .expect("/ready answered within 2 s");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let body = ready.json();
    assert_eq!(body["status"], "unavailable", "{body}");
    let reason = body["checks"]["database"].as_str().unwrap_or_default();
    assert!(!reason.is_empty() && reason != "ok", "{body}");
    let list = tokio::time::timeout(Duration::from_secs(6), get("/tasks"))
        .await
        .expect("GET /tasks answered within 6 s");
    assert_eq!(list.status, 503, "{}", list.body);
    assert!(!list.detail().is_empty());
    // The batched routes (src/store/batcher.rs) too, all the requests of a batch alike.
    let (one, created, two) = tokio::time::timeout(Duration::from_secs(6), async {
        tokio::join!(get("/tasks/1"), post_task(addr, json!({"title": "lost"})), get("/tasks/2"),)
    })
    .await
    .expect("GET and POST answered within 6 s");
    for response in [one, created, two] {
        assert_eq!(response.status, 503, "{}", response.body);
        assert_eq!(response.header("retry-after"), Some("1"));
    }
    assert_eq!(get("/health").await.status, 200);
    let port = addr.port().to_string();
    let probe = run_cli(&["healthcheck", "--ready"], &[("PORT", &port)]).await;
    assert_eq!(probe.status.code(), Some(1), "{:?}", text(&probe));

    tokio::task::block_in_place(|| pg.start_again(None));
    let back =
        wait_until(Duration::from_secs(15), || async { get("/ready").await.status == 200 }).await;
    assert!(back, "/ready never returned to 200; output:\n{}", output.lock().unwrap());
    assert_no_password(&output.lock().unwrap());
}

/// Takes an ACCESS EXCLUSIVE lock on `tasks` in an open transaction, so any query
/// on the table waits until the returned client says COMMIT (or goes away).
async fn lock_tasks_table(app: &TestApp) -> tokio_postgres::Client {
    let locker = app.db.client().await;
    locker.batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE").await.unwrap();
    locker
}

/// Waits until `count` queries in `db` are blocked on a lock, i.e. requests are in flight.
async fn wait_for_blocked_queries(db: &TestDb, count: i64) {
    // A connection of its own: pg_stat_activity is a snapshot per transaction.
    let watcher = db.client().await;
    let blocked = wait_until(Duration::from_secs(5), || async {
        let row = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) >= count
    })
    .await;
    assert!(blocked, "fewer than {count} requests reached the locked table");
}

/// `url` with its password replaced (or added).
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (userinfo, host) = rest.split_once('@').expect("a user name in the URL");
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    format!("{scheme}://{user}:{password}@{host}")
}
