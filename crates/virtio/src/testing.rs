//! Test helpers that play the guest driver: split rings laid out in a
//! `GuestMemory`, chains published in the available ring, used ring read back,
//! and interrupt recorders.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_device::{IrqLine, MsiSink};
use vm_memory::{Address, Bytes, GuestAddress};

use crate::GuestMemory;

/// 1 MiB of guest RAM at address 0.
pub fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// A driver-side split virtqueue.
pub struct GuestQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl GuestQueue {
    /// Rings at `base`: descriptors, then the available ring, then the used ring (4-aligned).
    pub fn new(base: u64, size: u16) -> Self {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(4);
        Self {
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// Writes raw descriptor `i`.
    pub fn write_desc(
        &self,
        mem: &GuestMemory,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let a = GuestAddress(self.desc + 16 * u64::from(i));
        mem.write_obj(addr, a).unwrap();
        mem.write_obj(len, a.unchecked_add(8)).unwrap();
        mem.write_obj(flags, a.unchecked_add(12)).unwrap();
        mem.write_obj(next, a.unchecked_add(14)).unwrap();
    }

    /// Makes `head` available.
    pub fn publish(&mut self, mem: &GuestMemory, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Sets the avail ring index directly (hostile drivers).
    pub fn set_avail_idx(&mut self, mem: &GuestMemory, idx: u16) {
        self.avail_idx = idx;
        mem.write_obj(idx, GuestAddress(self.avail + 2)).unwrap();
    }

    /// Writes a chain of (addr, len, device-writable) buffers and publishes it.
    pub fn add_chain(&mut self, mem: &GuestMemory, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = (self.next_desc + k as u16) % self.size;
            let last = k + 1 == bufs.len();
            let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(mem, i, addr, len, flags, (i + 1) % self.size);
        }
        self.next_desc = (self.next_desc + bufs.len() as u16) % self.size;
        self.publish(mem, head);
        head
    }

    /// New used-ring entries (id, len) since the last call.
    pub fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut v = Vec::new();
        while self.used_seen != idx {
            let e = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
            let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
            v.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        v
    }

    /// Sets `used_event` (EVENT_IDX): the driver wants an interrupt after used idx passes it.
    pub fn set_used_event(&self, mem: &GuestMemory, idx: u16) {
        mem.write_obj(idx, GuestAddress(self.avail + 4 + 2 * u64::from(self.size)))
            .unwrap();
    }
}

/// Records MSI messages.
#[derive(Default)]
pub struct MsiLog(pub Mutex<Vec<(u64, u32)>>);
impl MsiSink for MsiLog {
    fn signal_msi(&self, addr: u64, data: u32) {
        self.0.lock().unwrap().push((addr, data));
    }
}

/// A level-triggered line whose level can be inspected.
#[derive(Default)]
pub struct Line(pub AtomicBool);
impl IrqLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}
impl Line {
    pub fn level(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Shared constructors.
pub fn msi_log() -> Arc<MsiLog> {
    Arc::new(MsiLog::default())
}
pub fn line() -> Arc<Line> {
    Arc::new(Line::default())
}

/// Drives a virtio-mmio device the way a guest driver does.
pub mod mmio {
    use vm_device::BusDevice;

    use crate::status;

    pub fn r32(d: &mut dyn BusDevice, off: u64) -> u32 {
        let mut b = [0u8; 4];
        d.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn w32(d: &mut dyn BusDevice, off: u64, v: u32) {
        d.write(off, &v.to_le_bytes());
    }

    /// Full initialization: reset, ACK, DRIVER, features (offered ∩ `want`),
    /// FEATURES_OK, queues, DRIVER_OK. Returns the negotiated features.
    pub fn init(d: &mut dyn BusDevice, want: u64, queues: &[&super::GuestQueue]) -> u64 {
        w32(d, 0x70, 0);
        w32(d, 0x70, u32::from(status::ACKNOWLEDGE));
        w32(d, 0x70, u32::from(status::ACKNOWLEDGE | status::DRIVER));
        w32(d, 0x14, 0);
        let lo = r32(d, 0x10);
        w32(d, 0x14, 1);
        let hi = r32(d, 0x10);
        let f = (u64::from(hi) << 32 | u64::from(lo)) & want;
        w32(d, 0x24, 0);
        w32(d, 0x20, f as u32);
        w32(d, 0x24, 1);
        w32(d, 0x20, (f >> 32) as u32);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        w32(d, 0x70, u32::from(s));
        assert_ne!(
            r32(d, 0x70) & u32::from(status::FEATURES_OK),
            0,
            "features refused"
        );
        for (i, q) in queues.iter().enumerate() {
            w32(d, 0x30, i as u32);
            assert!(r32(d, 0x34) >= u32::from(q.size));
            w32(d, 0x38, u32::from(q.size));
            w32(d, 0x80, q.desc as u32);
            w32(d, 0x84, (q.desc >> 32) as u32);
            w32(d, 0x90, q.avail as u32);
            w32(d, 0x94, (q.avail >> 32) as u32);
            w32(d, 0xa0, q.used as u32);
            w32(d, 0xa4, (q.used >> 32) as u32);
            w32(d, 0x44, 1);
        }
        w32(d, 0x70, u32::from(s | status::DRIVER_OK));
        f
    }

    /// Status register.
    pub fn status(d: &mut dyn BusDevice) -> u8 {
        r32(d, 0x70) as u8
    }

    /// Rings queue `q`'s doorbell.
    pub fn notify(d: &mut dyn BusDevice, q: u32) {
        w32(d, 0x50, q);
    }
}
