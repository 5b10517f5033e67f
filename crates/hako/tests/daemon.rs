//! End to end: `hako daemon` and the verbs, with real `hako run` processes of a
//! tiny guest (guests/migrate.c, which runs until stopped) on `emu`.

mod daemon_util;

use std::time::Duration;

use daemon_util::{alive, kill9, passes, tiny_definition, Daemon};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

fn pid_of(st: &Value) -> u64 {
    st["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {st}"))
}

/// Ten VMs defined four ways; several started, listed, logged, suspended and
/// resumed, shut down (the tiny guest ignores the power button), destroyed and
/// undefined; the errors of the verbs.
#[test]
fn ten_vms_through_the_verbs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let kernel = daemon_util::forever_guest();
    let kernel = kernel.to_str().unwrap();
    let defs = tmp.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    // A JSON definition whose kernel path is relative to the file.
    std::fs::copy(kernel, defs.join("guest.elf")).unwrap();
    let mut j = tiny_definition("vm0");
    j["config"]["kernel"] = json!("guest.elf");
    std::fs::write(defs.join("vm0.json"), j.to_string()).unwrap();
    assert!(d
        .ok(&["define", defs.join("vm0.json").to_str().unwrap()])
        .starts_with("defined 'vm0'"));
    // TOML.
    let toml = format!(
        "name = \"vm1\"\nrestart_policy = \"on-failure\"\n[config]\nkernel = \"{kernel}\"\n\
         memory = \"64M\"\ncmdline = \"mb=5 spin=200000000\"\naccel = \"emu\"\n"
    );
    std::fs::write(defs.join("one.toml"), toml).unwrap();
    d.ok(&["define", defs.join("one.toml").to_str().unwrap()]);
    // A bare VM configuration, named by --name and by its stem.
    let bare = tiny_definition("x")["config"].clone();
    std::fs::write(defs.join("vm2.json"), bare.to_string()).unwrap();
    d.ok(&["define", defs.join("vm2.json").to_str().unwrap()]);
    d.ok(&[
        "define",
        defs.join("vm2.json").to_str().unwrap(),
        "--name",
        "vm3",
        "--autostart",
    ]);
    // The flags of `hako run`.
    for i in 4..10 {
        let name = format!("vm{i}");
        let out = d.ok(&[
            "define",
            &name,
            "--kernel",
            kernel,
            "--memory",
            "64M",
            "--accel",
            "emu",
            "--cmdline",
            "mb=5 spin=200000000",
        ]);
        assert!(out.starts_with(&format!("defined '{name}'")), "{out}");
    }
    let all: Value = serde_json::from_str(&d.ok(&["list", "--all", "--json"])).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, (0..10).map(|i| format!("vm{i}")).collect::<Vec<_>>());
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["state"] == "defined"));
    let info: Value = serde_json::from_str(&d.ok(&["info", "vm0", "--json"])).unwrap();
    assert_eq!(
        info["definition"]["config"]["kernel"],
        defs.join("guest.elf").to_str().unwrap()
    );
    assert_eq!(info["definition"]["config"]["memory"], 64 << 20);
    assert_eq!(d.status("vm1")["restart_policy"], "on-failure");
    assert_eq!(d.status("vm3")["autostart"], true);
    // Defining again replaces the definition.
    assert!(d
        .ok(&[
            "define",
            defs.join("vm2.json").to_str().unwrap(),
            "--name",
            "vm3"
        ])
        .starts_with("redefined 'vm3'"));
    assert_eq!(d.status("vm3")["autostart"], false);
    assert!(
        d.ok(&["list"]).lines().count() == 1,
        "only the header: nothing runs"
    );

    // Start three; they run, with their processes, and print.
    for n in ["vm0", "vm1", "vm5"] {
        let out = d.ok(&["start", n]);
        assert!(out.starts_with(&format!("{n}: running (pid ")), "{out}");
    }
    let list = d.ok(&["list"]);
    assert_eq!(list.lines().count(), 4, "{list}");
    for n in ["vm0", "vm1", "vm5"] {
        let st = d.status(n);
        assert_eq!(st["state"], "running");
        assert!(alive(pid_of(&st)));
        assert_eq!(d.vm_processes(n), vec![pid_of(&st) as u32]);
        assert!(
            list.lines()
                .any(|l| l.starts_with(n) && l.contains("running")),
            "{list}"
        );
        d.wait_log(n, "migrate: pass 2 ", LONG);
    }
    assert!(d.ok(&["log", "vm0"]).contains("migrate: pages=256"));
    let host = d.api("GET", "/v1/host", None).json().unwrap();
    assert_eq!(host["running_vms"], 3);
    assert_eq!(host["committed_memory_bytes"], 3 * (64 << 20));
    assert!(host["host"].is_object(), "{host}");

    // Suspend: no more passes; resume: they go on.
    assert!(d.ok(&["suspend", "vm5"]).starts_with("vm5: paused"));
    assert_eq!(d.status("vm5")["state"], "paused");
    // What it printed before the pause may reach the buffer a little later.
    std::thread::sleep(Duration::from_millis(400));
    let before = passes(&d.log("vm5"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(passes(&d.log("vm5")), before, "a paused guest printed");
    assert!(d
        .fails(&["suspend", "vm5"])
        .contains("'vm5' is paused already"));
    assert!(d.fails(&["shutdown", "vm5"]).contains("paused"));
    d.ok(&["resume", "vm5"]);
    d.wait_log("vm5", &format!("migrate: pass {} ", before + 2), LONG);

    // The tiny guest ignores the power button: it keeps running.
    assert!(d
        .ok(&["shutdown", "vm1", "--wait", "1"])
        .starts_with("vm1: running"));

    // Errors, one line each.
    assert_eq!(
        d.fails(&["start", "vm0"]),
        "hako: error: 'vm0' is running already"
    );
    assert_eq!(
        d.fails(&["info", "nope"]),
        "hako: error: no VM named 'nope'"
    );
    assert_eq!(
        d.fails(&["destroy", "vm7"]),
        "hako: error: 'vm7' is not running"
    );
    assert!(d.fails(&["undefine", "vm0"]).contains("'vm0' is running"));
    let mut changed = tiny_definition("vm0");
    changed["config"]["cpus"] = json!(2);
    let r = d.api("PUT", "/v1/vms/vm0", Some(&changed));
    assert_eq!(r.status, 409, "{}", r.body);
    // Autostart may change while it runs.
    d.ok(&["autostart", "vm0"]);
    assert_eq!(d.status("vm0")["autostart"], true);
    d.ok(&["autostart", "vm0", "--disable"]);
    let gone = std::process::Command::new(daemon_util::hako_bin())
        .args([
            "list",
            "--connect",
            tmp.path().join("nothing.sock").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(
        err.contains("the daemon is not running at") && err.contains("start it with `hako daemon`"),
        "{err}"
    );

    // Reboot gives a new process; destroy ends them.
    let old = pid_of(&d.status("vm0"));
    d.ok(&["reboot", "vm0", "--force"]);
    let new = pid_of(&d.status("vm0"));
    assert_ne!(old, new);
    assert!(!alive(old));
    for n in ["vm0", "vm1", "vm5"] {
        let pid = pid_of(&d.status(n));
        assert!(d.ok(&["destroy", n]).starts_with(&format!("{n}: defined")));
        assert!(!alive(pid), "{n}'s process outlived destroy");
        assert!(d.vm_processes(n).is_empty());
    }
    assert!(d.log("vm0").contains("[hakod] vm0 ended"));
    // Undefine: gone, with its file.
    assert!(d.ok(&["undefine", "vm9"]).contains("undefined 'vm9'"));
    assert!(!d.state.join("vms/vm9.json").exists());
    assert_eq!(
        d.fails(&["undefine", "vm9"]),
        "hako: error: no VM named 'vm9'"
    );
    let all: Value = serde_json::from_str(&d.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 9);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "defined"),
        "{all}"
    );
}

/// 200 requests at once from 8 threads (start, destroy, suspend, resume, info,
/// list on 4 VMs) leave each VM running with a live process or stopped without
/// one, and every definition as it was.
#[test]
fn concurrent_requests_leave_consistent_state() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    let mut defined = vec![];
    for n in &names {
        let r = d.api("POST", "/v1/vms", Some(&tiny_definition(n)));
        assert_eq!(r.status, 201, "{}", r.body);
        defined.push(r.json().unwrap()["definition"].clone());
    }
    let statuses = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (d, names, statuses) = (&d, &names, &statuses);
            s.spawn(move || {
                // A fixed pseudo-random sequence per thread (xorshift).
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ ((t + 1) * 0x1000_0001);
                for _ in 0..25 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = &names[(x % 4) as usize];
                    let (m, p) = match (x >> 8) % 7 {
                        0 | 1 => ("PUT", format!("/v1/vms/{n}/start")),
                        2 => ("PUT", format!("/v1/vms/{n}/destroy")),
                        3 => ("PUT", format!("/v1/vms/{n}/suspend")),
                        4 => ("PUT", format!("/v1/vms/{n}/resume")),
                        5 => ("GET", format!("/v1/vms/{n}")),
                        _ => ("GET", "/v1/vms".to_string()),
                    };
                    let r = d.api(m, &p, None);
                    statuses.lock().unwrap().push((m, p, r.status, r.body));
                }
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    assert_eq!(statuses.len(), 200);
    for (m, p, status, body) in &statuses {
        assert!(
            *status == 200 || *status == 409,
            "{m} {p}: {status} {body}\ndaemon:\n{}",
            d.daemon_log()
        );
    }
    let ok = |what: &str| {
        statuses
            .iter()
            .filter(|s| s.2 == 200 && s.1.ends_with(what))
            .count()
    };
    // The mix did start, stop, pause and resume VMs, not only refuse.
    let counts = [ok("/start"), ok("/destroy"), ok("/suspend"), ok("/resume")];
    assert!(
        counts.iter().all(|&c| c >= 2),
        "start/destroy/suspend/resume: {counts:?}"
    );
    eprintln!("successful start/destroy/suspend/resume: {counts:?}");
    for (n, def) in names.iter().zip(&defined) {
        let info = d.api("GET", &format!("/v1/vms/{n}"), None).json().unwrap();
        let st = &info["status"];
        let procs = d.vm_processes(n);
        match st["state"].as_str().unwrap() {
            "running" | "paused" => {
                assert_eq!(procs, vec![pid_of(st) as u32], "{n}: {st}");
                // It answers on its own API in the state the daemon says.
                let vm = control_api::client::request(
                    &d.api_socket(n),
                    "GET",
                    "/v1/vm",
                    None,
                    Duration::from_secs(10),
                )
                .unwrap();
                assert_eq!(vm.json().unwrap()["state"], st["state"], "{n}");
            }
            "defined" => assert!(procs.is_empty(), "{n} is defined but has {procs:?}"),
            other => panic!("{n} is {other}: {st}"),
        }
        assert_eq!(&info["definition"], def);
        let on_disk: Value =
            serde_json::from_slice(&std::fs::read(d.state.join(format!("vms/{n}.json"))).unwrap())
                .unwrap();
        assert_eq!(&on_disk, def);
    }
}

/// The daemon killed with SIGKILL while defines and starts are under way, then
/// started again: every definition is whole or absent (none half-written, none
/// reported broken), and every VM process that runs is found and shown running
/// (even one started a moment before the kill, before its pid was written).
#[test]
fn a_daemon_killed_in_the_middle_of_defines_and_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(tmp.path());
    let starts: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    for n in &starts {
        assert_eq!(
            d.api("POST", "/v1/vms", Some(&tiny_definition(n))).status,
            201
        );
    }
    for (round, delay_ms) in [(0u32, 60u64), (1, 130)] {
        let sock = d.sock.clone();
        let quiet = |m: &str, p: &str, body: Option<&Value>| {
            control_api::client::request(&sock, m, p, body, Duration::from_secs(20)).ok()
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..40 {
                    let def = tiny_definition(&format!("k{round}-{i}"));
                    if quiet("POST", "/v1/vms", Some(&def)).is_none() {
                        return;
                    }
                }
            });
            s.spawn(|| {
                for n in &starts {
                    if quiet("PUT", &format!("/v1/vms/{n}/start"), None).is_none() {
                        return;
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(delay_ms));
            d.kill9();
        });
        d.restart();
        let host = d.api("GET", "/v1/host", None).json().unwrap();
        assert_eq!(host["broken_definitions"], json!([]), "round {round}");
        for i in 0..40 {
            let n = format!("k{round}-{i}");
            let r = d.api("GET", &format!("/v1/vms/{n}"), None);
            match r.status {
                404 => assert!(!d.state.join(format!("vms/{n}.json")).exists()),
                200 => {
                    let def = &r.json().unwrap()["definition"];
                    assert_eq!(
                        def["config"]["kernel"],
                        tiny_definition(&n)["config"]["kernel"]
                    );
                    let on_disk: Value = serde_json::from_slice(
                        &std::fs::read(d.state.join(format!("vms/{n}.json"))).unwrap(),
                    )
                    .unwrap();
                    assert_eq!(&on_disk, def, "{n}");
                }
                other => panic!("{n}: {other} {}", r.body),
            }
        }
        let defined = (0..40)
            .filter(|i| d.state.join(format!("vms/k{round}-{i}.json")).exists())
            .count();
        let running = starts
            .iter()
            .filter(|n| !d.vm_processes(n).is_empty())
            .count();
        eprintln!(
            "round {round}: killed after {delay_ms} ms: {defined}/40 defined, {running}/4 running"
        );
        for n in &starts {
            let procs = d.vm_processes(n);
            let st = d.status(n);
            if procs.is_empty() {
                assert_ne!(st["state"], "running", "{n}: {st}");
            } else {
                assert_eq!(procs.len(), 1, "{n}: {procs:?}");
                assert_eq!(st["state"], "running", "{n}: {st}\n{}", d.daemon_log());
                assert_eq!(st["pid"].as_u64(), Some(procs[0] as u64), "{n}");
            }
        }
        for n in &starts {
            if d.status(n)["state"] == "running" {
                d.ok(&["destroy", n]);
            }
        }
    }
}

