//! Transmit: frames gathered from chains to the backend, offloads checked,
//! malformed frames dropped, malformed chains breaking the device.

use ::net::MAX_FRAME;

use super::super::header::{F_DATA_VALID, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};
use super::*;
use crate::testing::{F_INDIRECT, F_NEXT, F_WRITE};

const NO_HDR: [u8; HDR_LEN] = [0; HDR_LEN];

#[test]
fn split_frame_reaches_a_bare_backend_without_header() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    let f = eth(150, 1);
    let h = hdr(0, 0, 0, (0, 0));
    let mut second = h[5..].to_vec();
    second.extend_from_slice(&f[..20]);
    let used = r.transmit(&[
        (BUF, &h[..5]),
        (BUF + 0x100, &second),
        (BUF + 0x200, &f[20..60]),
        (BUF + 0x300, &f[60..]),
    ]);
    assert_eq!(used, vec![(0, 0)]);
    assert_eq!(r.fake.sent(), vec![f]);
    assert_eq!(r.stats().tx_frames, 1);
}

#[test]
fn vnet_hdr_backend_gets_header_and_frame() {
    let mut r = Rig::new(CSUM_ONLY, u64::MAX);
    assert_ne!(r.acked & feature::CSUM, 0);
    let f = eth(100, 2);
    let mut h = hdr(F_NEEDS_CSUM, 0, 0, (34, 16));
    h[10] = 7; // num_buffers: meaningless on transmit
    let used = r.transmit(&[(BUF, &h[..3]), (BUF + 0x100, &h[3..]), (BUF + 0x200, &f)]);
    assert_eq!(used, vec![(0, 0)]);
    let sent = r.fake.sent();
    assert_eq!(sent.len(), 1);
    let got = NetHdr::from_frame(&sent[0]);
    assert_eq!(
        got,
        NetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        }
    );
    assert_eq!(sent[0][HDR_LEN..], f[..]);
}

#[test]
fn tso_frames_pass_when_negotiated() {
    let mut r = Rig::new(ALL_OFFLOADS, u64::MAX);
    for gso in [GSO_TCPV4, GSO_TCPV6] {
        let f = eth(3000, gso);
        r.transmit(&[
            (BUF, &hdr(F_NEEDS_CSUM, gso, 1448, (34, 16))),
            (BUF + 0x100, &f),
        ]);
        let sent = r.fake.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(NetHdr::from_frame(&sent[0]).gso_type, gso);
    }
    assert_eq!(r.stats().tx_dropped, 0);
}

/// Transmits `h` + a 100-byte frame; returns whether it reached the backend.
fn passes(r: &mut Rig, h: [u8; HDR_LEN]) -> bool {
    let used = r.transmit(&[(BUF, &h), (BUF + 0x100, &eth(100, 0))]);
    assert_eq!(used.len(), 1, "the chain is returned either way");
    assert_eq!(used[0].1, 0);
    assert!(!r.broken());
    !r.fake.sent().is_empty()
}

#[test]
fn frames_asking_for_offloads_not_negotiated_are_dropped() {
    // Nothing offered: neither segmentation nor partial checksums.
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    assert!(!passes(
        &mut r,
        hdr(F_NEEDS_CSUM, GSO_TCPV4, 1448, (34, 16))
    ));
    assert!(!passes(&mut r, hdr(F_NEEDS_CSUM, 0, 0, (34, 16))));
    assert!(passes(&mut r, NO_HDR));
    assert_eq!(r.stats().tx_dropped, 2);
    // Checksum offload offered but not accepted by the driver.
    let mut r = Rig::new(CSUM_ONLY, !feature::CSUM);
    assert!(!passes(&mut r, hdr(F_NEEDS_CSUM, 0, 0, (34, 16))));
    // Checksum accepted, TSO not offered.
    let mut r = Rig::new(CSUM_ONLY, u64::MAX);
    assert!(passes(&mut r, hdr(F_NEEDS_CSUM, 0, 0, (34, 16))));
    assert!(!passes(
        &mut r,
        hdr(F_NEEDS_CSUM, GSO_TCPV6, 1448, (54, 16))
    ));
    // TSO4 accepted but not TSO6; ECN and UDP never offered.
    let mut r = Rig::new(ALL_OFFLOADS, !feature::HOST_TSO6);
    assert!(passes(&mut r, hdr(F_NEEDS_CSUM, GSO_TCPV4, 1448, (34, 16))));
    assert!(!passes(
        &mut r,
        hdr(F_NEEDS_CSUM, GSO_TCPV6, 1448, (54, 16))
    ));
    assert!(!passes(
        &mut r,
        hdr(F_NEEDS_CSUM, GSO_TCPV4 | 0x80, 1448, (34, 16))
    ));
    assert!(!passes(&mut r, hdr(F_NEEDS_CSUM, 3, 1448, (34, 6))));
    // Inconsistent headers: GSO without a partial checksum or an MSS, a
    // checksum past the frame's end, receive-only flags.
    assert!(!passes(&mut r, hdr(0, GSO_TCPV4, 1448, (0, 0))));
    assert!(!passes(&mut r, hdr(F_NEEDS_CSUM, GSO_TCPV4, 0, (34, 16))));
    assert!(!passes(&mut r, hdr(F_NEEDS_CSUM, 0, 0, (90, 16))));
    assert!(!passes(&mut r, hdr(F_DATA_VALID, 0, 0, (0, 0))));
    assert!(
        passes(&mut r, hdr(F_NEEDS_CSUM, 0, 0, (82, 16))),
        "checksum ends at the last byte"
    );
    assert_eq!(r.stats().tx_dropped, 7);
    assert_eq!(r.stats().tx_frames, 2);
}

