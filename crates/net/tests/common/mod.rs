//! Building and parsing the frames the tests send and expect (Ethernet, ARP,
//! IPv4 with its checksum, UDP, TCP SYN, DHCP), and waiting for frames from a
//! backend with a bounded deadline.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::{NetBackend, RxWaker};

pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const BROADCAST: [u8; 6] = [0xff; 6];
pub const ETH_IP: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;

/// The Internet checksum over the concatenation of `parts` (all but the last of
/// even length).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [b] = chunks.remainder() {
            sum += u32::from(*b) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP packet (request: op 1, reply: op 2) for IPv4 over Ethernet.
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    p
}

/// An IPv4 packet (no options, DF, TTL 64) with its header checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = src.octets().to_vec();
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

/// A UDP datagram with its checksum.
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let sum = match checksum(&[&pseudo(src, dst, 17, len), &u]) {
        0 => 0xffff,
        s => s,
    };
    u[6..8].copy_from_slice(&sum.to_be_bytes());
    u
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A TCP segment without data: `flags`, sequence `seq`, acknowledging `ack`, with
/// an MSS option of 1460 when SYN is set.
pub fn tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let options: &[u8] = if flags & TCP_SYN != 0 {
        &[2, 4, 0x05, 0xb4]
    } else {
        &[]
    };
    let hlen = 20 + options.len();
    let mut t = Vec::with_capacity(hlen);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(((hlen / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(options);
    let sum = checksum(&[&pseudo(src, dst, 6, t.len()), &t]);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

/// A DHCPDISCOVER from `mac` (transaction `xid`), broadcast as a client does.
pub fn dhcp_discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // Ethernet
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[10] = 0x80; // Broadcast replies.
    b[28..34].copy_from_slice(&mac);
    b.extend_from_slice(&[99, 130, 83, 99]); // Magic cookie.
    b.extend_from_slice(&[53, 1, 1]); // DHCPDISCOVER.
    b.extend_from_slice(&[55, 3, 1, 3, 6]); // Asks for mask, router, DNS.
    b.push(255);
    let u = udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &b);
    eth(
        BROADCAST,
        mac,
        ETH_IP,
        &ipv4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 17, &u),
    )
}

/// A DNS query (id 0x4242, RD) for an A record of `name`.
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// What the tests look at in a received frame.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
    /// IPv4: source, destination, protocol, the layer-4 bytes.
    pub ip: Option<(Ipv4Addr, Ipv4Addr, u8, Vec<u8>)>,
    /// ARP: op, sender MAC, sender IP, target IP.
    pub arp: Option<(u16, [u8; 6], Ipv4Addr, Ipv4Addr)>,
}

impl Parsed {
    /// UDP: source port, destination port, payload.
    pub fn udp(&self) -> Option<(u16, u16, &[u8])> {
        let (_, _, proto, l4) = self.ip.as_ref()?;
        if *proto != 17 || l4.len() < 8 {
            return None;
        }
        Some((be16(&l4[0..2]), be16(&l4[2..4]), &l4[8..]))
    }

    /// TCP: source port, destination port, seq, ack, flags.
    pub fn tcp(&self) -> Option<(u16, u16, u32, u32, u8)> {
        let (_, _, proto, l4) = self.ip.as_ref()?;
        if *proto != 6 || l4.len() < 20 {
            return None;
        }
        Some((
            be16(&l4[0..2]),
            be16(&l4[2..4]),
            be32(&l4[4..8]),
            be32(&l4[8..12]),
            l4[13],
        ))
    }
}

pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn ip4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Parses a bare Ethernet frame, checking the IPv4 header checksum.
pub fn parse(f: &[u8]) -> Option<Parsed> {
    if f.len() < 14 {
        return None;
    }
    let ethertype = be16(&f[12..14]);
    let body = &f[14..];
    let mut p = Parsed {
        dst: f[0..6].try_into().ok()?,
        src: f[6..12].try_into().ok()?,
        ethertype,
        ip: None,
        arp: None,
    };
    if ethertype == ETH_IP && body.len() >= 20 && body[0] >> 4 == 4 {
        let ihl = usize::from(body[0] & 15) * 4;
        let total = usize::from(be16(&body[2..4]));
        assert_eq!(checksum(&[&body[..ihl]]), 0, "IPv4 header checksum");
        let l4 = body.get(ihl..total)?.to_vec();
        p.ip = Some((ip4(&body[12..16]), ip4(&body[16..20]), body[9], l4));
    } else if ethertype == ETH_ARP && body.len() >= 28 {
        p.arp = Some((
            be16(&body[6..8]),
            body[8..14].try_into().ok()?,
            ip4(&body[14..18]),
            ip4(&body[24..28]),
        ));
    }
    Some(p)
}

/// A waker whose wakes arrive on a channel, for tests that wait for frames.
pub fn waker() -> (RxWaker, Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let w = RxWaker::new();
    let tx = std::sync::Mutex::new(tx);
    w.set(Arc::new(move || {
        let _ = tx.lock().unwrap().send(());
    }));
    (w, rx)
}

/// Takes frames from `backend` (waiting for wakes, at most `timeout` overall)
/// until one satisfies `want`; frames before it are passed to `other` (which may
/// answer them, e.g. ARP requests). `skip` bytes (a vnet header) are cut off the
/// front before parsing.
pub fn wait_for(
    backend: &mut dyn NetBackend,
    wakes: &Receiver<()>,
    timeout: Duration,
    skip: usize,
    mut want: impl FnMut(&Parsed) -> bool,
    mut other: impl FnMut(&mut dyn NetBackend, &Parsed),
) -> Option<(Vec<u8>, Parsed)> {
    let deadline = Instant::now() + timeout;
    loop {
        while let Some(frame) = backend.recv() {
            if let Some(p) = frame.get(skip..).and_then(parse) {
                if want(&p) {
                    return Some((frame, p));
                }
                other(backend, &p);
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        let _ = wakes.recv_timeout(left.min(Duration::from_millis(200)));
    }
}

/// Ignores the frames `wait_for` passes on.
pub fn ignore(_: &mut dyn NetBackend, _: &Parsed) {}
