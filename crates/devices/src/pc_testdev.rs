//! QEMU's `pc-testdev`, the device CPU and interrupt-controller test suites
//! written for QEMU (kvm-unit-tests) poke at. Its regions, at fixed addresses:
//!
//! | where | what |
//! |---|---|
//! | ports 0xE0-0xE3 | a 32-bit scratch register: an access of N bytes at port 0xE0+k reads or writes bytes k..k+N of it |
//! | ports 0xE4-0xE7 | "flush page": a 32-bit write of a guest-physical address asks the host to drop and remake its mapping of that page; reads 0 |
//! | ports 0xE8-0xEB | the same scratch register, for byte-by-byte access |
//! | ports 0x2000-0x2017 | IRQ lines: a 1-byte write of V to 0x2000+n drives ISA/IOAPIC line n high (V != 0) or low; reads 0 |
//! | MMIO 0xFF00_0000, 64 KiB | memory that is not RAM: reads return what was written (zero at first), any width |
//!
//! The flush-page port exists so a test can make KVM's MMU notifiers run; guest
//! memory keeps its contents either way, so here it is accepted and does nothing
//! (making host mappings inaccessible under a running emulator thread would fault
//! the VMM itself).

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_device::bus::lock;
use vm_device::{BusDevice, IrqLine, Persist, StateError};

pub const SCRATCH_PORT: u16 = 0xe0;
pub const FLUSH_PAGE_PORT: u16 = 0xe4;
pub const SCRATCH_BYTE_PORT: u16 = 0xe8;
pub const IRQ_PORT: u16 = 0x2000;
/// Interrupt lines the IRQ range drives (0..24: the IOAPIC's pins).
pub const IRQ_LINES: u16 = 24;
pub const IOMEM_BASE: u64 = 0xff00_0000;
pub const IOMEM_LEN: u64 = 0x1_0000;

/// Serializable device state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcTestdevState {
    pub scratch: u32,
    /// The MMIO window's contents ([`IOMEM_LEN`] bytes).
    pub iomem: Vec<u8>,
}

/// The state machine. Its regions reach the buses through [`PcTestdevRegion`].
pub struct PcTestdev {
    scratch: u32,
    iomem: Vec<u8>,
    /// Line n of the IRQ range.
    irqs: Vec<Arc<dyn IrqLine>>,
}

/// Which of the device's regions an access hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Scratch,
    FlushPage,
    ScratchBytes,
    Irq,
    Iomem,
}

impl Region {
    /// Every region with its bus (true: port I/O) and range.
    pub const ALL: [(Region, bool, u64, u64); 5] = [
        (Region::Scratch, true, SCRATCH_PORT as u64, 4),
        (Region::FlushPage, true, FLUSH_PAGE_PORT as u64, 4),
        (Region::ScratchBytes, true, SCRATCH_BYTE_PORT as u64, 4),
        (Region::Irq, true, IRQ_PORT as u64, IRQ_LINES as u64),
        (Region::Iomem, false, IOMEM_BASE, IOMEM_LEN),
    ];
}

impl Persist for PcTestdev {
    type State = PcTestdevState;
    /// The IRQ lines, as for [`PcTestdev::new`].
    type Args = Vec<Arc<dyn IrqLine>>;

    fn save(&self) -> PcTestdevState {
        PcTestdevState {
            scratch: self.scratch,
            iomem: self.iomem.clone(),
        }
    }

    fn restore(irqs: Self::Args, state: &PcTestdevState) -> Result<Self, StateError> {
        if state.iomem.len() != IOMEM_LEN as usize {
            return Err(StateError::new(
                "pc-testdev",
                format!("I/O memory of {} bytes, not {IOMEM_LEN}", state.iomem.len()),
            ));
        }
        Ok(PcTestdev {
            scratch: state.scratch,
            iomem: state.iomem.clone(),
            irqs,
        })
    }
}

impl PcTestdev {
    /// `irqs[n]` is the line a write to port 0x2000+n drives; missing lines are ignored.
    pub fn new(irqs: Vec<Arc<dyn IrqLine>>) -> Self {
        PcTestdev {
            scratch: 0,
            iomem: vec![0; IOMEM_LEN as usize],
            irqs,
        }
    }

    pub fn read(&mut self, region: Region, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match region {
            Region::Scratch | Region::ScratchBytes => {
                let reg = self.scratch.to_le_bytes();
                let k = (offset & 3) as usize;
                for (d, s) in data.iter_mut().zip(&reg[k..]) {
                    *d = *s;
                }
            }
            Region::FlushPage | Region::Irq => {}
            Region::Iomem => {
                if let Some(src) = range(&self.iomem, offset, data.len()) {
                    data.copy_from_slice(src);
                }
            }
        }
    }

