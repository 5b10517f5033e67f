//! The TAP backend, in a network namespace each test makes for itself (a thread
//! that calls `unshare(CLONE_NEWNET)`: namespaces are per thread, and the `ip`
//! commands that thread runs inherit its namespace). Nothing leaves that
//! namespace; the addresses are TEST-NET-1 (192.0.2.0/24) on the TAP alone.
//! Without the privileges for it (not root, no user namespaces) the tests say so
//! and skip.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use net::{Backend, NetBackend, NetSpec, VNET_HDR_LEN};

const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const WAIT: Duration = Duration::from_secs(5);
const NEEDS_CSUM: u8 = 1;

/// Runs `f` on a thread in a new network namespace; `None` (after printing why)
/// where this environment cannot make one.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let result = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread
        // into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            eprintln!("skipping: unshare(CLONE_NEWNET): {e} (needs root or CAP_SYS_ADMIN)");
            return None;
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("skipping: no /dev/net/tun");
            return None;
        }
        Some(f())
    })
    .join();
    match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("running ip (iproute2)");
    assert!(status.success(), "ip {}: {status}", args.join(" "));
}

fn open_tap(name: &str) -> Result<(Box<dyn NetBackend>, std::sync::mpsc::Receiver<()>), String> {
    let (w, wakes) = waker();
    let spec = NetSpec {
        backend: Backend::Tap {
            ifname: name.into(),
        },
        mac: None,
    };
    net::open(&spec, w)
        .map(|b| (b, wakes))
        .map_err(|e| e.to_string())
}

/// A vnet header: no offload, or a partial checksum from `start` with the sum
/// stored `offset` bytes further.
fn vnet_hdr(csum: Option<(u16, u16)>) -> Vec<u8> {
    let mut h = vec![0u8; VNET_HDR_LEN];
    if let Some((start, offset)) = csum {
        h[0] = NEEDS_CSUM;
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
    }
    h
}

/// Waits for the kernel's ARP request for the guest, answers it, and returns the
/// host side's MAC.
fn resolve_guest(tap: &mut dyn NetBackend, wakes: &std::sync::mpsc::Receiver<()>) -> [u8; 6] {
    let (frame, req) = wait_for(
        tap,
        wakes,
        WAIT,
        VNET_HDR_LEN,
        |p| p.arp.is_some_and(|a| a.0 == 1 && a.3 == GUEST_IP),
        ignore,
    )
    .expect("the kernel's ARP request for the guest");
    assert_eq!(
        frame[..VNET_HDR_LEN],
        [0; VNET_HDR_LEN],
        "a plain vnet header in front"
    );
    let (_, host_mac, spa, _) = req.arp.unwrap();
    assert_eq!(spa, HOST_IP);
    let reply = arp(2, GUEST_MAC, GUEST_IP, host_mac, HOST_IP);
    let mut f = vnet_hdr(None);
    f.extend_from_slice(&eth(host_mac, GUEST_MAC, ETH_ARP, &reply));
    assert!(tap.send(&f).unwrap());
    host_mac
}

/// The guest's UDP datagram to the host, as the frame `send` takes.
fn guest_udp(host_mac: [u8; 6], dport: u16, payload: &[u8], partial: bool) -> Vec<u8> {
    let mut u = udp(GUEST_IP, HOST_IP, 5555, dport, payload);
    let mut f = if partial {
        // What a guest with checksum offload sends: the pseudo-header sum only.
        let mut pseudo = GUEST_IP.octets().to_vec();
        pseudo.extend_from_slice(&HOST_IP.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(u.len() as u16).to_be_bytes());
        u[6..8].copy_from_slice(&(!checksum(&[&pseudo])).to_be_bytes());
        vnet_hdr(Some((14 + 20, 6)))
    } else {
        vnet_hdr(None)
    };
    f.extend_from_slice(&eth(
        host_mac,
        GUEST_MAC,
        ETH_IP,
        &ipv4(GUEST_IP, HOST_IP, 17, &u),
    ));
    f
}

/// Sends a datagram from the host to the guest and returns the frame the TAP
/// hands the backend.
fn host_to_guest(
    sock: &UdpSocket,
    tap: &mut dyn NetBackend,
    wakes: &std::sync::mpsc::Receiver<()>,
    payload: &[u8],
) -> Vec<u8> {
    sock.send_to(payload, (GUEST_IP, 9999)).unwrap();
    let (frame, _) = wait_for(
        tap,
        wakes,
        WAIT,
        VNET_HDR_LEN,
        |p| {
            p.udp()
                .is_some_and(|(_, d, data)| d == 9999 && data == payload)
        },
        ignore,
    )
    .expect("the host's datagram on the TAP");
    frame
}