#[test]
fn short_and_oversized_frames_are_dropped() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    let f = eth(14, 0);
    assert_eq!(
        r.transmit(&[(BUF, &NO_HDR), (BUF + 0x100, &f[..13])]).len(),
        1
    );
    assert_eq!(r.transmit(&[(BUF, &NO_HDR)]).len(), 1);
    assert_eq!(r.transmit(&[(BUF, &[])]).len(), 1, "zero-length chain");
    assert!(r.fake.sent().is_empty());
    assert_eq!(r.transmit(&[(BUF, &NO_HDR), (BUF + 0x100, &f)]).len(), 1);
    assert_eq!(r.fake.sent(), vec![f], "the shortest Ethernet frame passes");
    // The largest frame passes; one byte more is dropped.
    let big = eth(MAX_FRAME - HDR_LEN, 5);
    r.transmit(&[(BUF, &NO_HDR), (BUF + 0x100, &big)]);
    assert_eq!(r.fake.sent(), vec![big.clone()]);
    let bigger = eth(MAX_FRAME - HDR_LEN + 1, 5);
    r.transmit(&[(BUF, &NO_HDR), (BUF + 0x100, &bigger)]);
    assert!(r.fake.sent().is_empty());
    assert!(!r.broken());
    assert_eq!(r.stats().tx_dropped, 4);
}

#[test]
fn backend_full_or_failing_drops_frames() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    let f = eth(60, 3);
    r.fake.wire().full = true;
    assert_eq!(
        r.transmit(&[(BUF, &NO_HDR), (BUF + 0x100, &f)]),
        vec![(0, 0)]
    );
    r.fake.wire().full = false;
    r.fake.wire().fail = true;
    assert_eq!(
        r.transmit(&[(BUF, &NO_HDR), (BUF + 0x100, &f)]),
        vec![(2, 0)]
    );
    r.fake.wire().fail = false;
    r.transmit(&[(BUF, &NO_HDR), (BUF + 0x100, &f)]);
    assert_eq!(r.fake.sent(), vec![f]);
    assert!(!r.broken());
    assert_eq!(
        r.stats(),
        NetStats {
            tx_frames: 1,
            tx_dropped: 2,
            ..Default::default()
        }
    );
}

/// Publishes an indirect chain: a header then `n` data descriptors of `len`
/// bytes each, from a table at 0x3000.
fn indirect(r: &mut Rig, n: u16, len: u32) {
    let table = GuestQueue::new(0x3000, n + 1);
    r.mem.write_slice(&NO_HDR, GuestAddress(BUF)).unwrap();
    table.write_desc(&r.mem, 0, BUF, HDR_LEN as u32, F_NEXT, 1);
    for i in 1..=n {
        let a = BUF + 0x100 + u64::from(i - 1) * u64::from(len);
        r.mem
            .write_slice(&eth(len as usize, i as u8), GuestAddress(a))
            .unwrap();
        let flags = if i < n { F_NEXT } else { 0 };
        table.write_desc(&r.mem, i, a, len, flags, i + 1);
    }
    r.tx.write_desc(&r.mem, 15, 0x3000, 16 * (u32::from(n) + 1), F_INDIRECT, 0);
    r.tx.publish(&r.mem, 15);
    mmio::notify(&mut r.dev, 1);
}

#[test]
fn giant_chains_are_gathered_or_dropped_never_break() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    // 1000 descriptors of 60 bytes: a 60000-byte frame, gathered in order.
    indirect(&mut r, 1000, 60);
    assert_eq!(r.tx.take_used(&r.mem), vec![(15, 0)]);
    let sent = r.fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].len(), 60_000);
    assert_eq!(sent[0][60 * 999..], eth(60, 1000u16 as u8)[..]);
    // 1000 descriptors of 100 bytes: more than a frame can be, dropped unread.
    indirect(&mut r, 1000, 100);
    assert_eq!(r.tx.take_used(&r.mem), vec![(15, 0)]);
    assert!(r.fake.sent().is_empty());
    assert!(!r.broken());
    assert_eq!(r.stats().tx_dropped, 1);
}

fn assert_breaks(setup: impl FnOnce(&mut Rig)) {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    setup(&mut r);
    mmio::notify(&mut r.dev, 1);
    assert!(r.broken());
    assert!(r.tx.take_used(&r.mem).is_empty());
    assert!(r.fake.sent().is_empty());
}

#[test]
fn malformed_transmit_chains_break_the_device() {
    // A device-writable buffer.
    assert_breaks(|r| {
        r.tx.add_chain(&r.mem, &[(BUF, 12, false), (BUF + 0x100, 60, true)]);
    });
    // A loop.
    assert_breaks(|r| {
        r.tx.write_desc(&r.mem, 0, BUF, 12, F_NEXT, 1);
        r.tx.write_desc(&r.mem, 1, BUF + 0x100, 60, F_NEXT, 0);
        r.tx.publish(&r.mem, 0);
    });
    // A buffer outside guest memory, one of 4 GiB, and an indirect table out there.
    assert_breaks(|r| {
        r.tx.add_chain(&r.mem, &[(BUF, 12, false), (0xff000, 0x2000, false)]);
    });
    assert_breaks(|r| {
        r.tx.add_chain(&r.mem, &[(BUF, 12, false), (BUF, u32::MAX, false)]);
    });
    assert_breaks(|r| {
        r.tx.write_desc(&r.mem, 0, 0x7000_0000, 32, F_INDIRECT, 0);
        r.tx.publish(&r.mem, 0);
    });
    // A writable buffer first.
    assert_breaks(|r| {
        r.tx.write_desc(&r.mem, 0, BUF, 12, F_WRITE, 0);
        r.tx.publish(&r.mem, 0);
    });
}
