//! OpenTelemetry traces as a collector sees them: a receiver started by each test takes
//! the OTLP/HTTP posts and decodes them with the OpenTelemetry project's own protobuf
//! types (opentelemetry-proto), independent of src/observe/traces/. Ids, parents, links,
//! attributes, samplers, a dead collector, and the flush at shutdown.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::helpers::{
    TestApp, TestResponse, all_at_once, free_port, post_task, run_cli, send, spawn_app_with, text,
    wait_until,
};
use crate::metrics::{scrape, value};
use crate::tls::TestPki;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;

/// One post the receiver took.
struct Export {
    path: String,
    headers: HeaderMap,
    request: Result<ExportTraceServiceRequest, String>,
}

/// An OTLP/HTTP collector of the test's own, on 127.0.0.1: it keeps every post.
struct Receiver {
    addr: SocketAddr,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl Receiver {
    /// A plain http:// receiver.
    async fn start() -> Receiver {
        Receiver::start_with(None).await
    }

    /// An https:// one, with the certificate and key of `pki`'s server (`localhost`).
    async fn start_tls(pki: &TestPki) -> Receiver {
        let certs = CertificateDer::pem_file_iter(&pki.server_cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Receiver::start_with(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let exports = Arc::new(Mutex::new(Vec::new()));
        let kept = exports.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, tls) = (kept.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => keep_posts(stream, kept).await,
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                keep_posts(stream, kept).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver { addr, exports }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        let exports = self.exports.lock().unwrap();
        exports
            .iter()
            .flat_map(|export| {
                let request = export.request.as_ref().unwrap_or_else(|err| panic!("{err}"));
                request.resource_spans.iter()
            })
            .flat_map(|resource| resource.scope_spans.iter())
            .flat_map(|scope| scope.spans.iter().cloned())
            .collect()
    }

    /// The spans, once `enough` says they are (at most 15 s).
    async fn spans_when(&self, enough: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let arrived = wait_until(Duration::from_secs(15), || {
            let spans = self.spans();
            let done = enough(&spans);
            async move { done }
        })
        .await;
        let spans = self.spans();
        assert!(arrived, "spans never arrived; got {}", describe(&spans));
        spans
    }
}

/// Serves one connection of a [`Receiver`]: every post decoded and kept, and answered
/// with an empty `ExportTraceServiceResponse` (a full success).
async fn keep_posts<T>(io: T, kept: Arc<Mutex<Vec<Export>>>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let kept = kept.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let request = ExportTraceServiceRequest::decode(body)
                .map_err(|err| format!("not OTLP protobuf: {err}"));
            kept.lock().unwrap().push(Export {
                path: parts.uri.to_string(),
                headers: parts.headers,
                request,
            });
            let answer = ExportTraceServiceResponse::default().encode_to_vec();
            let response = Response::builder()
                .header("content-type", "application/x-protobuf")
                .body(Full::new(Bytes::from(answer)))
                .unwrap();
            Ok::<_, hyper::Error>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A server exporting to `endpoint` every 100 ms, with `env` besides.
async fn traced_app(endpoint: &str, env: &[(&str, &str)]) -> TestApp {
    let mut all =
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    all.extend_from_slice(env);
    spawn_app_with(&all).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// An attribute's value as text (an integer in decimal).
fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let found = attributes.iter().find(|kv| kv.key == key)?;
    match found.value.as_ref()?.value.as_ref()? {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn describe(spans: &[Span]) -> String {
    let lines: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} kind={} trace={} span={} parent={} links={}",
                s.name,
                s.kind,
                hex(&s.trace_id),
                hex(&s.span_id),
                hex(&s.parent_span_id),
                s.links.len()
            )
        })
        .collect();
    format!("{} spans:\n{}", spans.len(), lines.join("\n"))
}

fn in_trace<'a>(spans: &'a [Span], trace_id: &str) -> Vec<&'a Span> {
    spans.iter().filter(|span| hex(&span.trace_id) == trace_id).collect()
}

