//! The REST API's handlers: each one a thin call into [`Daemon`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use control_api::types::ErrorBody;
use serde_json::Value;

use super::types::{HostInfo, LogChunk, LogQuery, Undefined, VmInfo, VmStatus, WaitQuery};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::lifecycle::REBOOT_WAIT;
use crate::ring::utf8_prefix_len;

type D = State<Arc<Daemon>>;

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

pub(crate) fn reply<T: serde::Serialize>(r: crate::error::Result<T>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => failure(e),
    }
}

pub(crate) fn failure(e: Error) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.to_string())
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    q.map(|Query(v)| v)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

fn body(b: Result<Json<Value>, JsonRejection>) -> Result<Value, Error> {
    b.map(|Json(v)| v)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

/// Every VM with its state.
#[utoipa::path(get, path = "/v1/vms", responses(
    (status = 200, description = "The VMs, by name", body = [VmStatus])))]
pub(crate) async fn list(State(d): D) -> Response {
    Json(d.list()).into_response()
}

/// Defines a VM: a definition, with or without a uuid (one is made). The
/// configuration may leave out what `hako run` has defaults for.
#[utoipa::path(post, path = "/v1/vms", request_body(content = Object,
    description = "`{name, uuid?, autostart?, restart_policy?, config}`; `config` is a \
`vmm::VmConfig` (every path absolute; `memory` in bytes or as \"512M\")"),
    responses(
    (status = 201, description = "Defined", body = VmInfo),
    (status = 400, description = "Not a valid definition", body = ErrorBody),
    (status = 409, description = "The name or the uuid is taken", body = ErrorBody)))]
pub(crate) async fn define(State(d): D, b: Result<Json<Value>, JsonRejection>) -> Response {
    let v = match body(b) {
        Ok(v) => v,
        Err(e) => return failure(e),
    };
    match d.define(v) {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => failure(e),
    }
}

/// A VM's definition and state.
#[utoipa::path(get, path = "/v1/vms/{name}", params(("name" = String, Path)), responses(
    (status = 200, description = "The VM", body = VmInfo),
    (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn info(State(d): D, Path(name): Path<String>) -> Response {
    reply(d.info(&name))
}

/// Replaces a VM's definition. Name and uuid may be left out; they cannot change.
/// While the VM runs only autostart and restart_policy may change.
#[utoipa::path(put, path = "/v1/vms/{name}", params(("name" = String, Path)),
    request_body(content = Object, description = "A definition, as for POST /v1/vms"),
    responses(
    (status = 200, description = "Changed", body = VmInfo),
    (status = 400, description = "Not a valid definition, or another name or uuid", body = ErrorBody),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "The VM is running and the configuration differs", body = ErrorBody)))]
pub(crate) async fn update(
    State(d): D,
    Path(name): Path<String>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(v) => reply(d.update(&name, v).await),
        Err(e) => failure(e),
    }
}

/// Undefines a VM that is not running.
#[utoipa::path(delete, path = "/v1/vms/{name}", params(("name" = String, Path)), responses(
    (status = 200, description = "Undefined", body = Undefined),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "The VM is running", body = ErrorBody)))]
pub(crate) async fn undefine(State(d): D, Path(name): Path<String>) -> Response {
    reply(d.undefine(&name).await)
}

/// Starts the VM; answers once its `hako run` serves its API.
#[utoipa::path(put, path = "/v1/vms/{name}/start", params(("name" = String, Path)), responses(
    (status = 200, description = "Running", body = VmStatus),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "Running already", body = ErrorBody),
    (status = 500, description = "It did not start (the reason, from its log)", body = ErrorBody)))]
pub(crate) async fn start(State(d): D, Path(name): Path<String>) -> Response {
    reply(d.start(&name).await)
}

