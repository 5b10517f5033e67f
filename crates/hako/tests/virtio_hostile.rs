//! A hostile virtio driver (guests/virtio_hostile.c) against the VMM on every
//! accelerator and both virtio transports (PCI, MMIO): descriptor loops, bad
//! indirect tables, buffers and rings outside guest memory, data in the wrong
//! direction, short headers, a runaway avail index and a misprogrammed transport
//! must each break only the virtio-blk device (DEVICE_NEEDS_RESET), which a reset
//! brings back; the VMM must neither crash nor hang, the other devices keep
//! working, and every accelerator prints the same.
//!
//! The same guest then misdrives virtio-net (transmit loops, buffers outside
//! RAM or device-writable, frames too long or too short, bad receive buffers)
//! and virtio-balloon (PFNs and reported ranges outside RAM or unaligned, bad
//! buffer lengths). The NIC's backend is a `stream` socket this test is the
//! other end of: it says hello, echoes the guest's frames and checks which
//! frames came out (a frame that must be dropped must not, the largest one
//! must, the next one after a drop must).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What a virtio-net or virtio-balloon case must do to its device.
#[derive(Clone, Copy)]
enum DevExpect {
    /// Nothing completes (on the queue the case is about), DEVICE_NEEDS_RESET,
    /// and the interrupt status reads `isr`.
    Breaks { isr: u8 },
    /// One chain completes, the device keeps running, the ISR reads `isr`; the
    /// next frame (NIC) is still echoed before the reset.
    Runs { isr: u8 },
}

/// The configuration interrupt of a device that broke after DRIVER_OK.
const DEV_BREAKS: DevExpect = DevExpect::Breaks { isr: 0x02 };
/// The same after the frame that met the bad receive buffer went out (a used
/// transmit chain: a queue interrupt too).
const RX_BREAKS: DevExpect = DevExpect::Breaks { isr: 0x03 };
/// A transmitted chain completed (a queue interrupt), the device runs.
const TX_RUNS: DevExpect = DevExpect::Runs { isr: 0x01 };

/// A virtio-net or virtio-balloon case of the guest.
struct DevCase {
    name: &'static str,
    expect: DevExpect,
    /// What the VMM logs about it (why the device broke, why a frame was
    /// dropped; empty: nothing in particular).
    log: &'static str,
    /// NIC: the frames (`hostile:<name><suffix>`) it makes the host see.
    frames: &'static [&'static str],
}

const fn case(
    name: &'static str,
    expect: DevExpect,
    log: &'static str,
    frames: &'static [&'static str],
) -> DevCase {
    DevCase {
        name,
        expect,
        log,
        frames,
    }
}

/// The NIC's cases, in the guest's order.
const NET_CASES: &[DevCase] = &[
    case(
        "virtio-net (a) TX descriptor loop",
        DEV_BREAKS,
        "loop, out-of-range next or bad indirect table device_type=1",
        &["|recovered"],
    ),
    case(
        "virtio-net (b) TX buffer outside memory",
        DEV_BREAKS,
        "descriptor buffer 0x700000000000+0x48 is not in guest memory device_type=1",
        &["|recovered"],
    ),
    case(
        "virtio-net (c) device-writable TX buffer",
        DEV_BREAKS,
        "device-writable buffer in the transmit queue device_type=1",
        &["|recovered"],
    ),
    // 64 KiB + Ethernet header + VLAN tag, the most the device takes: it goes out.
    case(
        "virtio-net (d) largest TX frame",
        TX_RUNS,
        "",
        &["|largest", "|next", "|recovered"],
    ),
    // One byte more is dropped, not sent, and the device keeps working.
    case(
        "virtio-net (e) TX frame one byte too long",
        TX_RUNS,
        "frame longer than the largest the backend takes: 65567 bytes",
        &["|next", "|recovered"],
    ),
    // Shorter than an Ethernet header: dropped likewise.
    case(
        "virtio-net (f) runt TX frame",
        TX_RUNS,
        "frame shorter than an Ethernet header: 22 bytes",
        &["|next", "|recovered"],
    ),
    // The echo of the trigger frame finds the bad buffer and breaks the device.
    case(
        "virtio-net (g) read-only RX buffer",
        RX_BREAKS,
        "device-readable buffer in the receive queue device_type=1",
        &["|trigger", "|recovered"],
    ),
    case(
        "virtio-net (h) RX buffer of 8 bytes",
        RX_BREAKS,
        "receive buffer smaller than the virtio-net header device_type=1",
        &["|trigger", "|recovered"],
    ),
];

