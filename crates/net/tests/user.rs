//! User networking (libslirp) driven as a guest would: hand-built frames in,
//! the frames libslirp answers with out. Only loopback is ever reached: the
//! "host" 10.0.2.2 is 127.0.0.1, and the DNS name answered is ours.

mod common;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use net::{Backend, HostFwd, NetBackend, NetSpec};

const GUEST_IP: Ipv4Addr = net::user::GUEST;
const HOST_IP: Ipv4Addr = net::user::HOST;
const DNS_IP: Ipv4Addr = net::user::DNS;
const SLIRP_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
const WAIT: Duration = Duration::from_secs(5);

fn open(
    hostfwd: Vec<HostFwd>,
    restrict: bool,
) -> (Box<dyn NetBackend>, std::sync::mpsc::Receiver<()>) {
    let (w, wakes) = waker();
    let spec = NetSpec {
        backend: Backend::User { hostfwd, restrict },
        mac: None,
    };
    let backend = net::open(&spec, w).unwrap_or_else(|e| panic!("user networking: {e}"));
    (backend, wakes)
}

/// Tells libslirp the guest's MAC, as a guest's first ARP does.
fn arp_for_gateway(b: &mut dyn NetBackend) {
    let req = arp(1, GUEST_MAC, GUEST_IP, [0; 6], HOST_IP);
    assert!(b.send(&eth(BROADCAST, GUEST_MAC, ETH_ARP, &req)).unwrap());
}

/// Answers libslirp's ARP requests for the guest's address.
fn answer_arp(b: &mut dyn NetBackend, p: &Parsed) {
    if let Some((1, sha, spa, tpa)) = p.arp {
        if tpa == GUEST_IP {
            let reply = arp(2, GUEST_MAC, GUEST_IP, sha, spa);
            let _ = b.send(&eth(sha, GUEST_MAC, ETH_ARP, &reply));
        }
    }
}

/// A port free on 127.0.0.1 just now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn dhcp_offers_the_guest_address() {
    let (mut b, wakes) = open(vec![], false);
    assert_eq!(b.offloads(), net::Offloads::default());
    assert!(
        b.describe().starts_with("user (10.0.2.15"),
        "{}",
        b.describe()
    );
    assert!(b.send(&dhcp_discover(GUEST_MAC, 0xdeadbeef)).unwrap());
    let (_, offer) = wait_for(
        &mut *b,
        &wakes,
        WAIT,
        0,
        |p| p.udp().is_some_and(|(s, d, _)| s == 67 && d == 68),
        ignore,
    )
    .expect("a DHCP reply");
    let (_, _, bootp) = offer.udp().unwrap();
    assert_eq!(bootp[0], 2, "BOOTREPLY");
    assert_eq!(be32(&bootp[4..8]), 0xdeadbeef, "xid");
    assert_eq!(bootp[16..20], GUEST_IP.octets(), "yiaddr");
    assert_eq!(bootp[28..34], GUEST_MAC, "chaddr");
    // Options after the magic cookie: 53 (message type) must be 2 (OFFER).
    let opts = &bootp[240..];
    let mut i = 0;
    let mut kind = None;
    while i + 1 < opts.len() && opts[i] != 255 {
        if opts[i] == 0 {
            i += 1;
            continue;
        }
        if opts[i] == 53 {
            kind = Some(opts[i + 2]);
        }
        i += 2 + usize::from(opts[i + 1]);
    }
    assert_eq!(kind, Some(2), "DHCPOFFER");
    assert_eq!(offer.ip.as_ref().unwrap().0, HOST_IP, "offered by 10.0.2.2");
}

#[test]
fn arp_for_the_gateway_is_answered() {
    let (mut b, wakes) = open(vec![], false);
    arp_for_gateway(&mut *b);
    let (_, reply) = wait_for(
        &mut *b,
        &wakes,
        WAIT,
        0,
        |p| p.arp.is_some_and(|a| a.0 == 2),
        ignore,
    )
    .expect("an ARP reply");
    let (_, sha, spa, tpa) = reply.arp.unwrap();
    assert_eq!((sha, spa, tpa), (SLIRP_MAC, HOST_IP, GUEST_IP));
    assert_eq!(reply.dst, GUEST_MAC);
}

#[test]
fn host_hako_internal_resolves_to_the_host() {
    let (mut b, wakes) = open(vec![], false);
    let dns_mac = [0x52, 0x55, 10, 0, 2, 3];
    let q = udp(
        GUEST_IP,
        DNS_IP,
        33333,
        53,
        &dns_query("host.hako.internal"),
    );
    while wakes.try_recv().is_ok() {}
    assert!(b
        .send(&eth(
            dns_mac,
            GUEST_MAC,
            ETH_IP,
            &ipv4(GUEST_IP, DNS_IP, 17, &q)
        ))
        .unwrap());
    // The answer is queued by `send` itself, and the device woken by the slirp
    // thread (never from inside `send`, which runs under the device's lock).
    wakes.recv_timeout(WAIT).expect("a wake for the answer");
    let (_, reply) = wait_for(
        &mut *b,
        &wakes,
        WAIT,
        0,
        |p| p.udp().is_some_and(|(s, _, _)| s == 53),
        ignore,
    )
    .expect("a DNS answer (and a wake)");
    let (_, dport, dns) = reply.udp().unwrap();
    assert_eq!(dport, 33333);
    assert_eq!(reply.dst, GUEST_MAC);
    assert_eq!(reply.ip.as_ref().unwrap().0, DNS_IP);
    assert_eq!(be16(&dns[0..2]), 0x4242, "id");
    assert_eq!(be16(&dns[6..8]), 1, "one answer");
    assert_eq!(dns[dns.len() - 4..], HOST_IP.octets());
}