/// Presses the ACPI power button through the VM's control API: a guest that
/// listens powers off (the VM then shows as defined).
#[utoipa::path(put, path = "/v1/vms/{name}/shutdown", params(("name" = String, Path), WaitQuery),
    responses(
    (status = 200, description = "Pressed (and, with wait_s, the state after waiting)", body = VmStatus),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "Not running, or paused", body = ErrorBody)))]
pub(crate) async fn shutdown(
    State(d): D,
    Path(name): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return failure(e),
    };
    let wait = Duration::from_secs(q.wait_s.unwrap_or(0));
    reply(d.shutdown(&name, wait).await)
}

/// Ends the VM at once: the VM API's stop, then SIGKILL after 5 s.
#[utoipa::path(put, path = "/v1/vms/{name}/destroy", params(("name" = String, Path)), responses(
    (status = 200, description = "Stopped", body = VmStatus),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "Not running", body = ErrorBody),
    (status = 500, description = "The process would not end", body = ErrorBody)))]
pub(crate) async fn destroy(State(d): D, Path(name): Path<String>) -> Response {
    reply(d.destroy(&name).await)
}

/// Shuts the VM down (power button, up to wait_s, default 30 s; then destroy) or,
/// with force, destroys it; then starts it.
#[utoipa::path(put, path = "/v1/vms/{name}/reboot", params(("name" = String, Path), WaitQuery),
    responses(
    (status = 200, description = "Running again", body = VmStatus),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "Not running", body = ErrorBody),
    (status = 500, description = "It did not start again", body = ErrorBody)))]
pub(crate) async fn reboot(
    State(d): D,
    Path(name): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return failure(e),
    };
    let wait = q.wait_s.map(Duration::from_secs).unwrap_or(REBOOT_WAIT);
    reply(d.reboot(&name, q.force.unwrap_or(false), wait).await)
}

/// Pauses the VM's vCPUs (the VM API's pause).
#[utoipa::path(put, path = "/v1/vms/{name}/suspend", params(("name" = String, Path)), responses(
    (status = 200, description = "Paused", body = VmStatus),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "Not running, or paused already", body = ErrorBody)))]
pub(crate) async fn suspend(State(d): D, Path(name): Path<String>) -> Response {
    reply(d.set_paused(&name, true).await)
}

/// Lets a suspended VM run again.
#[utoipa::path(put, path = "/v1/vms/{name}/resume", params(("name" = String, Path)), responses(
    (status = 200, description = "Running", body = VmStatus),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "Not paused", body = ErrorBody)))]
pub(crate) async fn resume(State(d): D, Path(name): Path<String>) -> Response {
    reply(d.set_paused(&name, false).await)
}

/// The VM's console output (the last 1 MiB, over its runs, with the daemon's own
/// `[hakod]` lines): as text, or from an offset as a `LogChunk`.
#[utoipa::path(get, path = "/v1/vms/{name}/log", params(("name" = String, Path), LogQuery),
    responses(
    (status = 200, description = "Without offset: the buffer as text/plain; with \
offset: a LogChunk", body = LogChunk),
    (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn log(
    State(d): D,
    Path(name): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return failure(e),
    };
    let (start, bytes) = match d.log(&name, q.offset.unwrap_or(0)) {
        Ok(x) => x,
        Err(e) => return failure(e),
    };
    match q.offset {
        None => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            String::from_utf8_lossy(&bytes).into_owned(),
        )
            .into_response(),
        Some(_) => {
            let n = utf8_prefix_len(&bytes);
            Json(LogChunk {
                start,
                next: start + n as u64,
                data: String::from_utf8_lossy(&bytes[..n]).into_owned(),
            })
            .into_response()
        }
    }
}

/// What `hako host --json` reports, with the VMs' share of the host.
#[utoipa::path(get, path = "/v1/host", responses(
    (status = 200, description = "The host", body = HostInfo),
    (status = 500, description = "`hako host` failed", body = ErrorBody)))]
pub(crate) async fn host(State(d): D) -> Response {
    reply(d.host().await)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}

pub(crate) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint (see GET /openapi.json)",
    )
}
