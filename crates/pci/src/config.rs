//! A type-0 PCI configuration header with BARs and a capabilities list.
//!
//! Written by hand: the rust-vmm `vm-pci` work is not published as a crate, and
//! the semantics needed here (per-byte write masks, BAR sizing) are small.

use serde::{Deserialize, Serialize};
use vm_device::StateError;

/// Size of the conventional configuration space. The extended space that ECAM
/// reaches (0x100..0x1000) reads as zero (no extended capabilities).
pub const CONFIG_SIZE: usize = 256;
/// Size of one function's ECAM configuration space.
pub const EXT_CONFIG_SIZE: usize = 4096;

/// Command register offset.
pub const COMMAND: usize = 0x04;
/// Status register offset.
pub const STATUS: usize = 0x06;
/// First BAR register.
pub const BAR0: usize = 0x10;
/// Capabilities pointer.
pub const CAP_PTR: usize = 0x34;
/// Interrupt line register.
pub const INTERRUPT_LINE: usize = 0x3c;
/// Interrupt pin register.
pub const INTERRUPT_PIN: usize = 0x3d;

/// Command: I/O space decoding.
pub const CMD_IO: u16 = 1 << 0;
/// Command: memory space decoding.
pub const CMD_MEM: u16 = 1 << 1;
/// Command: bus master.
pub const CMD_BUS_MASTER: u16 = 1 << 2;
/// Command: INTx disable.
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
/// Status: capabilities list present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Status: INTx pending.
pub const STATUS_INTX: u16 = 1 << 3;

const FIRST_CAP: usize = 0x40;

/// Identification of a function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Class code (base class, subclass, programming interface).
    pub class: (u8, u8, u8),
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// What kind of space a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarKind {
    /// I/O ports (32-bit BAR).
    Io,
    /// Memory below 4 GiB (one BAR register).
    Mem32,
    /// Memory anywhere (two BAR registers: this one and the next).
    Mem64,
}

/// Static description of a BAR: its kind and size (a power of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarDef {
    pub kind: BarKind,
    pub size: u64,
    pub prefetchable: bool,
}

/// Errors building a configuration space (programming errors of a device model).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("BAR {0} is out of range, taken or the upper half of a 64-bit BAR")]
    BadBarIndex(usize),
    #[error("BAR size {0:#x} is not a power of two of at least 16 (memory) or 4 (I/O)")]
    BadBarSize(u64),
    #[error("capability of {0} bytes does not fit in configuration space")]
    NoCapabilitySpace(usize),
}

/// Serializable contents of a [`ConfigSpace`] (the register bytes; masks and
/// BAR definitions are rebuilt by the device's constructor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSpaceState {
    pub regs: Vec<u8>,
}

/// A type-0 configuration header plus capabilities.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    regs: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
    w1c: [u8; CONFIG_SIZE],
    bars: [Option<BarDef>; 6],
    last_cap: Option<usize>,
    next_cap: usize,
}

impl ConfigSpace {
    /// A header with the given IDs; everything else zero.
    pub fn new(ids: PciIds) -> Self {
        let mut c = Self {
            regs: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
            w1c: [0; CONFIG_SIZE],
            bars: [None; 6],
            last_cap: None,
            next_cap: FIRST_CAP,
        };
        c.put(0x00, &ids.vendor.to_le_bytes());
        c.put(0x02, &ids.device.to_le_bytes());
        c.regs[0x08] = ids.revision;
        c.regs[0x09] = ids.class.2;
        c.regs[0x0a] = ids.class.1;
        c.regs[0x0b] = ids.class.0;
        c.put(0x2c, &ids.subsystem_vendor.to_le_bytes());
        c.put(0x2e, &ids.subsystem.to_le_bytes());
        let cmd_mask = CMD_IO | CMD_MEM | CMD_BUS_MASTER | CMD_INTX_DISABLE | (1 << 6) | (1 << 8);
        c.wmask[COMMAND..COMMAND + 2].copy_from_slice(&cmd_mask.to_le_bytes());
        // Error bits of the status register are write-one-to-clear.
        c.w1c[STATUS + 1] = 0xf9;
        c.wmask[0x0c] = 0xff; // cache line size
        c.wmask[0x0d] = 0xff; // latency timer
        c.wmask[INTERRUPT_LINE] = 0xff;
        c
    }

    fn put(&mut self, off: usize, bytes: &[u8]) {
        self.regs[off..off + bytes.len()].copy_from_slice(bytes);
    }

