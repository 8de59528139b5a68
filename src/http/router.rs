//! Turns a request into one handler call: the path parsed once into a [`Route`], then
//! one `match` on (route, method), with 404 and 405 + `allow` (spec §2). With tracing
//! on, the request runs inside its server span, whose scope its statements see. Reading
//! bodies is body.rs's job; the request id and the access-log line are access.rs's.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode, Version};

use super::access::{self, Access};
use super::error::ApiError;
use super::response::Body;
use super::{App, MAX_HEAD_BYTES, body, conditional, handlers, idempotency};
use crate::observe::metrics;
use crate::observe::traces::{self, ServerRequest, context as trace};
use crate::store::NewCreate;
use crate::tasks::{ListQuery, NewTask, TaskPatch, parse_id};

/// Where a path leads: the API's one route table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Route<'a> {
    /// `/health`
    Health,
    /// `/ready`
    Ready,
    /// `/metrics`
    Metrics,
    /// `/openapi.json`
    OpenApi,
    /// `/tasks`
    Tasks,
    /// `/tasks/{id}`, the id as written (not yet checked).
    Task(&'a str),
    /// Anything else: 404.
    Unmatched,
}

impl<'a> Route<'a> {
    /// The route of `path`.
    pub fn parse(path: &'a str) -> Route<'a> {
        match path.strip_prefix('/') {
            Some("health") => Route::Health,
            Some("ready") => Route::Ready,
            Some("metrics") => Route::Metrics,
            Some("openapi.json") => Route::OpenApi,
            Some("tasks") => Route::Tasks,
            Some(rest) => match rest.strip_prefix("tasks/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Task(id),
                _ => Route::Unmatched,
            },
            None => Route::Unmatched,
        }
    }

    /// The route as metrics label it: never a raw id, and one label for every path
    /// that matches no route.
    pub fn label(self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Tasks => "/tasks",
            Route::Task(_) => "/tasks/{id}",
            Route::Unmatched => "unmatched",
        }
    }

    /// The methods the route answers, as a 405's `allow` lists them.
    fn allow(self) -> &'static str {
        match self {
            Route::Tasks => "GET, POST",
            Route::Task(_) => "GET, PATCH, DELETE",
            _ => "GET",
        }
    }
}

/// What the service returns instead of a response when a write's outcome is unknown:
/// hyper then closes the connection, and the client sees no answer, not a wrong one.
#[derive(Debug)]
pub struct NoAnswer;

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no answer: the outcome of the write is unknown")
    }
}

impl std::error::Error for NoAnswer {}

/// The service function: route (or, for a connection over `MAX_CONNECTIONS`, refuse:
/// 503), render any error, stamp the request id, log one line, count it; with tracing
/// on, within the request's server span.
pub async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
    refuse: bool,
) -> Result<Response<Body>, NoAnswer> {
    let Some(tracer) = &app.tracer else {
        // Tracing off costs this one branch: no span, no id, no scope.
        return answer(&app, request, None, refuse).await;
    };
    let parent = trace::parent(request.headers());
    let Some(mut span) = tracer.server_span(parent, server_request(&request)) else {
        return answer(&app, request, None, refuse).await;
    };
    let trace_id = Some(span.context().trace_id.to_string());
    // Boxed: the traced future's extra state stays out of every untraced request's.
    let answered = Box::pin(traces::within(
        span.scope(),
        answer(&app, request, trace_id, refuse),
    ));
    let answered = answered.await;
    match &answered {
        Ok(response) => span.answered(response.status().as_u16()),
        Err(NoAnswer) => span.failed("outcome_unknown".into(), NoAnswer.to_string()),
    }
    answered
}

/// A request as its server span describes it (HTTP semantic conventions).
fn server_request(request: &Request<Incoming>) -> ServerRequest {
    let path = request.uri().path();
    let agent = request
        .headers()
        .get(USER_AGENT)
        .and_then(|agent| agent.to_str().ok());
    ServerRequest {
        // Clients cannot mint span names: every other method is `_OTHER`.
        method: metrics::method_name(request.method()).unwrap_or("_OTHER"),
        route: Some(Route::parse(path))
            .filter(|r| *r != Route::Unmatched)
            .map(Route::label),
        path: path.to_owned(),
        protocol: if request.version() == Version::HTTP_10 {
            "1.0"
        } else {
            "1.1"
        },
        user_agent: agent.map(str::to_owned),
    }
}

