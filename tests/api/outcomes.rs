//! Honest outcomes under a slow or unwilling database (spec §2, the 5 s budget): an
//! error answer means nothing was written, PostgreSQL itself stops what ran out of
//! time, and a statement nobody waits for is cancelled.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;

use crate::helpers::{TestApp, all_at_once, post_task, spawn_app, try_send, wait_until};

/// Queries of task-api's still running or waiting in the test's database.
async fn busy_statements(app: &TestApp) -> i64 {
    app.db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'task-api'
               AND state = 'active'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn under_a_slow_database_a_failed_create_stored_nothing() {
    let app = spawn_app().await;
    app.slow_down("INSERT", 3.0).await;
    let started = Instant::now();
    let create = |n: usize| post_task(app.addr, json!({"title": format!("slow {n}")}));
    // Two first, so both lanes are surely busy when the other 28 arrive.
    let first = tokio::spawn(all_at_once((0..2).map(create).collect()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rest = all_at_once((2..30).map(create).collect()).await;
    let mut responses = first.await.unwrap();
    responses.extend(rest);
    let took = started.elapsed();
    let client = app.db.client().await;
    let (mut created, mut failed) = (0, 0);
    for (n, response) in responses.iter().enumerate() {
        let stored: i64 = client
            .query_one("SELECT count(*) FROM tasks WHERE title = $1", &[&format!("slow {n}")])
            .await
            .unwrap()
            .get(0);
        match response.status {
            201 => {
                created += 1;
                assert_eq!(stored, 1, "task {n} answered 201 but is not stored");
            }
            503 => {
                failed += 1;
                assert_eq!(stored, 0, "task {n} answered 503 but is stored");
                assert_eq!(response.header("retry-after"), Some("1"));
            }
            other => panic!("task {n}: {other} {}", response.body),
        }
    }
    // The first two run alone, one per lane, in 3 s; the rest, batched behind them,
    // cannot finish 3 s of sleep within what remains of their 5 s.
    assert!(created >= 1 && failed >= 1, "{created} created, {failed} failed");
    assert!(took < Duration::from_millis(5600), "answered after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patch_or_delete_that_runs_out_of_time_changes_nothing() {
    let app = spawn_app().await;
    let task = app.create_task(json!({"title": "kept"})).await;
    let path = format!("/tasks/{}", task["id"]);
    app.slow_down("UPDATE", 6.0).await;
    app.slow_down("DELETE", 6.0).await;
    for (method, body) in [(Method::PATCH, r#"{"title": "changed"}"#), (Method::DELETE, "")] {
        let started = Instant::now();
        let response =
            app.request(method.clone(), &path, &[("content-type", "application/json")], body).await;
        assert_eq!(response.status, 503, "{method}: {}", response.body);
        assert!(
            started.elapsed() < Duration::from_millis(5600),
            "{method}: {:?}",
            started.elapsed()
        );
    }
    // PostgreSQL itself stopped both: nothing still runs, and nothing changed.
    assert_eq!(busy_statements(&app).await, 0);
    let now = app.get(&path).await;
    assert_eq!(now.status, 200);
    assert_eq!(now.json(), task);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_whose_client_left_is_cancelled_and_the_pool_stays_clean() {
    let app = spawn_app_small_pool().await;
    let locker = app.db.client().await;
    locker.batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE").await.unwrap();
    // Each waits on the lock; its client gives up after half a second.
    for _ in 0..2 {
        let addr = app.addr;
        let gave_up = tokio::time::timeout(
            Duration::from_millis(500),
            try_send(addr, Method::GET, "/tasks", &[], ""),
        )
        .await;
        assert!(gave_up.is_err(), "answered while the table was locked");
    }
    let cancelled =
        wait_until(Duration::from_secs(3), || async { busy_statements(&app).await == 0 }).await;
    assert!(cancelled, "an abandoned statement still runs");
    locker.batch_execute("COMMIT").await.unwrap();
    // Both pooled connections were in use: none is handed out still busy.
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(app.get("/tasks").await.status, 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

async fn spawn_app_small_pool() -> TestApp {
    crate::helpers::spawn_app_with(&[("DATABASE_POOL_SIZE", "2")]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_refused_row_is_retried_alone_and_other_failures_fail_once() {
    let app = spawn_app().await;
    // Not about any row: inserting is denied (as a revoked privilege would be; the
    // test runs as a superuser, whom privileges do not bind, so a trigger says it).
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION deny() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'permission denied for table tasks'
                    USING ERRCODE = 'insufficient_privilege'; END $$;
             CREATE TRIGGER deny BEFORE INSERT ON tasks
                 FOR EACH STATEMENT EXECUTE FUNCTION deny();",
        )
        .await
        .unwrap();
    let responses = all_at_once(
        (0..64).map(|n| post_task(app.addr, json!({"title": format!("denied {n}")}))).collect(),
    )
    .await;
    for response in &responses {
        assert_eq!(response.status, 500, "{}", response.body);
    }
    assert_eq!(app.row_count().await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = app.output();
    assert!(output.contains("42501"), "{output}");
    assert!(!output.contains("one by one"), "fell back row by row:\n{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn past_capacity_a_newcomer_is_turned_away_at_once_and_nothing_is_lost() {
    let app = spawn_app().await;
    app.slow_down("INSERT", 3.0).await;
    // Creates stuck behind a stalled insert: both lanes busy, and more than a batch per
    // lane queued behind them.
    let stuck: Vec<_> = (0..600)
        .map(|n| tokio::spawn(post_task(app.addr, json!({"title": format!("stuck {n}")}))))
        .collect();
    // The queue has not moved for longer than the server lets a request wait in it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = Instant::now();
    let newcomer = post_task(app.addr, json!({"title": "newcomer"})).await;
    let took = started.elapsed();
    assert_eq!(newcomer.status, 503, "{}", newcomer.body);
    assert_eq!(newcomer.header("retry-after"), Some("1"));
    assert!(newcomer.detail().contains("capacity"), "{}", newcomer.detail());
    assert!(took < Duration::from_secs(1), "turned away after {took:?}");
    // The ones already queued get their verdict, and each verdict holds.
    let client = app.db.client().await;
    for (n, waiter) in stuck.into_iter().enumerate() {
        let response = waiter.await.unwrap();
        let stored: i64 = client
            .query_one("SELECT count(*) FROM tasks WHERE title = $1", &[&format!("stuck {n}")])
            .await
            .unwrap()
            .get(0);
        match response.status {
            201 => assert_eq!(stored, 1, "stuck {n}: 201 but not stored"),
            503 => assert_eq!(stored, 0, "stuck {n}: 503 but stored"),
            other => panic!("stuck {n}: {other} {}", response.body),
        }
    }
    let newcomer_stored: i64 = client
        .query_one("SELECT count(*) FROM tasks WHERE title = 'newcomer'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(newcomer_stored, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_stall_turns_away_no_list_of_a_few_dozen_clients() {
    // A brief lock (a migration's, a replica just started and still slow) is not capacity:
    // lists are batched 8 at a time, yet shed no sooner than the other queries.
    let app = spawn_app().await;
    let locker = app.db.client().await;
    locker.batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let list = |addr| tokio::spawn(crate::helpers::send(addr, Method::GET, "/tasks", &[], ""));
    // Both lanes' batches wait on the lock, with more than 8 a lane queued behind them ...
    let mut waiting: Vec<_> = (0..40).map(|_| list(app.addr)).collect();
    // ... for longer than a queue past capacity may stand still; then more come.
    tokio::time::sleep(Duration::from_millis(600)).await;
    waiting.extend((0..24).map(|_| list(app.addr)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    for waiter in waiting {
        let response = waiter.await.unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
    }
}

/// Sessions PostgreSQL has opened on the test's database so far, asked on `client`.
async fn sessions_opened(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT sessions FROM pg_stat_database WHERE datname = current_database()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_leave_mid_read_give_their_connections_back_to_the_pool() {
    let app = spawn_app_small_pool().await;
    // Both pooled connections open and idle.
    let addr = app.addr;
    let reads =
        (0..8).map(|_| crate::helpers::send(addr, Method::GET, "/tasks?limit=1000", &[], ""));
    all_at_once(reads.collect()).await;
    let (locker, watcher) = (app.db.client().await, app.db.client().await);
    let before = sessions_opened(&watcher).await;
    locker.batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE").await.unwrap();
    // Twenty reads in turn, each waiting on the lock until its client hangs up.
    for _ in 0..20 {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            try_send(app.addr, Method::GET, "/tasks?limit=1000", &[], ""),
        )
        .await;
        assert!(gave_up.is_err(), "answered while the table was locked");
        let idle = wait_until(Duration::from_secs(3), || async {
            let row = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                       AND application_name = 'task-api' AND state = 'active'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0) == 0
        })
        .await;
        assert!(idle, "an abandoned statement still runs");
    }
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(app.get("/tasks?limit=1000").await.status, 200);
    // Each cancelled read gave its connection back: no new session was needed.
    let opened = sessions_opened(&watcher).await - before;
    assert_eq!(opened, 0, "new sessions for 20 abandoned reads:\n{}", app.output());
}