    pub fn write(&mut self, region: Region, offset: u64, data: &[u8]) {
        match region {
            Region::Scratch | Region::ScratchBytes => {
                let mut reg = self.scratch.to_le_bytes();
                let k = (offset & 3) as usize;
                for (d, s) in reg[k..].iter_mut().zip(data) {
                    *d = *s;
                }
                self.scratch = u32::from_le_bytes(reg);
            }
            Region::FlushPage => {
                tracing::debug!(?data, "pc-testdev: flush page (nothing to do)");
            }
            Region::Irq => {
                // One byte per line, as on QEMU; wider accesses are not valid there.
                if let ([v], Some(line)) = (data, self.irqs.get(offset as usize)) {
                    line.set_level(*v != 0);
                }
            }
            Region::Iomem => {
                let len = data.len();
                if let Some(dst) = range_mut(&mut self.iomem, offset, len) {
                    dst.copy_from_slice(data);
                }
            }
        }
    }
}

fn range(b: &[u8], offset: u64, len: usize) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    b.get(start..start.checked_add(len)?)
}

fn range_mut(b: &mut [u8], offset: u64, len: usize) -> Option<&mut [u8]> {
    let start = usize::try_from(offset).ok()?;
    b.get_mut(start..start.checked_add(len)?)
}

/// One region of a shared [`PcTestdev`] as a bus device.
pub struct PcTestdevRegion {
    pub dev: Arc<Mutex<PcTestdev>>,
    pub region: Region,
}

impl BusDevice for PcTestdevRegion {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.dev).read(self.region, offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.dev).write(self.region, offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Level(Mutex<Vec<bool>>);
    impl IrqLine for Level {
        fn set_level(&self, level: bool) {
            self.0.lock().unwrap().push(level);
        }
    }

    fn read(d: &mut PcTestdev, r: Region, off: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0xaa; n];
        d.read(r, off, &mut v);
        v
    }

    #[test]
    fn scratch_register_by_width_and_by_byte() {
        let mut d = PcTestdev::new(Vec::new());
        d.write(Region::Scratch, 0, &0x1234_5678u32.to_le_bytes());
        assert_eq!(
            read(&mut d, Region::Scratch, 0, 4),
            [0x78, 0x56, 0x34, 0x12]
        );
        assert_eq!(read(&mut d, Region::Scratch, 2, 2), [0x34, 0x12]);
        assert_eq!(read(&mut d, Region::ScratchBytes, 1, 1), [0x56]);
        d.write(Region::ScratchBytes, 3, &[0xab]);
        d.write(Region::Scratch, 0, &[0xcd]);
        assert_eq!(d.save().scratch, 0xab34_56cd);
        // A 4-byte access at offset 3 touches only the bytes the register has.
        d.write(Region::Scratch, 3, &[1, 2, 3, 4]);
        assert_eq!(d.save().scratch, 0x0134_56cd);
        assert_eq!(read(&mut d, Region::Scratch, 3, 4), [1, 0, 0, 0]);
    }

    #[test]
    fn irq_range_drives_the_lines() {
        let lines: Vec<Arc<Level>> = (0..IRQ_LINES).map(|_| Arc::new(Level::default())).collect();
        let mut d = PcTestdev::new(
            lines
                .iter()
                .map(|l| l.clone() as Arc<dyn IrqLine>)
                .collect(),
        );
        d.write(Region::Irq, 5, &[1]);
        d.write(Region::Irq, 5, &[0]);
        d.write(Region::Irq, 23, &[0x80]);
        d.write(Region::Irq, 7, &[1, 0]); // too wide: ignored
        assert_eq!(*lines[5].0.lock().unwrap(), [true, false]);
        assert_eq!(*lines[23].0.lock().unwrap(), [true]);
        assert!(lines[7].0.lock().unwrap().is_empty());
        assert_eq!(read(&mut d, Region::Irq, 5, 1), [0]);
    }

    #[test]
    fn iomem_keeps_what_is_written_and_round_trips_its_state() {
        let mut d = PcTestdev::new(Vec::new());
        assert_eq!(read(&mut d, Region::Iomem, 0x100, 8), [0; 8]);
        d.write(
            Region::Iomem,
            0x100,
            &0x1122_3344_5566_7788u64.to_le_bytes(),
        );
        d.write(Region::Iomem, 0xffff, &[0x99]);
        d.write(Region::Iomem, 0xfffe, &[1, 2, 3, 4]); // runs past the end: ignored
        assert_eq!(read(&mut d, Region::Iomem, 0x102, 2), [0x66, 0x55]);
        assert_eq!(read(&mut d, Region::Iomem, 0xffff, 1), [0x99]);
        assert_eq!(read(&mut d, Region::FlushPage, 0, 4), [0; 4]);
        d.write(Region::FlushPage, 0, &0x10_0000u32.to_le_bytes());
        let (a, b) = vm_device::persist::round_trip(&d, Vec::new()).unwrap();
        assert_eq!(a, b);
        let short = PcTestdevState {
            iomem: vec![0; 16],
            ..d.save()
        };
        assert!(PcTestdev::restore(Vec::new(), &short).is_err());
    }
}
