//! The server: axum on a Unix socket, on a thread of its own with a single-threaded
//! tokio runtime. Each command runs on tokio's blocking pool, since a `VmHandle`
//! call waits for the VM's control thread.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::State as Ax;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use vmm::VmHandle;

use crate::types::{
    BalloonInfo, BalloonRequest, ErrorBody, MigrateRequest, MigrationReport, SnapshotReport,
    SnapshotRequest, VmInfo,
};

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

fn vmm_error(e: vmm::Error) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.to_string())
}

/// Runs `f` on the blocking pool and turns its result into a response.
async fn blocking<T, F>(f: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce() -> vmm::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => vmm_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(serde::Serialize)]
struct Done {}

/// The VM the API drives: replaced when `hako` boots the guest again after a reset,
/// empty while none is running.
type Target = Arc<RwLock<Option<VmHandle>>>;

/// Runs `f` on the current VM (on the blocking pool); 409 if there is none.
async fn with_vm<T, F>(t: Target, f: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(VmHandle) -> vmm::Result<T> + Send + 'static,
{
    let vm = t.read().unwrap_or_else(|e| e.into_inner()).clone();
    match vm {
        Some(vm) => blocking(move || f(vm)).await,
        None => error(
            StatusCode::CONFLICT,
            "no VM is running (it is being built or has ended)",
        ),
    }
}

/// The VM's state, configuration, accelerator, vCPUs, memory and uptime.
#[utoipa::path(get, path = "/v1/vm", responses(
    (status = 200, description = "The VM", body = VmInfo),
    (status = 409, description = "The VM has stopped", body = ErrorBody)))]
pub(crate) async fn info(Ax(t): Ax<Target>) -> Response {
    with_vm(t, |vm| vm.info().map(VmInfo::from)).await
}

/// Stops every vCPU at an instruction boundary.
#[utoipa::path(put, path = "/v1/vm/pause", responses(
    (status = 200, description = "Paused"),
    (status = 409, description = "The VM is not running", body = ErrorBody),
    (status = 500, description = "The vCPUs did not stop in time", body = ErrorBody)))]
pub(crate) async fn pause(Ax(t): Ax<Target>) -> Response {
    with_vm(t, |vm| vm.pause().map(|_| Done {})).await
}

/// Lets a paused (or created) VM run.
#[utoipa::path(put, path = "/v1/vm/resume", responses(
    (status = 200, description = "Running"),
    (status = 409, description = "The VM is not paused", body = ErrorBody)))]
pub(crate) async fn resume(Ax(t): Ax<Target>) -> Response {
    with_vm(t, |vm| vm.resume().map(|_| Done {})).await
}

/// Presses the ACPI power button: a guest that listens shuts itself down.
#[utoipa::path(put, path = "/v1/vm/power-button", responses(
    (status = 200, description = "Pressed"),
    (status = 409, description = "The VM is not running", body = ErrorBody)))]
pub(crate) async fn power_button(Ax(t): Ax<Target>) -> Response {
    with_vm(t, |vm| vm.power_button().map(|_| Done {})).await
}

/// Ends the VM at once (no guest shutdown); `hako` then exits with status 0.
#[utoipa::path(put, path = "/v1/vm/stop", responses(
    (status = 200, description = "Stopped"),
    (status = 409, description = "The VM has stopped already", body = ErrorBody)))]
pub(crate) async fn stop(Ax(t): Ax<Target>) -> Response {
    with_vm(t, |vm| vm.stop().map(|_| Done {})).await
}

/// Writes a snapshot directory (config.json, state.bin, memory.bin). Disks are
/// flushed, not copied.
#[utoipa::path(put, path = "/v1/vm/snapshot", request_body = SnapshotRequest, responses(
    (status = 200, description = "Written", body = SnapshotReport),
    (status = 400, description = "Malformed request", body = ErrorBody),
    (status = 409, description = "The VM is neither running nor paused", body = ErrorBody),
    (status = 500, description = "Writing failed (the VM keeps its state)", body = ErrorBody)))]
pub(crate) async fn snapshot(
    Ax(t): Ax<Target>,
    req: std::result::Result<Json<SnapshotRequest>, JsonRejection>,
) -> Response {
    let req = match req {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if req.dir.is_empty() {
        return error(StatusCode::BAD_REQUEST, "dir must not be empty");
    }
    with_vm(t, move |vm| {
        vm.snapshot(Path::new(&req.dir), req.stay_paused)
            .map(SnapshotReport::from)
    })
    .await
}

/// Live-migrates the VM to a `hako run --incoming` waiting at `uri`. On success the
/// VM runs there and this `hako` exits with status 0 once it has answered; on
/// failure the VM runs on here and the error says why.
#[utoipa::path(put, path = "/v1/vm/migrate", request_body = MigrateRequest, responses(
    (status = 200, description = "The VM runs at the destination", body = MigrationReport),
    (status = 400, description = "Malformed request or URI", body = ErrorBody),
    (status = 409, description = "The VM is neither running nor paused", body = ErrorBody),
    (status = 500, description = "The migration failed; the VM runs on here", body = ErrorBody)))]
