//! The daemon's API without running any VM: definitions through HTTP, errors and
//! their statuses, what survives a restart of the daemon, and corrupt files.

use std::path::PathBuf;
use std::time::Duration;

use control_api::client::request;

use serde_json::{json, Value};

mod common;

use common::{def, Daemon};

#[test]
fn definitions_errors_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), None);
    assert_eq!(d.req("GET", "/v1/vms", None).json().unwrap(), json!([]));
    let r = d.req("POST", "/v1/vms", Some(def("a")));
    assert_eq!(r.status, 201, "{}", r.body);
    let info = r.json().unwrap();
    assert_eq!(info["status"]["state"], "defined");
    assert_eq!(info["definition"]["config"]["memory"], 64 << 20);
    let uuid = info["definition"]["uuid"].as_str().unwrap().to_string();
    // The file is there, as the definition.
    let file = tmp.path().join("state/vms/a.json");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk, info["definition"]);

    // Errors: JSON bodies with the right statuses.
    let e = d.req("POST", "/v1/vms", Some(def("a")));
    assert_eq!(
        (e.status, e.error_message().contains("defined already")),
        (409, true)
    );
    let mut same_uuid = def("b");
    same_uuid["uuid"] = json!(uuid);
    assert_eq!(d.req("POST", "/v1/vms", Some(same_uuid)).status, 409);
    let e = d.req("POST", "/v1/vms", Some(def("../x")));
    assert_eq!(
        (e.status, e.error_message().contains("invalid VM name")),
        (400, true)
    );
    let e = d.req(
        "POST",
        "/v1/vms",
        Some(json!({"name": "r", "config": {"kernel": "k"}})),
    );
    assert_eq!(
        (e.status, e.error_message().contains("absolute")),
        (400, true)
    );
    let e = request(&d.sock, "POST", "/v1/vms", None, Duration::from_secs(5)).unwrap();
    assert_eq!(e.status, 400);
    let e = d.req("GET", "/v1/vms/nope", None);
    assert_eq!(
        (e.status, e.error_message()),
        (404, "no VM named 'nope'".to_string())
    );
    assert_eq!(d.req("PUT", "/v1/vms/nope/start", None).status, 404);
    assert_eq!(d.req("GET", "/v1/nothing", None).status, 404);
    let e = d.req("PUT", "/v1/vms/a/destroy", None);
    assert_eq!(
        (e.status, e.error_message()),
        (409, "'a' is not running".to_string())
    );
    assert_eq!(d.req("PUT", "/v1/vms/a/suspend", None).status, 409);
    assert_eq!(
        d.req("PUT", "/v1/vms/a/shutdown?wait_s=x", None).status,
        400
    );

    // A start that fails says so, and leaves the VM crashed, not running.
    let e = d.req("PUT", "/v1/vms/a/start", None);
    assert_eq!(e.status, 500, "{}", e.body);
    assert!(
        e.error_message().contains("did not start (exit status 1)"),
        "{}",
        e.body
    );
    let a = d.req("GET", "/v1/vms/a", None).json().unwrap();
    assert_eq!(a["status"]["state"], "crashed");
    assert_eq!(a["status"]["last_exit"]["code"], 1);
    assert!(d
        .req("GET", "/v1/vms/a/log", None)
        .body
        .contains("[hakod] a started"));

    // Update: allowed while not running; name and uuid stay.
    let mut changed = def("a");
    changed["autostart"] = json!(true);
    changed["config"]["cpus"] = json!(2);
    let r = d.req("PUT", "/v1/vms/a", Some(changed));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json().unwrap();
    assert_eq!(v["definition"]["uuid"], uuid.as_str());
    assert_eq!(v["definition"]["config"]["cpus"], 2);
    let e = d.req("PUT", "/v1/vms/a", Some(def("b")));
    assert_eq!(e.status, 400);

    // Ten more, and the OpenAPI document.
    for i in 0..10 {
        assert_eq!(
            d.req("POST", "/v1/vms", Some(def(&format!("vm{i}"))))
                .status,
            201
        );
    }
    let list = d.req("GET", "/v1/vms", None).json().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 11);
    let doc = d.req("GET", "/openapi.json", None).json().unwrap();
    assert!(doc["paths"]["/v1/vms/{name}/start"].is_object());

    // A daemon started on the same state directory finds them all, skipping (and
    // reporting) a corrupt file; a second daemon on the same directory is refused.
    let second = hakod::server::run(hakod::Options {
        socket: tmp.path().join("other.sock"),
        state_dir: tmp.path().join("state"),
        exe: PathBuf::from("/bin/false"),
        http: None,
        http_token: None,
    });
    assert!(second.unwrap_err().to_string().contains("another daemon"));
    drop(d);
    std::fs::write(tmp.path().join("state/vms/junk.json"), "{\"name\": 1").unwrap();
    let d = Daemon::start(tmp.path(), None);
    let list = d.req("GET", "/v1/vms", None).json().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 11);
    let a = d.req("GET", "/v1/vms/a", None).json().unwrap();
    assert_eq!(a["definition"]["config"]["cpus"], 2);
    assert_eq!(a["status"]["state"], "crashed", "the recorded exit is kept");
    // Undefine removes the file.
    assert_eq!(d.req("DELETE", "/v1/vms/vm3", None).status, 200);
    assert!(!tmp.path().join("state/vms/vm3.json").exists());
    assert_eq!(d.req("DELETE", "/v1/vms/vm3", None).status, 404);
    assert!(
        tmp.path().join("state/vms/junk.json").exists(),
        "a corrupt file is left alone"
    );
}
