//! The guests themselves checked against an independent machine: QEMU's TCG
//! emulator boots each one through its PVH entry and must print exactly what
//! `expected` says. Skipped where qemu-system-x86_64 is not installed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_guests::{build, expected};

fn qemu(name: &str, cmdline: &str, cpus: u32) -> Option<(bool, String)> {
    qemu_accel(name, cmdline, cpus, "tcg")
}

fn qemu_accel(name: &str, cmdline: &str, cpus: u32, accel: &str) -> Option<(bool, String)> {
    let elf = build(name).unwrap();
    let mut child = match Command::new("qemu-system-x86_64")
        .args(["-accel", accel, "-M", "pc", "-m", "64M", "-display", "none"])
        .args([
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-smp", &cpus.to_string(), "-kernel"])
        .arg(&elf)
        .args(["-append", cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => {
            eprintln!("skipped: qemu-system-x86_64 is not installed");
            return None;
        }
    };
    // Hang guard only: a guest that never resets fails instead of blocking CI.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn hello_on_qemu() {
    if let Some((ok, out)) = qemu("hello", "console=ttyS0 a=b", 1) {
        assert_eq!(out, expected::hello("console=ttyS0 a=b"));
        assert!(ok);
    }
}

#[test]
fn triple_on_qemu() {
    if let Some((ok, out)) = qemu("triple", "", 1) {
        assert_eq!(out, expected::triple());
        assert!(ok, "QEMU -no-reboot exits 0 on the triple fault's reset");
    }
}

#[test]
fn smp_on_qemu() {
    if let Some((ok, out)) = qemu("smp", "cpus=3", 3) {
        assert_eq!(out, expected::smp(3));
        assert!(ok);
    }
}

#[test]
fn outloop_on_qemu() {
    if let Some((ok, out)) = qemu("outloop", "count=300", 1) {
        assert_eq!(out, expected::outloop(300));
        assert!(ok);
    }
}

#[test]
fn xmodify_on_qemu() {
    // Debian 12's QEMU 7.2 with multi-threaded TCG keeps running the old code even
    // after the caller's CPUID, which x86 does not allow (SDM vol. 3A, 9.1.3); the
    // reference is its single-threaded TCG.
    if let Some((ok, out)) = qemu_accel("xmodify", "", 2, "tcg,thread=single") {
        assert_eq!(out, expected::xmodify());
        assert!(ok);
    }
}

#[test]
fn jitcheck_on_qemu() {
    if let Some((ok, out)) = qemu("jitcheck", "cpus=3", 3) {
        assert_eq!(out, expected::jitcheck(3));
        assert!(ok);
    }
}