#[test]
fn frames_cross_the_tap_with_vnet_headers() {
    in_new_netns(|| {
        let (mut tap, wakes) = open_tap("hako0").unwrap();
        assert_eq!(
            tap.offloads(),
            net::Offloads {
                vnet_hdr: true,
                csum: true,
                tso: true
            }
        );
        assert_eq!(tap.describe(), "tap (hako0)");
        ip(&["link", "set", "hako0", "up"]);
        ip(&["addr", "add", "192.0.2.1/24", "dev", "hako0"]);

        // Host to guest: the kernel resolves the guest, then sends; with no
        // offloads negotiated the checksum is complete.
        let sock = UdpSocket::bind((HOST_IP, 0)).unwrap();
        sock.send_to(b"first", (GUEST_IP, 9999)).unwrap();
        let host_mac = resolve_guest(&mut *tap, &wakes);
        let (frame, p) = wait_for(
            &mut *tap,
            &wakes,
            WAIT,
            VNET_HDR_LEN,
            |p| p.udp().is_some_and(|(_, d, _)| d == 9999),
            ignore,
        )
        .expect("the datagram queued behind ARP");
        assert_eq!(p.udp().unwrap().2, b"first");
        assert_eq!(
            frame[0] & NEEDS_CSUM,
            0,
            "no partial checksum before the guest asks"
        );
        let (src, dst, _, l4) = p.ip.as_ref().unwrap();
        let mut pseudo = src.octets().to_vec();
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        assert_eq!(checksum(&[&pseudo, l4]), 0, "a complete UDP checksum");

        // Guest to host: a plain frame, then one with a partial checksum the
        // kernel must honour (the datagram is dropped otherwise).
        let rx = UdpSocket::bind((HOST_IP, 7777)).unwrap();
        rx.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 100];
        for (payload, partial) in [(&b"from guest"[..], false), (&b"partial sum"[..], true)] {
            assert!(tap
                .send(&guest_udp(host_mac, 7777, payload, partial))
                .unwrap());
            let (n, from) = rx.recv_from(&mut buf).expect("the guest's datagram");
            assert_eq!(&buf[..n], payload);
            assert_eq!(from, (GUEST_IP, 5555).into());
        }

        // Once the guest takes checksum offload, the kernel may leave sums partial;
        // taking it back, it must not.
        tap.set_guest_offloads(true, true).unwrap();
        let frame = host_to_guest(&sock, &mut *tap, &wakes, b"offloaded");
        assert_eq!(
            frame[0] & NEEDS_CSUM,
            NEEDS_CSUM,
            "a partial checksum with TUN_F_CSUM"
        );
        tap.set_guest_offloads(false, false).unwrap();
        let frame = host_to_guest(&sock, &mut *tap, &wakes, b"complete");
        assert_eq!(
            frame[0] & NEEDS_CSUM,
            0,
            "no partial checksum without TUN_F_CSUM"
        );

        // Dropping the backend ends its thread and closes the fd: the kernel then
        // removes the (non-persistent) device.
        let t = Instant::now();
        drop(tap);
        assert!(t.elapsed() < Duration::from_secs(2));
        let gone = Command::new("ip")
            .args(["link", "show", "hako0"])
            .output()
            .unwrap();
        assert!(!gone.status.success(), "hako0 outlived its backend");
    });
}

/// `capset` for this thread: its effective set without CAP_NET_ADMIN.
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two cap data structs (version 3) into `data` and reads
    // the header; both live for the call.
    let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(got, 0, "capget");
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: capset reads the header and two data structs; pid 0 is this thread.
    let set = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(set, 0, "capset");
}

#[test]
fn opening_errors_say_why() {
    in_new_netns(|| {
        let (_first, _) = open_tap("hako1").unwrap();
        let err = open_tap("hako1").err().unwrap();
        assert!(
            err.contains("tap hako1: in use by another process"),
            "{err}"
        );
        let err = open_tap("lo").err().unwrap();
        assert!(err.contains("exists but is not a TAP"), "{err}");
        drop_net_admin();
        let err = open_tap("hako2").err().unwrap();
        assert!(
            err.contains("needs CAP_NET_ADMIN or an existing TAP owned by this user"),
            "{err}"
        );
    });
}
