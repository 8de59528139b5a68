//! Turns a request into one handler call: one `match` on (route, method), with 404 and 405 +
//! `allow` (spec §2); around it the request id, access line, metrics and (if traced) span.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderName, HeaderValue, USER_AGENT};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

use super::access::{self, Access};
use super::error::ApiError;
use super::handlers::{self, Answer};
use super::response::Body;
use super::{App, MAX_HEAD_BYTES, body, conditional, docs, idempotency};
use crate::observe::metrics;
use crate::observe::traces::{self, ServerRequest, context as trace};
use crate::store::NewCreate;
use crate::tasks::{ListQuery, NewTask, TaskPatch, parse_id};

/// The label of every path that matches no route.
const UNMATCHED: &str = "unmatched";

/// The route `path` matches, as metrics label it, and the (unchecked) id of `/tasks/{id}`.
fn route(path: &str) -> (&'static str, &str) {
    const FIXED: [&str; 6] = ["/health", "/ready", "/metrics", "/openapi.json", "/tasks", "/docs"];
    if let Some(fixed) = FIXED.into_iter().find(|fixed| *fixed == path) {
        return (fixed, "");
    }
    if let Some(file) = path.strip_prefix("/docs/").filter(|file| !file.contains('/')) {
        return ("/docs/{file}", file);
    }
    match path.strip_prefix("/tasks/") {
        Some(id) if !id.is_empty() && !id.contains('/') => ("/tasks/{id}", id),
        _ => (UNMATCHED, ""),
    }
}

/// What the service returns instead of a response when a write's outcome is unknown:
/// hyper then closes the connection, and the client sees no answer, not a wrong one.
const NO_ANSWER: &str = "no answer: the outcome of the write is unknown";

/// `request` with a head of its own: hyper reads ahead while the request waits, and its read
/// buffer, shared with the head, would be allocated anew (8 KiB) for every request.
fn detached(request: Request<Incoming>) -> Request<Incoming> {
    let (mut head, body) = request.into_parts();
    for value in head.headers.values_mut() {
        *value = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    }
    head.uri = Uri::try_from(head.uri.to_string()).unwrap_or(head.uri);
    Request::from_parts(head, body)
}

/// The service function: route (or, over `MAX_CONNECTIONS`, refuse: 503), render any error,
/// stamp the request id, log one line, count it; within the request's span, if traced. Boxed:
/// hyper keeps room for a request's future in every connection, idle or not.
pub fn handle(app: Arc<App>, request: Request<Incoming>, refuse: bool) -> Pin<Box<Served>> {
    let request = detached(request);
    // Tracing off costs this one branch: no span, no id, no scope.
    let span = app.tracer.as_ref().and_then(|tracer| {
        let protocol = if request.version() == Version::HTTP_10 { "1.0" } else { "1.1" };
        let (path, headers) = (request.uri().path(), request.headers());
        let described = ServerRequest {
            // Clients cannot mint span names: every other method is `_OTHER`.
            method: metrics::method_name(request.method()).unwrap_or("_OTHER"),
            route: Some(route(path).0).filter(|route| *route != UNMATCHED),
            path: path.to_owned(),
            protocol,
            user_agent: headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(Into::into),
        };
        tracer.server_span(trace::parent(headers), described)
    });
    let Some(mut span) = span else { return Box::pin(answer(app, request, None, refuse)) };
    let trace_id = Some(span.context().trace_id.to_string());
    Box::pin(async move {
        let answered =
            traces::within(Some(span.scope()), answer(app, request, trace_id, refuse)).await;
        match &answered {
            Ok(response) => span.answered(response.status().as_u16()),
            Err(_) => span.failed("outcome_unknown".into(), NO_ANSWER.into()),
        }
        answered
    })
}

/// What the service's future gives hyper.
type Served = dyn Future<Output = Result<Response<Body>, &'static str>> + Send;

/// Routes (or refuses), answers and logs a request; `traced_id`: its span's trace id, if any.
async fn answer(
    app: Arc<App>,
    request: Request<Incoming>,
    traced_id: Option<String>,
    refuse: bool,
) -> Result<Response<Body>, &'static str> {
    let started = Instant::now();
    let _in_flight = app.metrics.in_flight();
    let id = access::request_id(request.headers());
    let trace_id = traced_id.or_else(|| trace::trace_id(request.headers()).map(str::to_owned));
    let trace_id = trace_id.as_deref();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let (route, task_id) = route(&path);
    let access =
        Access { method: method.as_str(), path: &path, request_id: &id, trace_id, started };
    let answer = match refuse {
        true => Err(ApiError::Overloaded),
        false => match dispatch(&app, route, task_id, request) {
            Ok(handler) => handler.await,
            Err(err) => Err(err),
        },
    };
    let mut response = match answer {
        Ok(response) => response,
        Err(ApiError::OutcomeUnknown(cause)) => {
            access.unanswered(&*cause);
            app.metrics.unanswered();
            return Err(NO_ANSWER);
        }
        Err(err) => err.into_response(&id),
    };
    let status = response.status();
    let wrote = matches!(method, Method::POST | Method::PATCH | Method::DELETE);
    if let (true, true, Some(token)) = (wrote, status.is_success(), app.store.token()) {
        // Sent back on a read, it reads this write (DATABASE_READ_URL, spec §4).
        let token = HeaderValue::try_from(token).expect("hex digits and dashes");
        response.headers_mut().insert(CONSISTENCY_TOKEN.clone(), token);
    }
    if status == StatusCode::REQUEST_TIMEOUT {
        app.metrics.cut("body_timeout");
    }
    access.answered(status);
    app.metrics.record(&method, route, status, started.elapsed());
    let headers = response.headers_mut();
    if app.stopping.load(Ordering::Relaxed) {
        // Draining: the client should take its next request elsewhere.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    headers.insert(&access::X_REQUEST_ID, id);
    Ok(response)
}