fn one_of_kind<'a>(spans: &[&'a Span], kind: i32) -> &'a Span {
    let found: Vec<&&Span> = spans.iter().filter(|span| span.kind == kind).collect();
    assert_eq!(found.len(), 1, "kind {kind} in {spans:#?}");
    found[0]
}

async fn get(addr: SocketAddr, path: String) -> TestResponse {
    send(addr, Method::GET, &path, &[], "").await
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_request_is_a_server_span_in_the_callers_trace_and_its_statement_a_child() {
    let receiver = Receiver::start().await;
    let app = traced_app(
        &receiver.endpoint(),
        &[
            // OTEL_SERVICE_NAME wins over the attributes' service.name.
            ("OTEL_SERVICE_NAME", "tasks-under-test"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from%20attrs, deployment.environment.name = test,k=a%2Cb%3Dc,\
                 service.version=9",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr%3Dt, x-team = a b"),
        ],
    )
    .await;
    for n in 0..3 {
        app.create_task(json!({"title": format!("listed {n}")})).await;
    }
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let headers = [("traceparent", traceparent.as_str()), ("user-agent", "tracing-test/1")];
    let listed = app.request(Method::GET, "/tasks?limit=2", &headers, "").await;
    assert_eq!(listed.status, 200, "{}", listed.body);

    let spans = receiver.spans_when(|spans| in_trace(spans, CALLER_TRACE).len() >= 2).await;
    let traced = in_trace(&spans, CALLER_TRACE);
    let server = one_of_kind(&traced, SERVER);
    assert_eq!(server.name, "GET /tasks");
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    // Sampled, and the parent known to be remote (the caller's).
    assert_eq!(server.flags & 0x3ff, 0x301, "flags {:#x}", server.flags);
    assert!(
        server.start_time_unix_nano > 0 && server.end_time_unix_nano >= server.start_time_unix_nano
    );
    for (key, expected) in [
        ("http.request.method", "GET"),
        ("url.path", "/tasks"),
        ("url.scheme", "http"),
        ("http.route", "/tasks"),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("user_agent.original", "tracing-test/1"),
    ] {
        assert_eq!(attr(&server.attributes, key).as_deref(), Some(expected), "{key}");
    }
    assert_eq!(attr(&server.attributes, "error.type"), None);
    assert_ne!(server.status.as_ref().map_or(0, |s| s.code), STATUS_ERROR);

    // GET /tasks alone: its statement, a batch of one, is the server span's child and
    // links to it, the one request it served.
    let statement = one_of_kind(&traced, CLIENT);
    assert_eq!(statement.name, "SELECT tasks");
    assert_eq!(statement.parent_span_id, server.span_id);
    assert_eq!(statement.flags & 0x3ff, 0x101, "a local parent");
    assert_eq!(statement.links.len(), 1);
    assert_eq!(statement.links[0].span_id, server.span_id);
    assert_eq!(attr(&statement.attributes, "db.operation.batch.size"), None);
    for (key, expected) in [
        ("db.system.name", "postgresql"),
        ("db.operation.name", "SELECT"),
        ("db.collection.name", "tasks"),
    ] {
        assert_eq!(attr(&statement.attributes, key).as_deref(), Some(expected), "{key}");
    }
    assert_eq!(attr(&statement.attributes, "db.operation.batch.size"), None);
    assert!(statement.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(statement.end_time_unix_nano <= server.end_time_unix_nano);
    assert_ne!(statement.span_id, server.span_id);

    // The resource, and what every post carried.
    {
        let exports = receiver.exports.lock().unwrap();
        let export = &exports[0];
        assert_eq!(export.path, "/v1/traces");
        assert_eq!(export.headers["content-type"], "application/x-protobuf");
        assert_eq!(export.headers["x-api-key"], "s3cr=t");
        assert_eq!(export.headers["x-team"], "a b");
        let request = export.request.as_ref().unwrap();
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        // Percent-decoded and trimmed; service.name, then service.version, then the rest.
        let attributes = &resource.attributes;
        let resource: Vec<String> = attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, attr(attributes, &kv.key).unwrap()))
            .collect();
        let expected = [
            "service.name=tasks-under-test",
            "service.version=9",
            "deployment.environment.name=test",
            "k=a,b=c",
        ];
        assert_eq!(resource, expected);
    }
    // The configuration logged at start names the headers, never their values.
    assert!(!app.output().contains("s3cr"), "{}", app.output());
    assert!(app.output().contains(&format!("trace_id={CALLER_TRACE}")), "{}", app.output());

    // No traceparent: a trace of its own, whose id the access line shows.
    let before = receiver.spans().len();
    app.get("/health").await;
    let spans =
        receiver.spans_when(|spans| spans[before..].iter().any(|s| s.name == "GET /health")).await;
    let health = spans.iter().find(|s| s.name == "GET /health").unwrap();
    assert!(health.parent_span_id.is_empty());
    assert_eq!(health.flags & 0x3ff, 0x001, "a root: no parent, remote or not");
    assert_ne!(health.trace_id, vec![0; 16]);
    assert_ne!(health.span_id, vec![0; 8]);
    assert!(app.output().contains(&format!("trace_id={}", hex(&health.trace_id))));

    // No route: the span is named by the method alone, without http.route.
    let unmatched_trace = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{unmatched_trace}-b7ad6b7169203331-01");
    let missing =
        app.request(Method::GET, "/no/such/thing", &[("traceparent", &traceparent)], "").await;
    assert_eq!(missing.status, 404);
    let spans = receiver.spans_when(|spans| !in_trace(spans, unmatched_trace).is_empty()).await;
    let unmatched = one_of_kind(&in_trace(&spans, unmatched_trace), SERVER);
    assert_eq!(unmatched.name, "GET");
    assert_eq!(attr(&unmatched.attributes, "http.route"), None);
    assert_eq!(attr(&unmatched.attributes, "url.path").as_deref(), Some("/no/such/thing"));
    assert_ne!(
        unmatched.status.as_ref().map_or(0, |s| s.code),
        STATUS_ERROR,
        "a 4xx is no server error"
    );

    // A 5xx: both spans are errors, the statement's typed by its SQLSTATE.
    app.db.client().await.batch_execute("ALTER TABLE tasks RENAME TO tasks_gone").await.unwrap();
    let failed_trace = "a3ce929d0e0e47364bf92f3577b34da6";
    let traceparent = format!("00-{failed_trace}-b7ad6b7169203331-01");
    let failed = app.request(Method::GET, "/tasks", &[("traceparent", &traceparent)], "").await;
    assert_eq!(failed.status, 500);
    let spans = receiver.spans_when(|spans| in_trace(spans, failed_trace).len() >= 2).await;
    let traced = in_trace(&spans, failed_trace);
    let server = one_of_kind(&traced, SERVER);
    assert_eq!(server.status.as_ref().unwrap().code, STATUS_ERROR);
    assert_eq!(attr(&server.attributes, "error.type").as_deref(), Some("500"));
    let statement = one_of_kind(&traced, CLIENT);
    assert_eq!(statement.status.as_ref().unwrap().code, STATUS_ERROR);
    // 42P01: undefined_table.
    assert_eq!(attr(&statement.attributes, "error.type").as_deref(), Some("42P01"));
    assert_eq!(attr(&statement.attributes, "db.response.status_code").as_deref(), Some("42P01"));
}

