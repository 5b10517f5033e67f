//! The handlers of snapshots (`/v1/vms/{name}/snapshots...`) and of live
//! migration between daemons (`/v1/vms/{name}/migrate`, `/v1/incoming`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use control_api::types::ErrorBody;

use super::handlers::{failure, reply};
use super::types::VmStatus;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::migrate::{IncomingReady, IncomingRequest, MigrateReport, MigrateRequest};
use crate::snapshots::{SnapshotCreate, SnapshotDeleted, SnapshotInfo};

type D = State<Arc<Daemon>>;

fn parse<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Error> {
    b.map(|Json(v)| v)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

/// Snapshots the running (or paused) VM: memory, devices and a copy of every
/// writable disk, taken while the VM is paused. The VM goes on as it was.
#[utoipa::path(post, path = "/v1/vms/{name}/snapshots", params(("name" = String, Path)),
    request_body(content = SnapshotCreate, description = "`{}` or `{\"name\": ...}`"),
    responses(
    (status = 201, description = "Taken", body = SnapshotInfo),
    (status = 400, description = "Not a snapshot name", body = ErrorBody),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "Not running, or the name is taken", body = ErrorBody),
    (status = 500, description = "The VM or the host failed", body = ErrorBody)))]
pub(crate) async fn snapshot_create(
    State(d): D,
    Path(name): Path<String>,
    b: Result<Json<SnapshotCreate>, JsonRejection>,
) -> Response {
    // An empty body is a snapshot with the default name.
    let req = match b {
        Err(JsonRejection::MissingJsonContentType(_)) => SnapshotCreate::default(),
        other => match parse(other) {
            Ok(r) => r,
            Err(e) => return failure(e),
        },
    };
    match d.snapshot_create(&name, req).await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => failure(e),
    }
}

/// The VM's snapshots, oldest first.
#[utoipa::path(get, path = "/v1/vms/{name}/snapshots", params(("name" = String, Path)),
    responses(
    (status = 200, description = "The snapshots", body = [SnapshotInfo]),
    (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn snapshot_list(State(d): D, Path(name): Path<String>) -> Response {
    reply(d.snapshot_list(&name))
}

/// Reverts the VM to a snapshot: stops it if it runs, puts its disks back as they
/// were and restores memory and devices; it runs (or stays paused, if it was) from
/// that moment.
#[utoipa::path(put, path = "/v1/vms/{name}/snapshots/{snap}/revert",
    params(("name" = String, Path), ("snap" = String, Path)),
    responses(
    (status = 200, description = "Running from the snapshot", body = VmStatus),
    (status = 404, description = "No such VM or snapshot", body = ErrorBody),
    (status = 500, description = "It did not restore", body = ErrorBody)))]
pub(crate) async fn snapshot_revert(
    State(d): D,
    Path((name, snap)): Path<(String, String)>,
) -> Response {
    reply(d.snapshot_revert(&name, &snap).await)
}

/// Deletes a snapshot.
#[utoipa::path(delete, path = "/v1/vms/{name}/snapshots/{snap}",
    params(("name" = String, Path), ("snap" = String, Path)),
    responses(
    (status = 200, description = "Deleted", body = SnapshotDeleted),
    (status = 404, description = "No such VM or snapshot", body = ErrorBody)))]
pub(crate) async fn snapshot_delete(
    State(d): D,
    Path((name, snap)): Path<(String, String)>,
) -> Response {
    reply(d.snapshot_delete(&name, &snap).await)
}

/// Live-migrates the running VM to another daemon (`unix:PATH` of its socket),
/// which defines it and runs it; here it is then `defined`.
#[utoipa::path(put, path = "/v1/vms/{name}/migrate", params(("name" = String, Path)),
    request_body = MigrateRequest,
    responses(
    (status = 200, description = "It runs on the destination", body = MigrateReport),
    (status = 400, description = "Not a destination", body = ErrorBody),
    (status = 404, description = "No such VM", body = ErrorBody),
    (status = 409, description = "Not running here, or the destination has it running", body = ErrorBody),
    (status = 500, description = "The migration failed; the VM runs here still", body = ErrorBody)))]
pub(crate) async fn migrate(
    State(d): D,
    Path(name): Path<String>,
    b: Result<Json<MigrateRequest>, JsonRejection>,
) -> Response {
    match parse(b) {
        Ok(req) => reply(d.migrate(&name, req).await),
        Err(e) => failure(e),
    }
}

/// The destination's half of a migration (another daemon calls it): defines the
/// VM (or takes over the definition of that name and uuid, if it is not running)
/// and starts a process waiting for the stream; answers where to send it.
#[utoipa::path(post, path = "/v1/incoming", request_body = IncomingRequest,
    responses(
    (status = 200, description = "Listening", body = IncomingReady),
    (status = 400, description = "Not a valid definition", body = ErrorBody),
    (status = 409, description = "A VM of that name runs here, or has another uuid", body = ErrorBody),
    (status = 500, description = "It did not start listening", body = ErrorBody)))]
pub(crate) async fn incoming(
    State(d): D,
    b: Result<Json<IncomingRequest>, JsonRejection>,
) -> Response {
    match parse(b) {
        Ok(req) => reply(d.incoming(req).await),
        Err(e) => failure(e),
    }
}
