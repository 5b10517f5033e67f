//! Data both ways and the credit that bounds it.

use super::*;
use crate::vsock::hub::Release;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn data_flows_both_ways_in_order() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    let up = pattern(10_000, 1);
    for part in up.chunks(3000) {
        g.send(hdr(op::RW, 1234, 6000), part);
    }
    assert_eq!(g.host_reads(id), up);

    let down = pattern(20_000, 2);
    assert_eq!(g.hub.host_push(id, &down), down.len());
    let mut got = Vec::new();
    for _ in 0..10 {
        for (h, p) in g.exchange() {
            assert_eq!(h.op, op::RW);
            assert!(p.len() <= 4096, "one receive buffer each");
            assert_eq!((h.src_port, h.dst_port), (6000, 1234));
            got.extend(p);
        }
    }
    assert_eq!(got, down);
}

#[test]
fn the_guests_credit_is_never_exceeded() {
    let mut g = setup();
    g.send(
        Hdr {
            buf_alloc: 1000,
            ..hdr(op::REQUEST, 1234, 6000)
        },
        &[],
    );
    let id = *g.hub.lock().conns.keys().next().unwrap();
    g.hub.host_connected(id, true);
    assert_eq!(Guest::ops(&g.exchange()), vec![op::RESPONSE]);
    g.hub.host_push(id, &pattern(5000, 3));
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RW, op::CREDIT_REQUEST]);
    assert_eq!(p[0].1.len(), 1000);
    assert!(
        g.exchange().is_empty(),
        "no more data and one CREDIT_REQUEST"
    );
    // The guest read 600 bytes.
    g.send(
        Hdr {
            buf_alloc: 1000,
            fwd_cnt: 600,
            ..hdr(op::CREDIT_UPDATE, 1234, 6000)
        },
        &[],
    );
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RW, op::CREDIT_REQUEST]);
    assert_eq!(p[0].1.len(), 600);
    // A guest that shrinks its buffer below what is in flight gets nothing.
    g.send(
        Hdr {
            buf_alloc: 100,
            fwd_cnt: 600,
            ..hdr(op::CREDIT_UPDATE, 1234, 6000)
        },
        &[],
    );
    assert!(g.exchange().is_empty());
}

#[test]
fn small_receive_buffers_get_small_packets() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    g.hub.host_push(id, &pattern(100, 4));
    g.post_rx(1, HDR_LEN as u32 + 10);
    g.dev.process_event();
    let p = g.recv();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].1, pattern(100, 4)[..10]);
}

#[test]
fn our_credit_is_advertised_and_enforced() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    // Most of our buffer, not yet forwarded: no update (nothing was freed).
    let big = pattern(40_000, 5);
    g.send(hdr(op::RW, 1234, 6000), &big);
    assert!(g.exchange().is_empty());
    // The host takes it: the guest, believing our buffer is mostly full, hears.
    assert_eq!(g.host_reads(id), big);
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::CREDIT_UPDATE]);
    assert_eq!(
        (p[0].0.buf_alloc, p[0].0.fwd_cnt),
        (CONN_BUF as u32, 40_000)
    );
    // Asked, we answer.
    g.send(hdr(op::CREDIT_REQUEST, 1234, 6000), &[]);
    assert_eq!(Guest::ops(&g.exchange()), vec![op::CREDIT_UPDATE]);
    // More than the buffer holds (the host reads nothing): an RST.
    g.send(hdr(op::RW, 1234, 6000), &pattern(40_000, 6));
    assert!(g.exchange().is_empty());
    g.send(hdr(op::RW, 1234, 6000), &pattern(40_000, 7));
    assert_eq!(Guest::ops(&g.exchange()), vec![op::RST]);
    assert_eq!(g.hub.lock().conns[&id].release, Some(Release::Abort));
}

#[test]
fn connections_take_turns() {
    let mut g = setup();
    let a = g.open_to_host(1, 6000);
    let b = g.open_to_host(2, 6000);
    g.hub.host_push(a, &pattern(20_000, 8));
    g.hub.host_push(b, &pattern(20_000, 9));
    g.post_rx(4, RX_SIZE);
    g.dev.process_event();
    let ports: Vec<u32> = g.recv().iter().map(|p| p.0.dst_port).collect();
    assert_eq!(ports.len(), 4);
    assert!(ports.windows(2).all(|w| w[0] != w[1]), "{ports:?}");
}

#[test]
fn host_data_after_the_guest_stopped_receiving_is_dropped() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    g.send(
        Hdr {
            flags: crate::vsock::packet::shutdown::RCV,
            ..hdr(op::SHUTDOWN, 1234, 6000)
        },
        &[],
    );
    g.hub.host_push(id, b"unwanted");
    assert!(g.exchange().is_empty());
    assert!(g.hub.lock().conns[&id].rx.is_empty());
    // Still sending is fine.
    g.send(hdr(op::RW, 1234, 6000), b"fine");
    assert_eq!(g.host_reads(id), b"fine");
}
