//! Test helpers that play the guest driver: split rings laid out in a
//! `GuestMemory`, chains published in the available ring, used ring read back,
//! and interrupt recorders.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_device::{IrqLine, MsiSink};
use vm_memory::{Bytes, GuestAddress};

use crate::device::VirtioInterrupt;
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
        Self { size, desc, avail, used, next_desc: 0, avail_idx: 0, used_seen: 0 }
    }

    /// Writes raw descriptor `i`.
    pub fn write_desc(&self, mem: &GuestMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
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
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2)).unwrap();
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
        mem.write_obj(idx, GuestAddress(self.avail + 4 + 2 * u64::from(self.size))).unwrap();
    }
}

/// Records `signal_queue`/`signal_config` calls.
#[derive(Default)]
pub struct IrqLog {
    pub queues: Vec<u16>,
    pub config: usize,
}

impl VirtioInterrupt for IrqLog {
    fn signal_queue(&mut self, queue: u16) {
        self.queues.push(queue);
    }
    fn signal_config(&mut self) {
        self.config += 1;
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
pub struct Line(pub AtomicBool, pub Mutex<u32>);
impl IrqLine for Line {
    fn set_level(&self, level: bool) {
        if level {
            *self.1.lock().unwrap() += 1;
        }
        self.0.store(level, Ordering::SeqCst);
    }
}
impl Line {
    pub fn level(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn raised(&self) -> u32 {
        *self.1.lock().unwrap()
    }
}

/// Shared constructors.
pub fn msi_log() -> Arc<MsiLog> {
    Arc::new(MsiLog::default())
}
pub fn line() -> Arc<Line> {
    Arc::new(Line::default())
}
