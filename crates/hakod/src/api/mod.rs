//! The daemon's REST API: HTTP/1.1 + JSON on a Unix socket, described by an
//! OpenAPI 3 document (`GET /openapi.json`, checked in as
//! `docs/api/hakod-openapi.json`).

pub(crate) mod handlers;
pub mod openapi;
pub(crate) mod snapshot_migrate;
pub mod types;

use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::daemon::Daemon;
use handlers as h;
use snapshot_migrate as sm;

/// The routes, over `d`.
pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/vms", get(h::list).post(h::define))
        .route(
            "/v1/vms/{name}",
            get(h::info).put(h::update).delete(h::undefine),
        )
        .route("/v1/vms/{name}/start", put(h::start))
        .route("/v1/vms/{name}/shutdown", put(h::shutdown))
        .route("/v1/vms/{name}/destroy", put(h::destroy))
        .route("/v1/vms/{name}/reboot", put(h::reboot))
        .route("/v1/vms/{name}/suspend", put(h::suspend))
        .route("/v1/vms/{name}/resume", put(h::resume))
        .route("/v1/vms/{name}/log", get(h::log))
        .route("/v1/vms/{name}/console", get(crate::console::ws::console))
        .route(
            "/v1/vms/{name}/snapshots",
            get(sm::snapshot_list).post(sm::snapshot_create),
        )
        .route(
            "/v1/vms/{name}/snapshots/{snap}",
            delete(sm::snapshot_delete),
        )
        .route(
            "/v1/vms/{name}/snapshots/{snap}/revert",
            put(sm::snapshot_revert),
        )
        .route("/v1/vms/{name}/migrate", put(sm::migrate))
        .route("/v1/incoming", post(sm::incoming))
        .route("/v1/events", get(crate::events::stream))
        .route("/v1/host", get(h::host))
        .route("/openapi.json", get(h::openapi_json))
        .merge(crate::web::routes())
        .fallback(h::not_found)
        .with_state(d)
}
