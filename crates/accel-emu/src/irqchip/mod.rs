//! Interrupt controllers the `emu` accelerator provides in user space (KVM
//! emulates them in-kernel): the 8259A PIC pair, the 82093AA IOAPIC and the
//! xAPIC local APIC, plus the interrupt message they exchange ([`Delivery`]).
//!
//! Every controller is a pure state machine: no threads, clocks or buses inside.
//! Time, where it matters, is passed in as monotonic nanoseconds. Each has a
//! serde-serializable `*State` for snapshots.
//!
//! Written by hand: no maintained crate models these chips as plain state
//! machines usable outside KVM (rust-vmm has none; the KVM crates only carry
//! the in-kernel state layouts).

pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod route;

use serde::{Deserialize, Serialize};

pub use route::{route, route_ipi, ApicTarget};

/// Delivery mode of an interrupt message (Intel SDM Vol. 3A 10.6.1 / 10.11.2,
/// 82093AA redirection entry bits 10:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeliveryMode {
    /// 000: deliver `vector` to the destination(s).
    Fixed,
    /// 001: deliver to the lowest-priority processor among the destinations.
    LowestPriority,
    /// 010: system management interrupt (vector ignored).
    Smi,
    /// 100: non-maskable interrupt (vector ignored).
    Nmi,
    /// 101: INIT (vector ignored).
    Init,
    /// 110: start-up IPI (vector = start page).
    StartUp,
    /// 111: the PIC supplies the vector (virtual wire through the IOAPIC).
    ExtInt,
}

impl DeliveryMode {
    /// Decodes the 3-bit field; `None` for the reserved encoding 011.
    pub fn from_bits(bits: u32) -> Option<Self> {
        Some(match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            7 => Self::ExtInt,
            _ => return None,
        })
    }

    /// The 3-bit encoding.
    pub fn bits(self) -> u32 {
        match self {
            Self::Fixed => 0,
            Self::LowestPriority => 1,
            Self::Smi => 2,
            Self::Nmi => 4,
            Self::Init => 5,
            Self::StartUp => 6,
            Self::ExtInt => 7,
        }
    }
}

/// An interrupt message on its way to local APICs: what an IOAPIC pin or an
/// MSI produces. Route it with [`Delivery::matches`] or [`route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Interrupt vector (meaningless for NMI/INIT/SMI/ExtINT).
    pub vector: u8,
    /// How the target handles it.
    pub delivery_mode: DeliveryMode,
    /// Destination: an APIC ID (physical) or a logical mask (logical), 8 bits in xAPIC mode.
    pub dest: u32,
    /// Logical destination mode (LDR/DFR matching) instead of physical.
    pub logical: bool,
    /// Level-triggered: the target's TMR bit is set and its EOI must go back
    /// to the IOAPIC ([`ioapic::IoApic::eoi`]).
    pub level_triggered: bool,
}

/// MSI address window (Intel SDM 10.11.1): bits 31:20 are 0xFEE.
const MSI_ADDR_MASK: u64 = 0xfff0_0000;
const MSI_ADDR_BASE: u64 = 0xfee0_0000;

impl Delivery {
    /// Decodes an MSI address/data pair (Intel SDM Vol. 3A 10.11.1-10.11.2):
    /// address bits 19:12 destination ID, bit 2 destination mode (1 = logical);
    /// data bits 7:0 vector, 10:8 delivery mode, 15 trigger mode (1 = level).
    ///
    /// Returns `None` if the address is outside 0xFEExxxxx or the delivery mode
    /// is reserved; such writes are dropped (a guest must not crash the VMM).
    pub fn from_msi(addr: u64, data: u32) -> Option<Delivery> {
        if addr & !0xffff_ffff != 0 || addr & MSI_ADDR_MASK != MSI_ADDR_BASE {
            return None;
        }
        Some(Delivery {
            vector: (data & 0xff) as u8,
            delivery_mode: DeliveryMode::from_bits(data >> 8)?,
            dest: ((addr >> 12) & 0xff) as u32,
            logical: addr & (1 << 2) != 0,
            level_triggered: data & (1 << 15) != 0,
        })
    }

