//! Many clients at once. Concurrent requests of one kind share statements
//! (src/store/batcher.rs); each client must still get exactly its own answer, and a row the
//! database refuses must fail alone.

use std::net::SocketAddr;

use hyper::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse, all_at_once, post_task, send, spawn_app};
use crate::metrics::{scrape, value};

async fn get(addr: SocketAddr, path: String) -> TestResponse {
    send(addr, Method::GET, &path, &[], "").await
}

/// Requests served by batched statements of `query`, and how many statements served them.
async fn batches(app: &TestApp, query: &str) -> (f64, f64) {
    let samples = scrape(app).await;
    let requests = value(&samples, &format!(r#"task_api_db_batch_size_sum{{query="{query}"}}"#));
    let statements =
        value(&samples, &format!(r#"task_api_db_batch_size_count{{query="{query}"}}"#));
    (requests, statements)
}

fn body(n: usize) -> Value {
    let status = ["pending", "in_progress", "completed"][n % 3];
    let description = n.is_multiple_of(2).then(|| format!("about task {n}"));
    json!({"title": format!("task {n}"), "description": description, "status": status})
}

#[tokio::test]
async fn concurrent_creates_and_gets_each_answer_their_own_request() {
    let app = spawn_app().await;
    const CREATES: usize = 200;

    let created = all_at_once((0..CREATES).map(|n| post_task(app.addr, body(n))).collect()).await;
    let mut ids = Vec::new();
    for (n, response) in created.iter().enumerate() {
        assert_eq!(response.status, 201, "{}", response.body);
        let task = response.json();
        for field in ["title", "description", "status"] {
            assert_eq!(task[field], body(n)[field], "task {n}: {task}");
        }
        let id = task["id"].as_i64().unwrap();
        assert_eq!(response.header("location"), Some(&*format!("/tasks/{id}")));
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), CREATES, "every create made its own row");
    assert_eq!(app.row_count().await, CREATES as i64);

    // Each task read back, repeated ids and missing ones mixed in.
    let missing = ids.last().unwrap() + 1;
    let mut paths: Vec<(String, Option<&Value>)> = Vec::new();
    let tasks: Vec<Value> = created.iter().map(TestResponse::json).collect();
    for task in tasks.iter().chain(tasks.iter().step_by(7)) {
        paths.push((format!("/tasks/{}", task["id"]), Some(task)));
    }
    for offset in 0..40 {
        paths.insert(offset * 5, (format!("/tasks/{}", missing + offset as i64), None));
    }
    let requests = paths.iter().map(|(path, _)| get(app.addr, path.clone())).collect();
    for ((path, expected), response) in paths.iter().zip(all_at_once(requests).await) {
        match expected {
            Some(task) => {
                assert_eq!(response.status, 200, "{path}: {}", response.body);
                assert_eq!(&response.json(), *task, "{path}");
            }
            None => {
                assert_eq!(response.status, 404, "{path}: {}", response.body);
                assert_eq!(response.detail(), "Task not found");
            }
        }
    }

    // Both went through batches, and some batch served more than one request.
    let (inserted, insert_statements) = batches(&app, "insert").await;
    assert_eq!(inserted, CREATES as f64);
    assert!(insert_statements < inserted, "no insert was batched");
    let (found, find_statements) = batches(&app, "find").await;
    assert_eq!(found, paths.len() as f64);
    assert!(find_statements < found, "no lookup was batched");
}

#[tokio::test]
async fn concurrent_pages_each_get_their_own_tasks() {
    let app = spawn_app().await;
    const TASKS: usize = 90;
    for n in 0..TASKS {
        assert_eq!(post_task(app.addr, body(n)).await.status, 201);
    }
    let all = get(app.addr, "/tasks?limit=1000".into()).await.json();
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), TASKS);

    // Pages of every shape at once: with and without a status, with an offset (read
    // alone) and without (batched), limits past a chunk (32 rows), and past the end.
    let statuses = [None, Some("pending"), Some("in_progress"), Some("completed")];
    let mut pages: Vec<(String, Vec<Value>)> = Vec::new();
    for n in 0..160usize {
        let limit = 1 + n * 7 % 50;
        let offset = if n % 2 == 0 { 0 } else { n * 11 % 95 };
        let status = statuses[n / 2 % 4];
        let mut path = format!("/tasks?limit={limit}&offset={offset}");
        if let Some(status) = status {
            path.push_str(&format!("&status={status}"));
        }
        let expected = all
            .iter()
            .filter(|task| status.is_none_or(|status| task["status"] == status))
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        pages.push((path, expected));
    }
    let requests = pages.iter().map(|(path, _)| get(app.addr, path.clone())).collect();
    for ((path, expected), mut response) in pages.iter().zip(all_at_once(requests).await) {
        // On a machine busy with the other tests, the burst may be shed (503,
        // retry-after): a client that honours it asks again, and gets its page.
        for _ in 0..5 {
            if response.status != 503 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            response = get(app.addr, path.clone()).await;
        }
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        assert_eq!(response.json(), Value::Array(expected.clone()), "{path}");
    }

    // Pages of each kind shared statements.
    for query in ["list", "list_status"] {
        let (chunks, statements) = batches(&app, query).await;
        assert!(statements < chunks, "no {query} chunk was batched");
    }
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone_and_its_neighbours_are_stored() {
    let app = spawn_app().await;
    // A rule only the database knows, as a newer schema might add: the Rust checks
    // pass these bodies, so the batch statement is what refuses them.
    app.db
        .client()
        .await
        .batch_execute(
            "ALTER TABLE tasks DROP CONSTRAINT tasks_title_check, ADD CONSTRAINT tasks_title_check \
             CHECK (char_length(title) BETWEEN 1 AND 200 AND title NOT LIKE 'refused%')",
        )
        .await
        .unwrap();
    let title = |n: usize| match n % 5 {
        0 => format!("refused {n}"),
        _ => format!("task {n}"),
    };
    let responses =
        all_at_once((0..100).map(|n| post_task(app.addr, json!({"title": title(n)}))).collect())
            .await;
    for (n, response) in responses.iter().enumerate() {
        if n % 5 == 0 {
            assert_eq!(response.status, 422, "{}", response.body);
            assert_eq!(response.detail(), "title: is not allowed");
        } else {
            assert_eq!(response.status, 201, "{}", response.body);
            assert_eq!(response.json()["title"], title(n));
        }
    }
    assert_eq!(app.row_count().await, 80);
    let (inserted, statements) = batches(&app, "insert").await;
    assert!(statements < inserted, "no insert was batched, so no batch was refused");
}

#[tokio::test]
async fn concurrent_changes_to_one_task_behave_as_if_sent_one_after_the_other() {
    let app = spawn_app().await;
    let task = app.create_task(json!({"title": "start"})).await;
    let path = format!("/tasks/{}", task["id"]);
    let patches = (0..30)
        .map(|n| {
            let (addr, path) = (app.addr, path.clone());
            async move {
                send(
                    addr,
                    Method::PATCH,
                    &path,
                    &[("content-type", "application/json")],
                    json!({"title": format!("edit {n}")}).to_string(),
                )
                .await
            }
        })
        .collect();
    let responses = all_at_once(patches).await;
    let mut versions = Vec::new();
    for response in &responses {
        assert_eq!(response.status, 200, "{}", response.body);
        versions.push(response.json()["updated_at"].as_str().unwrap().to_owned());
    }
    // Each change made its own version: updated_at moved every time.
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 30, "{versions:?}");
    let last = responses
        .iter()
        .max_by_key(|r| r.json()["updated_at"].as_str().unwrap().to_owned())
        .unwrap();
    assert_eq!(app.get(&path).await.json(), last.json());

    // Two deletes of one task: one 204, one 404; deletes of others all 204.
    let others: Vec<Value> = all_at_once(
        (0..20).map(|n| post_task(app.addr, json!({"title": format!("doomed {n}")}))).collect(),
    )
    .await
    .iter()
    .map(TestResponse::json)
    .collect();
    let mut deletes: Vec<String> = others.iter().map(|t| format!("/tasks/{}", t["id"])).collect();
    deletes.push(path.clone());
    deletes.push(path.clone());
    let responses = all_at_once(
        deletes
            .into_iter()
            .map(|path| {
                let addr = app.addr;
                async move { send(addr, Method::DELETE, &path, &[], "").await }
            })
            .collect(),
    )
    .await;
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses.iter().filter(|&&s| s == 204).count(), 21, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 404).count(), 1, "{statuses:?}");
    assert_eq!(app.row_count().await, 0);
    let (patched, statements) = batches(&app, "update").await;
    assert_eq!(patched, 30.0);
    assert!(statements >= 1.0);
}

