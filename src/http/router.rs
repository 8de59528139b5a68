//! Turns a request into one handler call: one `match` on (method, path segments),
//! with 404 and 405 + `allow` (spec §2). Reading bodies is body.rs's job; the request
//! id and the access-log line are request_id.rs's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::body::{self, Body};
use super::error::ApiError;
use super::{App, handlers, request_id};
use crate::tasks::{ListQuery, NewTask, TaskPatch, parse_id};

/// The service function: route, render any error, stamp the request id, log one
/// line, count it.
pub async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let _in_flight = app.metrics.in_flight();
    let id = request_id::of(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // Split once: routing and the metrics label both match on the segments.
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut response = match route(&app, request, &segments).await {
        Ok(response) => response,
        Err(err) => err.into_response(&id),
    };
    let status = response.status();
    let label = template(&segments);
    request_id::finish(&mut response, id, &method, &path, started);
    app.metrics
        .record(&method, label, status, started.elapsed());
    Ok(response)
}

/// The route a path belongs to, as metrics label it: never a raw id, and one label
/// for every path that matches no route.
fn template(segments: &[&str]) -> &'static str {
    match segments {
        ["tasks"] => "/tasks",
        ["tasks", id] if !id.is_empty() => "/tasks/{id}",
        ["health"] => "/health",
        ["ready"] => "/ready",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        _ => "unmatched",
    }
}

async fn route(
    app: &App,
    request: Request<Incoming>,
    segments: &[&str],
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    match (&parts.method, segments) {
        (&Method::GET, ["health"]) => Ok(handlers::live()),
        (&Method::GET, ["ready"]) => Ok(handlers::ready(app).await),
        (&Method::GET, ["metrics"]) => Ok(handlers::metrics(app)),
        (&Method::GET, ["openapi.json"]) => Ok(handlers::openapi()),
        (_, ["health"] | ["ready"] | ["metrics"] | ["openapi.json"]) => {
            Err(ApiError::MethodNotAllowed("GET"))
        }

        (&Method::GET, ["tasks"]) => {
            handlers::list(app, ListQuery::parse(parts.uri.query())?).await
        }
        (&Method::POST, ["tasks"]) => {
            let new = NewTask::decode(&body::object(&parts.headers, body).await?)?;
            handlers::create(app, new).await
        }
        (_, ["tasks"]) => Err(ApiError::MethodNotAllowed("GET, POST")),

        (_, ["tasks", ""]) => Err(ApiError::NotFound),
        (&Method::GET, ["tasks", id]) => handlers::get(app, parse_id(id)?).await,
        (&Method::PATCH, ["tasks", id]) => {
            let id = parse_id(id)?;
            let patch = TaskPatch::decode(&body::object(&parts.headers, body).await?)?;
            handlers::update(app, id, patch).await
        }
        (&Method::DELETE, ["tasks", id]) => handlers::delete(app, parse_id(id)?).await,
        (_, ["tasks", _]) => Err(ApiError::MethodNotAllowed("GET, PATCH, DELETE")),

        _ => Err(ApiError::NotFound),
    }
}
