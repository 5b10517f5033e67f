//! The web console (the virt-manager role): `GET /` is a page listing the VMs
//! (state, vCPUs, memory; refreshed every second from `GET /v1/vms`), with start,
//! shutdown and destroy buttons and each VM's serial console in xterm.js over the
//! console WebSocket. It is served on the same router as the API: over the Unix
//! socket, and over the loopback TCP listener of `hako daemon --http` for
//! browsers ([`guard`] keeps other sites' pages out).
//!
//! xterm.js is bundled into the binary at build time (build.rs, from
//! `web/node_modules`); our own page, script and style are `web/src/`.

pub mod guard;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::daemon::Daemon;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

const INDEX_HTML: &str = include_str!("../../web/src/index.html");
const APP_JS: &str = include_str!("../../web/src/app.js");
const APP_CSS: &str = include_str!("../../web/src/app.css");

/// What the page says when xterm.js was not built in.
const MISSING_HTML: &str = include_str!("../../web/src/missing.html");

/// Whether the web console's xterm.js was built into this binary.
pub fn assets_present() -> bool {
    !assets::ASSETS_MISSING
}

/// The web console's routes.
pub(crate) fn routes() -> Router<std::sync::Arc<Daemon>> {
    Router::new()
        .route("/", get(index))
        .route("/web/{file}", get(file))
}

fn page(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    if assets::ASSETS_MISSING {
        return (StatusCode::SERVICE_UNAVAILABLE, page(MISSING_HTML)).into_response();
    }
    page(INDEX_HTML)
}

async fn file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (kind, body): (&str, &'static [u8]) = match name.as_str() {
        "app.js" => ("text/javascript", APP_JS.as_bytes()),
        "app.css" => ("text/css", APP_CSS.as_bytes()),
        "xterm.js" => ("text/javascript", assets::XTERM_JS),
        "xterm.css" => ("text/css", assets::XTERM_CSS),
        "addon-fit.js" => ("text/javascript", assets::FIT_JS),
        _ => ("", b""),
    };
    if kind.is_empty() || body.is_empty() {
        return crate::api::handlers::error(StatusCode::NOT_FOUND, format!("no file {name}"));
    }
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        body,
    )
        .into_response()
}
