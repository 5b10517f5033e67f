//! A hostile driver: malformed packets are dropped or reset, malformed chains
//! break only this device, nothing grows without bound.

use super::*;
use crate::testing::F_NEXT;
use crate::vsock::packet::shutdown;

#[test]
fn a_packet_shorter_than_a_header_is_dropped() {
    let mut g = setup();
    g.send_raw(&[0u8; 20], &[]);
    assert!(g.exchange().is_empty());
    assert!(!g.broken());
    assert_eq!(g.dev.device().bad_packets(), 1);
}

#[test]
fn a_spoofed_source_cid_is_dropped_silently() {
    let mut g = setup();
    g.send(
        Hdr {
            src_cid: 7,
            ..hdr(op::REQUEST, 1, 6000)
        },
        &[],
    );
    assert!(g.exchange().is_empty());
    assert!(
        g.hub.lock().conns.is_empty(),
        "no host connection attempted"
    );
    assert_eq!(g.dev.device().bad_packets(), 1);
}

#[test]
fn other_destinations_and_types_are_refused() {
    let mut g = setup();
    g.send(
        Hdr {
            dst_cid: 9,
            ..hdr(op::REQUEST, 1, 6000)
        },
        &[],
    );
    g.send(
        Hdr {
            type_: 2, // SEQPACKET, not offered
            ..hdr(op::REQUEST, 2, 6000)
        },
        &[],
    );
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RST, op::RST]);
    assert_eq!((p[0].0.src_cid, p[0].0.dst_cid), (9, CID));
    assert!(g.hub.lock().conns.is_empty());
}

#[test]
fn packets_for_unknown_connections_get_an_rst_except_rsts() {
    let mut g = setup();
    for o in [
        op::RW,
        op::RESPONSE,
        op::SHUTDOWN,
        op::CREDIT_UPDATE,
        op::CREDIT_REQUEST,
        99,
    ] {
        g.send(hdr(o, 1, 6000), b"x");
    }
    g.send(hdr(op::RST, 1, 6000), &[]);
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RST; 6]);
    assert!(!g.broken());
}

#[test]
fn a_length_beyond_the_chain_resets_the_connection() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    let h = Hdr {
        len: 1000,
        ..hdr(op::RW, 1234, 6000)
    };
    g.send_raw(&h.to_bytes(), &[1u8; 10]);
    assert_eq!(Guest::ops(&g.exchange()), vec![op::RST]);
    assert!(g.host_reads(id).is_empty());
    // And one beyond the packet limit, on a new connection.
    g.open_to_host(1235, 6000);
    let h = Hdr {
        len: (MAX_PKT_PAYLOAD + 1) as u32,
        ..hdr(op::RW, 1235, 6000)
    };
    g.send_raw(&h.to_bytes(), &vec![0u8; MAX_PKT_PAYLOAD + 1]);
    assert_eq!(Guest::ops(&g.exchange()), vec![op::RST]);
    assert!(!g.broken());
}

#[test]
fn protocol_violations_on_a_connection_reset_it() {
    let cases: Vec<Hdr> = vec![
        hdr(op::REQUEST, 1234, 6000),
        hdr(op::RESPONSE, 1234, 6000),
        hdr(42, 1234, 6000),
    ];
    for h in cases {
        let mut g = setup();
        g.open_to_host(1234, 6000);
        g.send(h, &[]);
        assert_eq!(Guest::ops(&g.exchange()), vec![op::RST], "{h:?}");
        assert_eq!(g.dev.device().connections(), 0);
    }
    // Data after the guest said it sends no more.
    let mut g = setup();
    g.open_to_host(1234, 6000);
    g.send(
        Hdr {
            flags: shutdown::SEND,
            ..hdr(op::SHUTDOWN, 1234, 6000)
        },
        &[],
    );
    g.send(hdr(op::RW, 1234, 6000), b"more");
    assert_eq!(Guest::ops(&g.exchange()), vec![op::RST]);
    // Data before the host side is connected.
    let mut g = setup();
    g.send(hdr(op::REQUEST, 1, 6000), &[]);
    g.send(hdr(op::RW, 1, 6000), b"early");
    assert_eq!(Guest::ops(&g.exchange()), vec![op::RST]);
}

#[test]
fn connections_are_limited_and_the_rest_refused() {
    let mut g = setup();
    for port in 0..MAX_CONNS as u32 + 10 {
        g.send(hdr(op::REQUEST, port, 6000), &[]);
    }
    assert_eq!(g.dev.device().connections(), MAX_CONNS);
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RST; 8]);
    assert_eq!(g.exchange().len(), 2);
}

#[test]
fn rsts_owed_without_receive_buffers_are_bounded() {
    let mut g = setup();
    for port in 0..1000 {
        g.send(hdr(op::RW, port, 6000), b"x");
    }
    assert_eq!(g.dev.device().orphan_rsts.len(), ORPHAN_RSTS);
    let mut n = 0;
    for _ in 0..20 {
        n += g.exchange().len();
    }
    assert_eq!(n, ORPHAN_RSTS);
}

#[test]
fn a_writable_transmit_buffer_breaks_only_this_device() {
    let mut g = setup();
    g.tx.add_chain(&g.mem, &[(TX_BUF, HDR_LEN as u32, true)]);
    mmio::notify(&mut g.dev, 1);
    assert!(g.broken());
    // Ignored until reset; the driver can start again.
    g.send(hdr(op::REQUEST, 1, 6000), &[]);
    assert!(g.hub.lock().conns.is_empty());
}

#[test]
fn a_descriptor_loop_breaks_the_device() {
    let mut g = setup();
    g.tx.write_desc(&g.mem, 0, TX_BUF, 44, F_NEXT, 1);
    g.tx.write_desc(&g.mem, 1, TX_BUF, 44, F_NEXT, 0);
    g.tx.publish(&g.mem, 0);
    mmio::notify(&mut g.dev, 1);
    assert!(g.broken());
}

#[test]
fn a_buffer_outside_memory_breaks_the_device() {
    let mut g = setup();
    g.tx.add_chain(&g.mem, &[(0xfff_0000, 44, false)]);
    mmio::notify(&mut g.dev, 1);
    assert!(g.broken());
}

#[test]
fn receive_buffers_must_be_writable_and_hold_a_header() {
    let mut g = setup();
    g.hub.host_request(5000, b"").unwrap();
    g.rx.add_chain(&g.mem, &[(RX_BUF, 20, true)]);
    mmio::notify(&mut g.dev, 0);
    assert!(g.broken());

    let mut g = setup();
    g.hub.host_request(5000, b"").unwrap();
    g.rx.write_desc(&g.mem, 0, RX_BUF, 100, 0, 0);
    g.rx.publish(&g.mem, 0);
    mmio::notify(&mut g.dev, 0);
    assert!(g.broken(), "a device-readable receive buffer");
}

#[test]
fn a_huge_credit_is_still_bounded_by_buffers_and_data() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    g.send(
        Hdr {
            buf_alloc: u32::MAX,
            fwd_cnt: u32::MAX,
            ..hdr(op::CREDIT_UPDATE, 1234, 6000)
        },
        &[],
    );
    g.hub.host_push(id, b"data");
    // A fwd_cnt ahead of what was sent and a 4 GiB buffer: what goes out is
    // still what the host sent and a receive buffer holds.
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RW]);
    assert_eq!(p[0].1, b"data");
}