/// The frame length of the largest frame (`|largest`): the net crate's MAX_FRAME
/// less the virtio-net header.
const LARGEST_FRAME: usize = 65536 + 14 + 4;

/// The balloon's cases, in the guest's order (128 MiB of RAM).
const BALLOON_CASES: &[DevCase] = &[
    case(
        "virtio-balloon (a) inflate a PFN outside RAM",
        DEV_BREAKS,
        "descriptor buffer 0x8000000+0x1000 is not in guest memory device_type=5",
        &[],
    ),
    case(
        "virtio-balloon (b) deflate a PFN outside RAM",
        DEV_BREAKS,
        "descriptor buffer 0xffffffff000+0x1000 is not in guest memory device_type=5",
        &[],
    ),
    case(
        "virtio-balloon (c) PFN buffer of 6 bytes",
        DEV_BREAKS,
        "balloon PFN buffer is not a whole number of PFNs or too long device_type=5",
        &[],
    ),
    case(
        "virtio-balloon (d) reported range past the end of RAM",
        DEV_BREAKS,
        "descriptor buffer 0x7fff000+0x2000 is not in guest memory device_type=5",
        &[],
    ),
    case(
        "virtio-balloon (e) reported range not page aligned",
        DEV_BREAKS,
        "balloon range is not page aligned device_type=5",
        &[],
    ),
    case(
        "virtio-balloon (f) statistics buffer of 15 bytes",
        DEV_BREAKS,
        "balloon statistics buffer is not whole 10-byte entries device_type=5",
        &[],
    ),
];

/// Ethertype of the frames the guest wants echoed (and of the hello).
const ETH_ECHO: u16 = 0x88b5;
/// The host's first frame: broadcast, type ETH_ECHO, "hostile:hello", 60 bytes.
fn hello_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
    f.extend_from_slice(&ETH_ECHO.to_be_bytes());
    f.extend_from_slice(b"hostile:hello");
    f.resize(60, 0);
    f
}

