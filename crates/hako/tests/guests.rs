//! The freestanding test guests (guests/) booted through `hako run` on every
//! accelerator: the right output, exit status 0, and the same output everywhere.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{accel_flags, accels, hako, run_watchdog, Run};

/// Runs `hako run` on a test guest with a watchdog.
fn hako_run(kernel: &Path, accel: &str, extra: &[&str]) -> Run {
    let mut cmd = hako();
    cmd.args(["run", "--kernel", kernel.to_str().unwrap()])
        .args(accel_flags(accel))
        .args(["--memory", "128M"])
        .args(extra);
    run_watchdog(&mut cmd, Duration::from_secs(120))
}

/// Runs `guest` on every accelerator, checks each output with `check`, and
/// requires the accelerators to agree.
fn on_every_accel(guest: &str, extra: &[&str], check: impl Fn(&str, &str)) {
    let elf = test_guests::build(guest).unwrap_or_else(|e| panic!("build guests/{guest}.c: {e}"));
    let mut outputs: Vec<(&str, String)> = Vec::new();
    for accel in accels() {
        let o = hako_run(&elf, accel, extra);
        assert!(
            o.success,
            "{accel}: failed (timed out: {})\nstdout:\n{}\nstderr:\n{}",
            o.timed_out, o.stdout, o.stderr
        );
        check(accel, &o.stdout);
        outputs.push((accel, o.stdout));
    }
    for w in outputs.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{} and {} disagree", w[0].0, w[1].0);
    }
}

/// The checksum guests/hello.c computes, computed here independently.
fn hello_checksum() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut carries: u32 = 0;
    for i in 0..4096u64 {
        let prev = h;
        h ^= i;
        h = h.wrapping_mul(0x100000001b3);
        h = h.rotate_left(13);
        h = h.wrapping_add(prev);
        carries += (h < prev) as u32;
        if i % 7 == 3 {
            h ^= h / (i | 1);
        }
        h = h.wrapping_sub((prev >> 58).wrapping_mul(0x9e37));
    }
    h ^ carries as u64
}

#[test]
fn hello_prints_cmdline_and_checksum_then_resets() {
    let want = format!("hello: checksum=0x{:016x}", hello_checksum());
    on_every_accel(
        "hello",
        &["--cmdline", "console=ttyS0 answer=42"],
        |accel, out| {
            assert!(
                out.contains("hello: cmdline=\"console=ttyS0 answer=42\""),
                "{accel}: {out}"
            );
            assert!(out.contains(&want), "{accel}: want {want}\n{out}");
        },
    );
}

#[test]
fn triple_fault_ends_the_vm_cleanly() {
    on_every_accel("triple", &[], |accel, out| {
        assert!(out.contains("triple: faulting"), "{accel}: {out}");
        assert!(!out.contains("still alive"), "{accel}: {out}");
    });
}

#[test]
fn smp_guest_starts_every_cpu() {
    on_every_accel(
        "smp",
        &["--cpus", "3", "--cmdline", "console=ttyS0 cpus=3"],
        |accel, out| {
            assert!(out.contains("smp: total=3 CPUs"), "{accel}: {out}");
            assert!(
                out.contains("smp: AP 1 up, ticket 0") && out.contains("smp: AP 2 up, ticket 1"),
                "{accel}: {out}"
            );
        },
    );
}

#[test]
fn cross_modified_code_is_seen_by_the_calling_cpu() {
    // vCPU 1 rewrites a function vCPU 0 calls in a loop (both in kernel mode, so no
    // address-space switch ever re-checks the code).
    on_every_accel("xmodify", &["--cpus", "2"], |accel, out| {
        assert_eq!(out, test_guests::expected::xmodify(), "{accel}");
    });
}

#[test]
fn translator_exactness_checks_agree_everywhere() {
    // Faults from the middle of hot loops, demand paging, self-modifying code, a
    // timer interrupt in a tight loop, locked counters on 4 vCPUs.
    on_every_accel(
        "jitcheck",
        &["--cpus", "4", "--cmdline", "cpus=4"],
        |accel, out| {
            assert_eq!(out, test_guests::expected::jitcheck(4), "{accel}");
        },
    );
}

#[test]
fn on_reboot_restart_boots_the_guest_again() {
    use std::io::{BufRead, BufReader};
    let elf = test_guests::build("hello").expect("build guests/hello.c");
    for accel in accels() {
        let mut child = hako()
            .args(["run", "--kernel", elf.to_str().unwrap()])
            .args(accel_flags(accel))
            .args(["--memory", "64M", "--on-reboot", "restart"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut boots = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while boots < 3 && std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
                boots += line.starts_with("hello: cmdline=") as u32;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            boots, 3,
            "{accel}: the guest was not booted again after its reset"
        );
    }
}

#[test]
fn a_definition_file_boots_like_the_flags() {
    let elf = test_guests::build("hello").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Relative paths are taken from the file's directory.
    std::fs::copy(&elf, dir.path().join("hello.elf")).unwrap();
    let def = dir.path().join("vm.json");
    let json = serde_json::json!({
        "kernel": "hello.elf", "initrds": [], "cmdline": "from-a-file", "memory": 64u64 << 20,
        "cpus": 1, "accel": "emu", "jit": true, "disks": [], "console": "serial",
        "on_reboot": "exit", "virtio": "pci", "devices": []
    });
    std::fs::write(&def, json.to_string()).unwrap();
    let mut cmd = common::hako();
    cmd.args(["run", "--config"]).arg(&def);
    let o = run_watchdog(&mut cmd, Duration::from_secs(60));
    assert!(o.success, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("hello: cmdline=\"from-a-file\""),
        "{}",
        o.stdout
    );
    // --config takes no VM flags besides --accel.
    let mut cmd = common::hako();
    cmd.args(["run", "--cpus", "2", "--config"]).arg(&def);
    let o = run_watchdog(&mut cmd, Duration::from_secs(60));
    assert_eq!(o.code, Some(2), "{}", o.stderr);
}
