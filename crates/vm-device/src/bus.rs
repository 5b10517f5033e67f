//! An address-range bus: port I/O and MMIO both use it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the start of the range it was inserted at.
/// The bus holds the device's mutex across each access.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device that synchronizes itself, accessed with no lock held by the bus: a
/// window that only routes to devices with locks of their own (the PCI BAR and ECAM
/// windows), so vCPUs touching unrelated devices behind it never wait for each
/// other (a virtio-blk flush on one vCPU no longer holds up every other BAR).
pub trait BusDeviceSync: Send + Sync {
    fn read(&self, offset: u64, data: &mut [u8]);
    fn write(&self, offset: u64, data: &[u8]);
}

/// What a bus range holds.
#[derive(Clone)]
pub enum BusEntry {
    Locked(Arc<Mutex<dyn BusDevice>>),
    Sync(Arc<dyn BusDeviceSync>),
}

impl BusEntry {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match self {
            BusEntry::Locked(d) => lock(d).read(offset, data),
            BusEntry::Sync(d) => d.read(offset, data),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        match self {
            BusEntry::Locked(d) => lock(d).write(offset, data),
            BusEntry::Sync(d) => d.write(offset, data),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap { base: u64, len: u64 },
    #[error("range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
}

type Entry = (u64, BusEntry);

/// Maps non-overlapping address ranges to devices.
#[derive(Default, Clone)]
pub struct Bus {
    // key: range start; value: (length, device)
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        self.insert_entry(base, len, BusEntry::Locked(dev))
    }

    /// Inserts a self-synchronizing device (see [`BusDeviceSync`]).
    pub fn insert_sync(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<dyn BusDeviceSync>,
    ) -> Result<(), BusError> {
        self.insert_entry(base, len, BusEntry::Sync(dev))
    }

    fn insert_entry(&mut self, base: u64, len: u64, dev: BusEntry) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        if let Some((&b, &(l, _))) = self.ranges.range(..end).next_back() {
            if b + l > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, (len, dev));
        Ok(())
    }

    pub fn remove(&mut self, base: u64) -> Option<BusEntry> {
        self.ranges.remove(&base).map(|(_, d)| d)
    }

    /// The device covering `addr`, with the offset of `addr` in its range.
    pub fn resolve(&self, addr: u64) -> Option<(u64, &BusEntry)> {
        let (&b, (l, d)) = self.ranges.range(..=addr).next_back()?;
        (addr - b < *l).then_some((addr - b, d))
    }

    /// Reads from the device at `addr`; returns false (and fills all ones) if none.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((off, d)) => {
                d.read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes to the device at `addr`; returns false if none claims it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((off, d)) => {
                d.write(off, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned mutex: a device whose handler
/// panicked keeps its last state rather than taking the whole VMM down.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlap() {
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Reg(0x10))))
            .unwrap();
        assert_eq!(
            bus.insert(0x3f0, 9, Arc::new(Mutex::new(Reg(0)))),
            Err(BusError::Overlap {
                base: 0x3f0,
                len: 9
            })
        );
        assert!(bus.insert(0x3ff, 1, Arc::new(Mutex::new(Reg(0)))).is_err());
        bus.insert(0x400, 1, Arc::new(Mutex::new(Reg(0x20))))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 0x12);
        assert!(!bus.read(0x401, &mut b));
        assert_eq!(b[0], 0xff);
        assert!(bus.write(0x3f8, &[5]));
        bus.read(0x3f8, &mut b);
        assert_eq!(b[0], 5);
        assert_eq!(
            bus.insert(u64::MAX, 2, Arc::new(Mutex::new(Reg(0)))),
            Err(BusError::BadRange {
                base: u64::MAX,
                len: 2
            })
        );
    }
}