    /// Declares BAR `index`; a 64-bit BAR also takes register `index + 1`.
    pub fn add_bar(&mut self, index: usize, def: BarDef) -> Result<(), ConfigError> {
        let slots = if def.kind == BarKind::Mem64 { 2 } else { 1 };
        if index + slots > 6 || (index..index + slots).any(|i| self.bar_slot_used(i)) {
            return Err(ConfigError::BadBarIndex(index));
        }
        let min = if def.kind == BarKind::Io { 4 } else { 16 };
        if !def.size.is_power_of_two()
            || def.size < min
            || (def.kind != BarKind::Mem64 && def.size > 1 << 31)
        {
            return Err(ConfigError::BadBarSize(def.size));
        }
        self.bars[index] = Some(def);
        let off = BAR0 + 4 * index;
        let flags = bar_flags(def);
        self.put(off, &flags.to_le_bytes());
        Ok(())
    }

    fn bar_slot_used(&self, i: usize) -> bool {
        self.bars[i].is_some()
            || (i > 0 && matches!(self.bars[i - 1], Some(d) if d.kind == BarKind::Mem64))
    }

    /// The declared BARs, by index.
    pub fn bar_defs(&self) -> Vec<(usize, BarDef)> {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.map(|d| (i, d)))
            .collect()
    }

    /// Current address programmed into BAR `index` (flags stripped).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let def = (*self.bars.get(index)?)?;
        let lo = u64::from(self.dword(BAR0 + 4 * index));
        Some(match def.kind {
            BarKind::Io => lo & !0x3,
            BarKind::Mem32 => lo & !0xf,
            BarKind::Mem64 => (lo & !0xf) | (u64::from(self.dword(BAR0 + 4 * index + 4)) << 32),
        })
    }

    /// Programs BAR `index` (as firmware would before the guest boots).
    pub fn set_bar_address(&mut self, index: usize, addr: u64) {
        let Some(Some(def)) = self.bars.get(index).copied() else {
            return;
        };
        let lo = (addr as u32 & !(def.size.saturating_sub(1) as u32)) | bar_flags(def);
        self.put(BAR0 + 4 * index, &lo.to_le_bytes());
        if def.kind == BarKind::Mem64 {
            let hi = ((addr & !(def.size - 1)) >> 32) as u32;
            self.put(BAR0 + 4 * index + 4, &hi.to_le_bytes());
        }
    }

    /// Command register.
    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.regs[COMMAND], self.regs[COMMAND + 1]])
    }

    /// Sets command register bits (firmware-style enabling).
    pub fn set_command(&mut self, cmd: u16) {
        self.put(COMMAND, &cmd.to_le_bytes());
    }

    /// Sets or clears status register bits the device owns (e.g. INTx pending).
    pub fn set_status_bits(&mut self, bits: u16, on: bool) {
        let mut s = u16::from_le_bytes([self.regs[STATUS], self.regs[STATUS + 1]]);
        if on {
            s |= bits
        } else {
            s &= !bits
        }
        self.put(STATUS, &s.to_le_bytes());
    }

    /// Sets the interrupt pin (1 = INTA) and line registers.
    pub fn set_interrupt(&mut self, pin: u8, line: u8) {
        self.regs[INTERRUPT_PIN] = pin;
        self.regs[INTERRUPT_LINE] = line;
    }

    /// The BAR ranges the device currently decodes: enabled in the command
    /// register, with a non-zero address.
    pub fn decoded_bars(&self) -> Vec<crate::BarRange> {
        let cmd = self.command();
        let mut v = Vec::new();
        for (i, def) in self.bar_defs() {
            let enabled = match def.kind {
                BarKind::Io => cmd & CMD_IO != 0,
                _ => cmd & CMD_MEM != 0,
            };
            let base = self.bar_address(i).unwrap_or(0);
            if enabled && base != 0 {
                v.push(crate::BarRange {
                    index: i as u8,
                    kind: def.kind,
                    base,
                    size: def.size,
                });
            }
        }
        v
    }

    /// Appends a capability (`body[0]` is its ID; `body[1]`, the next pointer, is
    /// filled in). `writable` is a per-byte write mask of the same length (or shorter).
    /// Returns the capability's offset.
    pub fn add_capability(&mut self, body: &[u8], writable: &[u8]) -> Result<usize, ConfigError> {
        let off = self.next_cap;
        if body.len() < 2 || off + body.len() > CONFIG_SIZE {
            return Err(ConfigError::NoCapabilitySpace(body.len()));
        }
        self.put(off, body);
        self.regs[off + 1] = 0;
        for (i, m) in writable.iter().enumerate().take(body.len()) {
            self.wmask[off + i] = *m;
        }
        self.wmask[off] = 0;
        self.wmask[off + 1] = 0;
        match self.last_cap {
            None => self.regs[CAP_PTR] = off as u8,
            Some(prev) => self.regs[prev + 1] = off as u8,
        }
        self.set_status_bits(STATUS_CAP_LIST, true);
        self.last_cap = Some(off);
        self.next_cap = (off + body.len()).div_ceil(4) * 4;
        Ok(off)
    }

    /// Reads a little-endian dword (no side effects).
    pub fn dword(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(off as u64, &mut b);
        u32::from_le_bytes(b)
    }

    /// Raw bytes of the header (for device models that store state in capabilities).
    pub fn bytes(&self) -> &[u8] {
        &self.regs
    }

    /// Overwrites bytes the device owns (read-only to the guest), e.g. a capability field.
    pub fn set_bytes(&mut self, off: usize, data: &[u8]) {
        if off + data.len() <= CONFIG_SIZE {
            self.put(off, data);
        }
    }

    /// A guest read; offsets past the conventional space read as zero.
    pub fn read(&self, off: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = off as usize + i;
            *b = if o < CONFIG_SIZE { self.regs[o] } else { 0 };
        }
    }

    /// A guest write: honours write masks, write-one-to-clear bits and BAR sizing.
    pub fn write(&mut self, off: u64, data: &[u8]) {
        let off = off as usize;
        for (i, &v) in data.iter().enumerate() {
            let o = off + i;
            if o >= CONFIG_SIZE {
                break;
            }
            if (BAR0..BAR0 + 24).contains(&o) {
                continue;
            }
            self.regs[o] = (self.regs[o] & !self.wmask[o]) | (v & self.wmask[o]);
            self.regs[o] &= !(v & self.w1c[o]);
        }
        // BARs: merge the written bytes into each touched register, then mask.
        for reg in 0..6 {
            let r = BAR0 + 4 * reg;
            if off + data.len() <= r || off >= r + 4 {
                continue;
            }
            let mut cur = self.regs[r..r + 4].to_vec();
            for (i, &v) in data.iter().enumerate() {
                if let Some(j) = (off + i).checked_sub(r).filter(|j| *j < 4) {
                    cur[j] = v;
                }
            }
            let val = u32::from_le_bytes([cur[0], cur[1], cur[2], cur[3]]);
            self.write_bar_reg(reg, val);
        }
    }

    fn write_bar_reg(&mut self, reg: usize, val: u32) {
        let r = BAR0 + 4 * reg;
        let new = if let Some(def) = self.bars[reg] {
            (val & !(def.size.saturating_sub(1) as u32)) | bar_flags(def)
        } else if reg > 0 && matches!(self.bars[reg - 1], Some(d) if d.kind == BarKind::Mem64) {
            let def = self.bars[reg - 1].unwrap_or(BarDef {
                kind: BarKind::Mem64,
                size: 16,
                prefetchable: false,
            });
            val & !(((def.size - 1) >> 32) as u32)
        } else {
            0 // unimplemented BAR: reads as zero, sizing returns 0
        };
        self.put(r, &new.to_le_bytes());
    }

    /// Snapshot of the register bytes.
    pub fn state(&self) -> ConfigSpaceState {
        ConfigSpaceState {
            regs: self.regs.to_vec(),
        }
    }

    /// Loads register bytes saved by [`state`](Self::state) into a space built the same
    /// way: the identity (vendor, device, revision, class, subsystem) and the header
    /// type must match, or the state belongs to another function.
    pub fn load(&mut self, s: &ConfigSpaceState) -> Result<(), StateError> {
        if s.regs.len() != CONFIG_SIZE {
            return Err(StateError::new(
                "pci-config",
                format!("{} bytes, not {CONFIG_SIZE}", s.regs.len()),
            ));
        }
        let same = |r: std::ops::Range<usize>| s.regs[r.clone()] == self.regs[r];
        if !(same(0..4) && same(8..12) && same(14..15) && same(0x2c..0x30)) {
            return Err(StateError::new(
                "pci-config",
                "the saved function has another identity",
            ));
        }
        self.regs.copy_from_slice(&s.regs);
        Ok(())
    }
}

