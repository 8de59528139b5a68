//! [`ApiError`]: every way a request can fail, and the one place it meets the client, as a
//! status and `{"detail": …}` (spec §2). Internal causes go to the log, never the body.

use std::borrow::Cow;

use hyper::header::{ALLOW, CONNECTION, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

use super::response::{self, Body};
use crate::error::describe;
use crate::observe::logs::Quoted;
use crate::store::{Cause, StoreError};
use crate::tasks::Invalid;

/// Why a request failed. The [`Cause`] in `Unavailable` and `Internal` is for the log only.
pub enum ApiError {
    /// 400: the body is not JSON, or not an object; or a malformed header.
    BadRequest(String),
    /// 404: no such route.
    NotFound,
    /// 404: no such task.
    TaskNotFound,
    /// 405: the route exists; these are its methods.
    MethodNotAllowed(&'static str),
    /// 406: `/docs`'s gzipped files to a client that takes no gzip.
    NotAcceptable,
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
    /// 503: at capacity (connections, or requests waiting); nothing done. Counted, not logged.
    Overloaded,
    /// No answer (the router closes the connection): a write's verdict never came back.
    OutcomeUnknown(Cause),
    /// 500: anything else.
    Internal(Cause),
}

impl ApiError {
    /// The response the client gets; logs the cause of 500s and 503s.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        use StatusCode as S;
        let request_id = Quoted(request_id.to_str().unwrap_or("-"));
        let header: Option<(HeaderName, &str)> = match &self {
            ApiError::MethodNotAllowed(allow) => Some((ALLOW, allow)),
            ApiError::RequestTimeout => Some((CONNECTION, "close")),
            ApiError::Unavailable(_) | ApiError::Overloaded => Some((RETRY_AFTER, "1")),
            _ => None,
        };
        let (status, detail): (_, Cow<str>) = match self {
            ApiError::BadRequest(detail) => (S::BAD_REQUEST, detail.into()),
            ApiError::NotFound => (S::NOT_FOUND, "Not Found".into()),
            ApiError::TaskNotFound => (S::NOT_FOUND, "Task not found".into()),
            ApiError::MethodNotAllowed(_) => (S::METHOD_NOT_ALLOWED, "Method Not Allowed".into()),
            ApiError::NotAcceptable => {
                let detail = "This file is served gzipped: send Accept-Encoding: gzip";
                (S::NOT_ACCEPTABLE, detail.into())
            }
            ApiError::PreconditionFailed => {
                let detail = "The task is not the version If-Match names; nothing was changed";
                (S::PRECONDITION_FAILED, detail.into())
            }
            ApiError::RequestTimeout => {
                (S::REQUEST_TIMEOUT, "The request body did not arrive in time".into())
            }
            ApiError::PayloadTooLarge(limit) => {
                (S::PAYLOAD_TOO_LARGE, format!("Request body is larger than {limit} bytes").into())
            }
            ApiError::UnsupportedMediaType => {
                (S::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json".into())
            }
            ApiError::Invalid(invalid) => (S::UNPROCESSABLE_ENTITY, invalid.to_string().into()),
            ApiError::Unavailable(cause) => {
                log::warn!("request_id={request_id} database unavailable: {}", describe(&*cause));
                (S::SERVICE_UNAVAILABLE, "Database unavailable; try again shortly".into())
            }
            ApiError::Overloaded => {
                let detail = "The server is at capacity; try again shortly";
                (S::SERVICE_UNAVAILABLE, detail.into())
            }
            // The router answers OutcomeUnknown by closing the connection: never seen here.
            ApiError::Internal(cause) | ApiError::OutcomeUnknown(cause) => {
                log::error!("request_id={request_id} internal error: {}", describe(&*cause));
                (S::INTERNAL_SERVER_ERROR, "Internal server error".into())
            }
        };
        let mut response = response::json(status, &serde_json::json!({ "detail": detail }));
        if let Some((name, value)) = header {
            response.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        response
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
