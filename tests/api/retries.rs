//! Safe retries and safe concurrent edits: `Idempotency-Key` on `POST /tasks`, and
//! ETags with `If-None-Match` / `If-Match` on a task. Each promise is tried the way the
//! world breaks it: a retry after a kill -9 or a database restart, sixteen clients
//! with one key, two editors with one ETag.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use crate::helpers::{
    PgServer, TestApp, TestResponse, all_at_once, send, spawn_app, spawn_app_with, spawn_server,
    wait_until,
};
use crate::metrics::scrape;

const JSON: (&str, &str) = ("content-type", "application/json");

async fn post_keyed(app: &TestApp, key: &str, body: &Value) -> TestResponse {
    app.request(Method::POST, "/tasks", &[JSON, ("idempotency-key", key)], body.to_string()).await
}

async fn keys_held(app: &TestApp) -> i64 {
    app.db
        .client()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM tasks WHERE idempotency_key IS NOT NULL)
                  + (SELECT count(*) FROM idempotency_keys)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_retried_create_is_answered_again_and_stores_nothing_new() {
    let app = spawn_app().await;
    let body = json!({"title": "pay invoice 42", "description": "once"});
    let first = post_keyed(&app, "8e03978e-40d5-43e8", &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    // The same object, keys in another order and other spacing: the same request.
    let again = app
        .request(
            Method::POST,
            "/tasks",
            &[JSON, ("idempotency-key", "\"8e03978e-40d5-43e8\"")],
            r#"{ "description": "once", "title": "pay invoice 42" }"#,
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(app.row_count().await, 1);
    // Even after the task changed, the key answers what it answered.
    let path = first.header("location").unwrap().to_owned();
    assert_eq!(app.patch(&path, r#"{"status":"completed"}"#).await.status, 200);
    assert_eq!(post_keyed(&app, "8e03978e-40d5-43e8", &body).await.body, first.body);
    // Another key is another create.
    assert_eq!(post_keyed(&app, "another", &body).await.status, 201);
    assert_eq!(app.row_count().await, 2);
}

#[tokio::test]
async fn a_key_used_for_another_body_is_422_and_stores_nothing() {
    let app = spawn_app().await;
    assert_eq!(post_keyed(&app, "k1", &json!({"title": "a"})).await.status, 201);
    let other = post_keyed(&app, "k1", &json!({"title": "b"})).await;
    assert_eq!(other.status, 422, "{}", other.body);
    let detail = other.detail();
    assert!(
        detail.starts_with("idempotency-key: ") && detail.contains("another request"),
        "{detail}"
    );
    assert_eq!(app.row_count().await, 1);
    // Keys that are not 1 to 255 printable ASCII characters are refused, naming the header.
    let long = "k".repeat(256);
    for key in ["", "caf\u{e9}", long.as_str(), "\"unterminated"] {
        let response = app
            .request(Method::POST, "/tasks", &[JSON, ("idempotency-key", key)], r#"{"title":"c"}"#)
            .await;
        assert_eq!(response.status, 422, "{key:?}: {}", response.body);
        assert!(response.detail().starts_with("idempotency-key: "), "{key:?}");
    }
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_clients_with_one_key_store_one_row() {
    let app = spawn_app().await;
    // Slow enough that all sixteen are in flight together, across batches and lanes.
    app.slow_down("INSERT", 0.3).await;
    let addr = app.addr;
    let requests = (0..16)
        .map(|_| async move {
            send(
                addr,
                Method::POST,
                "/tasks",
                &[JSON, ("idempotency-key", "same-key")],
                r#"{"title":"only once"}"#,
            )
            .await
        })
        .collect();
    let responses = all_at_once(requests).await;
    let mut ids = Vec::new();
    for response in &responses {
        assert_eq!(response.status, 201, "{}", response.body);
        ids.push(response.json()["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let replayed =
        responses.iter().filter(|r| r.header("idempotent-replayed") == Some("true")).count();
    assert_eq!(replayed, 15);
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_survives_kill_9_of_the_server_mid_request() {
    let mut app = spawn_app().await;
    app.slow_down("INSERT", 1.0).await;
    let addr = app.addr;
    let body = json!({"title": "survives"});
    let in_flight = tokio::spawn(crate::helpers::try_send(
        addr,
        Method::POST,
        "/tasks",
        &[JSON, ("idempotency-key", "kill-9")],
        body.to_string(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    crate::helpers::signal(&app.child, libc::SIGKILL);
    app.wait(Duration::from_secs(5)).await;
    assert!(in_flight.await.unwrap().is_err(), "answered before the kill");
    // The statement the server sent runs on without it, and commits.
    let settled = wait_until(Duration::from_secs(5), || async {
        app.db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'task-api'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
    assert!(settled);
    let url = app.db.url();
    let (_child, addr, _) = spawn_server(&[("DATABASE_URL", &url)]).await;
    let retry = send(
        addr,
        Method::POST,
        "/tasks",
        &[JSON, ("idempotency-key", "kill-9")],
        body.to_string(),
    )
    .await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(app.row_count().await, 1);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_survives_a_database_restart() {
    let pg = tokio::task::block_in_place(|| PgServer::start(None));
    let url = pg.url("127.0.0.1", "sslmode=disable");
    let (_child, addr, _) = spawn_server(&[("DATABASE_URL", &url)]).await;
    let post = || {
        send(
            addr,
            Method::POST,
            "/tasks",
            &[JSON, ("idempotency-key", "restart")],
            r#"{"title":"kept"}"#,
        )
    };
    let first = post().await;
    assert_eq!(first.status, 201, "{}", first.body);
    tokio::task::block_in_place(|| {
        pg.stop();
        pg.start_again(None);
    });
    let retried =
        wait_until(Duration::from_secs(10), || async { post().await.status == 201 }).await;
    assert!(retried, "no 201 after the restart");
    let again = post().await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    let client = crate::helpers::connect(&url).await;
    let rows: i64 = client.query_one("SELECT count(*) FROM tasks", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn keys_expire_after_their_ttl_and_are_pruned() {
    let app = spawn_app_with(&[("IDEMPOTENCY_KEY_TTL", "1")]).await;
    let body = json!({"title": "twice, a second apart"});
    let first = post_keyed(&app, "short-lived", &body).await;
    assert_eq!(first.status, 201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = post_keyed(&app, "short-lived", &body).await;
    assert_eq!(later.status, 201, "{}", later.body);
    assert_eq!(later.header("idempotent-replayed"), None);
    assert_ne!(later.json()["id"], first.json()["id"]);
    assert_eq!(app.row_count().await, 2);
    // Left alone, the key goes, and /metrics says how many are held (none).
    let pruned = wait_until(Duration::from_secs(5), || async { keys_held(&app).await == 0 }).await;
    assert!(pruned, "the expired key was never pruned");
    let counted = wait_until(Duration::from_secs(5), || async {
        let samples = scrape(&app).await;
        samples.get("task_api_idempotency_keys_held") == Some(&0.0)
    })
    .await;
    assert!(counted, "keys held never counted");
}

#[tokio::test]
async fn metrics_count_the_keys_held() {
    let app = spawn_app_with(&[("IDEMPOTENCY_KEY_TTL", "4")]).await;
    for n in 0..3 {
        let body = json!({ "title": format!("keyed {n}") });
        assert_eq!(post_keyed(&app, &format!("held-{n}"), &body).await.status, 201);
    }
    let deleted = post_keyed(&app, "held-deleted", &json!({"title": "gone"})).await;
    let path = deleted.header("location").unwrap().to_owned();
    assert_eq!(app.delete(&path).await.status, 204);
    // The pruner counts after each round (every 2 s here): three tasks' and one kept.
    let counted = wait_until(Duration::from_secs(6), || async {
        scrape(&app).await.get("task_api_idempotency_keys_held") == Some(&4.0)
    })
    .await;
    assert!(counted, "{:?}", scrape(&app).await.get("task_api_idempotency_keys_held"));
}

#[tokio::test]
async fn the_pruner_walks_past_many_tasks_and_keeps_the_keys_within_their_ttl() {
    // Tasks of long ago, more than one step of the walk: keyed, then a run without
    // keys, then keyed again; then tasks within the TTL (a day from now, so they stay
    // within it while the test runs), keyed or not.
    let app = spawn_app_with(&[("IDEMPOTENCY_KEY_TTL", "2")]).await;
    let insert = |first: i32, last: i32, keyed: bool, when: &'static str| {
        format!(
            "INSERT INTO tasks (title, idempotency_key, idempotency_fingerprint, created_at,
                                updated_at)
             SELECT 'old ' || g, CASE WHEN {keyed} THEN 'walk-' || g END,
                    CASE WHEN {keyed} THEN '\\x00'::bytea END, {when}, {when}
             FROM generate_series({first}, {last}) AS g"
        )
    };
    let client = app.db.client().await;
    let past = "now() - interval '1 hour'";
    let future = "now() + interval '1 day'";
    for sql in [
        insert(1, 15_000, true, past),
        insert(15_001, 40_000, false, past),
        insert(40_001, 42_000, true, past),
        insert(42_001, 42_010, true, future),
        insert(42_011, 42_020, false, future),
    ] {
        client.execute(&sql, &[]).await.unwrap();
    }
    assert_eq!(keys_held(&app).await, 17_010);
    let pruned =
        wait_until(Duration::from_secs(20), || async { keys_held(&app).await == 10 }).await;
    assert!(pruned, "{} keys held, not the 10 within the TTL", keys_held(&app).await);
    let fresh: i64 = client
        .query_one(
            "SELECT count(*) FROM tasks WHERE idempotency_key IS NOT NULL
             AND created_at > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fresh, 10);
    // Nothing else changed: every task is still there.
    assert_eq!(app.row_count().await, 42_020);
}

#[tokio::test]
async fn a_key_outlives_its_deleted_task_and_a_retry_stores_nothing() {
    let app = spawn_app().await;
    let body = json!({"title": "deleted, then retried"});
    let first = post_keyed(&app, "gone-then-retried", &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let location = first.header("location").unwrap().to_string();
    let deleted = app.request(Method::DELETE, &location, &[], "").await;
    assert_eq!(deleted.status, 204);
    let again = post_keyed(&app, "gone-then-retried", &body).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(app.row_count().await, 0, "the retry stored a task");
    let other = post_keyed(&app, "gone-then-retried", &json!({"title": "another"})).await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn an_expired_key_its_task_still_holds_is_let_go_and_used_again() {
    // The pruner waits half the TTL (a day) before its first round: the old task still
    // holds the key when it comes again.
    let app = spawn_app().await;
    let body = json!({"title": "a day and more ago"});
    let first = post_keyed(&app, "reused-after-a-day", &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    app.db
        .client()
        .await
        .execute(
            "UPDATE tasks SET created_at = created_at - interval '2 days',
                              updated_at = updated_at - interval '2 days'",
            &[],
        )
        .await
        .unwrap();
    let later = post_keyed(&app, "reused-after-a-day", &body).await;
    assert_eq!(later.status, 201, "{}", later.body);
    assert_eq!(later.header("idempotent-replayed"), None);
    assert_ne!(later.json()["id"], first.json()["id"]);
    assert_eq!(app.row_count().await, 2);
    // The new task holds the key now: a retry is its replay.
    let again = post_keyed(&app, "reused-after-a-day", &body).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], later.json()["id"]);
    assert_eq!(keys_held(&app).await, 1);
}

#[tokio::test]
async fn etags_name_versions_and_if_none_match_gives_304() {
    let app = spawn_app().await;
    let created = app.post("/tasks", r#"{"title":"cached"}"#).await;
    let etag = created.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let path = created.header("location").unwrap().to_owned();
    let got = app.get(&path).await;
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    let weak = format!("W/{etag}");
    for value in [etag.as_str(), weak.as_str(), "*", &format!("\"other\", {etag}")] {
        let response = app.request(Method::GET, &path, &[("if-none-match", value)], "").await;
        assert_eq!(response.status, 304, "{value}");
        assert_eq!(response.body, "");
        assert_eq!(response.header("etag"), Some(etag.as_str()));
    }
    // Another spelling of the same version is another tag: 200.
    for value in ["\"other\"".to_owned(), other_case(&etag), format!("\"00{}", &etag[1..])] {
        let response = app.request(Method::GET, &path, &[("if-none-match", &value)], "").await;
        assert_eq!(response.status, 200, "{value}");
    }
    // Not a list of entity tags (spec §2): 400, naming the header.
    let response = app.request(Method::GET, &path, &[("if-none-match", "not-an-etag")], "").await;
    assert_eq!(response.status, 400);
    assert!(response.detail().contains("if-none-match"), "{}", response.body);
    // A PATCH that changes nothing keeps the ETag; one that changes something moves it.
    let same = app.patch(&path, r#"{"title":"cached"}"#).await;
    assert_eq!(same.header("etag"), Some(etag.as_str()));
    let changed = app.patch(&path, r#"{"title":"changed"}"#).await;
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    let stale = app.request(Method::GET, &path, &[("if-none-match", etag.as_str())], "").await;
    assert_eq!(stale.status, 200);
}

#[tokio::test]
async fn if_match_guards_patch_and_delete() {
    let app = spawn_app().await;
    let created = app.post("/tasks", r#"{"title":"guarded"}"#).await;
    let etag = created.header("etag").unwrap().to_owned();
    let path = created.header("location").unwrap().to_owned();
    let patched = app
        .request(
            Method::PATCH,
            &path,
            &[JSON, ("if-match", etag.as_str())],
            r#"{"status":"in_progress"}"#,
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let new_etag = patched.header("etag").unwrap().to_owned();
    // The old ETag, and the current one weak, in other case, padded or signed, are all
    // stale: 412, nothing changes (tags compare byte for byte, spec §2).
    let weak = format!("W/{new_etag}");
    let upper = other_case(&new_etag);
    let padded = format!("\"00{}", &new_etag[1..]);
    let signed = format!("\"+{}", &new_etag[1..]);
    for stale in [&etag, &weak, &upper, &padded, &signed].map(String::as_str) {
        let response = app
            .request(Method::PATCH, &path, &[JSON, ("if-match", stale)], r#"{"title":"no"}"#)
            .await;
        assert_eq!(response.status, 412, "{stale}: {}", response.body);
        assert!(!response.detail().is_empty());
        let response = app.request(Method::DELETE, &path, &[("if-match", stale)], "").await;
        assert_eq!(response.status, 412, "{stale}");
    }
    assert_eq!(app.get(&path).await.json()["title"], "guarded");
    // Not a list of entity tags (RFC 9110 §8.8.3): 400 naming the header, nothing changes.
    for bad in ["garbage", r#""a"b"#, r#""a"#, r#"w/"a""#, r#""a b""#, r#""a""b""#] {
        for method in [Method::PATCH, Method::DELETE] {
            let response =
                app.request(method.clone(), &path, &[JSON, ("if-match", bad)], "{}").await;
            assert_eq!(response.status, 400, "{method} {bad}");
            assert_eq!(response.detail(), "if-match: not a list of entity tags");
        }
    }
    // `*` means "exists"; empty list elements are skipped, and one tag of ours is enough.
    let listed = format!(" , \"zz\" ,, {new_etag} ");
    for value in ["*", listed.as_str()] {
        let response = app.request(Method::PATCH, &path, &[JSON, ("if-match", value)], "{}").await;
        assert_eq!(response.status, 200, "{value}: {}", response.body);
    }
    let deleted = app.request(Method::DELETE, &path, &[("if-match", new_etag.as_str())], "").await;
    assert_eq!(deleted.status, 204);
    let gone = app.request(Method::DELETE, &path, &[("if-match", "*")], "").await;
    assert_eq!(gone.status, 412);
    assert_eq!(app.delete(&path).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_editors_with_one_etag_get_one_200_and_one_412() {
    let app = spawn_app().await;
    let created = app.post("/tasks", r#"{"title":"contended"}"#).await;
    let etag = created.header("etag").unwrap().to_owned();
    let path = created.header("location").unwrap().to_owned();
    // Both updates are in flight at once: the second waits for the first's row lock.
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$;
             CREATE TRIGGER slow BEFORE UPDATE ON tasks
                 FOR EACH ROW EXECUTE FUNCTION slow();",
        )
        .await
        .unwrap();
    let edit = |title: &'static str| {
        let (addr, path, etag) = (app.addr, path.clone(), etag.clone());
        async move {
            let body = json!({ "title": title }).to_string();
            send(addr, Method::PATCH, &path, &[JSON, ("if-match", &etag)], body).await
        }
    };
    let responses = all_at_once(vec![edit("alice"), edit("bob")]).await;
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412]);
    let winner = responses.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(app.get(&path).await.json()["title"], winner.json()["title"]);
}

#[tokio::test]
async fn if_match_and_if_none_match_hold_at_most_16_distinct_tags() {
    let app = spawn_app().await;
    let created = app.post("/tasks", r#"{"title":"listed"}"#).await;
    let etag = created.header("etag").unwrap().to_owned();
    let path = created.header("location").unwrap().to_owned();
    let others = |n: usize| (0..n).map(|i| format!("\"{i:x}0\"")).collect::<Vec<_>>();
    // Fifteen others, the current tag last, and every one of them twice, on two header
    // lines (one list, RFC 9110 §5.3): 16 distinct.
    let mut sixteen = others(15);
    sixteen.push(etag.clone());
    let sixteen = sixteen.join(", ");
    let twice = |name| [(name, sixteen.as_str()), (name, sixteen.as_str())];
    let response = app.request(Method::GET, &path, &twice("if-none-match"), "").await;
    assert_eq!(response.status, 304);
    let [first, second] = twice("if-match");
    let patched = app
        .request(Method::PATCH, &path, &[JSON, first, second], r#"{"status":"completed"}"#)
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    // Seventeen distinct: 400 naming the header, whatever the method; nothing changes.
    let current = patched.header("etag").unwrap().to_owned();
    let mut seventeen = others(16);
    seventeen.push(current);
    let seventeen = seventeen.join(", ");
    for (method, header) in
        [(Method::GET, "if-none-match"), (Method::PATCH, "if-match"), (Method::DELETE, "if-match")]
    {
        let response = app
            .request(
                method.clone(),
                &path,
                &[JSON, (header, seventeen.as_str())],
                r#"{"title":"no"}"#,
            )
            .await;
        assert_eq!(response.status, 400, "{method}: {}", response.body);
        assert!(response.detail().contains(header), "{}", response.body);
    }
    let task = app.get(&path).await.json();
    assert_eq!(
        (task["title"].as_str(), task["status"].as_str()),
        (Some("listed"), Some("completed"))
    );
}

#[tokio::test]
async fn a_retry_that_differs_only_by_a_default_or_a_null_description_replays() {
    let app = spawn_app().await;
    let post = |body: &'static str| {
        app.request(Method::POST, "/tasks", &[JSON, ("idempotency-key", "defaults")], body)
    };
    let first = post(r#"{"title":"a"}"#).await;
    assert_eq!(first.status, 201);
    for same in [
        r#"{"title":"a","status":"pending"}"#,
        r#"{"title":"a","description":null}"#,
        r#"{"description":null,"status":"pending","title":"a"}"#,
    ] {
        let again = post(same).await;
        assert_eq!(again.status, 201, "{same}: {}", again.body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{same}");
        assert_eq!(again.json()["id"], first.json()["id"], "{same}");
    }
    for other in [r#"{"title":"a","status":"completed"}"#, r#"{"title":"a","description":""}"#] {
        let refused = post(other).await;
        assert_eq!(refused.status, 422, "{other}: {}", refused.body);
    }
    assert_eq!(app.row_count().await, 1);
}

/// `tag` spelt in upper case: another tag for the same version. A hex tag with no letter (about
/// one in 450) has no other case, so a zero-padded spelling stands in for it.
fn other_case(tag: &str) -> String {
    let upper = tag.to_uppercase();
    if upper == tag { format!("\"0{}", &tag[1..]) } else { upper }
}
