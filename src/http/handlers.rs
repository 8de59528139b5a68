//! One short function per route, `/health` and `/ready` included. Each takes typed
//! input and returns a response or an [`ApiError`]; routing, rendering errors and
//! logging happen once, around them (router.rs).

use std::time::Duration;

use deadpool_postgres::Client;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::App;
use super::body::{self, Body};
use super::error::ApiError;
use crate::db::REQUEST_BUDGET;
use crate::error::describe;
use crate::tasks::{self, ListQuery, NewTask, TaskPatch};

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
    body::json(StatusCode::OK, &health)
}

/// `GET /ready`: one database round trip within [`READY_BUDGET`].
pub async fn ready(app: &App) -> Response<Body> {
    let check = async {
        let client = app
            .pool
            .get()
            .await
            .map_err(|err| ("unreachable", describe(&err)))?;
        client
            .batch_execute("SELECT 1")
            .await
            .map_err(|err| ("error", describe(&err)))
    };
    let (code, status, database) = match tokio::time::timeout(READY_BUDGET, check).await {
        Ok(Ok(())) => (StatusCode::OK, "ready", "ok"),
        Ok(Err((reason, cause))) => {
            log::warn!("readiness check failed: {cause}");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason)
        }
        Err(_) => {
            log::warn!("readiness check got no answer within {READY_BUDGET:?}");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "timeout")
        }
    };
    body::json(
        code,
        &Readiness {
            status,
            checks: Checks { database },
        },
    )
}

/// `GET /metrics`: Prometheus text (OpenMetrics 1.0), pool state as of now.
pub fn metrics(app: &App) -> Response<Body> {
    let text = app.metrics.render(app.pool.status());
    body::text(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        text,
    )
}

/// `GET /openapi.json`: the API's contract, compiled into the binary.
pub fn openapi() -> Response<Body> {
    body::text(StatusCode::OK, "application/json", OPENAPI)
}

/// The OpenAPI 3.1 document; tests check the server keeps to it.
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /tasks`.
pub async fn list(app: &App, query: ListQuery) -> Result<Response<Body>, ApiError> {
    let page = with_db(app, async |client| tasks::list(client, &query).await).await?;
    Ok(body::json(StatusCode::OK, &page))
}

/// `POST /tasks`: 201, the task, and where it lives.
pub async fn create(app: &App, new: NewTask) -> Result<Response<Body>, ApiError> {
    let task = with_db(app, async |client| tasks::insert(client, &new).await).await?;
    let mut response = body::json(StatusCode::CREATED, &task);
    let location = HeaderValue::try_from(format!("/tasks/{}", task.id))
        .expect("a path of ASCII digits is a valid header value");
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

/// `GET /tasks/{id}`.
pub async fn get(app: &App, id: i64) -> Result<Response<Body>, ApiError> {
    let task = with_db(app, async |client| tasks::find(client, id).await).await?;
    Ok(body::json(
        StatusCode::OK,
        &task.ok_or(ApiError::TaskNotFound)?,
    ))
}

/// `PATCH /tasks/{id}`.
pub async fn update(app: &App, id: i64, patch: TaskPatch) -> Result<Response<Body>, ApiError> {
    let task = with_db(app, async |client| tasks::update(client, id, &patch).await).await?;
    Ok(body::json(
        StatusCode::OK,
        &task.ok_or(ApiError::TaskNotFound)?,
    ))
}

/// `DELETE /tasks/{id}`: 204, no body.
pub async fn delete(app: &App, id: i64) -> Result<Response<Body>, ApiError> {
    match with_db(app, async |client| tasks::delete(client, id).await).await? {
        true => Ok(body::empty(StatusCode::NO_CONTENT)),
        false => Err(ApiError::TaskNotFound),
    }
}

/// Runs `work` on a pooled connection; waiting for the pool and the queries
/// together get [`REQUEST_BUDGET`], after which the request fails with 503 (spec §2).
async fn with_db<T>(
    app: &App,
    work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, ApiError> {
    let attempt = async {
        let client = app.pool.get().await?;
        Ok(work(&client).await?)
    };
    tokio::time::timeout(REQUEST_BUDGET, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::Unavailable(format!(
                "no answer within {REQUEST_BUDGET:?}"
            )))
        })
}
