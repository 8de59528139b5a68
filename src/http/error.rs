//! [`ApiError`]: every way a request can fail, the status each maps to, and the one
//! place an error meets the client as `{"detail": …}` (spec §2). Internal causes go
//! to the log, never into the body. Database errors become `ApiError` here.

use std::fmt;

use deadpool_postgres::PoolError;
use hyper::header::{ALLOW, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio_postgres::error::SqlState;

use super::body::{self, Body, MAX_BODY_BYTES};
use crate::error::describe;
use crate::tasks::Invalid;

/// Why a request failed. `Display` is written for the client; the `String` in
/// `Unavailable` and `Internal` is the cause, for the log only. `Clone`, because one
/// failed batched statement fails every request in it (batch.rs).
#[derive(Clone, Debug)]
pub enum ApiError {
    /// 400: the body is not JSON, or not an object.
    BadRequest(String),
    /// 404: no such route.
    NotFound,
    /// 404: no such task.
    TaskNotFound,
    /// 405: the route exists; these are its methods.
    MethodNotAllowed(&'static str),
    /// 413: body over [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 415: body without `application/json`.
    UnsupportedMediaType,
    /// 422: `"<field>: <reason>"`.
    Invalid(String),
    /// 503: the database could not serve in time.
    Unavailable(String),
    /// 500: anything else.
    Internal(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound | ApiError::TaskNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response the client gets; logs the cause of 500s and 503s.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        let request_id = request_id.to_str().unwrap_or("-");
        match &self {
            ApiError::Internal(cause) => {
                log::error!("request_id={request_id} internal error: {cause}")
            }
            ApiError::Unavailable(cause) => {
                log::warn!("request_id={request_id} database unavailable: {cause}")
            }
            _ => {}
        }
        let mut response = body::json(self.status(), &json!({"detail": self.to_string()}));
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(detail) | ApiError::Invalid(detail) => f.write_str(detail),
            ApiError::NotFound => f.write_str("Not Found"),
            ApiError::TaskNotFound => f.write_str("Task not found"),
            ApiError::MethodNotAllowed(_) => f.write_str("Method Not Allowed"),
            ApiError::PayloadTooLarge => {
                write!(f, "Request body is larger than {MAX_BODY_BYTES} bytes")
            }
            ApiError::UnsupportedMediaType => f.write_str("Content-Type must be application/json"),
            ApiError::Unavailable(_) => f.write_str("Database unavailable; try again shortly"),
            ApiError::Internal(_) => f.write_str("Internal server error"),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::Invalid(invalid.to_string())
    }
}

impl From<PoolError> for ApiError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Backend(err) => err.into(),
            PoolError::Timeout(_) | PoolError::Closed => ApiError::Unavailable(describe(&err)),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            // No answer from the server: the connection failed or was closed.
            let lost = err.is_closed()
                || std::error::Error::source(&err)
                    .is_some_and(|cause| cause.is::<std::io::Error>());
            return match lost {
                true => ApiError::Unavailable(describe(&err)),
                false => ApiError::Internal(describe(&err)),
            };
        };
        let code = db.code();
        if code == &SqlState::CHECK_VIOLATION {
            // Constraints are named tasks_<field>_check (sql/V1__create_tasks.sql).
            let field = db
                .constraint()
                .and_then(|name| name.strip_prefix("tasks_")?.strip_suffix("_check"))
                .unwrap_or("body");
            ApiError::Invalid(format!("{field}: is not allowed"))
        } else if code == &SqlState::NOT_NULL_VIOLATION {
            ApiError::Invalid(format!(
                "{}: must not be null",
                db.column().unwrap_or("body")
            ))
        } else if code == &SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || code == &SqlState::UNTRANSLATABLE_CHARACTER
        {
            ApiError::Invalid("body: holds a character the database cannot store".into())
        } else if [
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ]
        .contains(code)
        {
            ApiError::Unavailable(format!("{}: {}", code.code(), db.message()))
        } else {
            // The message only: DETAIL can quote the row ("Key (title)=(…) already
            // exists"), which is the request body, and bodies stay out of the log.
            ApiError::Internal(format!("{}: {}", code.code(), db.message()))
        }
    }
}