/// What conn.rs writes in place of hyper's bare answer to an unparsable head (`status`: 400,
/// or 431): a JSON `detail`, a new request id; logged without method or path, counted as a cut.
pub fn unparsed(app: &App, status: StatusCode) -> Vec<u8> {
    let started = Instant::now();
    let id = access::request_id(&HeaderMap::new());
    let (detail, cut) = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            format!("The request head (line and headers) is larger than {MAX_HEAD_BYTES} bytes"),
            "head_too_large",
        ),
        _ => (
            "The request line or a header is not valid HTTP (a control character, or bad syntax)"
                .to_owned(),
            "malformed",
        ),
    };
    let body = serde_json::json!({ "detail": detail }).to_string();
    Access { method: "-", path: "-", request_id: &id, trace_id: None, started }.answered(status);
    app.metrics.cut(cut);
    let id = id.to_str().unwrap_or("-");
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-request-id: {id}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The header a write's consistency token travels in, both ways.
static CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

/// A handler's future, boxed: a request holds the memory of its own handler only.
type Handler<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// Picks the handler, with what it needs of the head; the head goes before anything waits
/// (docs/performance.md, "Memory per connection").
fn dispatch<'a>(
    app: &'a Arc<App>,
    route: &str,
    id: &str,
    request: Request<Incoming>,
) -> Result<Handler<'a>, ApiError> {
    let (parts, body) = request.into_parts();
    let (method, headers) = (parts.method.clone(), &parts.headers);
    let token = headers.get(&CONSISTENCY_TOKEN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let now = |answer: Answer| -> Handler<'a> { Box::pin(std::future::ready(answer)) };
    Ok(match (route, &method) {
        ("/health", &Method::GET) => now(Ok(handlers::live())),
        ("/ready", &Method::GET) => Box::pin(async move { Ok(handlers::ready(app).await) }),
        ("/metrics", &Method::GET) => now(Ok(handlers::metrics(app, headers))),
        ("/openapi.json", &Method::GET) => now(Ok(handlers::openapi())),
        ("/docs", &Method::GET) if app.docs => now(docs::serve("", headers)),
        ("/docs/{file}", &Method::GET) if app.docs => now(docs::serve(id, headers)),
        ("/docs" | "/docs/{file}", _) if !app.docs => Err(ApiError::NotFound)?,
        ("/tasks", &Method::GET) => {
            let query = ListQuery::parse(parts.uri.query())?;
            Box::pin(async move { handlers::list(app, query, token.as_deref()).await })
        }
        ("/tasks", &Method::POST) => Box::pin(async move {
            let body = body::object(&parts.headers, body).await?;
            let task = NewTask::decode(&body)?;
            let claim = idempotency::claim(&parts.headers, &task, &body)?;
            drop(parts);
            handlers::create(app, NewCreate { task, claim }).await
        }),
        ("/tasks/{id}", &Method::GET) => {
            let (id, none_match) = (parse_id(id)?, conditional::if_none_match(headers)?);
            Box::pin(async move { handlers::get(app, id, none_match, token.as_deref()).await })
        }
        ("/tasks/{id}", &Method::PATCH) => {
            let (id, expected) = (parse_id(id)?, conditional::if_match(headers)?);
            Box::pin(async move {
                let patch = TaskPatch::decode(&body::object(&parts.headers, body).await?)?;
                drop(parts);
                handlers::update(app, id, patch, expected).await
            })
        }
        ("/tasks/{id}", &Method::DELETE) => {
            let (id, expected) = (parse_id(id)?, conditional::if_match(headers)?);
            Box::pin(handlers::delete(app, id, expected))
        }
        (UNMATCHED, _) => Err(ApiError::NotFound)?,
        ("/tasks", _) => Err(ApiError::MethodNotAllowed("GET, POST"))?,
        ("/tasks/{id}", _) => Err(ApiError::MethodNotAllowed("GET, PATCH, DELETE"))?,
        _ => Err(ApiError::MethodNotAllowed("GET"))?,
    })
}
