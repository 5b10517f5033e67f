//! The I/O APIC (Intel 82093AA register model, version 0x20 with the EOI
//! register of later chipsets), 24 input pins.
//!
//! MMIO layout (base usually 0xFEC00000): IOREGSEL at 0x00 selects a
//! register, IOWIN at 0x10 reads/writes it, and the EOI register at 0x40
//! takes a vector. Registers: 0x00 ID (bits 27:24), 0x01 version (bits 7:0
//! version, 23:16 highest redirection entry), 0x02 arbitration ID, and
//! 0x10 + 2n / 0x11 + 2n the low/high halves of redirection entry n.
//!
//! Pin levels are logical: `set_irq(pin, true)` means "asserted" whatever the
//! programmed polarity (bit 13), as in KVM; devices signal assertion, not volts.

use serde::{Deserialize, Serialize};

use super::{Delivery, DeliveryMode};

/// Number of input pins.
pub const NUM_PINS: usize = 24;
/// Version register value: version 0x20, highest entry 23.
pub const VERSION: u32 = 0x20 | ((NUM_PINS as u32 - 1) << 16);
/// Offset of IOREGSEL.
pub const IOREGSEL: u64 = 0x00;
/// Offset of IOWIN.
pub const IOWIN: u64 = 0x10;
/// Offset of the EOI register.
pub const EOI: u64 = 0x40;

const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARB: u32 = 0x02;
const REG_REDIR: u32 = 0x10;

/// Redirection entry bits (82093AA 3.2.4).
const RTE_DEST_LOGICAL: u64 = 1 << 11;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
/// Bits the guest may write: vector, delivery mode, dest mode, polarity,
/// trigger, mask, destination. Delivery status (12) and remote IRR (14) are read-only.
const RTE_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// Snapshot of an [`IoApic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoApicState {
    /// IOREGSEL.
    pub ioregsel: u8,
    /// ID register (bits 27:24 significant).
    pub id: u32,
    /// The 24 redirection entries.
    pub redirection: Vec<u64>,
    /// Asserted pins (bit n = pin n).
    pub lines: u32,
}

/// One I/O APIC.
#[derive(Debug, Clone)]
pub struct IoApic {
    ioregsel: u8,
    id: u32,
    redirection: [u64; NUM_PINS],
    lines: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new(0)
    }
}

impl IoApic {
    /// Power-up state: every entry masked, edge, fixed, physical.
    pub fn new(id: u8) -> Self {
        Self {
            ioregsel: 0,
            id: u32::from(id & 0xf) << 24,
            redirection: [RTE_MASKED; NUM_PINS],
            lines: 0,
        }
    }

    /// Reads the 32-bit register at `offset` from the base. Unknown offsets and
    /// unknown register indices read 0.
    pub fn mmio_read(&self, offset: u64) -> u32 {
        match offset {
            IOREGSEL => u32::from(self.ioregsel),
            IOWIN => self.read_reg(u32::from(self.ioregsel)),
            _ => 0,
        }
    }

    /// Writes the 32-bit register at `offset`. Returns the interrupts this
    /// causes: unmasking an asserted level-triggered pin, or an EOI that finds
    /// its pin still asserted.
    pub fn mmio_write(&mut self, offset: u64, val: u32) -> Vec<Delivery> {
        match offset {
            IOREGSEL => {
                self.ioregsel = val as u8;
                Vec::new()
            }
            IOWIN => self.write_reg(u32::from(self.ioregsel), val),
            EOI => self.eoi(val as u8),
            _ => Vec::new(),
        }
    }

