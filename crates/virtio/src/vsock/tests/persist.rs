//! Save, restore, and the transport reset a restored device owes the driver.

use vm_device::Persist;

use super::*;
use crate::transport::mmio::VirtioMmioArgs;
use crate::vsock::hub::Release;
use crate::vsock::rx::EVENT_TRANSPORT_RESET;

#[test]
fn state_round_trip() {
    let g = setup();
    let host = VsockHost::detached(RxWaker::new());
    let (a, b) = vm_device::persist::round_trip(g.dev.device(), host).unwrap();
    assert_eq!(a, b);
    let s = g.dev.device().save();
    assert_eq!(s.cid, CID);
    assert_ne!(s.acked_features, 0);
}

#[test]
fn restore_refuses_bad_states() {
    let host = || VsockHost::detached(RxWaker::new());
    let s = VsockState {
        acked_features: 0,
        cid: 2,
    };
    assert!(Vsock::restore(host(), &s).is_err(), "the host's CID");
    let s = VsockState {
        acked_features: 1 << 1, // SEQPACKET, never offered
        cid: 3,
    };
    assert!(Vsock::restore(host(), &s).is_err());
}

#[test]
fn a_restored_device_resets_the_drivers_connections() {
    let mut g = setup();
    g.open_to_host(1234, 6000);
    // Event buffers, as Linux posts them at probe.
    g.ev.add_chain(&g.mem, &[(0x9000, 4, true)]);
    g.ev.add_chain(&g.mem, &[(0x9100, 4, true)]);
    mmio::notify(&mut g.dev, 2);
    assert!(
        g.ev.take_used(&g.mem).is_empty(),
        "no event before a restore"
    );
    g.mem
        .write_obj(0xffff_ffffu32, GuestAddress(0x9000))
        .unwrap();

    // A new host side (the new process's), with a host program already waiting.
    let waker = RxWaker::new();
    let host = VsockHost::detached(waker);
    let new_hub = host.hub().clone();
    let waiting = new_hub.host_request(5000, b"").unwrap();
    let state = g.dev.save();
    let line = testing::line();
    let args = VirtioMmioArgs {
        device: host,
        mem: g.mem.clone(),
        line: line.clone(),
        dirty: None,
    };
    let mut dev = VirtioMmioDevice::<Vsock>::restore(args, &state).unwrap();
    assert_eq!(dev.device().connections(), 0);
    assert_eq!(new_hub.lock().conns[&waiting].release, Some(Release::Abort));
    assert!(new_hub.lock().wake_requested, "the host thread wakes it");

    dev.process_event();
    assert_eq!(g.ev.take_used(&g.mem), vec![(0, 4)]);
    let ev: u32 = g.mem.read_obj(GuestAddress(0x9000)).unwrap();
    assert_eq!(ev, EVENT_TRANSPORT_RESET);
    assert!(line.level());
    // The interrupt may have been lost (raised before the machine restored its
    // interrupt controllers): the next wakes raise it again, without a new event.
    let ack = |d: &mut VirtioMmioDevice<Vsock>| {
        let st = mmio::r32(d, 0x60);
        mmio::w32(d, 0x64, st);
    };
    ack(&mut dev);
    assert!(!line.level());
    dev.process_event();
    assert!(line.level(), "raised again");
    assert!(g.ev.take_used(&g.mem).is_empty(), "one event");
    assert!(new_hub.lock().wake_requested);
    // The driver handled it and gives the buffer back: no more wakes.
    g.ev.add_chain(&g.mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev, 2);
    assert!(!new_hub.lock().wake_requested);
    ack(&mut dev);
    dev.process_event();
    assert!(!line.level());
    assert!(g.ev.take_used(&g.mem).is_empty());

    // The guest's old connection is unknown now: its packets get an RST.
    g.dev = dev;
    g.hub = new_hub;
    g.send(hdr(op::RW, 1234, 6000), b"stale");
    assert_eq!(Guest::ops(&g.exchange()), vec![op::RST]);
}

#[test]
fn a_restored_device_waits_for_an_event_buffer() {
    let g = setup();
    let state = g.dev.save();
    let args = VirtioMmioArgs {
        device: VsockHost::detached(RxWaker::new()),
        mem: g.mem.clone(),
        line: testing::line(),
        dirty: None,
    };
    let mut dev = VirtioMmioDevice::<Vsock>::restore(args, &state).unwrap();
    let mut ev = g.ev;
    dev.process_event();
    assert!(ev.take_used(&g.mem).is_empty());
    ev.add_chain(&g.mem, &[(0x9000, 8, true)]);
    mmio::notify(&mut dev, 2);
    assert_eq!(ev.take_used(&g.mem), vec![(0, 4)]);
}
