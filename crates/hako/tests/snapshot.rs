//! Snapshot and restore through the control API, on every accelerator and across
//! them, with guests/migrate.c: its pass counter and checksum must continue across
//! the cut, and the memory file must hold the page pattern of a VM stopped mid-pass.
//! Also the API's error statuses and the refusal of damaged snapshots.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::hako;
use common::migrate_guest::{accels, check_memory, check_sums, continued_passes, passes, Vm};

/// Runs on `from` until a few passes are printed, snapshots it paused, stops it.
/// Returns what it printed before the snapshot.
fn take(dir: &Path, from: &str, snap: &Path) -> String {
    let mut vm = Vm::boot(dir, &format!("src-{from}"), from);
    vm.wait_passes(3);
    let table = vm.ctl_ok(&["snapshot", snap.to_str().unwrap(), "--stay-paused"]);
    assert!(table.contains("paused for"), "{table}");
    let info = vm.ctl_ok(&["--json", "info"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["state"], "paused", "{info}");
    assert_eq!(v["accel"], from);
    // Paused: the guest prints nothing more.
    let before = passes(&vm.output());
    std::thread::sleep(Duration::from_millis(200));
    let out = vm.output();
    assert_eq!(passes(&out), before, "the guest ran while paused");
    vm.ctl_ok(&["stop"]);
    assert_eq!(vm.wait_exit(), Some(0));
    out
}

#[test]
fn snapshots_resume_on_every_accelerator_and_across_them() {
    let dir = tempfile::tempdir().unwrap();
    for from in accels() {
        let snap = dir.path().join(format!("snap-{from}"));
        let out = take(dir.path(), from, &snap);
        let before = passes(&out);
        check_sums(&before);
        let last = before.last().unwrap().0;
        let mem = fs::read(snap.join("memory.bin")).unwrap();
        check_memory(&mem, last);
        // Zero pages are holes: far less is allocated than the 64 MiB of RAM.
        let used =
            std::os::unix::fs::MetadataExt::blocks(&fs::metadata(snap.join("memory.bin")).unwrap())
                * 512;
        assert!(used < 40 << 20, "memory file allocates {used} bytes");

        for to in accels() {
            for mode in ["map", "copy"] {
                let name = format!("dst-{from}-{to}-{mode}");
                let mut vm = Vm::start(
                    dir.path(),
                    &name,
                    &[
                        "--restore",
                        snap.to_str().unwrap(),
                        "--accel",
                        to,
                        "--restore-mode",
                        mode,
                    ],
                );
                vm.wait_passes(3);
                continued_passes(&format!("{from} -> {to} ({mode})"), &out, &vm.output());
                assert!(
                    !vm.output().contains("migrate: pages="),
                    "the restored guest booted again"
                );
                let info = vm.ctl_ok(&["--json", "info"]);
                assert!(info.contains(&format!("\"accel\": \"{to}\"")), "{info}");
                vm.ctl_ok(&["stop"]);
                assert_eq!(vm.wait_exit(), Some(0));
            }
        }
    }
}

#[test]
fn api_statuses_socket_mode_and_document() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::boot(dir.path(), "api", "emu");
    vm.wait_passes(1);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&vm.sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let sock = vm.sock.clone();
    let req = |m: &str, p: &str, body: Option<serde_json::Value>| {
        control_api::client::request(&sock, m, p, body.as_ref(), Duration::from_secs(30)).unwrap()
    };
    // Wrong state: 409 with a JSON message.
    let r = req("PUT", "/v1/vm/resume", None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error_message().contains("running"), "{}", r.body);
    assert_eq!(req("PUT", "/v1/vm/pause", None).status, 200);
    assert_eq!(req("PUT", "/v1/vm/pause", None).status, 409);
    assert_eq!(req("PUT", "/v1/vm/power-button", None).status, 409);
    assert_eq!(req("PUT", "/v1/vm/resume", None).status, 200);
    // Bad input: 400.
    let r = req(
        "PUT",
        "/v1/vm/snapshot",
        Some(serde_json::json!({"dir": 5})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = req(
        "PUT",
        "/v1/vm/snapshot",
        Some(serde_json::json!({"dir": "x", "bogus": 1})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = req(
        "PUT",
        "/v1/vm/snapshot",
        Some(serde_json::json!({"dir": ""})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(req("GET", "/v1/nothing", None).status, 404);
    // A snapshot into a place that cannot be written: 500, and the VM runs on.
    let r = req(
        "PUT",
        "/v1/vm/snapshot",
        Some(serde_json::json!({"dir": "/proc/hako-cannot-write-here"})),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    let n = passes(&vm.output()).len();
    vm.wait_passes(n + 2);

    // The served document is the checked-in one.
    let doc = req("GET", "/openapi.json", None);
    assert_eq!(doc.status, 200);
    let served: serde_json::Value = doc.json().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json");
    let checked_in: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&repo).unwrap()).unwrap();
    assert_eq!(served, checked_in, "docs/api/openapi.json is stale");
    assert!(served["paths"]["/v1/vm/snapshot"]["put"].is_object());

    // Another hako cannot take the socket over.
    let elf = test_guests::build("migrate").unwrap();
    let second = hako()
        .args(["run", "--accel", "emu", "--memory", "64M", "--kernel"])
        .arg(&elf)
        .arg("--api-socket")
        .arg(&vm.sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another process"), "{err}");

    vm.ctl_ok(&["shutdown"])
        .contains("ok")
        .then_some(())
        .unwrap();
    vm.ctl_ok(&["stop"]);
    assert_eq!(vm.wait_exit(), Some(0));
    assert!(!vm.sock.exists(), "the socket is removed on exit");
}

/// `hako run --restore` of a damaged snapshot: one line, exit status 1, no guest output.
fn refused(snap: &Path, expect: &str) {
    let o = hako()
        .args(["run", "--accel", "emu", "--restore"])
        .arg(snap)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        o.stdout.is_empty(),
        "the guest ran: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(expect), "expected {expect:?} in {err}");
}

fn copy_snapshot(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for f in ["config.json", "state.bin", "memory.bin"] {
        fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn damaged_snapshots_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("good");
    take(dir.path(), "emu", &snap);
    let state = fs::read(snap.join("state.bin")).unwrap();

    let case = |name: &str, damage: &dyn Fn(&Path), expect: &str| {
        let d = dir.path().join(name);
        copy_snapshot(&snap, &d);
        damage(&d);
        refused(&d, expect);
    };
    case(
        "truncated",
        &|d| fs::write(d.join("state.bin"), &state[..state.len() / 2]).unwrap(),
        "truncated",
    );
    case(
        "corrupt",
        &|d| {
            let mut s = state.clone();
            let i = s.len() - 10;
            s[i] ^= 1;
            fs::write(d.join("state.bin"), s).unwrap()
        },
        "checksum",
    );
    case(
        "version",
        &|d| {
            let mut s = state.clone();
            s[8] = 77;
            fs::write(d.join("state.bin"), s).unwrap()
        },
        "incompatible build",
    );
    case(
        "no-state",
        &|d| fs::remove_file(d.join("state.bin")).unwrap(),
        "state.bin",
    );
    case(
        "short-memory",
        &|d| {
            fs::OpenOptions::new()
                .write(true)
                .open(d.join("memory.bin"))
                .unwrap()
                .set_len(4096)
                .unwrap()
        },
        "memory file",
    );
    let edit = |d: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let p = d.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        fs::write(&p, v.to_string()).unwrap();
    };
    case(
        "missing-disk",
        &|d| {
            edit(d, &|v| {
                v["disks"] = serde_json::json!([{"path": "/nonexistent/disk.img"}])
            })
        },
        "/nonexistent/disk.img",
    );
    case(
        "more-memory",
        &|d| edit(d, &|v| v["memory"] = serde_json::json!(128u64 << 20)),
        "MiB",
    );
    case(
        "host-memory",
        &|d| edit(d, &|v| v["memory"] = serde_json::json!(1u64 << 50)),
        "more than this host has",
    );
    case(
        "bad-config",
        &|d| fs::write(d.join("config.json"), "{").unwrap(),
        "config",
    );
}
