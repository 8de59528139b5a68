//! One short function per route, `/health` and `/ready` included. Each takes typed
//! input and returns a response or an [`ApiError`]; routing, rendering errors and
//! logging happen once, around them (router.rs). The database is the store's.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{ETAG, HeaderMap, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::error::ApiError;
use super::idempotency::IDEMPOTENT_REPLAYED;
use super::response::{self, Body};
use super::{App, conditional, page};
use crate::observe::metrics::Format;
use crate::store::{Change, Creation, Health as DbHealth, NewCreate, Precondition};
use crate::tasks::{Invalid, ListQuery, Task, TaskPatch};

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

/// `GET /ready`: one database round trip within [`READY_BUDGET`]; 503 at once when the
/// server is stopping, so load balancers take it out before it stops accepting.
pub async fn ready(app: &App) -> Response<Body> {
    if app.is_stopping() {
        let checks = Checks {
            database: "not checked",
        };
        let stopping = Readiness {
            status: "stopping",
            checks,
        };
        return response::json(StatusCode::SERVICE_UNAVAILABLE, &stopping);
    }
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

/// `GET /metrics`: pool state as of now, in the Prometheus format `Accept` asks for.
pub fn metrics(app: &App, headers: &HeaderMap) -> Response<Body> {
    let format = Format::accepted(headers);
    let text = app.metrics.render(app.store.pool_state(), format);
    response::text(StatusCode::OK, format.content_type(), text)
}

/// `GET /openapi.json`: the API's contract, compiled into the binary.
pub fn openapi() -> Response<Body> {
    response::text(StatusCode::OK, "application/json", OPENAPI)
}

/// The OpenAPI 3.1 document; tests check the server keeps to it.
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /tasks`: the first chunk now, so a failure is still a status; the rest as
/// the client reads (page.rs).
pub async fn list(
    app: &Arc<App>,
    query: ListQuery,
    token: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let first = app.store.list(&query, token).await?;
    Ok(page::respond(app, first))
}

/// `POST /tasks`: 201, the task, its ETag and where it lives. With an `Idempotency-Key`
/// seen before for the same body: the same answer again, marked replayed, and nothing
/// stored.
pub async fn create(app: &App, create: NewCreate) -> Result<Response<Body>, ApiError> {
    let (task, replayed) = match app.store.create(create).await? {
        Creation::Created(task) => (task, false),
        Creation::Replayed(task) => (task, true),
        Creation::KeyReused => {
            return Err(ApiError::Invalid(Invalid {
                field: "idempotency-key".into(),
                reason: "was already used for another request",
            }));
        }
    };
    let mut response = with_task(StatusCode::CREATED, &task);
    let location = HeaderValue::try_from(format!("/tasks/{}", task.id))
        .expect("a path of ASCII digits is a valid header value");
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    if replayed {
        headers.insert(
            IDEMPOTENT_REPLAYED.clone(),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// `GET /tasks/{id}`; 304 and no body when `If-None-Match` names its ETag.
pub async fn get(
    app: &App,
    id: i64,
    none_match: Option<conditional::Tags>,
    token: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let task = app
        .store
        .get(id, token)
        .await?
        .ok_or(ApiError::TaskNotFound)?;
    if none_match.is_some_and(|tags| conditional::none_match(&tags, &task)) {
        let mut response = response::empty(StatusCode::NOT_MODIFIED);
        response
            .headers_mut()
            .insert(ETAG, conditional::etag(&task));
        return Ok(response);
    }
    Ok(with_task(StatusCode::OK, &task))
}

/// `PATCH /tasks/{id}`, if the task meets `expected` (`If-Match`): else 412.
pub async fn update(
    app: &App,
    id: i64,
    patch: TaskPatch,
    expected: Precondition,
) -> Result<Response<Body>, ApiError> {
    let task = changed(app.store.update(id, patch, expected).await?)?;
    Ok(with_task(StatusCode::OK, &task))
}

/// `DELETE /tasks/{id}`: 204, no body; if the task meets `expected` (`If-Match`),
/// else 412.
pub async fn delete(
    app: &App,
    id: i64,
    expected: Precondition,
) -> Result<Response<Body>, ApiError> {
    changed(app.store.delete(id, expected).await?)?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// A task as JSON, with its ETag.
fn with_task(status: StatusCode, task: &Task) -> Response<Body> {
    let mut response = response::json(status, task);
    response.headers_mut().insert(ETAG, conditional::etag(task));
    response
}

/// What a conditional change did, as the client meets it.
fn changed<T>(change: Change<T>) -> Result<T, ApiError> {
    match change {
        Change::Done(done) => Ok(done),
        Change::NotFound => Err(ApiError::TaskNotFound),
        Change::PreconditionFailed => Err(ApiError::PreconditionFailed),
    }
}
