//! [`ApiError`]: every way a request can fail, the status each maps to, and the one
//! place an error meets the client as `{"detail": …}` (spec §2). Internal causes go
//! to the log, never into the body. What a database failure means is decided in the
//! store (store/outcome.rs); here it only gets its status.

use std::fmt;

use hyper::header::{ALLOW, CONNECTION, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::response::{self, Body};
use crate::error::describe;
use crate::observe::logs::Quoted;
use crate::store::{Cause, StoreError};
use crate::tasks::Invalid;

/// Why a request failed. `Display` is written for the client; the [`Cause`] in
/// `Unavailable` and `Internal` is for the log only.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON, or not an object; or a malformed header.
    BadRequest(String),
    /// 400: a request head hyper could not parse (conn.rs answers it).
    MalformedHead,
    /// 431: a request head over the limit (conn.rs answers it).
    HeadTooLarge,
    /// 404: no such route.
    NotFound,
    /// 404: no such task.
    TaskNotFound,
    /// 405: the route exists; these are its methods.
    MethodNotAllowed(&'static str),
    /// 412: `If-Match` did not match the task; nothing changed.
    PreconditionFailed,
    /// 408: the body did not arrive within its deadline; the connection closes.
    RequestTimeout,
    /// 413: body over the limit, in bytes.
    PayloadTooLarge(usize),
    /// 415: body without `application/json`.
    UnsupportedMediaType,
    /// 422: a rule of spec §1 broken.
    Invalid(Invalid),
    /// 503: the database could not serve in time.
    Unavailable(Cause),
    /// 503: the server is at capacity (connections, or requests waiting for the
    /// database); nothing was done. Not logged: the metrics count it.
    Overloaded,
    /// No answer at all: a write was sent and no verdict came back, so any status
    /// would be a guess. The router closes the connection instead.
    OutcomeUnknown(Cause),
    /// 500: anything else.
    Internal(Cause),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::MalformedHead => StatusCode::BAD_REQUEST,
            ApiError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::NotFound | ApiError::TaskNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::OutcomeUnknown(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The response the client gets; logs the cause of 500s and 503s.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        let request_id = Quoted(request_id.to_str().unwrap_or("-"));
        match &self {
            ApiError::Internal(cause) => {
                log::error!(
                    "request_id={request_id} internal error: {}",
                    describe(&**cause)
                )
            }
            ApiError::Unavailable(cause) => {
                log::warn!(
                    "request_id={request_id} database unavailable: {}",
                    describe(&**cause)
                )
            }
            _ => {}
        }
        let mut response = response::json(self.status(), &json!({"detail": self.to_string()}));
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable(_) | ApiError::Overloaded => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RequestTimeout => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(detail) => f.write_str(detail),
            ApiError::MalformedHead => f.write_str(
                "The request line or a header is not valid HTTP (a control character, or bad \
                 syntax)",
            ),
            ApiError::HeadTooLarge => write!(
                f,
                "The request head (line and headers) is larger than {} bytes",
                super::MAX_HEAD_BYTES
            ),
            ApiError::Invalid(invalid) => invalid.fmt(f),
            ApiError::NotFound => f.write_str("Not Found"),
            ApiError::TaskNotFound => f.write_str("Task not found"),
            ApiError::MethodNotAllowed(_) => f.write_str("Method Not Allowed"),
            ApiError::PreconditionFailed => {
                f.write_str("The task is not the version If-Match names; nothing was changed")
            }
            ApiError::RequestTimeout => f.write_str("The request body did not arrive in time"),
            ApiError::PayloadTooLarge(limit) => {
                write!(f, "Request body is larger than {limit} bytes")
            }
            ApiError::UnsupportedMediaType => f.write_str("Content-Type must be application/json"),
            ApiError::Unavailable(_) => f.write_str("Database unavailable; try again shortly"),
            ApiError::Overloaded => f.write_str("The server is at capacity; try again shortly"),
            ApiError::Internal(_) => f.write_str("Internal server error"),
            ApiError::OutcomeUnknown(_) => f.write_str("The outcome is unknown"),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::Invalid(invalid)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
            StoreError::Refused(invalid) => ApiError::Invalid(invalid),
            StoreError::Unknown(cause) => ApiError::OutcomeUnknown(cause),
            StoreError::Busy => ApiError::Overloaded,
            StoreError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}
