//! One short function per route, `/health` and `/ready` included. Each takes typed
//! input and returns a response or an [`ApiError`]; routing, rendering errors and
//! logging happen once, around them (router.rs).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Client, Pool};
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use super::App;
use super::body::{self, Body};
use super::error::ApiError;
use crate::batch::Batcher;
use crate::db::REQUEST_BUDGET;
use crate::error::describe;
use crate::tasks::{self, ListQuery, NewTask, Task, TaskPatch};

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
    let page = with_db(&app.pool, async |client| tasks::list(client, &query).await).await?;
    Ok(body::json(StatusCode::OK, &page))
}

/// `POST /tasks`: 201, the task, and where it lives. Inserted together with the other
/// creates queued at the same time (see [`creator`]).
pub async fn create(app: &App, new: NewTask) -> Result<Response<Body>, ApiError> {
    let task = batched(app.creator.submit(new)).await?;
    let mut response = body::json(StatusCode::CREATED, &task);
    let location = HeaderValue::try_from(format!("/tasks/{}", task.id))
        .expect("a path of ASCII digits is a valid header value");
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

/// `GET /tasks/{id}`: looked up together with the other gets queued at the same time
/// (see [`finder`]).
pub async fn get(app: &App, id: i64) -> Result<Response<Body>, ApiError> {
    let task = batched(app.finder.submit(id)).await?;
    Ok(body::json(
        StatusCode::OK,
        &task.ok_or(ApiError::TaskNotFound)?,
    ))
}

/// `PATCH /tasks/{id}`.
pub async fn update(app: &App, id: i64, patch: TaskPatch) -> Result<Response<Body>, ApiError> {
    let task = with_db(&app.pool, async |client| {
        tasks::update(client, id, &patch).await
    })
    .await?;
    Ok(body::json(
        StatusCode::OK,
        &task.ok_or(ApiError::TaskNotFound)?,
    ))
}

/// `DELETE /tasks/{id}`: 204, no body.
pub async fn delete(app: &App, id: i64) -> Result<Response<Body>, ApiError> {
    match with_db(&app.pool, async |client| tasks::delete(client, id).await).await? {
        true => Ok(body::empty(StatusCode::NO_CONTENT)),
        false => Err(ApiError::TaskNotFound),
    }
}

/// The batched lookup behind `GET /tasks/{id}`: one `id = ANY($1)` for every id
/// queued, each answered from the rows that came back.
pub fn finder(
    pool: Pool,
    lanes: usize,
    sizes: Histogram,
) -> Batcher<i64, Result<Option<Task>, ApiError>> {
    Batcher::new(lanes, move |ids: Vec<i64>| {
        sizes.observe(ids.len() as f64);
        let pool = pool.clone();
        async move {
            let rows = with_db(&pool, async |client| tasks::find_many(client, &ids).await).await;
            match rows {
                Ok(rows) => {
                    let found: HashMap<i64, Result<Task, ApiError>> = rows
                        .into_iter()
                        .map(|(id, task)| (id, task.map_err(ApiError::from)))
                        .collect();
                    ids.iter()
                        .map(|id| found.get(id).cloned().transpose())
                        .collect()
                }
                Err(err) => vec![Err(err); ids.len()],
            }
        }
    })
}

/// The batched insert behind `POST /tasks`: one statement, so one commit, for every
/// create queued. Should the database refuse the statement (a row it will not
/// store), nothing was stored, and each is inserted alone, so only that one fails.
pub fn creator(
    pool: Pool,
    lanes: usize,
    sizes: Histogram,
) -> Batcher<NewTask, Result<Task, ApiError>> {
    Batcher::new(lanes, move |new: Vec<NewTask>| {
        sizes.observe(new.len() as f64);
        let pool = pool.clone();
        async move {
            let all = with_db(&pool, async |client| {
                Ok(tasks::insert_many(client, &new).await)
            })
            .await;
            let err = match all {
                Ok(Ok(tasks)) => return tasks.into_iter().map(Ok).collect(),
                Ok(Err(err)) if new.len() > 1 && err.as_db_error().is_some() => {
                    match ApiError::from(err) {
                        // Shutting down, cancelled, too busy: not about any row.
                        unavailable @ ApiError::Unavailable(_) => unavailable,
                        refused => {
                            log::warn!(
                                "{} creates refused as one statement ({refused:?}); \
                                 inserting them one by one",
                                new.len()
                            );
                            return insert_one_by_one(&pool, &new).await;
                        }
                    }
                }
                Ok(Err(err)) => err.into(),
                Err(err) => err,
            };
            vec![Err(err); new.len()]
        }
    })
}

async fn insert_one_by_one(pool: &Pool, new: &[NewTask]) -> Vec<Result<Task, ApiError>> {
    let each = with_db(pool, async |client| {
        let mut tasks = Vec::with_capacity(new.len());
        for task in new {
            tasks.push(tasks::insert(client, task).await.map_err(ApiError::from));
        }
        Ok(tasks)
    });
    each.await.unwrap_or_else(|err| vec![Err(err); new.len()])
}

/// Waits for a batched answer (batch.rs) within [`REQUEST_BUDGET`], time in the queue
/// included.
async fn batched<T>(
    answer: impl Future<Output = Option<Result<T, ApiError>>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_BUDGET, answer).await {
        Ok(Some(result)) => result,
        Ok(None) => Err(ApiError::Internal("batch dispatcher stopped".into())),
        Err(_) => Err(out_of_time()),
    }
}

/// Runs `work` on a pooled connection; waiting for the pool and the queries
/// together get [`REQUEST_BUDGET`], after which the request fails with 503 (spec §2).
async fn with_db<T>(
    pool: &Pool,
    work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, ApiError> {
    let attempt = async {
        let client = pool.get().await?;
        Ok(work(&client).await?)
    };
    tokio::time::timeout(REQUEST_BUDGET, attempt)
        .await
        .unwrap_or_else(|_| Err(out_of_time()))
}

fn out_of_time() -> ApiError {
    ApiError::Unavailable(format!("no answer within {REQUEST_BUDGET:?}"))
}