#[tokio::test]
async fn a_batched_statement_is_linked_to_every_request_span_it_served() {
    let receiver = Receiver::start().await;
    // 400 requests within a second or two: past the default cap of 100 traced a second.
    let app = traced_app(&receiver.endpoint(), &[("TRACES_MAX_PER_SECOND", "1000")]).await;
    const REQUESTS: usize = 200;
    let created = all_at_once(
        (0..REQUESTS)
            .map(|n| post_task(app.addr, json!({"title": format!("batched {n}")})))
            .collect(),
    )
    .await;
    let ids: Vec<i64> = created
        .iter()
        .map(|response| {
            assert_eq!(response.status, 201, "{}", response.body);
            response.json()["id"].as_i64().unwrap()
        })
        .collect();
    let read =
        all_at_once(ids.iter().map(|id| get(app.addr, format!("/tasks/{id}"))).collect()).await;
    assert!(read.iter().all(|response| response.status == 200));

    for (request, statement) in
        [("POST /tasks", "INSERT tasks"), ("GET /tasks/{id}", "SELECT tasks")]
    {
        // Every request's span, and statements that served them all.
        let served = |spans: &[Span]| -> usize {
            spans.iter().filter(|s| s.name == statement).map(|s| s.links.len()).sum()
        };
        let spans = receiver
            .spans_when(|spans| {
                spans.iter().filter(|s| s.name == request).count() == REQUESTS
                    && served(spans) >= REQUESTS
            })
            .await;
        let requests: HashMap<(Vec<u8>, Vec<u8>), &Span> = spans
            .iter()
            .filter(|s| s.name == request && s.kind == SERVER)
            .map(|s| ((s.trace_id.clone(), s.span_id.clone()), s))
            .collect();
        assert_eq!(requests.len(), REQUESTS, "{request}: every trace its own");
        let statements: Vec<&Span> =
            spans.iter().filter(|s| s.name == statement && s.kind == CLIENT).collect();
        let mut linked = HashSet::new();
        for span in &statements {
            assert!(!span.links.is_empty(), "{statement} served nobody");
            // A child of the first request it served, linked to each.
            let first = &span.links[0];
            assert_eq!((&span.trace_id, &span.parent_span_id), (&first.trace_id, &first.span_id));
            let size = attr(&span.attributes, "db.operation.batch.size");
            // Semantic conventions: a batch size is never 1.
            let size: usize = size.map_or(1, |n| n.parse().unwrap());
            assert_eq!(span.links.len(), size, "{statement}: a link per request served");
            for link in &span.links {
                let key = (link.trace_id.clone(), link.span_id.clone());
                assert!(
                    requests.contains_key(&key),
                    "{statement} links to a span that is no {request}"
                );
                assert!(linked.insert(key), "a request served by two statements");
            }
            assert_eq!(attr(&span.attributes, "db.system.name").as_deref(), Some("postgresql"));
        }
        assert_eq!(linked.len(), REQUESTS, "{request}: every request linked");
        assert!(
            statements.len() < REQUESTS && statements.iter().any(|s| s.links.len() > 1),
            "{statement}: never batched ({} statements)",
            statements.len()
        );
    }
}

