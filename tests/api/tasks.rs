//! The task routes as a client uses them (spec §1–2): every success path, the
//! validation edges, PATCH and `updated_at`, ordering and pagination, request ids.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, send_raw, spawn_app};

/// `2026-11-22T14:05:09.123456Z`: RFC 3339, UTC, `Z`, six fractional digits.
fn assert_timestamp(value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("not a string: {value}"));
    let shape: String = text.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999999Z", "{text}");
}

fn ids(tasks: &Value) -> Vec<i64> {
    tasks.as_array().expect("an array").iter().map(|t| t["id"].as_i64().unwrap()).collect()
}

async fn seed(app: &TestApp, count: usize) {
    let client = app.db.client().await;
    let sql = "INSERT INTO tasks (title, status) SELECT 'task ' || g, \
               (ARRAY['pending','in_progress','completed'])[1 + g % 3] FROM generate_series(1, $1) g";
    client.execute(sql, &[&(count as i32)]).await.unwrap();
}

#[tokio::test]
async fn create_returns_201_the_task_and_its_location() {
    let app = spawn_app().await;
    let response = app.post("/tasks", r#"{"title":"Write the spec"}"#).await;
    assert_eq!(response.status, 201, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let task = response.json();
    let id = task["id"].as_i64().expect("an integer id");
    assert!(id > 0);
    assert_eq!(response.header("location"), Some(format!("/tasks/{id}").as_str()));
    assert_eq!(task["title"], "Write the spec");
    assert_eq!(task["description"], Value::Null);
    assert_eq!(task["status"], "pending");
    assert_timestamp(&task["created_at"]);
    assert_eq!(task["created_at"], task["updated_at"]);
    let keys: Vec<&str> = task.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn create_takes_description_and_status() {
    let app = spawn_app().await;
    let task =
        app.create_task(json!({"title": "t", "description": "d", "status": "in_progress"})).await;
    assert_eq!(
        (task["description"].as_str(), task["status"].as_str()),
        (Some("d"), Some("in_progress"))
    );
    let task = app.create_task(json!({"title": "t", "description": null})).await;
    assert_eq!(task["description"], Value::Null);
}

#[tokio::test]
async fn get_returns_what_create_returned() {
    let app = spawn_app().await;
    let created = app.create_task(json!({"title": "read me", "description": "ünïcödé 🦀"})).await;
    let response = app.get(&format!("/tasks/{}", created["id"])).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), created);
}

#[tokio::test]
async fn missing_task_is_404_task_not_found_on_every_method() {
    let app = spawn_app().await;
    for response in [
        app.get("/tasks/999").await,
        app.patch("/tasks/999", r#"{"title":"x"}"#).await,
        app.delete("/tasks/999").await,
    ] {
        assert_eq!(response.status, 404);
        assert_eq!(response.json(), json!({"detail": "Task not found"}));
    }
    assert_eq!(app.get("/tasks/9223372036854775807").await.status, 404);
}

#[tokio::test]
async fn list_is_ordered_by_id_and_paginates() {
    let app = spawn_app().await;
    assert_eq!(app.get("/tasks").await.json(), json!([]));
    for title in ["c", "a", "b", "e", "d"] {
        app.create_task(json!({"title": title})).await;
    }
    let all = app.get("/tasks").await.json();
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 5);
    assert!(all_ids.windows(2).all(|w| w[0] < w[1]), "{all_ids:?}");
    assert_eq!(all[0]["title"], "c");
    assert_eq!(ids(&app.get("/tasks?limit=2&offset=1").await.json()), all_ids[1..3]);
    assert_eq!(ids(&app.get("/tasks?offset=4").await.json()), all_ids[4..]);
    // Parameters it does not know are ignored.
    assert_eq!(ids(&app.get("/tasks?limit=2&offset=1&sort=title").await.json()), all_ids[1..3]);
    assert_eq!(app.get("/tasks?offset=5").await.json(), json!([]));
    assert_eq!(app.get("/tasks?offset=9223372036854775807").await.json(), json!([]));
}

#[tokio::test]
async fn list_defaults_to_100_and_allows_up_to_1000() {
    let app = spawn_app().await;
    seed(&app, 1005).await;
    assert_eq!(ids(&app.get("/tasks").await.json()), (1..=100).collect::<Vec<_>>());
    assert_eq!(ids(&app.get("/tasks?limit=1000").await.json()).len(), 1000);
    assert_eq!(ids(&app.get("/tasks?limit=1&offset=1004").await.json()), [1005]);
}

#[tokio::test]
async fn a_long_page_streams_whole_and_in_order() {
    let app = spawn_app().await;
    seed(&app, 1005).await;
    // Far past one chunk: sent chunked, and still one JSON array of exactly its tasks.
    let page = app.get("/tasks?limit=1000&offset=3").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("application/json"));
    assert_eq!(page.header("transfer-encoding"), Some("chunked"));
    assert_eq!(ids(&page.json()), (4..=1003).collect::<Vec<_>>());
    let completed = app.get("/tasks?status=completed&limit=300&offset=10").await;
    let completed_ids = ids(&completed.json());
    let expected: Vec<i64> = (1..=1005).filter(|id| id % 3 == 2).skip(10).take(300).collect();
    assert_eq!(completed_ids, expected);
    // A page that ends on a chunk's last row is not short of its end.
    assert_eq!(
        ids(&app.get("/tasks?limit=64&offset=941").await.json()),
        (942..=1005).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn list_filters_by_status() {
    let app = spawn_app().await;
    seed(&app, 9).await;
    let done = app.get("/tasks?status=completed").await.json();
    assert_eq!(ids(&done), [2, 5, 8]);
    assert!(done.as_array().unwrap().iter().all(|t| t["status"] == "completed"));
    assert_eq!(ids(&app.get("/tasks?status=in_progress&limit=2&offset=1").await.json()), [4, 7]);
    assert_eq!(ids(&app.get("/tasks?status=in%5Fprogress&limit=1").await.json()), [1]);
}

#[tokio::test]
async fn timestamps_keep_six_digits_when_the_microseconds_end_in_zero() {
    let app = spawn_app().await;
    let client = app.db.client().await;
    let sql = "INSERT INTO tasks (title, created_at, updated_at) \
               VALUES ('t', '2026-11-22T14:05:09.1Z', '2026-11-22T14:05:10Z') RETURNING id";
    let id: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
    let task = app.get(&format!("/tasks/{id}")).await.json();
    assert_eq!(task["created_at"], "2026-11-22T14:05:09.100000Z");
    assert_eq!(task["updated_at"], "2026-11-22T14:05:10.000000Z");
}

#[tokio::test]
async fn patch_changes_only_the_fields_given_and_moves_updated_at() {
    let app = spawn_app().await;
    let created = app.create_task(json!({"title": "old", "description": "keep"})).await;
    let path = format!("/tasks/{}", created["id"]);
    let response = app.patch(&path, r#"{"status":"completed"}"#).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let patched = response.json();
    assert_eq!(patched["status"], "completed");
    assert_eq!(patched["title"], "old");
    assert_eq!(patched["description"], "keep");
    assert_eq!(patched["created_at"], created["created_at"]);
    assert_timestamp(&patched["updated_at"]);
    assert!(patched["updated_at"].as_str() > created["updated_at"].as_str());
    assert_eq!(app.get(&path).await.json(), patched);
}

#[tokio::test]
async fn patch_with_empty_body_keeps_updated_at() {
    let app = spawn_app().await;
    let created = app.create_task(json!({"title": "still"})).await;
    let response = app.patch(&format!("/tasks/{}", created["id"]), "{}").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), created);
}

#[tokio::test]
async fn patch_with_the_same_values_keeps_updated_at() {
    let app = spawn_app().await;
    let created = app.create_task(json!({"title": "same", "status": "pending"})).await;
    let body = json!({"title": "same", "status": "pending", "description": null}).to_string();
    let response = app.patch(&format!("/tasks/{}", created["id"]), &body).await;
    assert_eq!(response.json(), created);
}

#[tokio::test]
async fn patch_description_null_clears_it_and_absent_keeps_it() {
    let app = spawn_app().await;
    let created = app.create_task(json!({"title": "t", "description": "d"})).await;
    let path = format!("/tasks/{}", created["id"]);
    assert_eq!(app.patch(&path, r#"{"title":"u"}"#).await.json()["description"], "d");
    let cleared = app.patch(&path, r#"{"description":null}"#).await.json();
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["title"], "u");
}

#[tokio::test]
async fn invalid_patch_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let created = app.create_task(json!({"title": "t"})).await;
    let path = format!("/tasks/{}", created["id"]);
    for (body, detail) in [
        (r#"{"title":""}"#, "title: must not be empty"),
        (r#"{"title":null}"#, "title: must be a string"),
        (
            r#"{"status":"done","title":"new"}"#,
            "status: must be one of pending, in_progress, completed",
        ),
        (r#"{"status":null}"#, "status: must be one of pending, in_progress, completed"),
        (r#"{"id":5}"#, "id: unknown field"),
        (r#"{"created_at":"2020-01-01T00:00:00Z"}"#, "created_at: unknown field"),
    ] {
        let response = app.patch(&path, body).await;
        assert_eq!((response.status, response.detail()), (422, detail.to_owned()), "{body}");
    }
    assert_eq!(app.get(&path).await.json(), created);
}

#[tokio::test]
async fn delete_returns_204_with_no_body_and_the_task_is_gone() {
    let app = spawn_app().await;
    let keep = app.create_task(json!({"title": "keep"})).await;
    let gone = app.create_task(json!({"title": "gone"})).await;
    let response = app.delete(&format!("/tasks/{}", gone["id"])).await;
    assert_eq!(response.status, 204);
    assert_eq!(response.body, "");
    assert_eq!(response.header("content-type"), None);
    assert_eq!(app.get(&format!("/tasks/{}", gone["id"])).await.status, 404);
    assert_eq!(app.delete(&format!("/tasks/{}", gone["id"])).await.status, 404);
    assert_eq!(ids(&app.get("/tasks").await.json()), [keep["id"].as_i64().unwrap()]);
}

#[tokio::test]
async fn title_and_description_limits_count_characters_not_bytes() {
    let app = spawn_app().await;
    for ok in [
        json!({"title": "a".repeat(200)}),
        json!({"title": "é".repeat(200)}),
        json!({"title": "🦀".repeat(200)}),
        json!({"title": " x "}),
        json!({"title": "t", "description": "d".repeat(5000)}),
        json!({"title": "t", "description": "ж".repeat(5000)}),
        json!({"title": "t", "description": ""}),
    ] {
        let task = app.create_task(ok.clone()).await;
        assert_eq!(task["title"], ok["title"]);
    }
    assert_eq!(app.row_count().await, 7);
}

#[tokio::test]
async fn invalid_tasks_are_422_naming_the_field_and_store_nothing() {
    let app = spawn_app().await;
    for (body, detail) in [
        (json!({}), "title: field required"),
        (json!({"title": ""}), "title: must not be empty"),
        (json!({"title": "  \t\n "}), "title: must not be empty"),
        (json!({"title": "a".repeat(201)}), "title: must be at most 200 characters"),
        (json!({"title": "🦀".repeat(201)}), "title: must be at most 200 characters"),
        (json!({"title": 42}), "title: must be a string"),
        (json!({"title": ["a"]}), "title: must be a string"),
        (json!({"title": null}), "title: must be a string"),
        (json!({"title": "a\u{0}b"}), "title: must not contain NUL characters"),
        (
            json!({"title": "t", "description": "d".repeat(5001)}),
            "description: must be at most 5000 characters",
        ),
        (json!({"title": "t", "description": 7}), "description: must be a string or null"),
        (
            json!({"title": "t", "description": "\u{0}"}),
            "description: must not contain NUL characters",
        ),
        (
            json!({"title": "t", "status": "done"}),
            "status: must be one of pending, in_progress, completed",
        ),
        (
            json!({"title": "t", "status": "PENDING"}),
            "status: must be one of pending, in_progress, completed",
        ),
        (
            json!({"title": "t", "status": 1}),
            "status: must be one of pending, in_progress, completed",
        ),
        (json!({"title": "t", "owner": "me"}), "owner: unknown field"),
    ] {
        let response = app.post("/tasks", &body.to_string()).await;
        assert_eq!(response.status, 422, "{body}: {}", response.body);
        assert_eq!(response.detail(), detail, "{body}");
    }
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn bad_query_parameters_and_ids_are_422_naming_them() {
    let app = spawn_app().await;
    for (path, field) in [
        ("/tasks?limit=0", "limit"),
        ("/tasks?limit=1001", "limit"),
        ("/tasks?limit=-5", "limit"),
        ("/tasks?limit=ten", "limit"),
        ("/tasks?limit=%2B5", "limit"),
        ("/tasks?limit=", "limit"),
        ("/tasks?offset=-1", "offset"),
        ("/tasks?offset=1.5", "offset"),
        ("/tasks?offset=%2B1", "offset"),
        ("/tasks?status=done", "status"),
        ("/tasks/0", "id"),
        ("/tasks/-1", "id"),
        ("/tasks/abc", "id"),
        ("/tasks/1.0", "id"),
        ("/tasks/+1", "id"),
        ("/tasks/9223372036854775808", "id"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status, 422, "{path}: {}", response.body);
        assert!(response.detail().starts_with(&format!("{field}: ")), "{path}: {}", response.body);
    }
    let response = app.request(Method::DELETE, "/tasks/x", &[], "").await;
    assert_eq!((response.status, response.detail().starts_with("id: ")), (422, true));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_sane_one_is_kept() {
    let app = spawn_app().await;
    let mut seen = Vec::new();
    for response in [
        app.get("/health").await,
        app.get("/tasks").await,
        app.get("/tasks/1").await,
        app.get("/nowhere").await,
        app.post("/tasks", "{}").await,
        app.request(Method::PUT, "/tasks", &[], "").await,
    ] {
        let id = response.header("x-request-id").expect("x-request-id").to_owned();
        assert!(!id.is_empty() && !seen.contains(&id), "{id}");
        seen.push(id);
    }
    let long_but_fine = "r".repeat(128);
    for kept in ["abc-123", "trace 42/7", long_but_fine.as_str()] {
        let response = app.request(Method::GET, "/health", &[("x-request-id", kept)], "").await;
        assert_eq!(response.header("x-request-id"), Some(kept));
    }
    // Empty, too long, or not printable ASCII: a new UUID instead.
    let too_long = "r".repeat(129);
    for bad in ["", "a\tb", too_long.as_str()] {
        let response = app.request(Method::GET, "/health", &[("x-request-id", bad)], "").await;
        let minted = response.header("x-request-id").unwrap();
        assert_eq!(minted.len(), 36, "{bad:?}: {minted}");
    }
    let request = "GET /health HTTP/1.1\r\nhost: x\r\nx-request-id: caf\u{e9}\r\n\r\n";
    let raw = send_raw(app.addr, request.as_bytes(), Duration::from_secs(2)).await;
    let minted = raw.lines().find_map(|line| line.strip_prefix("x-request-id: "));
    assert_eq!(minted.map(str::len), Some(36), "{raw}");
}

#[tokio::test]
async fn health_and_ready_report_as_the_spec_shows() {
    let app = spawn_app().await;
    let health = app.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(
        health.body,
        format!(
            r#"{{"status":"healthy","service":"task-api","version":"{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )
    );
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, r#"{"status":"ready","checks":{"database":"ok"}}"#);
}