    /// True if a local APIC with this APIC ID, logical destination register
    /// (LDR) and destination format register (DFR) is a destination of this
    /// message (Intel SDM Vol. 3A 10.6.2).
    ///
    /// Physical: `dest` equals the 8-bit APIC ID, or is the broadcast 0xFF.
    /// Logical flat model (DFR[31:28] = 1111b): `dest & LDR[31:24] != 0`.
    /// Logical cluster model (DFR[31:28] = 0000b): `dest[7:4]` selects the
    /// cluster (0xF = all clusters) and `dest[3:0]` is matched against
    /// `LDR[27:24]`. Logical 0xFF is a broadcast in both models.
    pub fn matches(&self, apic_id: u32, ldr: u32, dfr: u32) -> bool {
        dest_matches(self.dest & 0xff, self.logical, apic_id, ldr, dfr)
    }
}

/// Shared destination test for IOAPIC/MSI messages and IPIs (see [`Delivery::matches`]).
pub(crate) fn dest_matches(dest: u32, logical: bool, apic_id: u32, ldr: u32, dfr: u32) -> bool {
    let dest = dest & 0xff;
    if !logical {
        return dest == 0xff || dest == apic_id & 0xff;
    }
    if dest == 0xff {
        return true;
    }
    let logical_id = (ldr >> 24) & 0xff;
    if (dfr >> 28) & 0xf == 0xf {
        dest & logical_id != 0
    } else {
        let cluster = dest >> 4;
        (cluster == 0xf || cluster == logical_id >> 4) && (dest & logical_id & 0xf) != 0
    }
}

#[cfg(test)]
mod platform_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_mode_bits_round_trip() {
        for b in 0..8 {
            match DeliveryMode::from_bits(b) {
                Some(m) => assert_eq!(m.bits(), b),
                None => assert_eq!(b, 3),
            }
        }
        assert_eq!(DeliveryMode::from_bits(0x104), Some(DeliveryMode::Nmi));
    }

    #[test]
    fn msi_decoding() {
        // Linux: physical dest 3, fixed, edge, vector 0x41.
        let d = Delivery::from_msi(0xfee0_3000, 0x0041).unwrap();
        assert_eq!(
            d,
            Delivery {
                vector: 0x41,
                delivery_mode: DeliveryMode::Fixed,
                dest: 3,
                logical: false,
                level_triggered: false
            }
        );
        // Logical, lowest priority, level.
        let d = Delivery::from_msi(0xfee0_f00c, 0xc1a3).unwrap();
        assert_eq!(d.dest, 0xf);
        assert!(d.logical);
        assert_eq!(d.delivery_mode, DeliveryMode::LowestPriority);
        assert!(d.level_triggered);
        assert_eq!(d.vector, 0xa3);
        // Outside the window or reserved delivery mode.
        assert_eq!(Delivery::from_msi(0xfed0_0000, 0x41), None);
        assert_eq!(Delivery::from_msi(0x1_fee0_0000, 0x41), None);
        assert_eq!(Delivery::from_msi(0xfee0_0000, 0x341), None);
    }

    fn d(dest: u32, logical: bool) -> Delivery {
        Delivery {
            vector: 0x30,
            delivery_mode: DeliveryMode::Fixed,
            dest,
            logical,
            level_triggered: false,
        }
    }

    #[test]
    fn physical_matching() {
        assert!(d(2, false).matches(2, 0, 0xffff_ffff));
        assert!(!d(2, false).matches(3, 0, 0xffff_ffff));
        assert!(d(0xff, false).matches(7, 0, 0xffff_ffff));
        // Only 8 bits of destination in xAPIC mode.
        assert!(d(0x102, false).matches(2, 0, 0xffff_ffff));
    }

    #[test]
    fn logical_flat_matching() {
        let flat = 0xffff_ffff;
        assert!(d(0x01, true).matches(5, 0x0100_0000, flat));
        assert!(d(0x03, true).matches(5, 0x0200_0000, flat));
        assert!(!d(0x04, true).matches(5, 0x0200_0000, flat));
        assert!(!d(0x00, true).matches(5, 0x0100_0000, flat));
        assert!(d(0xff, true).matches(5, 0x0, flat));
    }

    #[test]
    fn logical_cluster_matching() {
        let cluster = 0x0fff_ffff;
        // Cluster 1, member bit 2.
        let ldr = 0x1400_0000;
        assert!(d(0x14, true).matches(0, ldr, cluster));
        assert!(d(0x1c, true).matches(0, ldr, cluster));
        assert!(!d(0x24, true).matches(0, ldr, cluster));
        assert!(!d(0x11, true).matches(0, ldr, cluster));
        assert!(d(0xf4, true).matches(0, ldr, cluster));
        assert!(d(0xff, true).matches(0, ldr, cluster));
    }
}
