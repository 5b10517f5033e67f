//! `run_as` in a definition: the daemon (as root) runs the VM's `hako run` as that
//! uid and gid, gives it the files it writes, and still manages it (log,
//! snapshot, destroy). Not as root: the start is refused with the reason.

mod daemon_util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use daemon_util::{tiny_definition, Daemon};

const UID: u32 = 64123;
const GID: u32 = 64124;
const LONG: Duration = Duration::from_secs(60);

/// The real uid and gid of process `pid`, from /proc/PID/status.
fn ids(pid: u64) -> (u32, u32) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| -> u32 {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("Uid:"), field("Gid:"))
}

#[test]
fn a_vm_runs_as_its_own_user() {
    let tmp = tempfile::tempdir().unwrap();
    // The VM's user must reach the state directory inside it.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let d = Daemon::start(tmp.path());
    let disk = tmp.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut def = tiny_definition("u");
    def["config"]["disks"] = serde_json::json!([{ "path": disk }]);
    def["run_as"] = serde_json::json!({ "uid": UID, "gid": GID });
    let r = d.api("POST", "/v1/vms", Some(&def));
    assert_eq!(r.status, 201, "{}", r.body);
    let mut root = def.clone();
    root["name"] = "r".into();
    root["run_as"] = serde_json::json!({ "uid": 0, "gid": 0 });
    let r = d.api("POST", "/v1/vms", Some(&root));
    assert_eq!(r.status, 400, "{}", r.body);

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let e = d.fails(&["start", "u"]);
        assert!(e.contains("only a daemon running as root"), "{e}");
        return;
    }
    d.ok(&["start", "u"]);
    let st = d.status("u");
    let pid = st["pid"].as_u64().unwrap();
    assert_eq!(ids(pid), (UID, GID), "the VM process runs as its user");
    d.wait_log("u", "migrate: pass 2 ", LONG);
    assert_eq!(
        std::fs::metadata(&disk).unwrap().uid(),
        UID,
        "its disk is its user's"
    );
    let out = d.ok(&["snapshot-create", "u", "s"]);
    assert!(out.contains("snapshot 's' of 'u' taken"), "{out}");
    d.ok(&["snapshot-revert", "u", "s"]);
    let pid2 = d.status("u")["pid"].as_u64().unwrap();
    assert_eq!(
        ids(pid2),
        (UID, GID),
        "the restored VM runs as its user too"
    );
    d.ok(&["destroy", "u"]);
    d.ok(&["snapshot-delete", "u", "s"]);
    assert!(d.vm_processes("u").is_empty());
}
