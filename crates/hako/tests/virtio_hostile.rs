//! A hostile virtio driver (guests/virtio_hostile.c) against the VMM on every
//! accelerator and both virtio transports (PCI, MMIO): descriptor loops, bad
//! indirect tables, buffers and rings outside guest memory, data in the wrong
//! direction, short headers, a runaway avail index and a misprogrammed transport
//! must each break only the virtio-blk device (DEVICE_NEEDS_RESET), which a reset
//! brings back; the VMM must neither crash nor hang, the other devices keep
//! working, and every accelerator prints the same.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{accel_flags, accels, hako, run_watchdog, Run};

const WATCHDOG: Duration = Duration::from_secs(120);

/// What a case must do to the device.
#[derive(Clone, Copy)]
enum Expect {
    /// The device breaks: no request completes, the status byte is untouched,
    /// DEVICE_NEEDS_RESET is set. `config_irq`: the ISR shows the configuration
    /// interrupt the virtio spec asks for when this happens after DRIVER_OK (not
    /// when the error is found before DRIVER_OK, nor under MSI-X, which bypasses
    /// the ISR).
    Breaks { config_irq: bool },
    /// The request completes with this status byte and the device keeps running.
    Completes { status: u8 },
}
use Expect::*;

const BREAKS: Expect = Breaks { config_irq: true };
const BREAKS_NO_IRQ: Expect = Breaks { config_irq: false };

/// Every case of the guest, by its name, in its order.
const CASES: &[(&str, Expect)] = &[
    ("(a) descriptor loop", BREAKS),
    ("(b) buffer outside memory", BREAKS),
    ("(c) wrong direction", BREAKS),
    ("(d) short header", BREAKS),
    ("(e) avail.idx=1000", BREAKS),
    ("(f) queue size 7", BREAKS_NO_IRQ),
    ("(g) notify of disabled queue", BREAKS),
    ("(h) rings outside memory", BREAKS),
    ("(i) DRIVER_OK without FEATURES_OK", BREAKS),
    ("(j) notify of queue 7", BREAKS),
    ("(k) misaligned descriptor table", BREAKS_NO_IRQ),
    // An out-of-range sector is the driver's problem, reported as VIRTIO_BLK_S_IOERR.
    ("(l) sector past the end", Completes { status: 1 }),
    ("(m) indirect read", Completes { status: 0 }),
    ("(n) indirect loop", BREAKS),
    ("(o) nested indirect table", BREAKS),
    ("(p) indirect table outside memory", BREAKS),
    ("(q) indirect table length 40", BREAKS),
    ("(r) head descriptor 200", BREAKS),
    ("(s) buffer in MMIO space", BREAKS),
    ("(t) buffer wrapping the address space", BREAKS),
    ("(u) buffer straddling the end of RAM", BREAKS),
    ("(v) queue size 512", BREAKS_NO_IRQ),
    // The device may write its data over the chain it already copied.
    (
        "(w) data over the descriptor table",
        Completes { status: 0 },
    ),
    ("(x) MSI-X to address 0", BREAKS_NO_IRQ),
];

/// Cases only the PCI transport has.
const PCI_ONLY: &[&str] = &["(x) MSI-X to address 0"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Pci,
    Mmio,
}

impl Transport {
    fn arg(self) -> &'static str {
        match self {
            Transport::Pci => "pci",
            Transport::Mmio => "mmio",
        }
    }

    /// The cases the guest runs on this transport.
    fn cases(self) -> impl Iterator<Item = &'static (&'static str, Expect)> {
        CASES
            .iter()
            .filter(move |(name, _)| self == Transport::Pci || !PCI_ONLY.contains(name))
    }
}

/// Sector 0 of the test disk: a pattern with every kind of byte in it.
fn sector0() -> Vec<u8> {
    (0..512u32).map(|i| (i * 37 + 11) as u8).collect()
}

/// `hako run` with a watchdog: a hung VMM is killed and reported, not waited for.
fn hako_run(kernel: &Path, disk: &Path, accel: &str, transport: Transport) -> Run {
    let mmio = u8::from(transport == Transport::Mmio);
    let mut cmd = hako();
    cmd.args(["run", "--kernel"])
        .arg(kernel)
        .args(accel_flags(accel))
        .args(["--memory", "128M", "--virtio", transport.arg()])
        .args(["--cmdline", &format!("ram_mib=128 mmio={mmio}")])
        .arg("--disk")
        .arg(format!("{},format=raw", disk.display()));
    run_watchdog(&mut cmd, WATCHDOG)
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
    let at = line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + pat.len();
    u8::from_str_radix(&line[at..at + 2], 16).unwrap()
}

