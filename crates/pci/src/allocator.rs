//! Assigns BAR addresses in the platform's PCI windows (the VMM acts as firmware).

use crate::config::{BarDef, BarKind};
use crate::layout;

/// Errors from BAR allocation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("no room for a {size:#x}-byte {kind:?} BAR in its PCI window")]
    Exhausted { kind: BarKind, size: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Window {
    next: u64,
    end: u64,
}

impl Window {
    fn take(&mut self, size: u64) -> Option<u64> {
        let base = self.next.checked_next_multiple_of(size)?;
        let end = base.checked_add(size)?;
        (end <= self.end).then(|| {
            self.next = end;
            base
        })
    }
}

/// A bump allocator over the I/O, 32-bit and 64-bit windows; BARs are
/// naturally aligned. 64-bit prefetchable BARs go above 4 GiB, all other
/// memory BARs below.
#[derive(Clone, Debug)]
pub struct BarAllocator {
    io: Window,
    mmio32: Window,
    mmio64: Window,
}

impl BarAllocator {
    /// Allocator over the standard windows of [`layout`], with the 64-bit window at `mmio64_base`.
    pub fn new(mmio64_base: u64) -> Self {
        Self::with_windows(
            (layout::IO_BASE, layout::IO_SIZE),
            (layout::MMIO32_BASE, layout::MMIO32_SIZE),
            (mmio64_base, layout::MMIO64_SIZE),
        )
    }

    /// Allocator over explicit (base, size) windows.
    pub fn with_windows(io: (u64, u64), mmio32: (u64, u64), mmio64: (u64, u64)) -> Self {
        let w = |(b, s): (u64, u64)| Window {
            next: b,
            end: b.saturating_add(s),
        };
        Self {
            io: w(io),
            mmio32: w(mmio32),
            mmio64: w(mmio64),
        }
    }

    /// Picks an address for a BAR.
    pub fn allocate(&mut self, def: BarDef) -> Result<u64, AllocError> {
        let w = match def.kind {
            BarKind::Io => &mut self.io,
            BarKind::Mem64 if def.prefetchable => &mut self.mmio64,
            _ => &mut self.mmio32,
        };
        w.take(def.size).ok_or(AllocError::Exhausted {
            kind: def.kind,
            size: def.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_exhausts() {
        let mut a =
            BarAllocator::with_windows((0xc000, 0x100), (0xc000_0000, 0x10000), (1 << 32, 1 << 20));
        let m = |size, kind, prefetchable| BarDef {
            kind,
            size,
            prefetchable,
        };
        assert_eq!(
            a.allocate(m(0x1000, BarKind::Mem32, false)),
            Ok(0xc000_0000)
        );
        assert_eq!(
            a.allocate(m(0x8000, BarKind::Mem64, false)),
            Ok(0xc000_8000)
        );
        assert_eq!(a.allocate(m(0x4000, BarKind::Mem64, true)), Ok(1 << 32));
        assert_eq!(a.allocate(m(0x20, BarKind::Io, false)), Ok(0xc000));
        assert_eq!(
            a.allocate(m(0x8000, BarKind::Mem32, false)),
            Err(AllocError::Exhausted {
                kind: BarKind::Mem32,
                size: 0x8000
            })
        );
    }
}
