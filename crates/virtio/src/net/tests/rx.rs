//! Receive: frames into one chain or merged over several, waiting for
//! buffers in order, offloads checked, malformed chains breaking the device.

use ::net::MAX_FRAME;

use super::super::header::{F_DATA_VALID, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};
use super::*;
use crate::testing::{F_NEXT, F_WRITE};

const NO_MRG: u64 = !feature::MRG_RXBUF;

/// The driver's `avail_event` (EVENT_IDX): it notifies once its available
/// index passes this.
fn avail_event(r: &Rig) -> u16 {
    let at = r.rx.used + 4 + 8 * u64::from(r.rx.size);
    r.mem.read_obj(GuestAddress(at)).unwrap()
}

#[test]
fn without_mrg_rxbuf_a_frame_takes_one_chain() {
    let mut r = Rig::new(NO_OFFLOADS, NO_MRG);
    assert_eq!(r.acked & feature::MRG_RXBUF, 0);
    let (a, b) = (eth(100, 1), eth(200, 2));
    r.fake.push(a.clone());
    r.fake.push(b.clone());
    // The header split across the chain's two descriptors.
    r.post(&[(0x20000, 6), (0x21000, 2000)]);
    r.dev.process_event();
    assert_eq!(r.rx.take_used(&r.mem), vec![(0, 112)]);
    let mut got = r.read(0x20000, 6);
    got.extend(r.read(0x21000, 106));
    let h = NetHdr {
        num_buffers: 1,
        ..Default::default()
    };
    assert_eq!(got[..HDR_LEN], h.to_bytes());
    assert_eq!(got[HDR_LEN..], a[..]);
    assert!(r.take_irq());
    assert_eq!(r.fake.waiting(), 1, "the second frame waits for a buffer");
    r.post(&[(0x30000, 2048)]);
    r.kick_rx();
    assert_eq!(r.rx.take_used(&r.mem), vec![(2, 212)]);
    assert_eq!(r.header_at(0x30000), h);
    assert_eq!(r.read(0x30000 + 12, 200), b);
    assert_eq!(r.stats().rx_frames, 2);
}

#[test]
fn without_mrg_rxbuf_a_frame_larger_than_its_chain_is_dropped() {
    let mut r = Rig::new(NO_OFFLOADS, NO_MRG);
    r.post(&[(0x20000, 100)]);
    r.fake.push(eth(200, 1));
    let small = eth(50, 2);
    r.fake.push(small.clone());
    r.dev.process_event();
    // The chain the big frame could not use takes the next one.
    assert_eq!(r.rx.take_used(&r.mem), vec![(0, 62)]);
    assert_eq!(r.read(0x20000 + 12, 50), small);
    assert_eq!(r.stats().rx_dropped, 1);
    assert!(!r.broken());
}

#[test]
fn mrg_rxbuf_frame_spans_three_chains() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    for i in 0..4 {
        r.post(&[(0x20000 + 0x1000 * i, 512)]);
    }
    let f = eth(1200, 7);
    r.fake.push(f.clone());
    r.dev.process_event();
    assert_eq!(r.rx.take_used(&r.mem), vec![(0, 512), (1, 512), (2, 188)]);
    assert_eq!(r.header_at(0x20000).num_buffers, 3);
    let mut got = r.read(0x20000, 512);
    got.extend(r.read(0x21000, 512));
    got.extend(r.read(0x22000, 188));
    assert_eq!(got[HDR_LEN..], f[..]);
    assert!(r.take_irq());
    // The fourth chain is left for the next frame, even one that fills just
    // a header-sized first chain.
    r.post(&[(0x30000, 12)]);
    let g = eth(40, 8);
    r.fake.push(eth(490, 9));
    r.fake.push(g.clone());
    r.dev.process_event();
    assert_eq!(r.rx.take_used(&r.mem), vec![(3, 502)]);
    assert_eq!(r.fake.waiting(), 1);
    r.post(&[(0x31000, 100)]);
    r.kick_rx();
    assert_eq!(r.rx.take_used(&r.mem), vec![(4, 12), (5, 40)]);
    assert_eq!(r.header_at(0x30000).num_buffers, 2);
    assert_eq!(r.read(0x31000, 40), g);
}

