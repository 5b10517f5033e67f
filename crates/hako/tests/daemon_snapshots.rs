//! Snapshots and live migration through the daemon, with the tiny guest
//! guests/migrate.c on `emu`: its `migrate: pass P sum S` lines go on from P+1
//! after a restore or a migration, and S is right only if every page of its
//! memory came along.

mod daemon_util;

use std::fs;
use std::time::Duration;

use daemon_util::{tiny_definition, Daemon};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// The `(pass, sum)` of each whole `migrate: pass` line in `log`.
fn pass_lines(log: &str) -> Vec<(u64, u64)> {
    log.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("migrate: pass ")?;
            let (p, s) = rest.split_once(" sum ")?;
            Some((p.parse().ok()?, s.parse().ok()?))
        })
        .collect()
}

/// The guest's page count, from its `migrate: pages=N` line.
fn pages(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.trim().strip_prefix("migrate: pages="))
        .and_then(|n| n.trim().parse().ok())
        .expect("a migrate: pages= line")
}

/// The passes after the last line containing `marker`.
fn passes_after(log: &str, marker: &str) -> Vec<(u64, u64)> {
    let at = log
        .rfind(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in\n{log}"));
    pass_lines(&log[at..])
}

fn last_pass(log: &str) -> u64 {
    pass_lines(log).last().map(|p| p.0).unwrap_or(0)
}

fn check_sums(pages: u64, passes: &[(u64, u64)]) {
    for &(p, s) in passes {
        assert_eq!(
            s,
            pages * (p % 256),
            "pass {p}: the guest's memory is not whole"
        );
    }
}

#[test]
fn snapshot_create_list_revert_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let disk = tmp.path().join("data.img");
    fs::write(&disk, vec![0x11u8; 1 << 20]).unwrap();
    let mut def = tiny_definition("s");
    def["config"]["disks"] = serde_json::json!([{ "path": disk }]);
    let r = d.api("POST", "/v1/vms", Some(&def));
    assert_eq!(r.status, 201, "{}", r.body);

    // Not running: no snapshot.
    let e = d.fails(&["snapshot-create", "s", "early"]);
    assert!(e.contains("not running"), "{e}");

    d.ok(&["start", "s"]);
    d.wait_log("s", "migrate: pass 3 ", LONG);
    let before = last_pass(&d.log("s"));
    let out = d.ok(&["snapshot-create", "s", "first"]);
    assert!(out.contains("snapshot 'first' of 's' taken"), "{out}");
    assert!(out.contains("1 disk(s)"), "{out}");
    // Read once the console has surely reached the buffer (its follower polls the
    // log file): a later pass only widens the window, a missed one would not.
    std::thread::sleep(Duration::from_millis(500));
    let after = last_pass(&d.log("s"));
    assert_eq!(
        d.status("s")["state"],
        "running",
        "the VM goes on after a snapshot"
    );
    let e = d.fails(&["snapshot-create", "s", "first"]);
    assert!(e.contains("already"), "{e}");
    let e = d.fails(&["snapshot-create", "s", "../x"]);
    assert!(e.contains("not a snapshot name"), "{e}");

    let list: Value = serde_json::from_str(&d.ok(&["snapshot-list", "s", "--json"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "first");
    assert_eq!(list[0]["disks"][0]["path"], disk.display().to_string());
    let table = d.ok(&["snapshot-list", "s"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("first ")),
        "{table}"
    );

    // The guest runs on and its disk changes: the revert takes both back.
    d.wait_log("s", &format!("migrate: pass {} ", after + 5), LONG);
    fs::write(&disk, vec![0x22u8; 1 << 20]).unwrap();
    let out = d.ok(&["snapshot-revert", "s", "first"]);
    assert!(out.contains("s: running"), "{out}");
    assert_eq!(
        fs::read(&disk).unwrap(),
        vec![0x11u8; 1 << 20],
        "the disk is reverted"
    );
    d.wait_log("s", "[hakod] reverting to snapshot 'first'", LONG);
    // The restored run's output follows its start line; the replaced run's last
    // output may come after the revert line, never after the next start.
    let marker = "[hakod] s started";
    let deadline = std::time::Instant::now() + LONG;
    let log = loop {
        let log = d.log("s");
        if passes_after(&log, marker).len() >= 3 {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no passes after the revert:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let resumed = passes_after(&log, marker);
    let first = resumed[0].0;
    assert!(
        first > before && first <= after + 1,
        "the guest went on from pass {first}, its snapshot was between {before} and {after}:\n{log}"
    );
    assert!(
        !log[log.rfind(marker).unwrap()..].contains("migrate: pages="),
        "the guest booted again instead of going on"
    );
    check_sums(pages(&log), &resumed);

    // A VM with snapshots is not undefined; a deleted snapshot is gone.
    d.ok(&["destroy", "s"]);
    let e = d.fails(&["undefine", "s"]);
    assert!(e.contains("snapshot"), "{e}");
    let e = d.fails(&["snapshot-revert", "s", "nope"]);
    assert!(e.contains("no such snapshot"), "{e}");
    d.ok(&["snapshot-delete", "s", "first"]);
    assert_eq!(d.ok(&["snapshot-list", "s"]).lines().count(), 1);
    assert!(
        fs::read_dir(d.state.join("snapshots/s"))
            .unwrap()
            .next()
            .is_none(),
        "nothing is left of the deleted snapshot"
    );
    d.ok(&["undefine", "s"]);
}

#[test]
fn live_migration_between_daemons() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start(&tmp.path().join("a"));
    let b = Daemon::start(&tmp.path().join("b"));
    let r = a.api("POST", "/v1/vms", Some(&tiny_definition("m")));
    assert_eq!(r.status, 201, "{}", r.body);
    let uuid = r.json().unwrap()["definition"]["uuid"].clone();
    let dest = format!("unix:{}", b.sock.display());

    // Not running: nothing to migrate; a destination that is not there: the VM
    // runs on here.
    let e = a.fails(&["migrate", "m", &dest]);
    assert!(e.contains("not running"), "{e}");
    a.ok(&["start", "m"]);
    a.wait_log("m", "migrate: pass 2 ", LONG);
    let nowhere = format!("unix:{}", tmp.path().join("none.sock").display());
    let e = a.fails(&["migrate", "m", &nowhere]);
    assert!(e.contains("destination daemon"), "{e}");
    assert_eq!(a.status("m")["state"], "running");

    let before = last_pass(&a.log("m"));
    let out = a.ok(&["migrate", "m", &dest]);
    assert!(out.contains("'m' migrated to"), "{out}");
    assert_eq!(
        a.status("m")["state"],
        "defined",
        "the source keeps the definition"
    );
    let st = b.wait_status("m", LONG, |s| s["state"] == "running");
    assert_eq!(st["uuid"], uuid);

    let n = b.log("m").matches("migrate: pass ").count();
    b.wait_log_n("m", "migrate: pass ", n + 3, LONG);
    let log = b.log("m");
    let went_on = pass_lines(&log);
    assert!(
        went_on.first().is_some_and(|p| p.0 > before),
        "the destination's guest did not go on from pass {before}:\n{log}"
    );
    assert!(
        !log.contains("migrate: pages="),
        "the destination booted the guest anew"
    );
    check_sums(pages(&a.log("m")), &went_on);

    // And back: the source daemon takes its own definition (same uuid) over.
    let back = format!("unix:{}", a.sock.display());
    let last_b = last_pass(&b.log("m"));
    b.ok(&["migrate", "m", &back]);
    assert_eq!(b.status("m")["state"], "defined");
    let st = a.wait_status("m", LONG, |s| s["state"] == "running");
    assert_eq!(st["uuid"], uuid);
    let marker = "[hakod] m started";
    let deadline = std::time::Instant::now() + LONG;
    let log = loop {
        let log = a.log("m");
        if passes_after(&log, marker).len() >= 2 {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no passes after the way back:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let home = passes_after(&log, marker);
    assert!(
        home[0].0 > last_b,
        "back home the guest went on from pass {}, not after {last_b}",
        home[0].0
    );
    check_sums(pages(&log), &home);

    // A VM of that name with another uuid is not overwritten by a migration.
    let r = b.api("DELETE", "/v1/vms/m", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = b.api("POST", "/v1/vms", Some(&tiny_definition("m")));
    assert_eq!(r.status, 201, "{}", r.body);
    let e = a.fails(&["migrate", "m", &dest]);
    assert!(e.contains("another uuid"), "{e}");
    assert_eq!(a.status("m")["state"], "running");
    a.ok(&["destroy", "m"]);
}

#[test]
fn live_migration_to_a_daemon_over_tcp_with_its_token() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    fs::write(&token, "migration-token-0123456789\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let a = Daemon::start(&tmp.path().join("a"));
    let tok = token.to_str().unwrap();
    let c = Daemon::start_with(
        &tmp.path().join("c"),
        &["--http", "127.0.0.1:0", "--http-token-file", tok],
    );
    let dest = format!("tcp:{}", c.http_addr());
    let r = a.api("POST", "/v1/vms", Some(&tiny_definition("t")));
    assert_eq!(r.status, 201, "{}", r.body);
    a.ok(&["start", "t"]);
    a.wait_log("t", "migrate: pass 2 ", LONG);

    // Without the token (or with a wrong one) the destination refuses; the VM
    // runs on here.
    let e = a.fails(&["migrate", "t", &dest]);
    assert!(e.contains("token"), "{e}");
    let wrong = tmp.path().join("wrong");
    fs::write(&wrong, "not-the-token-0123456789\n").unwrap();
    let e = a.fails(&[
        "migrate",
        "t",
        &dest,
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert!(e.contains("token"), "{e}");
    assert_eq!(a.status("t")["state"], "running");

    let before = last_pass(&a.log("t"));
    let out = a.ok(&["migrate", "t", &dest, "--token-file", tok]);
    assert!(out.contains("'t' migrated to"), "{out}");
    assert_eq!(a.status("t")["state"], "defined");
    c.wait_status("t", LONG, |s| s["state"] == "running");
    c.wait_log_n("t", "migrate: pass ", 3, LONG);
    let went_on = pass_lines(&c.log("t"));
    assert!(
        went_on[0].0 > before,
        "the guest did not go on from pass {before}"
    );
    check_sums(pages(&a.log("t")), &went_on);
    c.ok(&["destroy", "t"]);
}
