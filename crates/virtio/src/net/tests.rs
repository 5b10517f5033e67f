//! The network device against an in-test backend, driven through the MMIO
//! transport the way a driver does (and, for interrupt counting, directly).
//! Transmit and receive cases are in `tests/tx.rs` and `tests/rx.rs`.

mod rx;
mod tx;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ::net::{NetBackend, Offloads, SharedBackend};
use vm_device::{BusDevice, Persist};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::testing::{self, mmio, GuestQueue, Line};
use crate::transport::mmio::VirtioMmioArgs;
use crate::transport::VirtioMmioDevice;
use crate::{features, status, GuestMemory};

pub(super) const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub(super) const NO_OFFLOADS: Offloads = Offloads {
    vnet_hdr: false,
    csum: false,
    tso: false,
};
pub(super) const CSUM_ONLY: Offloads = Offloads {
    vnet_hdr: true,
    csum: true,
    tso: false,
};
pub(super) const ALL_OFFLOADS: Offloads = Offloads {
    vnet_hdr: true,
    csum: true,
    tso: true,
};
/// Where buffers live in the test guest's 1 MiB.
pub(super) const BUF: u64 = 0x10000;

/// What the fake backend saw and holds.
#[derive(Default)]
pub(super) struct Wire {
    pub sent: Vec<Vec<u8>>,
    pub incoming: VecDeque<Vec<u8>>,
    pub offloads: Offloads,
    /// The last `set_guest_offloads` call.
    pub guest_offloads: Option<(bool, bool)>,
    /// `send` returns `Ok(false)`.
    pub full: bool,
    /// `send` fails.
    pub fail: bool,
}

/// A backend whose wire the test inspects.
#[derive(Clone, Default)]
pub(super) struct Fake(pub Arc<Mutex<Wire>>);

impl Fake {
    pub fn new(offloads: Offloads) -> Self {
        let f = Fake::default();
        f.wire().offloads = offloads;
        f
    }
    pub fn wire(&self) -> std::sync::MutexGuard<'_, Wire> {
        self.0.lock().unwrap()
    }
    pub fn shared(&self) -> SharedBackend {
        Arc::new(Mutex::new(Box::new(self.clone())))
    }
    /// Queues a frame for the guest.
    pub fn push(&self, frame: Vec<u8>) {
        self.wire().incoming.push_back(frame);
    }
    pub fn sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.wire().sent)
    }
    pub fn waiting(&self) -> usize {
        self.wire().incoming.len()
    }
}