#[test]
fn mrg_rxbuf_frame_waits_for_enough_buffers_in_order() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    assert_ne!(r.acked & features::EVENT_IDX, 0);
    r.post(&[(0x20000, 512)]);
    r.post(&[(0x21000, 512)]);
    let (a, b) = (eth(1200, 1), eth(100, 2));
    r.fake.push(a.clone());
    r.fake.push(b.clone());
    r.dev.process_event();
    assert!(r.rx.take_used(&r.mem).is_empty(), "no partial set consumed");
    assert!(!r.take_irq());
    assert_eq!(r.fake.waiting(), 2, "the small frame does not overtake");
    assert_eq!(
        avail_event(&r),
        2,
        "the driver notifies at its next available chain"
    );
    r.post(&[(0x22000, 512)]);
    r.kick_rx();
    assert_eq!(r.rx.take_used(&r.mem), vec![(0, 512), (1, 512), (2, 188)]);
    assert_eq!(r.header_at(0x20000).num_buffers, 3);
    let mut got = r.read(0x20000 + 12, 500);
    got.extend(r.read(0x21000, 512));
    got.extend(r.read(0x22000, 188));
    assert_eq!(got, a);
    assert_eq!(r.fake.waiting(), 1);
    assert_eq!(avail_event(&r), 3);
    r.post(&[(0x23000, 512)]);
    r.kick_rx();
    assert_eq!(r.rx.take_used(&r.mem), vec![(3, 112)]);
    assert_eq!(r.read(0x23000 + 12, 100), b);
    assert_eq!(r.stats().rx_dropped, 0);
}

#[test]
fn mrg_rxbuf_frame_larger_than_a_full_ring_is_dropped() {
    let mut r = Rig::with_rx_size(NO_OFFLOADS, u64::MAX, 4);
    for i in 0..4 {
        r.post(&[(0x20000 + 0x1000 * i, 64)]);
    }
    r.fake.push(eth(1000, 1));
    let small = eth(40, 2);
    r.fake.push(small.clone());
    r.dev.process_event();
    assert_eq!(r.rx.take_used(&r.mem), vec![(0, 52)]);
    assert_eq!(r.read(0x20000 + 12, 40), small);
    assert_eq!(r.stats().rx_dropped, 1);
    assert!(!r.broken());
}

/// `h` and a 100-byte frame, as a vnet-header backend hands them over.
fn with_hdr(h: [u8; HDR_LEN]) -> Vec<u8> {
    let mut v = h.to_vec();
    v.extend(eth(100, 3));
    v
}

#[test]
fn vnet_hdr_backend_header_reaches_the_guest() {
    let mut r = Rig::new(CSUM_ONLY, u64::MAX);
    r.post(&[(0x20000, 2048)]);
    r.fake
        .push(with_hdr(hdr(F_NEEDS_CSUM | F_DATA_VALID, 0, 0, (34, 16))));
    r.dev.process_event();
    assert_eq!(r.rx.take_used(&r.mem), vec![(0, 112)]);
    assert_eq!(
        r.header_at(0x20000),
        NetHdr {
            flags: F_NEEDS_CSUM | F_DATA_VALID,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 1,
            ..Default::default()
        }
    );
    assert_eq!(r.read(0x20000 + 12, 100), eth(100, 3));
}

/// Offers `frame` to a guest with a fresh 2 KiB buffer; returns the header
/// it got, if the frame was delivered.
fn deliver(r: &mut Rig, frame: Vec<u8>) -> Option<NetHdr> {
    r.post(&[(0x20000, 2048)]);
    r.fake.push(frame);
    r.dev.process_event();
    assert!(!r.broken());
    assert_eq!(r.fake.waiting(), 0);
    let used = r.rx.take_used(&r.mem);
    if used.is_empty() {
        // The chain stays available: drop it from the driver's books by
        // delivering something harmless into it.
        let vnet_hdr = r.fake.wire().offloads.vnet_hdr;
        r.fake.push(if vnet_hdr {
            with_hdr([0; HDR_LEN])
        } else {
            eth(20, 0)
        });
        r.dev.process_event();
        assert_eq!(r.rx.take_used(&r.mem).len(), 1);
        return None;
    }
    Some(r.header_at(0x20000))
}