    /// Drives `pin` to `level` (asserted = true). Edge-triggered pins deliver on
    /// a rising edge when unmasked (a masked edge is lost); level-triggered
    /// pins deliver while asserted, unmasked and remote IRR is clear, and set
    /// remote IRR until the EOI. Pins past 23 are ignored.
    pub fn set_irq(&mut self, pin: u32, level: bool) -> Option<Delivery> {
        let idx = usize::try_from(pin).ok().filter(|&i| i < NUM_PINS)?;
        let bit = 1u32 << idx;
        let was = self.lines & bit != 0;
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        let rte = self.redirection[idx];
        if rte & RTE_LEVEL != 0 {
            self.try_deliver_level(idx)
        } else if level && !was && rte & RTE_MASKED == 0 {
            self.delivery(idx)
        } else {
            None
        }
    }

    /// An EOI for `vector` (from a local APIC's EOI of a level-triggered
    /// interrupt, or the EOI register): clears remote IRR of the level-triggered
    /// entries with that vector, and re-delivers those whose pin is still asserted.
    pub fn eoi(&mut self, vector: u8) -> Vec<Delivery> {
        let mut out = Vec::new();
        for idx in 0..NUM_PINS {
            let rte = self.redirection[idx];
            if rte & 0xff == u64::from(vector) && rte & RTE_LEVEL != 0 && rte & RTE_REMOTE_IRR != 0
            {
                self.redirection[idx] &= !RTE_REMOTE_IRR;
                out.extend(self.try_deliver_level(idx));
            }
        }
        out
    }

    /// The redirection entry of `pin` (for tests and debugging).
    pub fn redirection_entry(&self, pin: usize) -> Option<u64> {
        self.redirection.get(pin).copied()
    }

    /// Snapshot.
    pub fn state(&self) -> IoApicState {
        IoApicState {
            ioregsel: self.ioregsel,
            id: self.id,
            redirection: self.redirection.to_vec(),
            lines: self.lines,
        }
    }

