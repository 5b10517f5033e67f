//! The freestanding test guests (guests/) booted through `hako run` on every
//! accelerator: the right output, exit status 0, and the same output everywhere.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ACCELS: &[&str] = &["kvm", "emu"];

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Accelerators to run here (KVM only where /dev/kvm opens).
fn accels() -> Vec<&'static str> {
    ACCELS
        .iter()
        .copied()
        .filter(|a| *a != "kvm" || kvm_usable())
        .collect()
}

/// Runs `hako run` with a watchdog so a hung guest fails the test instead of CI.
fn hako_run(kernel: &Path, accel: &str, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hako"))
        .args([
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--accel",
            accel,
            "--memory",
            "128M",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
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
    let elf = test_guests::build("hello").expect("build guests/hello.c with gcc");
    let mut outputs = Vec::new();
    for accel in accels() {
        let o = hako_run(&elf, accel, &["--cmdline", "console=ttyS0 answer=42"]);
        let out = stdout(&o);
        assert!(
            o.status.success(),
            "{accel}: status {:?}\nstdout:{out}\nstderr:{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains("hello: cmdline=\"console=ttyS0 answer=42\""),
            "{accel}: {out}"
        );
        let want = format!("hello: checksum=0x{:016x}", hello_checksum());
        let want_short = format!("hello: checksum=0x{:x}\n", hello_checksum());
        assert!(
            out.contains(&want) || out.contains(&want_short),
            "{accel}: want {want}\n{out}"
        );
        outputs.push((accel, out));
    }
    for w in outputs.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{} and {} disagree", w[0].0, w[1].0);
    }
}

#[test]
fn triple_fault_ends_the_vm_cleanly() {
    let elf = test_guests::build("triple").expect("build guests/triple.c");
    let mut outputs = Vec::new();
    for accel in accels() {
        let o = hako_run(&elf, accel, &[]);
        let out = stdout(&o);
        assert!(
            o.status.success(),
            "{accel}: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("triple: faulting"), "{accel}: {out}");
        assert!(!out.contains("still alive"), "{accel}: {out}");
        outputs.push(out);
    }
    outputs.dedup();
    assert_eq!(outputs.len(), 1, "accelerators disagree: {outputs:?}");
}

#[test]
fn smp_guest_starts_every_cpu() {
    let elf = test_guests::build("smp").expect("build guests/smp.c");
    let mut outputs = Vec::new();
    for accel in accels() {
        let o = hako_run(
            &elf,
            accel,
            &["--cpus", "3", "--cmdline", "console=ttyS0 cpus=3"],
        );
        let out = stdout(&o);
        assert!(
            o.status.success(),
            "{accel}: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("smp: total=3 CPUs"), "{accel}: {out}");
        assert!(
            out.contains("smp: AP 1 up, ticket 0") && out.contains("smp: AP 2 up, ticket 1"),
            "{accel}: {out}"
        );
        outputs.push(out);
    }
    outputs.dedup();
    assert_eq!(outputs.len(), 1, "accelerators disagree: {outputs:?}");
}

#[test]
fn on_reboot_restart_boots_the_guest_again() {
    use std::io::{BufRead, BufReader};
    let elf = test_guests::build("hello").expect("build guests/hello.c");
    for accel in accels() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hako"))
            .args(["run", "--kernel", elf.to_str().unwrap(), "--accel", accel, "--memory", "64M"])
            .args(["--on-reboot", "restart"])
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
        assert_eq!(boots, 3, "{accel}: the guest was not booted again after its reset");
    }
}