fn check_output(accel: &str, transport: Transport, run: &Run, want_sector: &str) {
    let ctx = format!("{accel}:\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        !run.timed_out,
        "{accel}: VMM hung (killed after {WATCHDOG:?})\n{ctx}"
    );
    assert!(run.success, "{accel}: hako failed\n{ctx}");
    let out = &run.stdout;
    let found = match transport {
        Transport::Pci => "virtio_hostile: virtio-blk at PCI 00:",
        Transport::Mmio => "virtio_hostile: virtio-blk at virtio-mmio window ",
    };
    assert!(out.contains(found), "{accel}: device not found\n{ctx}");
    assert!(
        out.contains(&format!("virtio_hostile: sector 0: {want_sector}\n")),
        "{accel}: wrong sector 0 (want {want_sector})\n{ctx}"
    );
    let reports = out
        .lines()
        .filter(|l| l.starts_with("virtio_hostile: (") && l.contains(": used="))
        .count();
    assert_eq!(
        reports,
        transport.cases().count(),
        "{accel}: cases the test does not know\n{ctx}"
    );
    for &(case, expect) in transport.cases() {
        let line = case_line(out, case);
        let (ds, isr) = (field(line, "device_status"), field(line, "isr"));
        match expect {
            Breaks { config_irq } => {
                assert!(
                    line.contains(": used=0 "),
                    "{accel}: {case} completed a request: {line}"
                );
                assert!(
                    line.ends_with(" needs_reset"),
                    "{accel}: {case} did not break the device: {line}"
                );
                assert_ne!(ds & 0x40, 0, "{accel}: {line}");
                assert_eq!(
                    field(line, "status"),
                    0xee,
                    "{accel}: {case} wrote a status byte: {line}"
                );
                if config_irq {
                    assert_ne!(
                        isr & 2,
                        0,
                        "{accel}: {case}: no configuration interrupt: {line}"
                    );
                }
                assert_eq!(
                    isr & 1,
                    0,
                    "{accel}: {case}: queue interrupt without a used buffer: {line}"
                );
            }
            Completes { status } => {
                assert!(line.contains(": used=1 "), "{accel}: {case}: {line}");
                assert_eq!(field(line, "status"), status, "{accel}: {case}: {line}");
                assert_eq!(ds, 0x0f, "{accel}: {case}: device not running: {line}");
                assert!(line.ends_with(" running"), "{accel}: {line}");
            }
        }
        assert!(
            out.contains(&format!("virtio_hostile: {case}: recovered\n")),
            "{accel}: {case}: device did not recover after reset\n{ctx}"
        );
    }
    assert!(
        out.contains("virtio_hostile: virtio-rng: used=1 len=16\n"),
        "{accel}: virtio-rng affected\n{ctx}"
    );
    assert!(!out.contains("NOT recovered"), "{ctx}");
    assert!(
        out.ends_with("virtio_hostile: survived\n"),
        "{accel}: did not survive\n{ctx}"
    );
    // The breakage is logged by the VMM.
    assert!(
        run.stderr.contains("needs reset"),
        "{accel}: nothing logged\n{ctx}"
    );
}

/// Runs the guest on every accelerator over `transport` and checks each run and
/// that the accelerators agree.
fn hostile_driver(transport: Transport) {
    let elf = test_guests::build("virtio_hostile").expect("build guests/virtio_hostile.c");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let mut image = sector0();
    image.resize(64 * 1024, 0);
    std::fs::write(&disk, &image).unwrap();
    let want_sector: String = sector0()[..16].iter().map(|b| format!("{b:02x}")).collect();

    let mut outputs = Vec::new();
    for accel in accels() {
        let run = hako_run(&elf, &disk, accel, transport);
        check_output(accel, transport, &run, &want_sector);
        outputs.push((accel, run.stdout));
    }
    for w in outputs.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{} and {} disagree", w[0].0, w[1].0);
    }
    // The guest only reads: the image is untouched.
    assert_eq!(std::fs::read(&disk).unwrap(), image);
}

#[test]
fn hostile_driver_breaks_only_its_device_on_virtio_pci() {
    hostile_driver(Transport::Pci);
}

#[test]
fn hostile_driver_breaks_only_its_device_on_virtio_mmio() {
    hostile_driver(Transport::Mmio);
}
