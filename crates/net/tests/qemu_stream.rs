//! The stream backend against QEMU's own `-netdev stream,addr.type=unix`, both
//! ways round. QEMU runs without a machine (`-machine none`); its stream netdev is
//! joined through a hub to a restricted `-netdev user`, so a DHCPDISCOVER we send
//! over the socket comes back as QEMU's libslirp's DHCPOFFER, proving QEMU reads
//! our framing and we read its. Skipped (with a message) where QEMU is absent.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use net::{Backend, NetBackend, NetSpec};

const QEMU: &str = "qemu-system-x86_64";

/// A QEMU process, killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu(path: &Path, server: bool) -> Option<Qemu> {
    let stream = format!(
        "stream,id=s0,server={},addr.type=unix,addr.path={}",
        if server { "on" } else { "off" },
        path.display()
    );
    let child = Command::new(QEMU)
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-netdev",
        ])
        .arg(stream)
        .args(["-netdev", "user,id=u0,restrict=on"])
        .args(["-netdev", "hubport,id=h0,hubid=0,netdev=s0"])
        .args(["-netdev", "hubport,id=h1,hubid=0,netdev=u0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(Qemu(c)),
        Err(e) => {
            eprintln!("skipping: cannot run {QEMU}: {e}");
            None
        }
    }
}

fn open(path: &Path, server: bool) -> (Box<dyn NetBackend>, std::sync::mpsc::Receiver<()>) {
    let (w, wakes) = waker();
    let spec = NetSpec {
        backend: Backend::Stream {
            path: path.to_path_buf(),
            server,
        },
        mac: None,
    };
    (net::open(&spec, w).unwrap(), wakes)
}

/// Sends DHCPDISCOVERs (QEMU may not be connected yet) until an offer of
/// 10.0.2.15 comes back, for at most 20 s.
fn expect_offer(b: &mut dyn NetBackend, wakes: &std::sync::mpsc::Receiver<()>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let _ = b.send(&dhcp_discover(GUEST_MAC, 0x51));
        let offer = wait_for(
            b,
            wakes,
            Duration::from_millis(300),
            0,
            |p| p.udp().is_some_and(|(s, d, _)| s == 67 && d == 68),
            ignore,
        );
        if let Some((_, p)) = offer {
            let bootp = p.udp().unwrap().2;
            assert_eq!(bootp[4..8], 0x51u32.to_be_bytes(), "xid");
            assert_eq!(bootp[16..20], [10, 0, 2, 15], "yiaddr");
            return;
        }
    }
    panic!("no DHCPOFFER from QEMU through the stream");
}

#[test]
fn qemu_as_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qemu.sock");
    let (mut b, wakes) = open(&path, true);
    let Some(_qemu) = qemu(&path, false) else {
        return;
    };
    expect_offer(&mut *b, &wakes);
}

#[test]
fn qemu_as_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qemu.sock");
    let Some(_qemu) = qemu(&path, true) else {
        return;
    };
    // QEMU binds, then listens: retry until it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (w, wakes) = waker();
    let spec = NetSpec {
        backend: Backend::Stream {
            path: path.clone(),
            server: false,
        },
        mac: None,
    };
    let mut b = loop {
        match net::open(&spec, w.clone()) {
            Ok(b) => break b,
            Err(e) => assert!(Instant::now() < deadline, "QEMU never listened: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    expect_offer(&mut *b, &wakes);
}
