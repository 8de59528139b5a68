//! Building responses: JSON, ready-made text, empty ones, and streams. Reading request
//! bodies is body.rs's job; what a page streams, page.rs's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

/// Every response body: bytes ready now (`None` once sent, or for none), or a stream that
/// hyper takes only as fast as the client reads, sent chunked (an `Err` cuts it short).
#[derive(Debug)]
pub enum Body {
    Whole(Option<Bytes>),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match self.get_mut() {
            Body::Whole(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Body::Stream(frames) => {
                frames.poll_recv(cx).map(|frame| frame.map(|bytes| bytes.map(Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as _)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("our response types have string keys only");
    text(status, "application/json", bytes)
}

/// A response of ready-made text, of content type `kind`.
pub fn text(status: StatusCode, kind: &'static str, text: impl Into<Bytes>) -> Response<Body> {
    with_body(status, kind, Body::Whole(Some(text.into())))
}

/// A response with `body`, of `content_type`.
pub fn with_body(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A response with no body (204, 304).
pub fn empty(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(Body::Whole(None)).expect("a status and no headers")
}
