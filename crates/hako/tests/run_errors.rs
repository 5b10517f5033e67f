//! `hako run` and `hako host` on bad input: a one-line error and a non-zero exit.

use std::process::Command;

fn hako() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hako"))
}

fn run_fails(args: &[&str]) -> (i32, String) {
    let out = hako().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn missing_kernel_is_named() {
    let (code, err) = run_fails(&["run", "--kernel", "/no/such/vmlinuz", "--accel", "emu"]);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/vmlinuz"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn malformed_kernel_is_rejected_before_boot() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), b"MZ not really a kernel").unwrap();
    for accel in ["kvm", "emu"] {
        let (code, err) = run_fails(&[
            "run",
            "--kernel",
            f.path().to_str().unwrap(),
            "--accel",
            accel,
        ]);
        assert_eq!(code, 1, "{accel}: {err}");
        assert!(
            err.contains("unsupported kernel format")
                || err.contains("not available")
                || err.contains("/dev/kvm"),
            "{accel}: {err}"
        );
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let (code, err) = run_fails(&["run", "--kernel", "x", "--memory", "12Q"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown unit"), "{err}");
    let (code, err) = run_fails(&["run", "--kernel", "x", "--accel", "tcg"]);
    assert_eq!(code, 2);
    assert!(err.contains("tcg"), "{err}");
    let (code, err) = run_fails(&[
        "run",
        "--kernel",
        "/dev/null",
        "--cpus",
        "0",
        "--accel",
        "emu",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--cpus"), "{err}");
}

#[test]
fn absurd_memory_is_a_clear_error() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let (code, err) = run_fails(&[
        "run",
        "--kernel",
        f.path().to_str().unwrap(),
        "--memory",
        "64T",
        "--accel",
        "emu",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("memory") || err.contains("kernel"), "{err}");
}

#[test]
fn host_json_names_a_recommendation() {
    let out = hako().args(["host", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rec = v["recommended"].as_str().unwrap_or_default();
    assert!(rec == "kvm" || rec == "emu", "recommended: {rec:?}");
    assert!(
        !v["reason"].as_str().unwrap_or_default().is_empty(),
        "a reason is given"
    );
    // A PVM-backed /dev/kvm (as on the development machines) must lead to emu.
    if v["kvm"]["pvm"] == serde_json::Value::Bool(true) {
        assert_eq!(rec, "emu", "PVM host: {v}");
        assert!(v["reason"].as_str().unwrap().contains("PVM"), "{v}");
    }
}

/// Malformed `--net`, `--balloon` and `--memory` options are usage errors; unusable
/// backends are one-line errors before the guest starts.
#[test]
fn bad_network_and_memory_options_are_clear_errors() {
    for (args, want) in [
        (vec!["--net", "wifi"], "unknown"),
        (
            vec!["--net", "user,hostfwd=tcp:127.0.0.1:x-:80"],
            "'x' is not a number",
        ),
        (vec!["--net", "tap"], "ifname"),
        (vec!["--net", "user,mac=01:00:5e:00:00:01"], "multicast"),
        (vec!["--memory", "512M,ksm=on"], "unknown option 'ksm'"),
        (vec!["--balloon", "lots"], "invalid size"),
    ] {
        let mut a = vec!["run", "--kernel", "x", "--accel", "emu"];
        a.extend(&args);
        let (code, err) = run_fails(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let elf = test_guests::build("hello").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let not_a_socket = dir.path().join("file");
    std::fs::write(&not_a_socket, b"").unwrap();
    let absent = dir.path().join("absent.sock");
    for (net, want) in [
        (format!("stream,path={}", absent.display()), "absent.sock"),
        (
            format!("stream,path={},server=on", not_a_socket.display()),
            "not a socket",
        ),
        ("tap,ifname=lo".to_string(), "lo"),
    ] {
        let (code, err) = run_fails(&[
            "run",
            "--kernel",
            elf.to_str().unwrap(),
            "--accel",
            "emu",
            "--net",
            &net,
        ]);
        assert_eq!(code, 1, "{net}: {err}");
        assert!(err.contains(want), "{net}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("hello"), "the guest ran: {err}");
    }
    // The non-socket file is left alone.
    assert!(not_a_socket.is_file());
    // A balloon larger than the guest's memory.
    let (code, err) = run_fails(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--accel",
        "emu",
        "--memory",
        "64M",
        "--balloon",
        "128M",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("balloon"), "{err}");
}
