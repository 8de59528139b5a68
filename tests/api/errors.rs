//! The error table of spec §2, row by row, as a client meets it: 400, 404, 405 +
//! `allow`, 413 (refused unread), 415, and a 500 that says nothing internal.

use std::time::Duration;

use hyper::Method;
use serde_json::json;

use crate::helpers::{TestResponse, all_at_once, post_task, send_raw, spawn_app};

fn assert_error(response: &TestResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    let detail = body["detail"].as_str().unwrap_or_else(|| panic!("no detail: {}", response.body));
    assert!(!detail.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 1, "{}", response.body);
}

#[tokio::test]
async fn body_that_is_not_a_json_object_is_400_and_stores_nothing() {
    let app = spawn_app().await;
    for body in
        ["{", "", "not json", r#"{"title": "x",}"#, "[1]", r#"["title"]"#, r#""x""#, "null", "42"]
    {
        let response = app.post("/tasks", body).await;
        assert_error(&response, 400);
        let detail = response.detail();
        assert!(detail.contains("JSON"), "{body:?}: {detail}");
    }
    let created = app.create_task(json!({"title": "t"})).await;
    let response = app.patch(&format!("/tasks/{}", created["id"]), "[]").await;
    assert_error(&response, 400);
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn unknown_paths_are_404_not_found() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/nope",
        "/tasks/1/extra",
        "/task",
        "/tasks/",
        "//tasks",
        "/health/",
        "/health/x",
        "/TASKS",
    ] {
        let response = app.get(path).await;
        assert_error(&response, 404);
        assert_eq!(response.detail(), "Not Found", "{path}");
    }
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::PUT, "/tasks", "GET, POST"),
        (Method::DELETE, "/tasks", "GET, POST"),
        (Method::POST, "/tasks/1", "GET, PATCH, DELETE"),
        (Method::PUT, "/tasks/1", "GET, PATCH, DELETE"),
        (Method::POST, "/health", "GET"),
        (Method::DELETE, "/ready", "GET"),
    ] {
        let response = app.request(method.clone(), path, &[], "").await;
        assert_error(&response, 405);
        assert_eq!(response.header("allow"), Some(allow), "{method} {path}");
    }
}

