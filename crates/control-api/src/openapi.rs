//! The OpenAPI 3 document of the API, generated from the handlers' annotations. A
//! copy is checked in as `docs/api/openapi.json`; a test keeps the two equal.

use utoipa::OpenApi;

use crate::server;
use crate::types::{
    BalloonInfo, BalloonRequest, ErrorBody, GuestMemoryStats, MigrateRequest, MigrationReport,
    SnapshotReport, SnapshotRequest, State, VmInfo,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hako per-VM control API",
        description = "Served by `hako run --api-socket PATH` as HTTP/1.1 + JSON on a Unix \
socket (mode 0600). Errors are JSON `{\"error\": ...}`: 400 for a malformed request, 409 \
for a command the VM's state does not allow, 500 when the VMM failed.",
        version = "1"
    ),
    paths(
        server::info,
        server::pause,
        server::resume,
        server::power_button,
        server::stop,
        server::snapshot,
        server::migrate,
        server::balloon_info,
        server::balloon_set,
        server::openapi_json
    ),
    components(schemas(
        ErrorBody,
        State,
        VmInfo,
        SnapshotRequest,
        SnapshotReport,
        MigrateRequest,
        MigrationReport,
        BalloonRequest,
        BalloonInfo,
        GuestMemoryStats
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
    /// `docs/api/openapi.json` is this document; `HAKO_UPDATE_OPENAPI=1` rewrites it.
    #[test]
    fn checked_in_document_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json");
        let doc = super::document() + "\n";
        if std::env::var_os("HAKO_UPDATE_OPENAPI").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &doc).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == doc,
            "docs/api/openapi.json is stale: run HAKO_UPDATE_OPENAPI=1 cargo test -p control-api"
        );
    }
}
