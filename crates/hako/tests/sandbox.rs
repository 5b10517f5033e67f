//! The sandbox of `hako run` (docs/sandbox.md): a confined VM runs as an
//! unconfined one does, a forbidden system call ends the process with a line that
//! says so, and the VM writes only where it is allowed to.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::migrate_guest::{passes, Vm, MB};
use common::{accel_flags, accels, hako, kvm_usable, run_watchdog, Run};

fn hello() -> PathBuf {
    test_guests::build("hello").expect("build guests/hello.c")
}

/// `hako run` of guests/hello.c on `accel`, with `extra` flags and `env`.
fn run_hello(accel: &str, extra: &[&str], env: Option<(&str, &str)>) -> Run {
    let elf = hello();
    let mut cmd = hako();
    cmd.args(["run", "--kernel", elf.to_str().unwrap()])
        .args(["--memory", "128M", "--cmdline", "console=ttyS0 answer=42"])
        .args(accel_flags(accel))
        .args(extra)
        .env_remove("HAKO_TEST_FORBIDDEN_SYSCALL");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    run_watchdog(&mut cmd, Duration::from_secs(120))
}

#[test]
fn a_confined_vm_runs_like_an_unconfined_one() {
    for accel in accels() {
        let on = run_hello(accel, &[], None);
        assert!(
            on.success,
            "{accel}: confined run failed\n{}\n{}",
            on.stdout, on.stderr
        );
        assert!(
            on.stdout
                .contains("hello: cmdline=\"console=ttyS0 answer=42\""),
            "{accel}: {}",
            on.stdout
        );
        assert!(!on.stderr.contains("sandbox:"), "{accel}: {}", on.stderr);
        let off = run_hello(accel, &["--sandbox", "off"], None);
        assert!(off.success, "{accel}: {}", off.stderr);
        assert_eq!(on.stdout, off.stdout, "{accel}: confined and not disagree");
    }
}

#[test]
fn a_forbidden_system_call_ends_the_process_with_a_line_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![
        ("vcpu", "emu"),
        ("api", "emu"),
        ("io", "emu"),
        ("main", "emu"),
    ];
    if kvm_usable() {
        cases.extend([("vcpu", "kvm"), ("api", "kvm")]);
    }
    for (kind, accel) in cases {
        let sock = dir.path().join(format!("{kind}-{accel}.sock"));
        let sock = sock.to_str().unwrap();
        let hook = Some(("HAKO_TEST_FORBIDDEN_SYSCALL", kind));
        let r = run_hello(accel, &["--api-socket", sock], hook);
        assert_eq!(
            r.code,
            Some(159),
            "{kind} on {accel}: not ended by the sandbox\n{}",
            r.stderr
        );
        let want = format!(
            "hako: sandbox: forbidden system call {} (getppid) in thread {kind}",
            libc::SYS_getppid
        );
        assert!(r.stderr.contains(&want), "{kind} on {accel}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("; the process is killed (run with --sandbox off to debug)"),
            "{}",
            r.stderr
        );
        // Unconfined, the same call is just made.
        let r = run_hello(accel, &["--api-socket", sock, "--sandbox", "off"], hook);
        assert!(r.success, "{kind} on {accel}, unconfined: {}", r.stderr);
    }
}

/// guests/migrate.c on emu, its API socket in `dir`, with `extra` flags.
fn boot_migrate(dir: &Path, extra: &[&str]) -> Vm {
    let elf = test_guests::build("migrate").expect("build guests/migrate.c");
    let cmdline = format!("mb={MB}");
    let mut args = vec!["--kernel", elf.to_str().unwrap(), "--memory", "64M"];
    args.extend(["--cmdline", &cmdline, "--accel", "emu"]);
    args.extend(extra);
    Vm::start(dir, "vm", &args)
}

#[test]
fn snapshots_go_only_where_the_sandbox_allows() {
    let vm_dir = tempfile::tempdir().unwrap();
    let allowed = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut vm = boot_migrate(
        vm_dir.path(),
        &["--sandbox-allow", allowed.path().to_str().unwrap()],
    );
    vm.wait_passes(2);

    // Outside the allowed places: a clear error, nothing written, the VM runs on.
    let refused = elsewhere.path().join("snap");
    let o = vm.ctl(&["snapshot", refused.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the snapshot was written: {err}");
    assert!(err.contains("--sandbox-allow"), "{err}");
    assert!(err.contains(refused.to_str().unwrap()), "{err}");
    assert!(!refused.exists());
    let n = passes(&vm.output()).len();
    vm.wait_passes(n + 2);

    // Into a --sandbox-allow directory, and into the API socket's own directory.
    for dir in [allowed.path().join("snap"), vm_dir.path().join("snap")] {
        let table = vm.ctl_ok(&["snapshot", dir.to_str().unwrap()]);
        assert!(table.contains("paused for"), "{table}");
        assert!(dir.join("state.bin").is_file(), "{}", dir.display());
        assert!(dir.join("memory.bin").is_file(), "{}", dir.display());
    }
    vm.ctl_ok(&["stop"]);
    assert_eq!(vm.wait_exit(), Some(0), "{}", vm.stderr());
}

#[test]
fn a_restored_snapshot_runs_confined() {
    let vm_dir = tempfile::tempdir().unwrap();
    let snap = vm_dir.path().join("snap");
    let mut vm = boot_migrate(vm_dir.path(), &[]);
    vm.wait_passes(2);
    vm.ctl_ok(&["snapshot", snap.to_str().unwrap(), "--stay-paused"]);
    vm.ctl_ok(&["stop"]);
    assert_eq!(vm.wait_exit(), Some(0), "{}", vm.stderr());
    drop(vm);

    let dir2 = tempfile::tempdir().unwrap();
    let mut vm = Vm::start(
        dir2.path(),
        "restored",
        &["--restore", snap.to_str().unwrap()],
    );
    let n = vm.wait_passes(1).len();
    vm.wait_passes(n + 2);
    vm.ctl_ok(&["stop"]);
    assert_eq!(vm.wait_exit(), Some(0), "{}", vm.stderr());
}

#[test]
fn a_missing_sandbox_allow_directory_is_named() {
    let r = run_hello("emu", &["--sandbox-allow", "/no/such/hako-dir"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("/no/such/hako-dir"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
}
