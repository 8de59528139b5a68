//! One short function per route: typed input in, a response or an [`ApiError`] out. Routing,
//! rendering errors and logging happen once, around them (router.rs); the database is the store's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::header::{ETAG, HeaderMap, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};

use super::conditional::{self, Tags};
use super::error::ApiError;
use super::idempotency::IDEMPOTENT_REPLAYED;
use super::response::{self, Body};
use super::{App, page};
use crate::observe::metrics::Format;
use crate::store::{Change, Creation, Health, NewCreate, Precondition};
use crate::tasks::{Invalid, ListQuery, Task, TaskPatch};

/// `/ready` answers within this, whatever the database does (spec §2).
const READY_BUDGET: Duration = Duration::from_secs(1);

/// `GET /health`: liveness. Never touches the database.
pub fn live() -> Response<Body> {
    let version = crate::VERSION;
    let body = format!(r#"{{"status":"healthy","service":"task-api","version":"{version}"}}"#);
    response::text(StatusCode::OK, "application/json", body)
}

/// `GET /ready`: one database round trip within [`READY_BUDGET`]; 503 at once when the
/// server is stopping, so load balancers take it out before it stops accepting.
pub async fn ready(app: &App) -> Response<Body> {
    let (code, status, database) = match app.stopping.load(Ordering::Relaxed) {
        true => (StatusCode::SERVICE_UNAVAILABLE, "stopping", "not checked"),
        false => match app.store.check(READY_BUDGET).await {
            Health::Ok => (StatusCode::OK, "ready", "ok"),
            Health::Failed(reason, err) => {
                log::warn!("readiness check failed: {err}");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason)
            }
        },
    };
    let database = serde_json::Value::from(database); // quoted and escaped
    let body = format!(r#"{{"status":"{status}","checks":{{"database":{database}}}}}"#);
    response::text(code, "application/json", body)
}

/// `GET /metrics`: pool state as of now, in the Prometheus format `Accept` asks for.
pub fn metrics(app: &App, headers: &HeaderMap) -> Response<Body> {
    let format = Format::accepted(headers);
    let text = app.metrics.render(app.store.pool_state(), format);
    response::text(StatusCode::OK, format.content_type(), text)
}

/// `GET /openapi.json`: the API's contract (OpenAPI 3.1), compiled in; tests hold us to it.
pub fn openapi() -> Response<Body> {
    response::text(StatusCode::OK, "application/json", include_str!("openapi.json"))
}

/// What a handler returns: rendered by router.rs, whichever it is.
pub type Answer = Result<Response<Body>, ApiError>;

/// `GET /tasks`: the first chunk now, so a failure is still a status; the rest later (page.rs).
pub async fn list(app: &Arc<App>, query: ListQuery, token: Option<&str>) -> Answer {
    let first = app.store.list(&query, token).await?;
    Ok(page::respond(app, first))
}

/// `POST /tasks`: 201, the task, its ETag and where it lives; for an `Idempotency-Key`
/// seen before with the same body, that answer again, marked replayed, nothing stored.
pub async fn create(app: &App, create: NewCreate) -> Answer {
    let (task, replayed) = match app.store.create(create).await? {
        Creation::Created(task) => (task, false),
        Creation::Replayed(task) => (task, true),
        Creation::KeyReused => {
            let field = "idempotency-key".into();
            Err(Invalid { field, reason: "was already used for another request" })?
        }
    };
    let mut response = tagged(response::json(StatusCode::CREATED, &task), &task);
    let headers = response.headers_mut();
    let location = HeaderValue::try_from(format!("/tasks/{}", task.id));
    headers.insert(LOCATION, location.expect("/tasks/<digits> is a header value"));
    if replayed {
        headers.insert(&IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /tasks/{id}`; 304 and no body when `If-None-Match` names its ETag.
pub async fn get(app: &App, id: i64, none_match: Option<Tags>, token: Option<&str>) -> Answer {
    let task = app.store.get(id, token).await?.ok_or(ApiError::TaskNotFound)?;
    if none_match.is_some_and(|tags| conditional::none_match(&tags, &task)) {
        return Ok(tagged(response::empty(StatusCode::NOT_MODIFIED), &task));
    }
    Ok(tagged(response::json(StatusCode::OK, &task), &task))
}

/// `PATCH /tasks/{id}`, if the task meets `expected` (`If-Match`): else 412.
pub async fn update(app: &App, id: i64, patch: TaskPatch, expected: Precondition) -> Answer {
    let task = changed(app.store.update(id, patch, expected).await?)?;
    Ok(tagged(response::json(StatusCode::OK, &task), &task))
}

/// `DELETE /tasks/{id}`: 204, no body; if the task meets `expected` (`If-Match`): else 412.
pub async fn delete(app: &App, id: i64, expected: Precondition) -> Answer {
    changed(app.store.delete(id, expected).await?)?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// `response`, with the ETag of `task`.
fn tagged(mut response: Response<Body>, task: &Task) -> Response<Body> {
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