/// Which devices besides virtio-blk and virtio-rng a run misdrives.
#[derive(Clone, Copy, Debug)]
struct Extra {
    net: bool,
    balloon: bool,
}

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

    /// The runs with the NIC and the balloon: both at once on PCI; on
    /// virtio-mmio, which has four device slots and gives three to blk, the
    /// console and rng, one run with each.
    fn extras(self) -> &'static [Extra] {
        match self {
            Transport::Pci => &[Extra {
                net: true,
                balloon: true,
            }],
            Transport::Mmio => &[
                Extra {
                    net: true,
                    balloon: false,
                },
                Extra {
                    net: false,
                    balloon: true,
                },
            ],
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

/// A frame the guest sent, as the host end of the NIC saw it.
struct Frame {
    len: usize,
    ethertype: u16,
    /// The payload up to its first NUL, lossily as text.
    text: String,
}

/// What the host end of the NIC did.
struct Peer {
    frames: Vec<Frame>,
    /// Why it stopped early, if it did.
    error: Option<String>,
}

/// The host end of the NIC: connects to the `stream` backend's socket at `sock`
/// (once `hako` has bound it), sends the hello, then reads every frame and
/// echoes those of type ETH_ECHO up to 1514 bytes, until the VMM closes the
/// connection or `done` is set.
fn nic_peer(sock: &Path, done: &AtomicBool) -> Peer {
    let mut peer = Peer {
        frames: Vec::new(),
        error: None,
    };
    let deadline = Instant::now() + WATCHDOG;
    let mut conn = loop {
        match UnixStream::connect(sock) {
            Ok(c) => break c,
            Err(e) if done.load(Ordering::Acquire) || Instant::now() > deadline => {
                peer.error = Some(format!("cannot connect to {}: {e}", sock.display()));
                return peer;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let send = |c: &mut UnixStream, f: &[u8]| -> std::io::Result<()> {
        c.write_all(&(f.len() as u32).to_be_bytes())?;
        c.write_all(f)
    };
    if let Err(e) = send(&mut conn, &hello_frame()) {
        peer.error = Some(format!("sending the hello: {e}"));
        return peer;
    }
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 17];
    loop {
        // Whole frames first: 4-byte big-endian length, then the frame.
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let f: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
            let ethertype = if len >= 14 {
                u16::from_be_bytes([f[12], f[13]])
            } else {
                0
            };
            let payload = f.get(14..).unwrap_or_default();
            let end = payload
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(payload.len());
            let text = String::from_utf8_lossy(&payload[..end]).into_owned();
            if ethertype == ETH_ECHO && len <= 1514 {
                if let Err(e) = send(&mut conn, &f) {
                    peer.error = Some(format!("echoing a frame: {e}"));
                    return peer;
                }
            }
            peer.frames.push(Frame {
                len,
                ethertype,
                text,
            });
        }
        match conn.read(&mut chunk) {
            Ok(0) => return peer,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if done.load(Ordering::Acquire) {
                    return peer;
                }
            }
            // The VMM reset the connection on its way out.
            Err(_) => return peer,
        }
    }
}

/// `hako run` with a watchdog (a hung VMM is killed and reported, not waited
/// for); with `extra.net` a NIC wired to [`nic_peer`] through a socket in `dir`
/// (whose frames come back too), with `extra.balloon` a balloon.
fn hako_run(
    kernel: &Path,
    disk: &Path,
    dir: &Path,
    accel: &str,
    transport: Transport,
    extra: Extra,
) -> (Run, Option<Peer>) {
    let mmio = u8::from(transport == Transport::Mmio);
    let (net, balloon) = (u8::from(extra.net), u8::from(extra.balloon));
    let sock = dir.join(format!("{accel}-{}.sock", transport.arg()));
    let mut cmd = hako();
    cmd.args(["run", "--kernel"])
        .arg(kernel)
        .args(accel_flags(accel))
        .args(["--memory", "128M", "--virtio", transport.arg()])
        .args([
            "--cmdline",
            &format!("ram_mib=128 mmio={mmio} net={net} balloon={balloon}"),
        ])
        .arg("--disk")
        .arg(format!("{},format=raw", disk.display()));
    if extra.net {
        cmd.arg("--net")
            .arg(format!("stream,path={},server=on", sock.display()));
    }
    if extra.balloon {
        cmd.args(["--balloon", "0"]);
    }
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let peer = extra
        .net
        .then(|| std::thread::spawn(move || nic_peer(&sock, &d)));
    let run = run_watchdog(&mut cmd, WATCHDOG);
    done.store(true, Ordering::Release);
    let peer = peer.map(|p| p.join().expect("the NIC peer panicked"));
    (run, peer)
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

fn check_output(accel: &str, transport: Transport, extra: Extra, run: &Run, want_sector: &str) {
    let ctx = format!(
        "{accel} {extra:?}:\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
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
    let mut lines = Vec::new();
    if extra.net {
        check_dev_cases(accel, run, NET_CASES, &ctx);
        lines.extend([
            "virtio_hostile: virtio-net: hello from the host, len=72\n",
            "virtio_hostile: virtio-net: echo works\n",
            "virtio_hostile: virtio-net: final frame echoed\n",
        ]);
    }
    if extra.balloon {
        check_dev_cases(accel, run, BALLOON_CASES, &ctx);
        lines.extend([
            "virtio_hostile: virtio-balloon: inflate, deflate, report and statistics work\n",
            "virtio_hostile: virtio-balloon: still works\n",
        ]);
    }
    for line in lines {
        assert!(out.contains(line), "{accel}: no {line:?}\n{ctx}");
    }
    for (on, device) in [(extra.net, "virtio-net"), (extra.balloon, "virtio-balloon")] {
        assert!(
            on || !out.contains(&format!("virtio_hostile: {device}")),
            "{accel}: {device} without the device\n{ctx}"
        );
    }
    // The breakage is logged by the VMM.
    assert!(
        run.stderr.contains("needs reset"),
        "{accel}: nothing logged\n{ctx}"
    );
}

/// The report lines of the NIC's or the balloon's cases, and what the VMM logged.
fn check_dev_cases(accel: &str, run: &Run, cases: &[DevCase], ctx: &str) {
    let out = &run.stdout;
    let Some(first) = cases.first() else {
        return;
    };
    let device = first.name.split(' ').next().unwrap();
    let reports = out
        .lines()
        .filter(|l| l.starts_with(&format!("virtio_hostile: {device} (")) && l.contains(": used="))
        .count();
    assert_eq!(
        reports,
        cases.len(),
        "{accel}: {device} cases the test does not know\n{ctx}"
    );
    for c in cases {
        let (case, expect) = (c.name, c.expect);
        assert!(
            run.stderr.contains(c.log),
            "{accel}: {case}: the VMM did not log {:?}\n{ctx}",
            c.log
        );
        let line = case_line(out, case);
        let (ds, isr) = (field(line, "device_status"), field(line, "isr"));
        match expect {
            DevExpect::Breaks { isr: want } => {
                assert!(
                    line.contains(": used=0 "),
                    "{accel}: {case} completed a chain: {line}"
                );
                assert!(
                    line.ends_with(" needs_reset") && ds & 0x40 != 0,
                    "{accel}: {case} did not break the device: {line}"
                );
                assert_eq!(isr, want, "{accel}: {case}: interrupt status: {line}");
            }
            DevExpect::Runs { isr: want } => {
                assert!(line.contains(": used=1 "), "{accel}: {case}: {line}");
                assert_eq!(ds, 0x0f, "{accel}: {case}: device not running: {line}");
                assert!(line.ends_with(" running"), "{accel}: {line}");
                assert_eq!(isr, want, "{accel}: {case}: interrupt status: {line}");
                assert!(
                    out.contains(&format!("virtio_hostile: {case}: next frame echoed\n")),
                    "{accel}: {case}: the next frame did not go through\n{ctx}"
                );
            }
        }
        assert!(
            out.contains(&format!("virtio_hostile: {case}: recovered\n")),
            "{accel}: {case}: device did not recover after reset\n{ctx}"
        );
    }
}

/// The frames the host end must have seen, in order: exactly those of
/// [`NET_CASES`] between the first and the last echo; none that had to be dropped.
fn check_frames(accel: &str, peer: &Peer, ctx: &str) {
    assert!(
        peer.error.is_none(),
        "{accel}: NIC peer: {:?}\n{ctx}",
        peer.error
    );
    let mut want = vec!["hostile:start".to_string()];
    for c in NET_CASES {
        want.extend(c.frames.iter().map(|s| format!("hostile:{}{s}", c.name)));
    }
    want.push("hostile:final".into());
    let got: Vec<&str> = peer.frames.iter().map(|f| f.text.as_str()).collect();
    assert_eq!(got, want, "{accel}: frames the host saw\n{ctx}");
    for f in &peer.frames {
        if f.text.ends_with("|largest") {
            assert_eq!(f.len, LARGEST_FRAME, "{accel}: {}", f.text);
            assert_ne!(f.ethertype, ETH_ECHO, "{accel}: {}", f.text);
        } else {
            // The text padded to the shortest Ethernet frame (no FCS).
            let len = (14 + f.text.len()).max(60);
            assert_eq!((f.len, f.ethertype), (len, ETH_ECHO), "{accel}: {}", f.text);
        }
    }
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

    for &extra in transport.extras() {
        let mut outputs = Vec::new();
        for accel in accels() {
            let (run, peer) = hako_run(&elf, &disk, dir.path(), accel, transport, extra);
            check_output(accel, transport, extra, &run, &want_sector);
            if let Some(peer) = peer {
                let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
                check_frames(accel, &peer, &ctx);
            }
            outputs.push((accel, run.stdout));
        }
        for w in outputs.windows(2) {
            assert_eq!(
                w[0].1, w[1].1,
                "{} and {} disagree ({extra:?})",
                w[0].0, w[1].0
            );
        }
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