#[test]
fn receive_offloads_not_negotiated_are_dropped() {
    let mut r = Rig::new(CSUM_ONLY, !feature::GUEST_CSUM);
    assert_eq!(r.fake.wire().guest_offloads, Some((false, false)));
    assert!(deliver(&mut r, with_hdr(hdr(F_NEEDS_CSUM, 0, 0, (34, 16)))).is_none());
    let h = deliver(&mut r, with_hdr(hdr(F_DATA_VALID, 0, 0, (0, 0)))).unwrap();
    assert_eq!(h.flags, 0, "without GUEST_CSUM the flags are zero");
    assert_eq!(r.stats().rx_dropped, 1);

    let mut r = Rig::new(ALL_OFFLOADS, !feature::GUEST_TSO4);
    let tso6 = deliver(
        &mut r,
        with_hdr(hdr(F_NEEDS_CSUM, GSO_TCPV6, 1428, (54, 16))),
    );
    assert_eq!(tso6.unwrap().gso_type, GSO_TCPV6);
    assert!(deliver(
        &mut r,
        with_hdr(hdr(F_NEEDS_CSUM, GSO_TCPV4, 1448, (34, 16)))
    )
    .is_none());
    assert!(deliver(&mut r, with_hdr(hdr(F_NEEDS_CSUM, 3, 1448, (34, 6)))).is_none());
    assert!(
        deliver(&mut r, with_hdr(hdr(4, 0, 0, (0, 0)))).is_none(),
        "RSC_INFO"
    );
    assert_eq!(r.stats().rx_dropped, 3);
}

#[test]
fn malformed_backend_frames_are_dropped() {
    let mut r = Rig::new(CSUM_ONLY, u64::MAX);
    assert!(
        deliver(&mut r, vec![0; 5]).is_none(),
        "shorter than a header"
    );
    assert!(deliver(&mut r, vec![0; HDR_LEN + 13]).is_none(), "runt");
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    assert!(
        deliver(&mut r, eth(MAX_FRAME - HDR_LEN + 1, 0)).is_none(),
        "too long"
    );
    assert!(deliver(&mut r, eth(14, 0)).is_some());
}

fn assert_breaks(bufs: &[(u64, u32, bool)]) {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    r.fake.push(eth(60, 0));
    r.rx.add_chain(&r.mem, bufs);
    r.dev.process_event();
    assert!(r.broken(), "{bufs:?}");
    assert!(r.rx.take_used(&r.mem).is_empty());
}

#[test]
fn malformed_receive_chains_break_the_device() {
    assert_breaks(&[(0x20000, 0, true)]);
    assert_breaks(&[(0x20000, 8, true)]);
    assert_breaks(&[(0x20000, 100, false)]);
    assert_breaks(&[(0x20000, 12, false), (0x21000, 100, true)]);
    assert_breaks(&[(0xff000, 0x2000, true)]);
    // A loop.
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    r.fake.push(eth(60, 0));
    r.rx.write_desc(&r.mem, 0, 0x20000, 100, F_WRITE | F_NEXT, 1);
    r.rx.write_desc(&r.mem, 1, 0x21000, 100, F_WRITE | F_NEXT, 0);
    r.rx.publish(&r.mem, 0);
    r.kick_rx();
    assert!(r.broken());
}

#[test]
fn frames_wait_while_the_driver_has_not_enabled_receive() {
    let fake = Fake::new(NO_OFFLOADS);
    let mut dev = VirtioMmioDevice::new(
        Net::new(fake.shared(), MAC),
        testing::memory(),
        testing::line(),
    );
    // DRIVER_OK with neither queue enabled.
    mmio::init(&mut dev, u64::MAX, &[]);
    fake.push(eth(60, 0));
    dev.process_event();
    assert_eq!(fake.waiting(), 1);
    assert_eq!(mmio::status(&mut dev) & status::DEVICE_NEEDS_RESET, 0);
}