    fn read_reg(&self, reg: u32) -> u32 {
        match reg {
            REG_ID | REG_ARB => self.id,
            REG_VERSION => VERSION,
            r if (REG_REDIR..REG_REDIR + 2 * NUM_PINS as u32).contains(&r) => {
                let rte = self.redirection[((r - REG_REDIR) / 2) as usize];
                if r & 1 == 0 {
                    rte as u32
                } else {
                    (rte >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, reg: u32, val: u32) -> Vec<Delivery> {
        match reg {
            REG_ID => self.id = val & 0x0f00_0000,
            r if (REG_REDIR..REG_REDIR + 2 * NUM_PINS as u32).contains(&r) => {
                let idx = ((r - REG_REDIR) / 2) as usize;
                let old = self.redirection[idx];
                let (lo, hi) = if r & 1 == 0 {
                    (u64::from(val), old & 0xffff_ffff_0000_0000)
                } else {
                    (old & 0xffff_ffff, u64::from(val) << 32)
                };
                let mut new = ((lo | hi) & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                // An edge-triggered entry has no remote IRR. Older Linux clears a
                // stuck remote IRR by switching the entry to edge and back.
                if new & RTE_LEVEL == 0 {
                    new &= !RTE_REMOTE_IRR;
                }
                self.redirection[idx] = new;
                return self.try_deliver_level(idx).into_iter().collect();
            }
            _ => {} // version and arbitration are read-only
        }
        Vec::new()
    }

    /// Delivers a level-triggered pin if asserted, unmasked and not awaiting EOI.
    fn try_deliver_level(&mut self, idx: usize) -> Option<Delivery> {
        let rte = self.redirection[idx];
        if rte & RTE_LEVEL == 0
            || rte & RTE_MASKED != 0
            || rte & RTE_REMOTE_IRR != 0
            || self.lines & (1 << idx) == 0
        {
            return None;
        }
        let d = self.delivery(idx)?;
        self.redirection[idx] |= RTE_REMOTE_IRR;
        Some(d)
    }

    fn delivery(&self, idx: usize) -> Option<Delivery> {
        let rte = self.redirection[idx];
        let Some(delivery_mode) = DeliveryMode::from_bits((rte >> 8) as u32) else {
            tracing::debug!(
                pin = idx,
                "IOAPIC: reserved delivery mode, interrupt dropped"
            );
            return None;
        };
        Some(Delivery {
            vector: rte as u8,
            delivery_mode,
            dest: (rte >> 56) as u32,
            logical: rte & RTE_DEST_LOGICAL != 0,
            level_triggered: rte & RTE_LEVEL != 0,
        })
    }
}

impl vm_device::Persist for IoApic {
    type State = IoApicState;
    type Args = ();

    fn save(&self) -> IoApicState {
        self.state()
    }

    /// A state with another number of pins is refused; ID bits beyond the 4-bit
    /// field and lines beyond the pins are dropped.
    fn restore(_: (), state: &IoApicState) -> Result<Self, vm_device::StateError> {
        let redirection: [u64; NUM_PINS] =
            state.redirection.as_slice().try_into().map_err(|_| {
                vm_device::StateError::new(
                    "ioapic",
                    format!(
                        "{} redirection entries, not {NUM_PINS}",
                        state.redirection.len()
                    ),
                )
            })?;
        Ok(Self {
            ioregsel: state.ioregsel,
            id: state.id & 0x0f00_0000,
            redirection,
            lines: state.lines & ((1 << NUM_PINS) - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_rte(io: &mut IoApic, pin: u32, val: u64) -> Vec<Delivery> {
        io.mmio_write(IOREGSEL, 0x11 + 2 * pin);
        let mut out = io.mmio_write(IOWIN, (val >> 32) as u32);
        io.mmio_write(IOREGSEL, 0x10 + 2 * pin);
        out.extend(io.mmio_write(IOWIN, val as u32));
        out
    }

    fn read_reg(io: &mut IoApic, reg: u32) -> u32 {
        io.mmio_write(IOREGSEL, reg);
        io.mmio_read(IOWIN)
    }

    #[test]
    fn id_version_arbitration() {
        let mut io = IoApic::new(2);
        assert_eq!(read_reg(&mut io, 0), 0x0200_0000);
        assert_eq!(read_reg(&mut io, 1), 0x0017_0020);
        assert_eq!(read_reg(&mut io, 2), 0x0200_0000);
        io.mmio_write(IOREGSEL, 0);
        io.mmio_write(IOWIN, 0xffff_ffff);
        assert_eq!(read_reg(&mut io, 0), 0x0f00_0000);
        io.mmio_write(IOREGSEL, 1);
        io.mmio_write(IOWIN, 0);
        assert_eq!(read_reg(&mut io, 1), VERSION);
        assert_eq!(io.mmio_read(IOREGSEL), 1);
        assert_eq!(read_reg(&mut io, 0x40), 0);
        assert_eq!(io.mmio_read(0x20), 0);
    }

    #[test]
    fn entries_reset_masked_and_read_back() {
        let mut io = IoApic::new(0);
        for pin in 0..24 {
            assert_eq!(read_reg(&mut io, 0x10 + 2 * pin), 1 << 16);
            assert_eq!(read_reg(&mut io, 0x11 + 2 * pin), 0);
        }
        write_rte(&mut io, 5, 0x0300_0000_0000_8931 | (1 << 14) | (1 << 12));
        // Read-only delivery status and remote IRR are not writable.
        assert_eq!(read_reg(&mut io, 0x1a), 0x8931);
        assert_eq!(read_reg(&mut io, 0x1b), 0x0300_0000);
    }

    #[test]
    fn edge_pin_delivers_on_rising_edge_only() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 4, 0x0100_0000_0000_0034);
        let d = io.set_irq(4, true).unwrap();
        assert_eq!(
            d,
            Delivery {
                vector: 0x34,
                delivery_mode: DeliveryMode::Fixed,
                dest: 1,
                logical: false,
                level_triggered: false
            }
        );
        assert_eq!(io.set_irq(4, true), None);
        assert_eq!(io.set_irq(4, false), None);
        assert!(io.set_irq(4, true).is_some());
        assert_eq!(io.set_irq(99, true), None);
    }

    #[test]
    fn masked_edge_is_lost() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 1, 0x1_0031);
        assert_eq!(io.set_irq(1, true), None);
        assert!(write_rte(&mut io, 1, 0x31).is_empty());
        assert_eq!(io.set_irq(1, false), None);
        assert!(io.set_irq(1, true).is_some());
    }

    /// The level-triggered path a PCI INTx device takes with Linux: deliver,
    /// hold remote IRR until the LAPIC EOI comes back, re-deliver if still asserted.
    #[test]
    fn level_pin_eoi_path() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 11, 0x0000_0000_0000_a941); // level, active low, logical, vector 0x41
        let d = io.set_irq(11, true).unwrap();
        assert!(d.level_triggered && d.logical);
        assert_ne!(io.redirection_entry(11).unwrap() & RTE_REMOTE_IRR, 0);
        // No re-delivery while remote IRR is set.
        assert_eq!(io.set_irq(11, true), None);
        // Unrelated vector EOI does nothing.
        assert!(io.eoi(0x42).is_empty());
        // Still asserted at EOI: delivered again.
        let again = io.eoi(0x41);
        assert_eq!(again, vec![d]);
        // Device deasserts; the EOI clears remote IRR without re-delivery.
        io.set_irq(11, false);
        assert!(io.eoi(0x41).is_empty());
        assert_eq!(io.redirection_entry(11).unwrap() & RTE_REMOTE_IRR, 0);
        // EOI register (version 0x20) works the same.
        assert!(io.set_irq(11, true).is_some());
        assert_eq!(io.mmio_write(EOI, 0x41), vec![d]);
    }

    #[test]
    fn unmasking_asserted_level_pin_delivers() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 9, 0x1_8050);
        assert_eq!(io.set_irq(9, true), None);
        let out = write_rte(&mut io, 9, 0x8050);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].vector, 0x50);
        // Rewriting the entry while remote IRR is set does not deliver again.
        assert!(write_rte(&mut io, 9, 0x8050).is_empty());
    }

    #[test]
    fn switching_to_edge_clears_remote_irr() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 3, 0x8060);
        io.set_irq(3, true).unwrap();
        io.set_irq(3, false);
        write_rte(&mut io, 3, 0x1_0060);
        assert_eq!(io.redirection_entry(3).unwrap() & RTE_REMOTE_IRR, 0);
        assert!(write_rte(&mut io, 3, 0x8060).is_empty());
    }

    #[test]
    fn delivery_modes_and_reserved() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 0, 0x700); // ExtINT
        assert_eq!(
            io.set_irq(0, true).unwrap().delivery_mode,
            DeliveryMode::ExtInt
        );
        write_rte(&mut io, 2, 0x400);
        assert_eq!(
            io.set_irq(2, true).unwrap().delivery_mode,
            DeliveryMode::Nmi
        );
        write_rte(&mut io, 6, 0x300);
        assert_eq!(io.set_irq(6, true), None);
    }

    #[test]
    fn state_round_trip() {
        let mut io = IoApic::new(1);
        write_rte(&mut io, 10, 0x0200_0000_0000_8123);
        io.set_irq(10, true).unwrap();
        io.set_irq(7, true);
        io.mmio_write(IOREGSEL, 0x15);
        let json = serde_json::to_string(&io.state()).unwrap();
        let back: IoApicState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, io.state());
        let (a, b) = vm_device::persist::round_trip(&io, ()).unwrap();
        assert_eq!(a, b);
        let mut r = <IoApic as vm_device::Persist>::restore((), &back).unwrap();
        assert_eq!(r.state(), io.state());
        let short = IoApicState {
            redirection: vec![0; 8],
            ..back
        };
        assert!(<IoApic as vm_device::Persist>::restore((), &short).is_err());
        assert_eq!(r.eoi(0x23), io.eoi(0x23));
        assert_eq!(r.mmio_read(IOWIN), io.mmio_read(IOWIN));
    }
}