pub(crate) async fn migrate(
    Ax(t): Ax<Target>,
    req: std::result::Result<Json<MigrateRequest>, JsonRejection>,
) -> Response {
    let req = match req {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let uri: vmm::migration::MigrationUri = match req.uri.parse() {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut opts = vmm::migration::MigrateOptions::default();
    if let Some(ms) = req.downtime_ms {
        opts.downtime_limit = Duration::from_millis(ms);
    }
    if let Some(s) = req.timeout_s {
        if s == 0 {
            return error(StatusCode::BAD_REQUEST, "timeout_s must be at least 1");
        }
        opts.timeout = Duration::from_secs(s);
    }
    with_vm(t, move |vm| {
        vm.migrate(uri, opts).map(MigrationReport::from)
    })
    .await
}

/// The balloon: its target, what the guest gave back, and the guest's memory
/// statistics (fresh ones are asked for; a running guest answers within ~0.5 s).
#[utoipa::path(get, path = "/v1/vm/balloon", responses(
    (status = 200, description = "The balloon", body = BalloonInfo),
    (status = 400, description = "The VM has no balloon", body = ErrorBody),
    (status = 409, description = "The VM has stopped", body = ErrorBody)))]
pub(crate) async fn balloon_info(Ax(t): Ax<Target>) -> Response {
    with_vm(t, |vm| vm.balloon(None).map(BalloonInfo::from)).await
}

/// Sets the balloon's target: how much memory the guest should give back. A paused
/// VM gets it when it resumes.
#[utoipa::path(put, path = "/v1/vm/balloon", request_body = BalloonRequest, responses(
    (status = 200, description = "Target set", body = BalloonInfo),
    (status = 400, description = "Malformed request, a target above the guest's memory, \
or no balloon", body = ErrorBody),
    (status = 409, description = "The VM has stopped", body = ErrorBody)))]
pub(crate) async fn balloon_set(
    Ax(t): Ax<Target>,
    req: std::result::Result<Json<BalloonRequest>, JsonRejection>,
) -> Response {
    let req = match req {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    with_vm(t, move |vm| {
        vm.balloon(Some(req.target_bytes)).map(BalloonInfo::from)
    })
    .await
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint (see GET /openapi.json)",
    )
}

fn router(t: Target) -> Router {
    Router::new()
        .route("/v1/vm", get(info))
        .route("/v1/vm/pause", put(pause))
        .route("/v1/vm/resume", put(resume))
        .route("/v1/vm/power-button", put(power_button))
        .route("/v1/vm/stop", put(stop))
        .route("/v1/vm/snapshot", put(snapshot))
        .route("/v1/vm/migrate", put(migrate))
        .route("/v1/vm/balloon", get(balloon_info).put(balloon_set))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .with_state(t)
}

/// A running API server. Dropping it stops accepting, lets the requests in flight
/// finish (the answer to `stop` among them; at most [`DRAIN`]), and removes the socket.
pub struct ApiServer {
    path: PathBuf,
    target: Target,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl ApiServer {
    /// Points the API at `vm` (or at nothing).
    pub fn set_vm(&self, vm: Option<VmHandle>) {
        *self.target.write().unwrap_or_else(|e| e.into_inner()) = vm;
    }
}

/// How long a dropped server waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(2);

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.done.recv_timeout(DRAIN);
    }
}

/// Binds `path` with mode 0600, refusing a socket another process serves. A stale
/// socket file (nobody listening) is replaced; any other file is left alone.
fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by another process", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    // The socket file is created by bind with the umask's mode: make that 0600 from
    // the start, so no other user can connect before a chmod would have run.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let l = l.with_context(|| format!("cannot listen on {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves the API on the Unix socket `path` until the returned server is dropped or
/// the process exits; [`ApiServer::set_vm`] names the VM it drives.
pub fn serve(path: &Path) -> Result<ApiServer> {
    let std_listener = bind(path)?;
    let target: Target = Arc::new(RwLock::new(None));
    let t = target.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            sandbox::enter(sandbox::ThreadKind::Api);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(|| sandbox::enter(sandbox::ThreadKind::Api))
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("API server: cannot start its runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::UnixListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("API server on {shown}: {e}");
                        return;
                    }
                };
                let server = axum::serve(listener, router(t)).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                if let Err(e) = server.await {
                    tracing::error!("API server on {shown}: {e}");
                }
            });
            let _ = done_tx.send(());
        })
        .context("cannot start the API thread")?;
    Ok(ApiServer {
        path: path.to_path_buf(),
        target,
        shutdown: Some(tx),
        done,
    })
}