#[tokio::test]
async fn always_off_and_a_zero_ratio_export_nothing() {
    let receiver = Receiver::start().await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    for (sampler, arg) in [("always_off", "0.5"), ("traceidratio", "0")] {
        let app = traced_app(
            &receiver.endpoint(),
            &[("OTEL_TRACES_SAMPLER", sampler), ("OTEL_TRACES_SAMPLER_ARG", arg)],
        )
        .await;
        let task = app.create_task(json!({"title": "unsampled"})).await;
        let id = task["id"].as_i64().unwrap();
        // Not even a sampled caller: these samplers ignore the parent.
        let headers = [("traceparent", traceparent.as_str())];
        let got = app.request(Method::GET, &format!("/tasks/{id}"), &headers, "").await;
        assert_eq!(got.status, 200);
        assert_eq!(app.get("/tasks").await.status, 200);
        // Ten export rounds go by.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let samples = scrape(&app).await;
        assert_eq!(value(&samples, "task_api_trace_spans_exported_total"), 0.0, "{sampler}");
        assert!(receiver.spans().is_empty(), "{sampler}: {}", describe(&receiver.spans()));
    }
}

#[tokio::test]
async fn parent_based_samplers_follow_the_callers_sampled_flag() {
    let unsampled = "11111111111111111111111111111111";
    let sampled = "22222222222222222222222222222222";
    for sampler in ["parentbased_always_on", "parentbased_always_off"] {
        let receiver = Receiver::start().await;
        let app = traced_app(&receiver.endpoint(), &[("OTEL_TRACES_SAMPLER", sampler)]).await;
        let parent = |trace: &str, flags: &str| format!("00-{trace}-{CALLER_SPAN}-{flags}");
        let not = parent(unsampled, "00");
        let yes = parent(sampled, "01");
        for traceparent in [&not, &yes] {
            let headers = [("traceparent", traceparent.as_str())];
            let response = app.request(Method::GET, "/tasks", &headers, "").await;
            assert_eq!(response.status, 200);
        }
        // A request without a parent: the root sampler decides.
        assert_eq!(app.get("/openapi.json").await.status, 200);
        let roots_sampled = sampler == "parentbased_always_on";
        receiver
            .spans_when(|spans| {
                in_trace(spans, sampled).len() >= 2
                    && (!roots_sampled || spans.iter().any(|s| s.name == "GET /openapi.json"))
            })
            .await;
        // Exported in order: what the unsampled request would have sent came first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let spans = receiver.spans();
        assert!(in_trace(&spans, unsampled).is_empty(), "{sampler}: {}", describe(&spans));
        assert_eq!(
            spans.iter().any(|s| s.name == "GET /openapi.json"),
            roots_sampled,
            "{sampler}: {}",
            describe(&spans)
        );
    }
}