impl NetBackend for Fake {
    fn offloads(&self) -> Offloads {
        self.wire().offloads
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool> {
        let mut w = self.wire();
        if w.fail {
            return Err(std::io::Error::other("wire cut"));
        }
        if w.full {
            return Ok(false);
        }
        w.sent.push(frame.to_vec());
        Ok(true)
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        self.wire().incoming.pop_front()
    }
    fn unrecv(&mut self, frame: Vec<u8>) {
        self.wire().incoming.push_front(frame);
    }
    fn set_guest_offloads(&mut self, csum: bool, tso: bool) -> std::io::Result<()> {
        self.wire().guest_offloads = Some((csum, tso));
        Ok(())
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}

/// An Ethernet frame of `len` bytes: to [`MAC`], IPv4 ethertype, then a
/// pattern from `seed`.
pub(super) fn eth(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| seed.wrapping_add(i as u8).wrapping_mul(7))
        .collect();
    f[..6].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// A header with these offload fields.
pub(super) fn hdr(flags: u8, gso_type: u8, gso_size: u16, csum: (u16, u16)) -> [u8; HDR_LEN] {
    NetHdr {
        flags,
        gso_type,
        hdr_len: if gso_type != 0 { 54 } else { 0 },
        gso_size,
        csum_start: csum.0,
        csum_offset: csum.1,
        num_buffers: 0,
    }
    .to_bytes()
}

/// A driver with both queues set up.
pub(super) struct Rig {
    pub dev: VirtioMmioDevice<Net>,
    pub mem: GuestMemory,
    pub rx: GuestQueue,
    pub tx: GuestQueue,
    pub fake: Fake,
    pub line: Arc<Line>,
    pub acked: u64,
}

impl Rig {
    /// A device over a backend with `offloads`, features `want` negotiated
    /// (as far as offered), 16-entry queues.
    pub fn new(offloads: Offloads, want: u64) -> Self {
        Self::with_rx_size(offloads, want, 16)
    }

    pub fn with_rx_size(offloads: Offloads, want: u64, rx_size: u16) -> Self {
        let mem = testing::memory();
        let fake = Fake::new(offloads);
        let line = testing::line();
        let mut dev =
            VirtioMmioDevice::new(Net::new(fake.shared(), MAC), mem.clone(), line.clone());
        let rx = GuestQueue::new(0x1000, rx_size);
        let tx = GuestQueue::new(0x2000, 16);
        let acked = mmio::init(&mut dev, want, &[&rx, &tx]);
        Rig {
            dev,
            mem,
            rx,
            tx,
            fake,
            line,
            acked,
        }
    }

    pub fn broken(&mut self) -> bool {
        mmio::status(&mut self.dev) & status::DEVICE_NEEDS_RESET != 0
    }

    pub fn stats(&self) -> NetStats {
        self.dev.device().stats()
    }

    /// Whether a used-buffer interrupt is pending; acknowledges it.
    pub fn take_irq(&mut self) -> bool {
        let pending = mmio::r32(&mut self.dev, 0x60) & 1 != 0;
        mmio::w32(&mut self.dev, 0x64, 1);
        pending
    }

    /// Writes each `(addr, bytes)` buffer, makes them one transmit chain and
    /// rings the doorbell; returns the used entries.
    pub fn transmit(&mut self, bufs: &[(u64, &[u8])]) -> Vec<(u32, u32)> {
        for (a, b) in bufs {
            self.mem.write_slice(b, GuestAddress(*a)).unwrap();
        }
        let chain: Vec<_> = bufs
            .iter()
            .map(|(a, b)| (*a, b.len() as u32, false))
            .collect();
        self.tx.add_chain(&self.mem, &chain);
        mmio::notify(&mut self.dev, 1);
        self.tx.take_used(&self.mem)
    }

    /// Posts one receive chain of device-writable `(addr, len)` buffers.
    pub fn post(&mut self, bufs: &[(u64, u32)]) -> u16 {
        let chain: Vec<_> = bufs.iter().map(|&(a, l)| (a, l, true)).collect();
        self.rx.add_chain(&self.mem, &chain)
    }

    /// Rings the receive doorbell (the driver posted buffers).
    pub fn kick_rx(&mut self) {
        mmio::notify(&mut self.dev, 0);
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    /// The header the device wrote at `addr`.
    pub fn header_at(&self, addr: u64) -> NetHdr {
        NetHdr::from_frame(&self.read(addr, HDR_LEN))
    }
}

#[test]
fn features_follow_the_backend_offloads() {
    let base = features::RING | feature::MAC | feature::STATUS | feature::MRG_RXBUF;
    let csum = feature::CSUM | feature::GUEST_CSUM;
    let tso = feature::HOST_TSO4 | feature::HOST_TSO6 | feature::GUEST_TSO4 | feature::GUEST_TSO6;
    let offered = |o: Offloads| Net::new(Fake::new(o).shared(), MAC).features();
    assert_eq!(offered(NO_OFFLOADS), base);
    let hdr_only = Offloads {
        vnet_hdr: true,
        ..NO_OFFLOADS
    };
    assert_eq!(
        offered(hdr_only),
        base,
        "a vnet header alone offloads nothing"
    );
    let no_hdr = Offloads {
        vnet_hdr: false,
        ..ALL_OFFLOADS
    };
    assert_eq!(offered(no_hdr), base, "offloads need a vnet header");
    assert_eq!(offered(CSUM_ONLY), base | csum);
    assert_eq!(offered(ALL_OFFLOADS), base | csum | tso);
    let tso_no_csum = Offloads {
        csum: false,
        ..ALL_OFFLOADS
    };
    assert_eq!(offered(tso_no_csum), base, "TSO needs checksum offload");
    let n = Net::new(Fake::new(NO_OFFLOADS).shared(), MAC);
    assert_eq!(n.device_type(), 1);
    assert_eq!(n.queue_max_sizes(), vec![256, 256]);
}

#[test]
fn config_space_has_mac_and_link_up() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    let mut c = [0xffu8; 12];
    r.dev.read(0x100, &mut c);
    assert_eq!(&c[..6], &MAC);
    assert_eq!(u16::from_le_bytes([c[6], c[7]]), S_LINK_UP);
    assert_eq!(u16::from_le_bytes([c[8], c[9]]), 1, "max_virtqueue_pairs");
    assert_eq!(&c[10..], &[0, 0], "nothing beyond");
    // Byte-wise reads at an offset, as Linux reads the MAC.
    let mut b = [0u8; 1];
    r.dev.read(0x105, &mut b);
    assert_eq!(b[0], MAC[5]);
    // Writes are ignored.
    r.dev.write(0x100, &[0xff; 8]);
    let mut again = [0u8; 12];
    r.dev.read(0x100, &mut again);
    assert_eq!(again, c);
    assert_eq!(mmio::r32(&mut r.dev, 8), 1, "device type net");
}

#[test]
fn activation_tells_the_backend_the_guest_offloads() {
    let r = Rig::new(ALL_OFFLOADS, u64::MAX);
    assert_eq!(r.fake.wire().guest_offloads, Some((true, true)));
    let r = Rig::new(ALL_OFFLOADS, !feature::GUEST_TSO4 & !feature::GUEST_TSO6);
    assert_eq!(r.fake.wire().guest_offloads, Some((true, false)));
    let r = Rig::new(NO_OFFLOADS, u64::MAX);
    assert_eq!(r.fake.wire().guest_offloads, Some((false, false)));
}

fn restore_args(r: &Rig, backend: SharedBackend) -> VirtioMmioArgs<SharedBackend> {
    VirtioMmioArgs {
        device: backend,
        mem: r.mem.clone(),
        line: testing::line(),
        dirty: None,
    }
}

#[test]
fn state_round_trip() {
    let mut r = Rig::new(CSUM_ONLY, u64::MAX);
    let f = eth(60, 1);
    r.transmit(&[(BUF, &hdr(0, 0, 0, (0, 0))), (BUF + 0x100, &f)]);
    assert_eq!(r.fake.sent().len(), 1);
    let json = serde_json::to_string(&r.dev.save()).unwrap();
    let saved = serde_json::from_str(&json).unwrap();
    let fresh = Fake::new(CSUM_ONLY);
    let dev2 = VirtioMmioDevice::<Net>::restore(restore_args(&r, fresh.shared()), &saved).unwrap();
    assert_eq!(serde_json::to_string(&dev2.save()).unwrap(), json);
    assert_eq!(dev2.device().mac(), MAC);
    assert_eq!(
        fresh.wire().guest_offloads,
        Some((true, false)),
        "the new backend learns the guest's offloads"
    );
    // The restored device carries on where the old one stopped.
    r.dev = dev2;
    r.fake = fresh;
    let used = r.transmit(&[(BUF, &hdr(0, 0, 0, (0, 0))), (BUF + 0x100, &f)]);
    assert_eq!(used, vec![(2, 0)]);
    assert_eq!(r.fake.sent()[0][HDR_LEN..], f[..]);
    // The device state alone round-trips too.
    let (a, b) =
        vm_device::persist::round_trip(r.dev.device(), Fake::new(CSUM_ONLY).shared()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn restore_refuses_what_the_device_cannot_be() {
    let r = Rig::new(CSUM_ONLY, u64::MAX);
    let good = r.dev.device().save();
    assert_ne!(good.acked_features & feature::CSUM, 0);
    let restore = |s: &NetState, o: Offloads| Net::restore(Fake::new(o).shared(), s).err();
    assert!(restore(&good, CSUM_ONLY).is_none());
    // A backend without the checksum offload the guest negotiated.
    let e = restore(&good, NO_OFFLOADS).unwrap();
    assert!(e.to_string().contains("does not offer"), "{e}");
    // Features the device never offers (MQ, CTRL_VQ).
    let unknown = NetState {
        acked_features: good.acked_features | 1 << 22 | 1 << 17,
        ..good.clone()
    };
    assert!(restore(&unknown, ALL_OFFLOADS).is_some());
    for mac in [[0u8; 6], [0xff; 6], [0x01, 0, 0x5e, 0, 0, 1]] {
        let bad = NetState {
            mac,
            ..good.clone()
        };
        let e = restore(&bad, CSUM_ONLY).unwrap();
        assert!(e.to_string().contains("MAC"), "{e}");
    }
}

#[test]
fn device_writes_are_logged_for_migration() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    let log = Arc::new(vmm_types::dirty::DirtyLog::new(&[(0, 0x10_0000)]));
    r.dev.set_dirty_log(Some(log.clone()));
    log.set_enabled(true);
    // A receive chain of three pages (0x20-0x22) and one at page 0x30; a frame
    // that fills the first page and a bit of the second.
    r.post(&[(0x20000, 0x3000)]);
    r.post(&[(0x30000, 0x1000)]);
    r.fake.push(eth(0x1000, 3));
    r.dev.process_event();
    assert_eq!(r.rx.take_used(&r.mem), vec![(0, 0x1000 + HDR_LEN as u32)]);
    // A transmit: the device reads its buffers (page 0x40) and writes the used ring (page 2).
    r.transmit(&[(0x40000, &hdr(0, 0, 0, (0, 0))), (0x40100, &eth(60, 1))]);
    let bits = &log.take()[0];
    let pages: Vec<usize> = (0..256)
        .filter(|p| bits[p / 64] & (1 << (p % 64)) != 0)
        .collect();
    // Rings (page 1 receive, page 2 transmit), the two pages the frame filled;
    // not its buffer's third page, nor the chain it did not use, nor what the
    // device only read.
    assert_eq!(pages, vec![1, 2, 0x20, 0x21]);
}

/// Counts the notifications a device raises.
#[derive(Default)]
struct Counting {
    queue: Vec<u16>,
}

impl crate::VirtioInterrupt for Counting {
    fn signal_queue(&mut self, queue: u16) {
        self.queue.push(queue);
    }
    fn signal_config(&mut self) {}
}

fn queue_of(g: &GuestQueue, event_idx: bool) -> virtio_queue::Queue {
    virtio_queue::Queue::try_from(virtio_queue::QueueState {
        max_size: QUEUE_SIZE,
        size: g.size,
        ready: true,
        desc_table: g.desc,
        avail_ring: g.avail,
        used_ring: g.used,
        event_idx_enabled: event_idx,
        ..Default::default()
    })
    .unwrap()
}

/// The device alone with its queues, counting notifications.
struct Bare {
    net: Net,
    mem: GuestMemory,
    queues: Vec<virtio_queue::Queue>,
    rx: GuestQueue,
    fake: Fake,
    irq: Counting,
}

impl Bare {
    fn new(event_idx: bool) -> Self {
        let mem = testing::memory();
        let fake = Fake::new(NO_OFFLOADS);
        let mut net = Net::new(fake.shared(), MAC);
        let rx = GuestQueue::new(0x1000, 16);
        let tx = GuestQueue::new(0x2000, 16);
        let queues = vec![queue_of(&rx, event_idx), queue_of(&tx, event_idx)];
        let mut acked = features::VERSION_1 | feature::MRG_RXBUF;
        if event_idx {
            acked |= features::EVENT_IDX;
        }
        net.activate(acked, &queues).unwrap();
        Bare {
            net,
            mem,
            queues,
            rx,
            fake,
            irq: Counting::default(),
        }
    }

    /// Delivers `n` frames in one event; returns the notifications raised.
    fn deliver(&mut self, n: usize) -> usize {
        for i in 0..n {
            self.fake.push(eth(100, i as u8));
        }
        let mut ctx = QueueCtx {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: &mut self.irq,
            dirty: None,
        };
        self.net.process_event(&mut ctx).unwrap();
        assert_eq!(self.fake.waiting(), 0);
        std::mem::take(&mut self.irq.queue).len()
    }
}

#[test]
fn receive_notifies_once_per_batch_as_event_idx_asks() {
    let mut b = Bare::new(true);
    for i in 0..12 {
        b.rx.add_chain(&b.mem, &[(BUF + 0x1000 * i, 0x800, true)]);
    }
    b.rx.set_used_event(&b.mem, 0);
    assert_eq!(b.deliver(3), 1, "three frames, one notification");
    assert_eq!(b.rx.take_used(&b.mem).len(), 3);
    // The driver wants to hear only once entry 5 is used (used idx 3 -> 6).
    b.rx.set_used_event(&b.mem, 5);
    assert_eq!(b.deliver(1), 0);
    assert_eq!(b.deliver(1), 0);
    assert_eq!(b.deliver(1), 1, "used idx passed used_event");
    assert_eq!(b.deliver(1), 0, "used_event already passed");
    // used_event in the middle of a batch: one notification for it.
    b.rx.set_used_event(&b.mem, 8);
    assert_eq!(b.deliver(3), 1);
    assert_eq!(b.rx.take_used(&b.mem).len(), 7);
}

#[test]
fn receive_without_event_idx_respects_no_interrupt() {
    let mut b = Bare::new(false);
    for i in 0..4 {
        b.rx.add_chain(&b.mem, &[(BUF + 0x1000 * i, 0x800, true)]);
    }
    assert_eq!(b.deliver(2), 1, "one notification per batch");
    // VRING_AVAIL_F_NO_INTERRUPT.
    b.mem.write_obj(1u16, GuestAddress(b.rx.avail)).unwrap();
    assert_eq!(b.deliver(1), 0);
    b.mem.write_obj(0u16, GuestAddress(b.rx.avail)).unwrap();
    assert_eq!(b.deliver(1), 1);
}

#[test]
fn end_to_end_through_mmio_with_interrupts() {
    let mut r = Rig::new(NO_OFFLOADS, u64::MAX);
    assert_ne!(r.acked & features::EVENT_IDX, 0);
    assert!(!r.line.level());
    // Transmit: the frame reaches the backend and the driver is interrupted.
    let f = eth(98, 9);
    let used = r.transmit(&[(BUF, &hdr(0, 0, 0, (0, 0))), (BUF + 0x100, &f)]);
    assert_eq!(used, vec![(0, 0)]);
    assert_eq!(r.fake.sent(), vec![f.clone()]);
    assert!(r.line.level());
    assert!(r.take_irq());
    assert!(!r.line.level());
    // Receive: the backend's thread queues a frame and wakes the transport.
    r.post(&[(0x20000, 2048)]);
    r.kick_rx();
    assert!(!r.line.level(), "a posted buffer alone interrupts nobody");
    let incoming = eth(342, 4);
    r.fake.push(incoming.clone());
    r.dev.process_event();
    assert!(r.line.level());
    assert_eq!(r.rx.take_used(&r.mem), vec![(0, 354)]);
    assert_eq!(r.header_at(0x20000).num_buffers, 1);
    assert_eq!(r.read(0x20000 + HDR_LEN as u64, incoming.len()), incoming);
    assert!(r.take_irq());
    assert_eq!(
        r.stats(),
        NetStats {
            tx_frames: 1,
            rx_frames: 1,
            ..Default::default()
        }
    );
    assert!(!r.broken());
}
