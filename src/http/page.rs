//! `GET /tasks` as it leaves, memory bounded whatever the page (spec §5): one chunk goes whole;
//! more stream, the next chunk read once the client took the last, no connection held between.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use super::App;
use super::response::{self, Body};
use crate::observe::traces;
use crate::store::Chunk;

/// JSON gathered before it goes to hyper as one frame.
const FRAME_BYTES: usize = 16 * 1024;

/// The response to `GET /tasks`, given its first chunk.
pub fn respond(app: &Arc<App>, first: Chunk) -> Response<Body> {
    if first.more.is_none() {
        return response::json(StatusCode::OK, &first.tasks);
    }
    // One frame waits for hyper at most; the next is made only once it is taken.
    let (frames, body) = mpsc::channel(1);
    let rest = stream(app.clone(), first, frames);
    // The chunks read later are statements of this request too.
    tokio::spawn(traces::within(traces::current(), rest));
    response::with_body(StatusCode::OK, "application/json", Body::Stream(body))
}

/// Writes the page as a JSON array into `frames`, chunk after chunk, till it ends or the client
/// goes; a chunk that cannot be read cuts the response short, never passing for a whole page.
async fn stream(app: Arc<App>, mut chunk: Chunk, frames: mpsc::Sender<io::Result<Bytes>>) {
    let mut frame = Vec::with_capacity(FRAME_BYTES * 2);
    let mut separator = b'['; // before the first task, then a comma before each
    loop {
        for task in chunk.tasks.drain(..) {
            frame.push(std::mem::replace(&mut separator, b','));
            serde_json::to_writer(&mut frame, &task).expect("a task serializes");
            if frame.len() >= FRAME_BYTES {
                let full = std::mem::replace(&mut frame, Vec::with_capacity(FRAME_BYTES * 2));
                if frames.send(Ok(full.into())).await.is_err() {
                    return; // the client went
                }
            }
        }
        let Some(cursor) = chunk.more else { break };
        chunk = match app.store.list_more(cursor).await {
            Ok(next) => next,
            Err(err) => {
                log::warn!("a page of tasks was cut short: {err}");
                let _ = frames.send(Err(io::Error::other("page cut short"))).await;
                return;
            }
        };
    }
    frame.extend_from_slice(if separator == b'[' { b"[]" } else { b"]" });
    let _ = frames.send(Ok(frame.into())).await;
}
