//! A hostile virtio driver (guests/virtio_hostile.c) against the VMM on every
//! accelerator: descriptor loops, buffers and rings outside guest memory, data in
//! the wrong direction, short headers, a runaway avail index and a misprogrammed
//! transport must each break only the virtio-blk device (DEVICE_NEEDS_RESET), which
//! a reset brings back; the VMM must neither crash nor hang, and the other devices
//! keep working.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ACCELS: &[&str] = &["kvm", "emu"];
const WATCHDOG: Duration = Duration::from_secs(120);

/// The hostile cases that must break the device (guest's case names).
const BREAKING: &[&str] = &[
    "(a) descriptor loop",
    "(b) buffer outside memory",
    "(c) wrong direction",
    "(d) short header",
    "(e) avail.idx=1000",
    "(f) queue size 7",
    "(g) notify of disabled queue",
    "(h) rings outside memory",
    "(i) DRIVER_OK without FEATURES_OK",
    "(j) notify of queue 7",
    "(k) misaligned descriptor table",
];

/// Cases whose error is found before DRIVER_OK, where the virtio spec asks for
/// no configuration-change interrupt.
const BEFORE_DRIVER_OK: &[&str] = &["(f) queue size 7", "(k) misaligned descriptor table"];

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn accels() -> Vec<&'static str> {
    ACCELS
        .iter()
        .copied()
        .filter(|a| *a != "kvm" || kvm_usable())
        .collect()
}

/// Sector 0 of the test disk: a pattern with every kind of byte in it.
fn sector0() -> Vec<u8> {
    (0..512u32).map(|i| (i * 37 + 11) as u8).collect()
}

struct Run {
    success: bool,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// `hako run` with a watchdog: a hung VMM is killed and reported, not waited for.
fn hako_run(kernel: &Path, disk: &Path, accel: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hako"))
        .args(["run", "--kernel"])
        .arg(kernel)
        .args(["--accel", accel, "--memory", "128M", "--disk"])
        .arg(format!("{},format=raw", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hako");
    // Drain both pipes on threads so a chatty VMM cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > WATCHDOG {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        success: status.success(),
        timed_out,
        stdout: String::from_utf8_lossy(&out_t.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
    }
}

/// The guest's report line for `case` (`virtio_hostile: <case>: used=...`).
fn case_line<'a>(out: &'a str, case: &str) -> &'a str {
    let prefix = format!("virtio_hostile: {case}: used=");
    out.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no report for {case}:\n{out}"))
}

/// The hex value after `key=0x` in a report line.
fn field(line: &str, key: &str) -> u8 {
    let pat = format!("{key}=0x");
    let at = line.find(&pat).unwrap_or_else(|| panic!("no {key} in {line}")) + pat.len();
    u8::from_str_radix(&line[at..at + 2], 16).unwrap()
}

fn check_output(accel: &str, run: &Run, want_sector: &str) {
    let ctx = format!("{accel}:\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(!run.timed_out, "{accel}: VMM hung (killed after {WATCHDOG:?})\n{ctx}");
    assert!(run.success, "{accel}: hako failed\n{ctx}");
    let out = &run.stdout;
    assert!(
        out.contains("virtio_hostile: virtio-blk at 00:"),
        "{accel}: device not found\n{ctx}"
    );
    assert!(
        out.contains(&format!("virtio_hostile: sector 0: {want_sector}\n")),
        "{accel}: wrong sector 0 (want {want_sector})\n{ctx}"
    );
    for case in BREAKING {
        let line = case_line(out, case);
        assert!(line.contains(": used=0 "), "{accel}: {case} completed a request: {line}");
        assert!(line.ends_with(" needs_reset"), "{accel}: {case} did not break the device: {line}");
        assert_ne!(field(line, "device_status") & 0x40, 0, "{accel}: {line}");
        assert_eq!(field(line, "status"), 0xee, "{accel}: {case} wrote a status byte: {line}");
        let isr = field(line, "isr");
        if !BEFORE_DRIVER_OK.contains(case) {
            assert_ne!(isr & 2, 0, "{accel}: {case}: no configuration interrupt: {line}");
        }
        assert_eq!(isr & 1, 0, "{accel}: {case}: queue interrupt without a used buffer: {line}");
        assert!(
            out.contains(&format!("virtio_hostile: {case}: recovered\n")),
            "{accel}: {case}: device did not recover after reset\n{ctx}"
        );
    }
    // An out-of-range sector is the driver's problem, reported in the status byte
    // (VIRTIO_BLK_S_IOERR); the device keeps running.
    let past = case_line(out, "(l) sector past the end");
    assert!(past.contains(": used=1 status=0x01 "), "{accel}: {past}");
    assert!(past.ends_with(" running"), "{accel}: {past}");
    assert!(out.contains("virtio_hostile: (l) sector past the end: recovered\n"), "{ctx}");
    assert!(
        out.contains("virtio_hostile: virtio-rng: used=1 len=16\n"),
        "{accel}: virtio-rng affected\n{ctx}"
    );
    assert!(!out.contains("NOT recovered"), "{ctx}");
    assert!(out.ends_with("virtio_hostile: survived\n"), "{accel}: did not survive\n{ctx}");
    // The breakage is logged by the VMM.
    assert!(run.stderr.contains("needs reset"), "{accel}: nothing logged\n{ctx}");
}

#[test]
fn hostile_virtio_driver_breaks_only_its_device() {
    let elf = test_guests::build("virtio_hostile").expect("build guests/virtio_hostile.c");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let mut image = sector0();
    image.resize(64 * 1024, 0);
    std::fs::write(&disk, &image).unwrap();
    let want_sector: String = sector0()[..16].iter().map(|b| format!("{b:02x}")).collect();

    let mut outputs = Vec::new();
    for accel in accels() {
        let run = hako_run(&elf, &disk, accel);
        check_output(accel, &run, &want_sector);
        outputs.push((accel, run.stdout));
    }
    for w in outputs.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{} and {} disagree", w[0].0, w[1].0);
    }
    // The guest only reads: the image is untouched.
    assert_eq!(std::fs::read(&disk).unwrap(), image);
}
