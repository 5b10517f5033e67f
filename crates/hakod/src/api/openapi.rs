//! The OpenAPI 3 document of the daemon's API, generated from the handlers'
//! annotations. A copy is checked in as `docs/api/hakod-openapi.json`; a test keeps
//! the two equal.

use utoipa::OpenApi;

use super::types::{ExitInfo, HostInfo, LogChunk, Undefined, VmInfo, VmState, VmStatus};
use super::{handlers, snapshot_migrate};
use crate::definition::{Definition, RestartPolicy};
use crate::migrate::{IncomingReady, IncomingRequest, MigrateReport, MigrateRequest};
use crate::snapshots::{SnapshotCreate, SnapshotDeleted, SnapshotDisk, SnapshotInfo};
use control_api::types::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hako daemon API",
        description = "Served by `hako daemon` as HTTP/1.1 + JSON on a Unix socket (as root \
`/run/hako/hako.sock`, mode 0660; else `$XDG_RUNTIME_DIR/hako/hako.sock`, mode 0600). It \
keeps VM definitions and runs each VM as a `hako run` process of its own. Errors are JSON \
`{\"error\": ...}`: 400 for a malformed request, 404 for an unknown VM, 409 for what the \
VM's state does not allow, 500 when something failed on the host. Requests on one VM are \
served one after another; different VMs are served at the same time.",
        version = "1"
    ),
    paths(
        handlers::list,
        handlers::define,
        handlers::info,
        handlers::update,
        handlers::undefine,
        handlers::start,
        handlers::shutdown,
        handlers::destroy,
        handlers::reboot,
        handlers::suspend,
        handlers::resume,
        handlers::log,
        crate::console::ws::console,
        snapshot_migrate::snapshot_create,
        snapshot_migrate::snapshot_list,
        snapshot_migrate::snapshot_revert,
        snapshot_migrate::snapshot_delete,
        snapshot_migrate::migrate,
        snapshot_migrate::incoming,
        crate::events::stream,
        handlers::host,
        handlers::openapi_json
    ),
    components(schemas(
        ErrorBody,
        Definition,
        RestartPolicy,
        VmState,
        ExitInfo,
        VmStatus,
        VmInfo,
        LogChunk,
        HostInfo,
        Undefined,
        SnapshotCreate,
        SnapshotDisk,
        SnapshotInfo,
        SnapshotDeleted,
        MigrateRequest,
        MigrateReport,
        IncomingRequest,
        IncomingReady,
        crate::events::VmEvent
    ))
)]
pub struct ApiDoc;

/// The document as pretty JSON (what `GET /openapi.json` serves).
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

#[cfg(test)]
mod tests {
    /// `docs/api/hakod-openapi.json` is this document; `HAKO_UPDATE_OPENAPI=1`
    /// rewrites it.
    #[test]
    fn checked_in_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/api/hakod-openapi.json");
        let doc = super::document() + "\n";
        if std::env::var_os("HAKO_UPDATE_OPENAPI").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &doc).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == doc,
            "docs/api/hakod-openapi.json is stale: run HAKO_UPDATE_OPENAPI=1 cargo test -p hakod"
        );
    }
}
