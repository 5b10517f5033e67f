//! The event stream: every change of a VM's state (`GET /v1/events`, as
//! server-sent events).
//!
//! A VM's state lives in its [`crate::vm::Inner`], changed only under its lock;
//! the guard that lock hands out ([`crate::vm::InnerGuard`]) compares the state
//! when it was taken with the state when it is dropped and publishes the change
//! here. So no code path that changes a state can forget to tell, and the events
//! of one VM come in the order its changes happened.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;

use crate::daemon::Daemon;

/// How many events a slow reader may fall behind before it misses some (it is
/// then told with a `lagged` event).
const BACKLOG: usize = 1024;

/// One change of a VM's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmEvent {
    /// Counts the daemon's events from 1.
    pub seq: u64,
    pub vm: String,
    /// `defined`, `running`, `paused`, `crashed`, or `undefined` (it is gone).
    pub state: String,
    /// The state before (`new` for a VM just defined).
    pub previous: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// The daemon's publisher of events.
pub(crate) struct Events {
    tx: broadcast::Sender<VmEvent>,
    seq: AtomicU64,
    /// Set when the daemon ends: every stream ends.
    closed: watch::Sender<bool>,
}

pub(crate) type EventsRef = Arc<Events>;

impl Events {
    pub fn new() -> EventsRef {
        Arc::new(Events {
            tx: broadcast::channel(BACKLOG).0,
            seq: AtomicU64::new(0),
            closed: watch::channel(false).0,
        })
    }

    /// Publishes `vm`'s change from `previous` to `state`.
    pub fn publish(&self, vm: &str, previous: &str, state: &str) {
        let ev = VmEvent {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            vm: vm.to_string(),
            state: state.to_string(),
            previous: previous.to_string(),
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        tracing::debug!(
            "event {}: {} {} -> {}",
            ev.seq,
            ev.vm,
            ev.previous,
            ev.state
        );
        // No receiver: nobody listens, nothing is lost that anyone waits for.
        let _ = self.tx.send(ev);
    }

    pub fn subscribe(&self) -> (broadcast::Receiver<VmEvent>, watch::Receiver<bool>) {
        (self.tx.subscribe(), self.closed.subscribe())
    }

    /// Ends every stream (the daemon is ending).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// The VM state changes, as they happen: server-sent events (`text/event-stream`)
/// named `state`, each a `VmEvent` as JSON; a reader that fell more than 1024
/// events behind gets a `lagged` event with how many it missed.
#[utoipa::path(get, path = "/v1/events", responses(
    (status = 200, description = "An endless text/event-stream of `state` events (VmEvent)",
     body = VmEvent, content_type = "text/event-stream")))]
pub(crate) async fn stream(State(d): State<Arc<Daemon>>) -> Response {
    let s = futures_util::stream::unfold(d.events.subscribe(), |(mut rx, mut closed)| async move {
        let got = tokio::select! {
            r = rx.recv() => r,
            _ = closed.wait_for(|c| *c) => return None,
        };
        let ev = match got {
            Ok(ev) => Event::default()
                .event("state")
                .id(ev.seq.to_string())
                .json_data(&ev)
                .unwrap_or_default(),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(ev), (rx, closed)))
    });
    Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