#[tokio::test]
async fn declared_body_over_64_kib_is_refused_before_it_is_sent() {
    let app = spawn_app().await;
    // Headers only: the server must answer without waiting for the 1 MB it was promised.
    let request = b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                    Content-Length: 1000000\r\n\r\n";
    let response = send_raw(app.addr, request, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains(r#"{"detail":"#), "{response}");
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn chunked_body_over_64_kib_is_413_and_stores_nothing() {
    let app = spawn_app().await;
    let description = "d".repeat(70 * 1024);
    let body = format!(r#"{{"title":"big","description":"{description}"}}"#);
    let mut request = b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for chunk in body.as_bytes().chunks(8192) {
        request.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    let response = send_raw(app.addr, &request, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_read() {
    let app = spawn_app().await;
    let mut body = r#"{"title":"padded"}"#.to_owned();
    body.push_str(&" ".repeat(64 * 1024 - body.len()));
    assert_eq!(app.post("/tasks", &body).await.status, 201);
    body.push(' ');
    assert_error(&app.post("/tasks", &body).await, 413);
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn body_without_application_json_is_415() {
    let app = spawn_app().await;
    let body = r#"{"title":"t"}"#;
    for headers in [
        &[][..],
        &[("content-type", "text/plain")][..],
        &[("content-type", "application/x-www-form-urlencoded")][..],
        &[("content-type", "application/jsonx")][..],
    ] {
        assert_error(&app.request(Method::POST, "/tasks", headers, body).await, 415);
    }
    let created = app.create_task(json!({"title": "t"})).await;
    let path = format!("/tasks/{}", created["id"]);
    assert_error(
        &app.request(Method::PATCH, &path, &[("content-type", "text/plain")], body).await,
        415,
    );
    assert_eq!(app.row_count().await, 1);
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let response =
            app.request(Method::POST, "/tasks", &[("content-type", content_type)], body).await;
        assert_eq!(response.status, 201, "{content_type}");
    }
}

#[tokio::test]
async fn a_fatal_database_error_is_500_and_says_nothing_internal() {
    let app = spawn_app().await;
    app.create_task(json!({"title": "before"})).await;
    let client = app.db.client().await;
    client.batch_execute("ALTER TABLE tasks RENAME COLUMN title TO headline").await.unwrap();
    for response in [
        app.get("/tasks").await,
        app.post("/tasks", r#"{"title":"t"}"#).await,
        app.get("/tasks/1").await,
    ] {
        assert_error(&response, 500);
        assert_eq!(response.detail(), "Internal server error");
        let id = response.header("x-request-id").unwrap().to_owned();
        let body = response.body.to_lowercase();
        for leak in ["column", "title", "headline", "sql", "postgres", "tasks", "select"] {
            assert!(!body.contains(leak), "{leak} leaked: {body}");
        }
        // The log says everything, under the same request id.
        let logged = app.output();
        assert!(logged.contains(&format!("request_id={id} internal error")), "{logged}");
    }
}

#[tokio::test]
async fn a_check_constraint_the_validation_missed_is_422_naming_the_field() {
    let app = spawn_app().await;
    let client = app.db.client().await;
    // Tighten the table behind the binary's back: the backstop must still name the field.
    client
        .batch_execute(
            "ALTER TABLE tasks DROP CONSTRAINT tasks_title_check, \
             ADD CONSTRAINT tasks_title_check CHECK (char_length(title) <= 3)",
        )
        .await
        .unwrap();
    let response = app.post("/tasks", r#"{"title":"too long now"}"#).await;
    assert_error(&response, 422);
    assert!(response.detail().starts_with("title: "), "{}", response.body);
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn a_row_the_database_refuses_is_never_quoted_in_the_log() {
    let app = spawn_app().await;
    // A rule a newer schema might add. PostgreSQL's error DETAIL quotes the row
    // ("Key (title)=(…) already exists"): the request body, which the log never holds.
    let client = app.db.client().await;
    client.batch_execute("CREATE UNIQUE INDEX tasks_title_unique ON tasks (title)").await.unwrap();
    let body = json!({"title": "secret-title-8c1f", "description": "private-note-77"});
    app.create_task(body.clone()).await;
    let again = app.post("/tasks", &body.to_string()).await;
    assert_error(&again, 500);
    assert_eq!(again.detail(), "Internal server error");
    // Ten at once: a batch holding two of them is refused as a whole, then each row is
    // inserted alone (src/store/tasks.rs); the log must stay as quiet about them.
    let requests = (0..10)
        .map(|n| {
            post_task(
                app.addr,
                json!({"title": "shared-title-5e2a", "description": format!("private-{n}")}),
            )
        })
        .collect();
    let statuses: Vec<u16> = all_at_once(requests).await.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 9, "{statuses:?}");
    assert_eq!(app.row_count().await, 2);
    let logged = app.output();
    assert!(logged.contains("internal error: 23505"), "{logged}");
    for secret in ["secret-title-8c1f", "private-note-77", "shared-title-5e2a", "private-"] {
        assert!(!logged.contains(secret), "{secret} logged:\n{logged}");
    }
}

/// A raw response's status, its headers in lower case, and its body.
fn raw_parts(raw: &str) -> (u16, String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn a_request_head_over_16_kib_is_431_with_a_detail_and_a_request_id() {
    let app = spawn_app().await;
    let head = |header_bytes: usize| {
        let start = "GET /health HTTP/1.1\r\nhost: x\r\nx-pad: ";
        let pad = "a".repeat(header_bytes - start.len() - 4);
        format!("{start}{pad}\r\n\r\n")
    };
    // A head of exactly 16 KiB is read; one byte more is not, nor 100 KB.
    let (status, _, _) =
        raw_parts(&send_raw(app.addr, head(16 * 1024).as_bytes(), Duration::from_secs(2)).await);
    assert_eq!(status, 200);
    for bytes in [16 * 1024 + 1, 100_000] {
        let raw = send_raw(app.addr, head(bytes).as_bytes(), Duration::from_secs(5)).await;
        let (status, head, body) = raw_parts(&raw);
        assert_eq!(status, 431, "{bytes}: {raw:.200}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-request-id: "), "{head}");
        let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(detail["detail"].as_str().unwrap().contains("16384"), "{body}");
    }
    // The server is fine, and logged each refusal as a request.
    assert_eq!(app.get("/health").await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.output().matches(" - - 431 ").count(), 2, "{}", app.output());
}

#[tokio::test]
async fn a_header_hyper_cannot_parse_is_400_with_a_detail_a_request_id_and_an_access_line() {
    let app = spawn_app().await;
    for request in [
        &b"POST /tasks HTTP/1.1\r\nhost: x\r\nidempotency-key: a\x01b\r\ncontent-length: 2\r\n\r\n{}"[..],
        b"GET /health HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nbad\x7f: 1\r\n\r\n",
    ] {
        let raw = send_raw(app.addr, request, Duration::from_secs(5)).await;
        let last = raw.rfind("HTTP/1.1 ").unwrap();
        let (status, head, body) = raw_parts(&raw[last..]);
        assert_eq!(status, 400, "{raw}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-request-id: "), "{head}");
        let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(detail["detail"].is_string(), "{body}");
    }
    assert_eq!(app.row_count().await, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.output().matches(" - - 400 ").count(), 3, "{}", app.output());
}