#[test]
fn tcp_to_the_host_address_reaches_host_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut b, wakes) = open(vec![], false);
    arp_for_gateway(&mut *b);
    let syn = tcp(GUEST_IP, HOST_IP, 40001, port, 1000, 0, TCP_SYN);
    assert!(b
        .send(&eth(
            SLIRP_MAC,
            GUEST_MAC,
            ETH_IP,
            &ipv4(GUEST_IP, HOST_IP, 6, &syn)
        ))
        .unwrap());
    let (_, synack) = wait_for(
        &mut *b,
        &wakes,
        WAIT,
        0,
        |p| {
            p.tcp()
                .is_some_and(|t| t.4 & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK)
        },
        answer_arp,
    )
    .expect("a SYN-ACK");
    let (sport, dport, _, ack, _) = synack.tcp().unwrap();
    assert_eq!((sport, dport, ack), (port, 40001, 1001));
    let (src, dst, _, _) = synack.ip.as_ref().unwrap();
    assert_eq!((*src, *dst), (HOST_IP, GUEST_IP));
    // libslirp answers the guest only once its host connection is made.
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((_, peer)) => {
                assert!(peer.ip().is_loopback());
                break;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("no connection on the host side: {e}"),
        }
    }
}

#[test]
fn restrict_keeps_the_guest_off_the_host() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut b, wakes) = open(vec![], true);
    assert!(b.describe().contains("restricted"));
    // DHCP still works...
    assert!(b.send(&dhcp_discover(GUEST_MAC, 7)).unwrap());
    assert!(wait_for(
        &mut *b,
        &wakes,
        WAIT,
        0,
        |p| p.udp().is_some_and(|u| u.0 == 67),
        ignore
    )
    .is_some());
    // ...but a connection to the host is never made.
    arp_for_gateway(&mut *b);
    let syn = tcp(GUEST_IP, HOST_IP, 40002, port, 1, 0, TCP_SYN);
    assert!(b
        .send(&eth(
            SLIRP_MAC,
            GUEST_MAC,
            ETH_IP,
            &ipv4(GUEST_IP, HOST_IP, 6, &syn)
        ))
        .unwrap());
    let synack = wait_for(
        &mut *b,
        &wakes,
        Duration::from_millis(700),
        0,
        |p| p.tcp().is_some_and(|t| t.4 & TCP_SYN != 0),
        answer_arp,
    );
    assert!(synack.is_none(), "restricted, yet the host answered");
    assert_eq!(
        listener.accept().err().map(|e| e.kind()),
        Some(ErrorKind::WouldBlock)
    );
}

#[test]
fn hostfwd_connections_reach_the_guest() {
    let host_port = free_port();
    let fwd = HostFwd {
        udp: false,
        host_addr: Ipv4Addr::LOCALHOST,
        host_port,
        guest_addr: Ipv4Addr::UNSPECIFIED,
        guest_port: 22,
    };
    let (mut b, wakes) = open(vec![fwd.clone()], false);
    assert!(b
        .describe()
        .contains(&format!("hostfwd tcp:127.0.0.1:{host_port}-:22")));
    // The forward cannot be bound twice: the port is ours, and the error says so.
    let (w, _) = waker();
    let spec = NetSpec {
        backend: Backend::User {
            hostfwd: vec![fwd],
            restrict: false,
        },
        mac: None,
    };
    let err = net::open(&spec, w)
        .err()
        .expect("the port is taken")
        .to_string();
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{host_port}")),
        "{err}"
    );

    arp_for_gateway(&mut *b);
    let _client = TcpStream::connect(("127.0.0.1", host_port)).unwrap();
    let (_, syn) = wait_for(
        &mut *b,
        &wakes,
        WAIT,
        0,
        |p| {
            p.tcp()
                .is_some_and(|t| t.4 & (TCP_SYN | TCP_ACK) == TCP_SYN)
        },
        answer_arp,
    )
    .expect("a SYN toward the guest");
    assert_eq!(syn.dst, GUEST_MAC);
    let (_, dst, _, _) = syn.ip.as_ref().unwrap();
    assert_eq!(*dst, GUEST_IP);
    assert_eq!(syn.tcp().unwrap().1, 22);
}

#[test]
fn dropping_the_backend_releases_its_ports() {
    let host_port = free_port();
    let fwd = HostFwd {
        udp: true,
        host_addr: Ipv4Addr::LOCALHOST,
        host_port,
        guest_addr: Ipv4Addr::new(10, 0, 2, 15),
        guest_port: 53,
    };
    let (b, _) = open(vec![fwd], false);
    assert!(std::net::UdpSocket::bind(("127.0.0.1", host_port)).is_err());
    let start = Instant::now();
    drop(b);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        start.elapsed()
    );
    // slirp_cleanup ran on the backend's thread, which has ended.
    std::net::UdpSocket::bind(("127.0.0.1", host_port)).expect("the forward's port is free again");
}

#[test]
fn send_never_blocks() {
    let (mut b, _wakes) = open(vec![], false);
    let frame = eth(
        SLIRP_MAC,
        GUEST_MAC,
        ETH_IP,
        &ipv4(
            GUEST_IP,
            HOST_IP,
            17,
            &udp(GUEST_IP, HOST_IP, 9, 9, &[0; 1000]),
        ),
    );
    let start = Instant::now();
    for _ in 0..5000 {
        let t = Instant::now();
        b.send(&frame).unwrap();
        assert!(t.elapsed() < Duration::from_millis(100));
    }
    assert!(start.elapsed() < Duration::from_secs(10));
}
