//! The daemon's REST API: HTTP/1.1 + JSON on a Unix socket, described by an
//! OpenAPI 3 document (`GET /openapi.json`, checked in as
//! `docs/api/hakod-openapi.json`).

pub(crate) mod handlers;
pub mod openapi;
pub mod types;

use std::sync::Arc;

use axum::routing::{get, put};
use axum::Router;

use crate::daemon::Daemon;
use handlers as h;

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
        .route("/v1/host", get(h::host))
        .route("/openapi.json", get(h::openapi_json))
        .fallback(h::not_found)
        .with_state(d)
}
