//! `/metrics` as Prometheus scrapes it: parse the text, make requests, and check the
//! counters moved by exactly what was done, labelled by route template.

use std::collections::HashMap;

use hyper::Method;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

/// `series{labels}` → value, for every sample line.
pub async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    // As Prometheus asks: OpenMetrics.
    let accept = [("accept", "application/openmetrics-text; version=1.0.0")];
    let response = app.request(Method::GET, "/metrics", &accept, "").await;
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(response.body.ends_with("# EOF\n"), "{}", response.body);
    response
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) =
                line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {line}")))
        })
        .collect()
}

pub fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn request_counters_move_by_route_template_and_status() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    let task = app.create_task(json!({"title": "counted"})).await;
    let id = task["id"].as_i64().unwrap();
    app.get(&format!("/tasks/{id}")).await;
    app.get(&format!("/tasks/{id}")).await;
    app.get("/tasks/987654").await;
    app.get("/not/a/route").await;
    // A method clients make up does not become a label value.
    let brew = Method::from_bytes(b"BREW").unwrap();
    app.request(brew, "/not/a/route", &[], "").await;
    let after = scrape(&app).await;

    let moved = |series: &str| value(&after, series) - value(&before, series);
    let requests = |method: &str, route: &str, status: u16| {
        format!(
            r#"task_api_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
        )
    };
    assert_eq!(moved(&requests("POST", "/tasks", 201)), 1.0);
    assert_eq!(moved(&requests("GET", "/tasks/{id}", 200)), 2.0);
    assert_eq!(moved(&requests("GET", "/tasks/{id}", 404)), 1.0);
    assert_eq!(moved(&requests("GET", "unmatched", 404)), 1.0);
    assert_eq!(moved(&requests("other", "unmatched", 404)), 1.0);
    // The first scrape itself is counted by the second.
    assert_eq!(moved(&requests("GET", "/metrics", 200)), 1.0);
    let count = r#"task_api_http_request_duration_seconds_count{method="GET",route="/tasks/{id}"}"#;
    assert_eq!(moved(count), 3.0);
    let inf = r#"task_api_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/tasks/{id}"}"#;
    assert_eq!(moved(inf), 3.0);
    assert!(
        after
            .keys()
            .all(|series| !series.contains(&format!("/tasks/{id}\"")) && !series.contains("987654")),
        "a raw id became a label"
    );
}

#[tokio::test]
async fn pool_migrations_and_build_info_are_reported() {
    let app = spawn_app().await;
    app.get("/tasks").await;
    let samples = scrape(&app).await;
    // The scrape itself is in flight while it renders.
    assert_eq!(value(&samples, "task_api_http_requests_in_flight"), 1.0);
    assert!(value(&samples, "task_api_db_pool_connections") >= 1.0);
    assert!(samples.contains_key("task_api_db_pool_available"));
    assert_eq!(value(&samples, "task_api_db_pool_waiting"), 0.0);
    assert_eq!(value(&samples, "task_api_db_pool_max"), 8.0);
    // V1 to V4, on the test's empty database.
    assert_eq!(value(&samples, "task_api_migrations_applied"), 4.0);
    let build = samples
        .keys()
        .find(|series| series.starts_with("task_api_build_info{"))
        .expect("build info");
    assert!(build.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))), "{build}");
    assert!(build.contains("revision="), "{build}");
}

#[tokio::test]
async fn openapi_document_is_served() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let document = response.json();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
}

/// Runs `program` with `args`, `input` on its stdin; its exit status and output.
fn run_with_input(program: &str, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("run {program} (make test installs it): {err}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test]
async fn each_format_passes_its_own_parser() {
    let app = spawn_app().await;
    app.create_task(json!({"title": "counted"})).await;
    app.get("/tasks/1").await;
    // Any scraper that does not ask for OpenMetrics: the classic text format, which
    // promtool (Prometheus's own linter and parser) must accept without a complaint.
    let text = app.get("/metrics").await;
    assert_eq!(text.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert!(!text.body.contains("# EOF"), "{}", text.body);
    assert!(text.body.contains("# TYPE task_api_http_requests_total counter"));
    assert!(text.body.contains("# TYPE task_api_build_info gauge"));
    let (ok, said) = run_with_input("promtool", &["check", "metrics"], &text.body);
    assert!(ok, "promtool check metrics: {said}\n{}", text.body);
    // Prometheus asks for OpenMetrics: the reference parser (prometheus_client's)
    // must read every family.
    let accept = [("accept", "application/openmetrics-text; version=1.0.0")];
    let openmetrics = app.request(Method::GET, "/metrics", &accept, "").await;
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/bin/python3");
    let parse = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        families = list(text_string_to_metric_families(sys.stdin.read()))\n\
        print(len(families), sorted(f.type for f in families))";
    let (ok, said) = run_with_input(python, &["-c", parse], &openmetrics.body);
    assert!(ok, "OpenMetrics parser: {said}\n{}", openmetrics.body);
    assert!(said.contains("'counter'") && said.contains("'info'"), "{said}");
}
