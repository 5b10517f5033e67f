//! One viewer's WebSocket: the hello, the console buffer, live output, state
//! changes, and (for the typing viewer) input to the guest.
//!
//! Nothing a client sends can hurt the daemon: messages over 64 KiB end its
//! connection (the WebSocket layer refuses them), input is written without
//! blocking, and a viewer that reads slowly only holds up itself (it reads from
//! the VM's ring at its own pace, skipping what the ring has dropped); one that
//! takes nothing for 30 s is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use serde_json::json;

use super::fifo::{self, Sent};
use crate::api::types::VmState;
use crate::vm::{lock, Slot};

/// The largest binary message of console output.
const CHUNK: usize = 64 << 10;
/// How often the state is looked at when no output comes.
const STATE_POLL: Duration = Duration::from_millis(250);
/// A viewer that takes no message for this long is dropped (and frees the typing
/// seat if it held it).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `m`; false if the viewer is gone or stuck.
async fn send(socket: &mut WebSocket, m: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(m)).await,
        Ok(Ok(()))
    )
}

/// The VM's state, or `None` once it is undefined.
fn state_of(slot: &Slot) -> Option<VmState> {
    let g = slot.inner();
    (!g.removed).then(|| g.state())
}

fn state_name(s: Option<VmState>) -> serde_json::Value {
    match s {
        Some(s) => serde_json::to_value(s).unwrap_or_default(),
        None => "undefined".into(),
    }
}

async fn send_json(socket: &mut WebSocket, v: serde_json::Value) -> bool {
    send(socket, Message::Text(v.to_string().into())).await
}

async fn notice(socket: &mut WebSocket, message: String) -> bool {
    send_json(socket, json!({"type": "notice", "message": message})).await
}

/// Serves one viewer until it goes (or the VM is undefined).
pub(crate) async fn run(mut socket: WebSocket, slot: Arc<Slot>, rw: bool) {
    let seat = if rw { slot.console.claim() } else { None };
    let mut state = state_of(&slot);
    let mut hello = json!({
        "type": "hello",
        "vm": slot.name,
        "mode": if seat.is_some() { "rw" } else { "ro" },
        "state": state_name(state),
    });
    if rw && seat.is_none() {
        hello["reason"] = "another viewer types on this console: this one is read-only".into();
    }
    if !send_json(&mut socket, hello).await {
        return;
    }
    let (mut grew, mut offset) = {
        let ring = lock(&slot.log);
        (ring.subscribe(), ring.start())
    };
    loop {
        // What came since the last look (all of the ring, the first time).
        loop {
            let (start, bytes) = lock(&slot.log).since(offset);
            if bytes.is_empty() {
                break;
            }
            offset = start + bytes.len() as u64;
            for c in bytes.chunks(CHUNK) {
                if !send(&mut socket, Message::Binary(c.to_vec().into())).await {
                    return;
                }
            }
        }
        let now = state_of(&slot);
        if now != state {
            state = now;
            if !send_json(
                &mut socket,
                json!({"type": "state", "state": state_name(now)}),
            )
            .await
            {
                return;
            }
        }
        if now.is_none() {
            send(&mut socket, Message::Close(None)).await;
            return;
        }
        tokio::select! {
            r = grew.changed() => {
                if r.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(STATE_POLL) => {}
            m = socket.recv() => {
                let input = match m {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                    Some(Ok(_)) => continue, // ping and pong: answered by the layer
                };
                if input.is_empty() {
                    continue;
                }
                if seat.is_none() {
                    let why = if rw {
                        "read-only: another viewer types on this console"
                    } else {
                        "read-only: connect with ?mode=rw to type"
                    };
                    if !notice(&mut socket, format!("{why}; {} bytes dropped", input.len())).await {
                        return;
                    }
                    continue;
                }
                if let Some(msg) = deliver(&slot, &input) {
                    if !notice(&mut socket, msg).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Hands `input` to the running VM; what to tell the viewer if it did not all go.
fn deliver(slot: &Slot, input: &[u8]) -> Option<String> {
    let (running, fifo) = {
        let g = slot.inner();
        let p = g.running();
        (p.is_some(), p.and_then(|p| p.input.clone()))
    };
    let name = &slot.name;
    match fifo {
        None if !running => Some(format!("'{name}' is not running: input dropped")),
        None => Some(format!(
            "'{name}' has no console input (its process was started without \
             run/{name}.in, by an older daemon): input dropped"
        )),
        Some(f) => match fifo::send(&f, input) {
            Sent::All => None,
            Sent::Dropped(n) => Some(format!(
                "the guest does not read its console: {n} bytes dropped"
            )),
            Sent::Gone => Some(format!("'{name}' has ended: input dropped")),
        },
    }
}
