//! Opening, refusing, shutting down and resetting connections.

use super::*;
use crate::vsock::hub::{Phase, Release};
use crate::vsock::packet::shutdown;

#[test]
fn config_space_holds_the_cid_and_only_ring_features_are_offered() {
    let mut g = setup();
    let mut b = [0u8; 8];
    vm_device::BusDevice::read(&mut g.dev, 0x100, &mut b);
    assert_eq!(u64::from_le_bytes(b), CID);
    assert_eq!(mmio::r32(&mut g.dev, 0x08), device_type::VSOCK);
    assert_eq!(g.dev.device().features(), features::RING);
    assert!(Vsock::new(2, VsockHost::detached(RxWaker::new())).is_err());
    assert!(Vsock::new(u64::from(u32::MAX), VsockHost::detached(RxWaker::new())).is_err());
}

#[test]
fn guest_connects_to_a_host_port() {
    let mut g = setup();
    g.send(hdr(op::REQUEST, 1234, 6000), &[]);
    let (&id, c) = g
        .hub
        .lock()
        .conns
        .iter()
        .next()
        .map(|(k, c)| (k, c.phase))
        .unwrap();
    assert_eq!(c, Phase::Connecting { port: 6000 });
    assert!(
        g.exchange().is_empty(),
        "no answer before the host connects"
    );
    g.hub.host_connected(id, true);
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RESPONSE]);
    assert_eq!((p[0].0.src_port, p[0].0.dst_port), (6000, 1234));
    assert_eq!(g.dev.device().connections(), 1);
}

#[test]
fn a_host_port_nobody_listens_on_is_refused() {
    let mut g = setup();
    g.send(hdr(op::REQUEST, 1234, 6001), &[]);
    let id = *g.hub.lock().conns.keys().next().unwrap();
    g.hub.host_connected(id, false);
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RST]);
    assert_eq!((p[0].0.src_port, p[0].0.dst_port), (6001, 1234));
    assert_eq!(g.dev.device().connections(), 0);
    assert_eq!(g.hub.lock().conns[&id].release, Some(Release::Abort));
}

#[test]
fn host_connects_to_a_guest_port() {
    let mut g = setup();
    let id = g.hub.host_request(5000, b"early").unwrap();
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::REQUEST]);
    let req = p[0].0;
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port),
        (HOST_CID, CID, 5000)
    );
    assert!(req.src_port >= 1 << 30);
    assert!(g.exchange().is_empty(), "one REQUEST");
    assert!(
        g.host_reads(id).is_empty(),
        "no OK before the guest accepts"
    );
    g.send(hdr(op::RESPONSE, 5000, req.src_port), &[]);
    assert_eq!(
        g.host_reads(id),
        format!("OK {}\n", req.src_port).into_bytes()
    );
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RW]);
    assert_eq!(p[0].1, b"early");
}

#[test]
fn two_host_requests_for_one_guest_port_get_different_local_ports() {
    let mut g = setup();
    g.hub.host_request(5000, b"").unwrap();
    g.hub.host_request(5000, b"").unwrap();
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::REQUEST, op::REQUEST]);
    assert_ne!(p[0].0.src_port, p[1].0.src_port);
}

#[test]
fn guest_refuses_a_host_connection() {
    let mut g = setup();
    let id = g.hub.host_request(5000, b"").unwrap();
    let req = g.exchange()[0].0;
    g.send(hdr(op::RST, 5000, req.src_port), &[]);
    assert!(g.exchange().is_empty(), "an RST is not answered");
    assert_eq!(g.hub.lock().conns[&id].release, Some(Release::Abort));
    assert_eq!(g.dev.device().connections(), 0);
}

#[test]
fn clean_close_from_the_guest_flushes_then_resets() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    g.send(hdr(op::RW, 1234, 6000), b"last words");
    g.send(
        Hdr {
            flags: shutdown::SEND,
            ..hdr(op::SHUTDOWN, 1234, 6000)
        },
        &[],
    );
    assert!(g.hub.lock().conns[&id].shut_write);
    assert!(g.exchange().is_empty(), "half closed: no RST yet");
    g.send(
        Hdr {
            flags: shutdown::BOTH,
            ..hdr(op::SHUTDOWN, 1234, 6000)
        },
        &[],
    );
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RST]);
    assert_eq!(g.hub.lock().conns[&id].release, Some(Release::Flush));
    assert_eq!(g.host_reads(id), b"last words", "still written out");
    assert_eq!(g.dev.device().connections(), 0);
}

#[test]
fn host_eof_becomes_a_shutdown_after_the_data() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    g.hub.host_push(id, b"bye");
    g.hub.host_eof(id);
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RW, op::SHUTDOWN]);
    assert_eq!(p[1].0.flags, shutdown::SEND);
    assert!(g.exchange().is_empty(), "one SHUTDOWN");
    // The guest still sends (half close), then closes.
    g.send(hdr(op::RW, 1234, 6000), b"answer");
    assert_eq!(g.host_reads(id), b"answer");
    g.send(
        Hdr {
            flags: shutdown::BOTH,
            ..hdr(op::SHUTDOWN, 1234, 6000)
        },
        &[],
    );
    assert_eq!(Guest::ops(&g.exchange()), vec![op::RST]);
}

#[test]
fn a_broken_host_side_resets_the_connection() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    g.hub.host_failed(id);
    let p = g.exchange();
    assert_eq!(Guest::ops(&p), vec![op::RST]);
    assert_eq!(g.dev.device().connections(), 0);
    assert_eq!(g.hub.lock().conns[&id].release, Some(Release::Abort));
}

#[test]
fn guest_rst_closes_at_once() {
    let mut g = setup();
    let id = g.open_to_host(1234, 6000);
    g.send(hdr(op::RW, 1234, 6000), b"dropped");
    g.send(hdr(op::RST, 1234, 6000), &[]);
    assert!(g.exchange().is_empty());
    assert_eq!(g.hub.lock().conns[&id].release, Some(Release::Abort));
    let mut b = [0u8; 16];
    assert_eq!(
        g.hub.host_peek_out(id, &mut b),
        (0, false),
        "an abort drops the data"
    );
}

#[test]
fn driver_reset_drops_every_connection() {
    let mut g = setup();
    let a = g.open_to_host(1, 6000);
    let b = g.hub.host_request(5000, b"").unwrap();
    mmio::w32(&mut g.dev, 0x70, 0);
    assert_eq!(g.dev.device().connections(), 0);
    let h = g.hub.lock();
    assert_eq!(h.conns[&a].release, Some(Release::Abort));
    assert_eq!(h.conns[&b].release, Some(Release::Abort));
}