#[tokio::test]
async fn a_dead_or_silent_collector_costs_requests_nothing() {
    // One that refuses connections, and one that takes them and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let refused = format!("http://127.0.0.1:{}", free_port());
    let silent = format!("http://{silent_addr}");
    for endpoint in [&refused, &silent] {
        let mut app = traced_app(
            endpoint,
            &[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8"),
                ("SHUTDOWN_TIMEOUT", "2"),
            ],
        )
        .await;
        let task = app.create_task(json!({"title": "kept"})).await;
        let path = format!("/tasks/{}", task["id"]);
        let mut slowest = Duration::ZERO;
        for n in 0..200 {
            let started = Instant::now();
            let response = match n % 2 {
                0 => app.get(&path).await,
                _ => post_task(app.addr, json!({"title": format!("while dead {n}")})).await,
            };
            slowest = slowest.max(started.elapsed());
            assert!(response.status < 300, "{endpoint}: {}", response.status);
        }
        // An export waiting on the collector would hold a request for the 2 s timeout.
        assert!(slowest < Duration::from_millis(500), "{endpoint}: a request took {slowest:?}");

        let dropped = |samples: &HashMap<String, f64>, reason: &str| {
            value(samples, &format!(r#"task_api_trace_spans_dropped_total{{reason="{reason}"}}"#))
        };
        let failed = wait_until(Duration::from_secs(10), || async {
            dropped(&scrape(&app).await, "export_failed") > 0.0
        })
        .await;
        assert!(failed, "{endpoint}: no failed export counted");
        let samples = scrape(&app).await;
        if endpoint == &silent {
            // 400 spans, and an exporter stuck for 2 s with room for 16 of them.
            assert!(dropped(&samples, "queue_full") > 0.0, "{endpoint}: queue never full");
        }
        assert_eq!(value(&samples, "task_api_trace_spans_exported_total"), 0.0);
        let warnings = app.output().matches("could not export").count();
        assert_eq!(warnings, 1, "{endpoint}: one warning per 30 s:\n{}", app.output());

        // The flush at shutdown gives up with the shutdown timeout.
        let started = Instant::now();
        app.terminate();
        let status = app.wait(Duration::from_secs(10)).await;
        assert!(status.success(), "{endpoint}: {status:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{endpoint}: {:?}", started.elapsed());
    }
    holder.abort();
}

#[tokio::test]
async fn spans_waiting_for_their_export_are_flushed_at_shutdown() {
    let receiver = Receiver::start().await;
    // The signal's own endpoint wins over the base one (nothing listens there), and is
    // used as it is, without /v1/traces.
    let endpoint = format!("{}/custom/traces", receiver.endpoint());
    // Exports would wait ten minutes: only the shutdown sends them.
    let mut app = traced_app(
        &format!("http://127.0.0.1:{}", free_port()),
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    )
    .await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let headers = [("traceparent", traceparent.as_str())];
    assert_eq!(app.request(Method::GET, "/tasks", &headers, "").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.spans().is_empty());
    app.terminate();
    assert!(app.wait(Duration::from_secs(10)).await.success());
    let spans = receiver.spans();
    assert_eq!(in_trace(&spans, CALLER_TRACE).len(), 2, "{}", describe(&spans));
    assert_eq!(receiver.exports.lock().unwrap()[0].path, "/custom/traces");
}

#[tokio::test]
async fn an_https_collector_must_chain_to_otel_exporter_otlp_certificate() {
    let pki = TestPki::new();
    let receiver = Receiver::start_tls(&pki).await;
    let endpoint = format!("https://localhost:{}", receiver.addr.port());
    let ca = pki.ca.display().to_string();
    let app = traced_app(&endpoint, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)]).await;
    assert_eq!(app.get("/health").await.status, 200);
    receiver.spans_when(|spans| spans.iter().any(|s| s.name == "GET /health")).await;

    // The compiled-in roots do not know the test CA: nothing gets through.
    let before = receiver.spans().len();
    let app = traced_app(&endpoint, &[]).await;
    assert_eq!(app.get("/health").await.status, 200);
    let failed = wait_until(Duration::from_secs(10), || async {
        let samples = scrape(&app).await;
        value(&samples, r#"task_api_trace_spans_dropped_total{reason="export_failed"}"#) > 0.0
    })
    .await;
    assert!(failed, "{}", app.output());
    assert_eq!(receiver.spans().len(), before);
    assert!(app.output().contains("TLS with localhost"), "{}", app.output());
}

#[tokio::test]
async fn a_bad_otel_variable_stops_start_up_naming_it() {
    const BASE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    for (vars, var) in [
        (&[(BASE, "collector:4318")][..], BASE),
        (&[(BASE, "http://c:99999")], BASE),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://c")],
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        (&[("OTEL_TRACES_SAMPLER", "sometimes")], "OTEL_TRACES_SAMPLER"),
        (
            &[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "NaN"),
            ],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")], "OTEL_EXPORTER_OTLP_TIMEOUT"),
        (&[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")], "OTEL_EXPORTER_OTLP_TIMEOUT"),
        (&[("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign")], "OTEL_EXPORTER_OTLP_HEADERS"),
        (&[("OTEL_EXPORTER_OTLP_HEADERS", "bad key=v")], "OTEL_EXPORTER_OTLP_HEADERS"),
        (&[("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "=v")], "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
        (&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent.pem")],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
        (&[("OTEL_RESOURCE_ATTRIBUTES", "a=b,c")], "OTEL_RESOURCE_ATTRIBUTES"),
        (&[("OTEL_RESOURCE_ATTRIBUTES", "a=%ff")], "OTEL_RESOURCE_ATTRIBUTES"),
        (&[("OTEL_SDK_DISABLED", "yes")], "OTEL_SDK_DISABLED"),
        (&[("OTEL_TRACES_EXPORTER", "zipkin")], "OTEL_TRACES_EXPORTER"),
        (&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")], "OTEL_BSP_MAX_QUEUE_SIZE"),
        (&[("OTEL_BSP_MAX_QUEUE_SIZE", "8")], "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        (&[("OTEL_BSP_SCHEDULE_DELAY", "soon")], "OTEL_BSP_SCHEDULE_DELAY"),
        (&[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "0")], "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
        (
            &[("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "x")],
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        ),
        (&[("TRACES_MAX_PER_SECOND", "-1")], "TRACES_MAX_PER_SECOND"),
    ] {
        let mut env = vec![
            ("DATABASE_URL", "postgres://u:p@127.0.0.1:1/tasks"),
            (BASE, "http://127.0.0.1:4318"),
        ];
        env.retain(|(name, _)| !vars.iter().any(|(var, _)| var == name));
        env.extend_from_slice(vars);
        let output = run_cli(&["serve"], &env).await;
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
        assert!(stderr.starts_with(&format!("task-api: {var}: ")), "{vars:?}: {stderr}");
    }
}

#[tokio::test]
async fn long_paths_and_user_agents_are_cut_to_the_attribute_limit() {
    let receiver = Receiver::start().await;
    let app = traced_app(&receiver.endpoint(), &[]).await;
    // As long as a 16 KiB head allows: 7,000 characters each.
    let path = format!("/{}", "p".repeat(6999));
    let agent = "u".repeat(7000);
    let response = app.request(Method::GET, &path, &[("user-agent", agent.as_str())], "").await;
    assert_eq!(response.status, 404);
    let spans = receiver.spans_when(|spans| spans.iter().any(|s| s.kind == SERVER)).await;
    let span = spans.iter().find(|s| s.kind == SERVER).unwrap();
    assert_eq!(attr(&span.attributes, "url.path").unwrap(), path[..1024]);
    assert_eq!(attr(&span.attributes, "user_agent.original").unwrap(), agent[..1024]);
    // The limit is the operator's to set.
    let receiver = Receiver::start().await;
    let app =
        traced_app(&receiver.endpoint(), &[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")]).await;
    app.request(Method::GET, &path, &[("user-agent", agent.as_str())], "").await;
    let spans = receiver.spans_when(|spans| spans.iter().any(|s| s.kind == SERVER)).await;
    let span = spans.iter().find(|s| s.kind == SERVER).unwrap();
    assert_eq!(attr(&span.attributes, "url.path").unwrap(), path[..10]);
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_cannot_raise_how_many_requests_are_traced() {
    let receiver = Receiver::start().await;
    let app = traced_app(
        &receiver.endpoint(),
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ("TRACES_MAX_PER_SECOND", "20"),
        ],
    )
    .await;
    // Every caller says "sampled", or picks a trace id a ratio sampler keeps.
    let started = Instant::now();
    let sent = all_at_once(
        (0..300)
            .map(|n| {
                let addr = app.addr;
                async move {
                    let traceparent = format!("00-{n:016x}ffffffffffffffff-{CALLER_SPAN}-01");
                    send(addr, Method::GET, "/health", &[("traceparent", &traceparent)], "").await
                }
            })
            .collect(),
    )
    .await;
    let took = started.elapsed().as_secs_f64();
    assert!(sent.iter().all(|response| response.status == 200));
    // A second's worth at once, and 20 a second after that.
    let most = 20 + (20.0 * took).ceil() as usize + 1;
    let spans = receiver.spans_when(|spans| !spans.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traced = receiver.spans().iter().filter(|s| s.kind == SERVER).count();
    assert!(
        (1..=most).contains(&traced),
        "{traced} of 300 traced in {took:.2} s (at most {most}); first: {}",
        describe(&spans)
    );
    let samples = scrape(&app).await;
    let limited = value(&samples, r#"task_api_trace_spans_dropped_total{reason="rate_limited"}"#);
    assert_eq!(limited as usize, 300 - traced);
}
