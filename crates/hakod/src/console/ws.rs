//! `GET /v1/vms/{name}/console`: the upgrade to a WebSocket.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::handlers::error;
use crate::daemon::Daemon;

/// The largest message a viewer may send (input: keystrokes, or a paste).
pub(crate) const MAX_INPUT_MESSAGE: usize = 64 << 10;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsoleQuery {
    /// `rw` asks to type (granted to the first viewer that asks, while it stays
    /// connected; the others are told they are read-only); `ro` (the default)
    /// only watches.
    pub mode: Option<String>,
}

/// The VM's serial console as a WebSocket. The server sends first a text message
/// `{"type":"hello","vm":NAME,"mode":"rw"|"ro","state":STATE,"reason"?:...}`,
/// then the console buffer (the last 1 MiB, over the VM's runs) and live output
/// as binary messages; later text messages are `{"type":"state","state":...}`
/// when the VM's state changes and `{"type":"notice","message":...}` (input
/// refused: read-only, the VM not running, the guest not reading). Binary or text
/// messages from the typing viewer go to the guest's serial console, at most
/// 64 KiB each. The VM need not be running: a viewer may wait for its boot.
#[utoipa::path(get, path = "/v1/vms/{name}/console", tag = "console", params(("name" = String, Path), ConsoleQuery),
    responses(
    (status = 101, description = "Switching to the WebSocket protocol"),
    (status = 400, description = "Not a WebSocket upgrade, or a bad mode", body = control_api::types::ErrorBody),
    (status = 404, description = "No such VM", body = control_api::types::ErrorBody)))]
pub(crate) async fn console(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    q: Result<Query<ConsoleQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let slot = match d.slot(&name) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let rw = match q.as_ref().map(|Query(q)| q.mode.as_deref()) {
        Ok(None | Some("ro")) => false,
        Ok(Some("rw")) => true,
        Ok(Some(other)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("mode is 'rw' or 'ro', not '{other}'"),
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the console is a WebSocket: {}", e.body_text()),
            )
        }
    };
    ws.max_message_size(MAX_INPUT_MESSAGE)
        .max_frame_size(MAX_INPUT_MESSAGE)
        .on_upgrade(move |socket| super::session::run(socket, slot, rw))
        .into_response()
}