/// A page of a status few tasks have, or none, reads about its page, not the table.
#[tokio::test]
async fn a_page_of_a_rare_status_reads_its_page_not_the_table() {
    let app = spawn_app().await;
    let db = app.db.client().await;
    // 20,000 tasks, 20 of them completed, with the statistics autovacuum would gather.
    let rows = "INSERT INTO tasks (title, status) SELECT 'task ' || n, \
        CASE n % 1000 WHEN 0 THEN 'completed' ELSE 'pending' END FROM generate_series(1, 20000) n";
    db.batch_execute(&format!("{rows}; ANALYZE tasks")).await.unwrap();
    const PAGES: i64 = 8;
    for n in 0..PAGES {
        let (status, tasks) = [("completed", 20), ("in_progress", 0)][n as usize % 2];
        let response = app.get(&format!("/tasks?status={status}&limit=20")).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.json().as_array().map(Vec::len), Some(tasks), "{status}");
    }
    // The index entries the pages read, once PostgreSQL has counted every page's scan.
    let counted = "SELECT sum(idx_scan)::int8, sum(idx_tup_read)::int8 \
        FROM pg_stat_user_indexes WHERE relname = 'tasks'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let read = loop {
        let row = db.query_one(counted, &[]).await.unwrap();
        let (scans, read): (i64, i64) = (row.get(0), row.get(1));
        if scans >= PAGES {
            break read;
        }
        assert!(std::time::Instant::now() < deadline, "{scans} scans of tasks counted in 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // A page reads its rows and the next (CHUNK_ROWS at most): not 20,000.
    assert!(read <= 40 * PAGES, "{read} index entries read for {PAGES} pages");
}