/// Routes (or refuses), answers and logs a request; `traced_id` is its span's trace id,
/// when it has a span.
async fn answer(
    app: &Arc<App>,
    request: Request<Incoming>,
    traced_id: Option<String>,
    refuse: bool,
) -> Result<Response<Body>, NoAnswer> {
    let started = Instant::now();
    let _in_flight = app.metrics.in_flight();
    let id = access::request_id(request.headers());
    let trace_id = traced_id.or_else(|| trace::trace_id(request.headers()).map(str::to_owned));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = Route::parse(&path);
    let access = Access {
        method: method.as_str(),
        path: &path,
        request_id: &id,
        trace_id: trace_id.as_deref(),
        started,
    };
    let answer = match refuse {
        true => Err(ApiError::Overloaded),
        false => dispatch(app, route, request).await,
    };
    let mut response = match answer {
        Ok(response) => response,
        Err(ApiError::OutcomeUnknown(cause)) => {
            access.unanswered(&*cause);
            app.metrics.unanswered();
            return Err(NoAnswer);
        }
        Err(err) => err.into_response(&id),
    };
    if app.is_stopping() {
        // Draining: the client should take its next request elsewhere.
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(CONNECTION, close);
    }
    let status = response.status();
    if status == StatusCode::REQUEST_TIMEOUT {
        app.metrics.cut("body_timeout");
    }
    access.answered(status);
    response
        .headers_mut()
        .insert(access::X_REQUEST_ID.clone(), id);
    app.metrics
        .record(&method, route.label(), status, started.elapsed());
    Ok(response)
}

/// The whole answer to a request head hyper could not parse, `status` being hyper's
/// choice (400, or 431 past the head limit): a JSON `detail` and a new request id, as
/// the bytes conn.rs writes in place of hyper's bare answer. Logged and counted as a
/// request with no method or path, and as a connection the server closed.
pub fn unparsed(app: &App, status: StatusCode) -> Vec<u8> {
    let started = Instant::now();
    let id = access::request_id(&hyper::HeaderMap::new());
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
    let access = Access {
        method: "-",
        path: "-",
        request_id: &id,
        trace_id: None,
        started,
    };
    access.answered(status);
    app.metrics.cut(cut);
    let id = id.to_str().unwrap_or("-");
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-request-id: {id}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn dispatch(
    app: &Arc<App>,
    route: Route<'_>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    match (route, &parts.method) {
        (Route::Health, &Method::GET) => Ok(handlers::live()),
        (Route::Ready, &Method::GET) => Ok(handlers::ready(app).await),
        (Route::Metrics, &Method::GET) => Ok(handlers::metrics(app, &parts.headers)),
        (Route::OpenApi, &Method::GET) => Ok(handlers::openapi()),

        (Route::Tasks, &Method::GET) => {
            handlers::list(app, ListQuery::parse(parts.uri.query())?).await
        }
        (Route::Tasks, &Method::POST) => {
            let body = body::object(&parts.headers, body).await?;
            let task = NewTask::decode(&body)?;
            let claim = idempotency::claim(&parts.headers, &task, &body)?;
            handlers::create(app, NewCreate { task, claim }).await
        }

        (Route::Task(id), &Method::GET) => {
            let id = parse_id(id)?;
            handlers::get(app, id, conditional::if_none_match(&parts.headers)?).await
        }
        (Route::Task(id), &Method::PATCH) => {
            let id = parse_id(id)?;
            let expected = conditional::if_match(&parts.headers)?;
            let patch = TaskPatch::decode(&body::object(&parts.headers, body).await?)?;
            handlers::update(app, id, patch, expected).await
        }
        (Route::Task(id), &Method::DELETE) => {
            let id = parse_id(id)?;
            handlers::delete(app, id, conditional::if_match(&parts.headers)?).await
        }

        (Route::Unmatched, _) => Err(ApiError::NotFound),
        (route, _) => Err(ApiError::MethodNotAllowed(route.allow())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_to_routes_and_labels_never_hold_an_id() {
        for (path, route, label) in [
            ("/tasks", Route::Tasks, "/tasks"),
            ("/tasks/42", Route::Task("42"), "/tasks/{id}"),
            ("/tasks/x", Route::Task("x"), "/tasks/{id}"),
            ("/health", Route::Health, "/health"),
            ("/tasks/", Route::Unmatched, "unmatched"),
            ("/tasks/1/extra", Route::Unmatched, "unmatched"),
            ("//tasks", Route::Unmatched, "unmatched"),
            ("/health/", Route::Unmatched, "unmatched"),
            ("*", Route::Unmatched, "unmatched"),
        ] {
            assert_eq!(Route::parse(path), route, "{path}");
            assert_eq!(route.label(), label, "{path}");
        }
    }
}