/// A daemon killed with SIGKILL finds its running VMs again; a VM killed with
/// SIGKILL shows as crashed, and comes back with restart policy on-failure (at
/// most 3 times a minute); autostart starts a VM when the daemon starts.
#[test]
fn crashes_of_the_daemon_and_of_vms() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(tmp.path());
    let mut a = tiny_definition("a");
    a["restart_policy"] = json!("on-failure");
    for def in [
        a,
        tiny_definition("b"),
        tiny_definition("c"),
        tiny_definition("auto"),
    ] {
        assert_eq!(d.api("POST", "/v1/vms", Some(&def)).status, 201);
    }
    for n in ["a", "b", "c"] {
        d.ok(&["start", n]);
        d.wait_log(n, "migrate: pass 1 ", LONG);
    }
    let pids: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|n| pid_of(&d.status(n)))
        .collect();
    d.ok(&["autostart", "auto"]);

    // The daemon dies; the VMs go on (their console still reaches the log file).
    d.kill9();
    let log_c = d.state.join("run/c.log");
    let size = std::fs::metadata(&log_c).unwrap().len();
    // And c dies while no daemon watches.
    kill9(pids[2] as u32);
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pids[0]) && alive(pids[1]));
    let grown = std::fs::metadata(d.state.join("run/a.log")).unwrap().len();
    d.restart();
    // a and b are found again, with their processes and the console they wrote.
    for (n, pid) in [("a", pids[0]), ("b", pids[1])] {
        let st = d.status(n);
        assert_eq!(
            (st["state"].as_str(), st["pid"].as_u64()),
            (Some("running"), Some(pid)),
            "{n}"
        );
        d.wait_log(n, "migrate: pass 1 ", LONG);
    }
    assert!(grown > 0 && size > 0);
    let list: Value = serde_json::from_str(&d.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        4,
        "definitions intact: {list}"
    );
    // c ended unwatched: crashed, how unknown.
    let st = d.status("c");
    assert_eq!(st["state"], "crashed", "{st}");
    assert_eq!(st["last_exit"], json!({"code": null, "signal": null}));
    assert!(
        d.log("c").contains("migrate: pass 1 "),
        "the old console is kept"
    );
    // autostart: started by the new daemon.
    let st = d.wait_status("auto", LONG, |s| s["state"] == "running");
    assert!(alive(pid_of(&st)));
    // The adopted b is suspended and resumed like any other.
    d.ok(&["suspend", "b"]);
    d.ok(&["resume", "b"]);

    // A VM the daemon started itself, killed: crashed by signal 9.
    d.ok(&["start", "c"]);
    let c = pid_of(&d.status("c"));
    kill9(c as u32);
    let st = d.wait_status("c", LONG, |s| s["state"] == "crashed");
    assert_eq!(st["last_exit"], json!({"code": null, "signal": 9}));
    assert!(d
        .ok(&["list", "--all"])
        .contains("crashed (killed by signal 9)"));
    // The adopted b killed: crashed (no daemon can know how an adopted process ended).
    kill9(pids[1] as u32);
    d.wait_status("b", LONG, |s| s["state"] == "crashed");

    // a has restart policy on-failure: killed, it comes back, three times a minute.
    let mut pid = pids[0];
    for round in 1..=3 {
        kill9(pid as u32);
        let st = d.wait_status("a", LONG, |s| {
            s["state"] == "running" && s["pid"].as_u64() != Some(pid)
        });
        assert_eq!(st["restarts_last_minute"], round, "{st}");
        pid = pid_of(&st);
        // Up for real: the new run prints.
        let started = format!("[hakod] a started (pid {pid})");
        let deadline = std::time::Instant::now() + LONG;
        while !d
            .log("a")
            .rsplit_once(&started)
            .is_some_and(|(_, after)| after.contains("migrate: pass 1 "))
        {
            assert!(std::time::Instant::now() < deadline, "{}", d.log("a"));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(d
            .log("a")
            .contains("restarting (restart policy on-failure)"));
    }
    kill9(pid as u32);
    let st = d.wait_status("a", LONG, |s| s["state"] == "crashed");
    assert!(
        st["note"].as_str().unwrap().contains("not restarted"),
        "{st}"
    );
    // Started by hand, it runs again.
    d.ok(&["start", "a"]);
    d.ok(&["destroy", "a"]);
    assert_eq!(d.status("a")["state"], "defined");
}