fn bar_flags(def: BarDef) -> u32 {
    match def.kind {
        BarKind::Io => 0x1,
        BarKind::Mem32 => u32::from(def.prefetchable) << 3,
        BarKind::Mem64 => 0x4 | (u32::from(def.prefetchable) << 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        let mut c = ConfigSpace::new(PciIds {
            vendor: 0x1af4,
            device: 0x1042,
            class: (1, 0, 0),
            ..Default::default()
        });
        c.add_bar(
            0,
            BarDef {
                kind: BarKind::Mem64,
                size: 0x8000,
                prefetchable: false,
            },
        )
        .unwrap();
        c.add_bar(
            2,
            BarDef {
                kind: BarKind::Mem32,
                size: 0x1000,
                prefetchable: true,
            },
        )
        .unwrap();
        c.add_bar(
            3,
            BarDef {
                kind: BarKind::Io,
                size: 0x20,
                prefetchable: false,
            },
        )
        .unwrap();
        c
    }

    #[test]
    fn bar_sizing_returns_size_masks() {
        let mut c = space();
        for r in 0..6 {
            c.write((BAR0 + 4 * r) as u64, &[0xff; 4]);
        }
        assert_eq!(c.dword(BAR0), 0xffff_8004);
        assert_eq!(c.dword(BAR0 + 4), 0xffff_ffff);
        assert_eq!(c.dword(BAR0 + 8), 0xffff_f008);
        assert_eq!(c.dword(BAR0 + 12), 0xffff_ffe1);
        assert_eq!(c.dword(BAR0 + 16), 0);
        assert_eq!(c.dword(BAR0 + 20), 0);
        // Reprogram: the address is taken, low bits masked to the size.
        c.write(BAR0 as u64, &0xc000_1234u32.to_le_bytes());
        c.write((BAR0 + 4) as u64, &0x1u32.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0x1_c000_0000));
        // Byte-wide write into a BAR merges with the rest.
        c.write((BAR0 + 8 + 3) as u64, &[0xd0]);
        assert_eq!(c.bar_address(2), Some(0xd000_0000 | 0x00ff_f000));
    }

    #[test]
    fn decoded_bars_follow_command_register() {
        let mut c = space();
        c.set_bar_address(0, 0xc000_0000);
        c.set_bar_address(3, 0xc020);
        assert!(c.decoded_bars().is_empty());
        c.write(COMMAND as u64, &CMD_MEM.to_le_bytes());
        let d = c.decoded_bars();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].index, d[0].base, d[0].size), (0, 0xc000_0000, 0x8000));
        c.write(COMMAND as u64, &(CMD_MEM | CMD_IO).to_le_bytes());
        assert_eq!(c.decoded_bars().len(), 2);
    }

    #[test]
    fn read_only_fields_and_capability_list() {
        let mut c = space();
        c.write(0, &[0, 0, 0, 0]);
        assert_eq!(c.dword(0), 0x1042_1af4);
        let a = c
            .add_capability(&[0x09, 0xff, 4, 7], &[0, 0, 0, 0xff])
            .unwrap();
        let b = c.add_capability(&[0x11, 0, 0, 0, 0, 0], &[]).unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x44);
        assert_eq!(c.bytes()[CAP_PTR], 0x40);
        assert_eq!(c.bytes()[0x41], 0x44);
        assert_eq!(c.bytes()[0x45], 0);
        assert_ne!(c.dword(STATUS) & u32::from(STATUS_CAP_LIST), 0);
        c.write(0x42, &[9, 9]);
        assert_eq!(&c.bytes()[0x42..0x44], &[4, 9]);
        let mut ext = [1u8; 4];
        c.read(0x100, &mut ext);
        assert_eq!(ext, [0; 4]);
    }

    #[test]
    fn rejects_bad_bars() {
        let mut c = space();
        assert_eq!(
            c.add_bar(
                1,
                BarDef {
                    kind: BarKind::Mem32,
                    size: 0x1000,
                    prefetchable: false
                }
            ),
            Err(ConfigError::BadBarIndex(1))
        );
        assert_eq!(
            c.add_bar(
                4,
                BarDef {
                    kind: BarKind::Mem32,
                    size: 0x1001,
                    prefetchable: false
                }
            ),
            Err(ConfigError::BadBarSize(0x1001))
        );
    }

    #[test]
    fn state_round_trip() {
        let mut c = space();
        c.set_bar_address(0, 0xc000_0000);
        c.set_command(CMD_MEM);
        let s = c.state();
        let json = serde_json::to_string(&s).unwrap();
        let mut d = space();
        d.load(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(d.decoded_bars(), c.decoded_bars());
        assert_eq!(d.state(), s);
        // Another function's registers, or a short image, do not load.
        let mut other = s.clone();
        other.regs[2] ^= 1; // device ID
        assert!(d.load(&other).is_err());
        other.regs.truncate(64);
        assert!(d.load(&other).is_err());
        assert_eq!(
            d.state(),
            s,
            "a refused state leaves the registers as they were"
        );
    }
}
