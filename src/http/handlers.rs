//! One short function per route, `/health` and `/ready` included. Each takes typed
//! input and returns a response or an [`ApiError`]; routing, rendering errors and
//! logging happen once, around them (router.rs). The database is the store's.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::error::ApiError;
use super::response::{self, Body};
use super::{App, page};
use crate::store::Health as DbHealth;
use crate::tasks::{ListQuery, NewTask, TaskPatch};

/// `/ready` answers within this, whatever the database does (spec §2).
const READY_BUDGET: Duration = Duration::from_secs(1);

/// `/health`'s body; a struct so the keys keep the spec's order.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    version: &'static str,
}

/// `/ready`'s body.
#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    checks: Checks,
}

#[derive(Serialize)]
struct Checks {
    database: &'static str,
}

/// `GET /health`: liveness. Never touches the database.
pub fn live() -> Response<Body> {
    let health = Health {
        status: "healthy",
        service: "task-api",
        version: crate::VERSION,
    };
    response::json(StatusCode::OK, &health)
}

/// `GET /ready`: one database round trip within [`READY_BUDGET`].
pub async fn ready(app: &App) -> Response<Body> {
    let (code, status, database) = match app.store.check(READY_BUDGET).await {
        DbHealth::Ok => (StatusCode::OK, "ready", "ok"),
        DbHealth::Failed(reason, err) => {
            log::warn!("readiness check failed: {err}");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason)
        }
    };
    let checks = Checks { database };
    response::json(code, &Readiness { status, checks })
}

/// `GET /metrics`: Prometheus text (OpenMetrics 1.0), pool state as of now.
pub fn metrics(app: &App) -> Response<Body> {
    let text = app.metrics.render(app.store.pool_state());
    response::text(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        text,
    )
}

/// `GET /openapi.json`: the API's contract, compiled into the binary.
pub fn openapi() -> Response<Body> {
    response::text(StatusCode::OK, "application/json", OPENAPI)
}

/// The OpenAPI 3.1 document; tests check the server keeps to it.
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /tasks`: the first chunk now, so a failure is still a status; the rest as
/// the client reads (page.rs).
pub async fn list(app: &Arc<App>, query: ListQuery) -> Result<Response<Body>, ApiError> {
    let first = app.store.list(&query).await?;
    Ok(page::respond(app, first))
}

/// `POST /tasks`: 201, the task, and where it lives.
pub async fn create(app: &App, new: NewTask) -> Result<Response<Body>, ApiError> {
    let task = app.store.create(new).await?;
    let mut response = response::json(StatusCode::CREATED, &task);
    let location = HeaderValue::try_from(format!("/tasks/{}", task.id))
        .expect("a path of ASCII digits is a valid header value");
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

/// `GET /tasks/{id}`.
pub async fn get(app: &App, id: i64) -> Result<Response<Body>, ApiError> {
    let task = app.store.get(id).await?.ok_or(ApiError::TaskNotFound)?;
    Ok(response::json(StatusCode::OK, &task))
}

/// `PATCH /tasks/{id}`.
pub async fn update(app: &App, id: i64, patch: TaskPatch) -> Result<Response<Body>, ApiError> {
    let task = app.store.update(id, &patch).await?;
    Ok(response::json(
        StatusCode::OK,
        &task.ok_or(ApiError::TaskNotFound)?,
    ))
}

/// `DELETE /tasks/{id}`: 204, no body.
pub async fn delete(app: &App, id: i64) -> Result<Response<Body>, ApiError> {
    match app.store.delete(id).await? {
        true => Ok(response::empty(StatusCode::NO_CONTENT)),
        false => Err(ApiError::TaskNotFound),
    }
}
