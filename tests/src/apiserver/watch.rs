//! Watches: a chunked response of newline-delimited `{"type": ..., "object": ...}` events.
//!
//! A watch keeps a cursor, the RV up to which it has sent every event. Each round it reads the
//! store's log after the cursor under the lock, sends what matches, and sleeps until the next
//! write, the next bookmark tick or its timeout. Reading the log (rather than being pushed
//! events) makes replay from an old RV and live delivery the same code, and a watch whose
//! cursor falls out of the log (or across a `compact`) ends with a 410 ERROR event, after
//! which kube's watcher relists.
//!
//! A test may hold every event back for a while after its write (`set_watch_delay`), as a
//! loaded API server's watch lags behind its writes: a controller that trusts its cache right
//! after writing then sees its own stale state, reliably instead of once in a while.
//!
//! Events go through a bounded channel of 64 lines to the response body: a client that reads
//! slowly holds its own watch back instead of filling memory.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use super::discovery::Resource;
use super::failure::{Failure, Result};
use super::routing::Shared;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, present};

/// How often a watch that allows bookmarks gets one (kube-apiserver sends them about once a
/// minute; once a second lets tests see watch cursors advance without waiting).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a watch without `timeoutSeconds` lasts: kube-apiserver's default range is 30–60 min.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Lines buffered between a watch and its response body.
const BUFFER: usize = 64;

/// The parameters of one watch request.
#[derive(Debug)]
pub(crate) struct WatchOptions {
    pub(crate) resource: Resource,
    /// None watches every namespace (or a cluster-scoped kind).
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    /// Absent, "" or "0": start with the current objects as ADDED; else resume after it.
    pub(crate) resource_version: Option<String>,
    pub(crate) timeout_seconds: Option<u64>,
    pub(crate) bookmarks: bool,
    /// The streaming-list form: current objects as ADDED, then a bookmark marking their end.
    pub(crate) send_initial_events: bool,
}

impl WatchOptions {
    fn matches(&self, event: &Event) -> bool {
        let namespace = event
            .object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        event.collection == self.resource.collection()
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| namespace == Some(ns))
            && self.labels.matches(&event.object)
            && self.fields.matches(&event.object)
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": metadata,
        });
        json!({"type": "BOOKMARK", "object": object})
    }
}

/// Starts a watch and returns its streaming response.
pub(crate) fn start(shared: Arc<Shared>, options: WatchOptions) -> Result<Response> {
    let rv = options
        .resource_version
        .as_deref()
        .filter(|rv| !rv.is_empty() && *rv != "0");
    let resume = match rv {
        Some(rv) if !options.send_initial_events => Some(
            rv.parse::<u64>()
                .map_err(|_| Failure::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
        _ => None,
    };
    let mut initial = Vec::new();
    let store = shared.store();
    let epoch = store.epoch();
    let mut changes = store.subscribe();
    changes.borrow_and_update();
    let cursor = match resume {
        Some(rv) => rv,
        None => {
            let objects = store.list(
                &options.resource,
                options.namespace.as_deref(),
                &options.labels,
                &options.fields,
            );
            initial.extend(
                objects
                    .into_iter()
                    .map(|(_, o)| json!({"type": "ADDED", "object": o})),
            );
            store.resource_version()
        }
    };
    drop(store);
    if options.send_initial_events {
        initial.push(options.bookmark(cursor, true));
    }
    let (lines, body) = mpsc::channel::<Bytes>(BUFFER);
    tokio::spawn(async move {
        // 0 means "the server's default", as on kube-apiserver.
        let timeout = options
            .timeout_seconds
            .filter(|t| *t > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let watch = Watch {
            shared,
            options,
            lines,
            epoch,
            cursor,
        };
        watch.run(initial, changes, Instant::now() + timeout).await;
    });
    let body = Body::from_stream(ReceiverStream::new(body).map(Ok::<_, Infallible>));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// One running watch.
struct Watch {
    shared: Arc<Shared>,
    options: WatchOptions,
    lines: mpsc::Sender<Bytes>,
    epoch: u64,
    cursor: u64,
}

impl Watch {
    /// Sends events until the timeout, a 410, or the client going away.
    async fn run(
        mut self,
        initial: Vec<Value>,
        mut changes: tokio::sync::watch::Receiver<u64>,
        deadline: Instant,
    ) {
        for event in initial {
            if !self.send(&event).await {
                return;
            }
        }
        let mut bookmarks =
            tokio::time::interval_at(Instant::now() + BOOKMARK_INTERVAL, BOOKMARK_INTERVAL);
        bookmarks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            changes.borrow_and_update();
            let polled = self.shared.store().events_after(self.cursor, self.epoch);
            match polled {
                Err(gone) => {
                    let event = json!({"type": "ERROR", "object": gone.to_status()});
                    self.send(&event).await;
                    return;
                }
                Ok((events, cursor)) => {
                    for event in events.iter().filter(|e| self.options.matches(e)) {
                        let delay = self.shared.watch_delay();
                        if !delay.is_zero() {
                            tokio::time::sleep_until(event.at + delay).await;
                        }
                        let object = present(&self.options.resource, event.object.clone());
                        let line = json!({"type": event.event_type.as_str(), "object": object});
                        if !self.send(&line).await {
                            return;
                        }
                    }
                    self.cursor = cursor;
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = bookmarks.tick(), if self.options.bookmarks => {
                    let bookmark = self.options.bookmark(self.cursor, false);
                    if !self.send(&bookmark).await {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = self.lines.closed() => return,
            }
        }
    }

    /// Sends one event line; false once the client has gone.
    async fn send(&self, event: &Value) -> bool {
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        self.lines.send(Bytes::from(line)).await.is_ok()
    }
}
