//! The PC's cascaded pair of Intel 8259A programmable interrupt controllers.
//!
//! The master (ports 0x20/0x21) takes IRQ0-7, the slave (0xA0/0xA1) IRQ8-15
//! and its INT output drives master IR2. The edge/level control registers
//! (ELCR, ports 0x4D0/0x4D1, from the PIIX/ICH south bridges) choose the
//! trigger mode per IRQ.
//!
//! Facts from the Intel 8259A data sheet: ICW1 (A0=0, D4=1) starts
//! initialisation, clears IMR and ISR, gives IR7 the lowest priority, clears
//! special mask mode and selects IRR for reads; ICW2..ICW4 follow on the data
//! port. OCW2 (A0=0, D4=0, D3=0) does EOIs, rotation and priority setting;
//! OCW3 (A0=0, D4=0, D3=1) selects IRR/ISR reads, poll mode and special mask
//! mode; OCW1 (A0=1) is the IMR.

use serde::{Deserialize, Serialize};

/// Master command/status port.
pub const MASTER_CMD: u16 = 0x20;
/// Master data (IMR) port.
pub const MASTER_DATA: u16 = 0x21;
/// Slave command/status port.
pub const SLAVE_CMD: u16 = 0xa0;
/// Slave data (IMR) port.
pub const SLAVE_DATA: u16 = 0xa1;
/// ELCR for IRQ0-7.
pub const ELCR_MASTER: u16 = 0x4d0;
/// ELCR for IRQ8-15.
pub const ELCR_SLAVE: u16 = 0x4d1;

/// The master input the slave's INT output is wired to.
const CASCADE_IR: u8 = 2;
/// IRQ0, 1, 2 (master) and IRQ8, 13 (slave) are always edge-triggered on PIIX.
const ELCR_MASK_MASTER: u8 = 0xf8;
const ELCR_MASK_SLAVE: u8 = 0xde;

/// Which initialisation command word the chip expects next on its data port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum InitStep {
    /// Not initialising: data-port writes set the IMR.
    #[default]
    Ready,
    /// ICW2 (vector base) next.
    Icw2,
    /// ICW3 (cascade wiring) next.
    Icw3,
    /// ICW4 (mode) next.
    Icw4,
}

/// The full state of one 8259A; also its snapshot form. `Default` is the
/// power-up state (uninitialised, nothing masked, IR7 lowest priority).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicChipState {
    /// Interrupt request register.
    pub irr: u8,
    /// In-service register.
    pub isr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// Current input line levels (edge detection, level-mode IRR).
    pub lines: u8,
    /// Edge/level control register: 1 = level-triggered.
    pub elcr: u8,
    /// IR with the lowest priority (rotation); the next one up is highest.
    pub lowest_priority: u8,
    /// Vector base from ICW2 (bits 7:3).
    pub vector_base: u8,
    /// ICW3 as written (slave mask on the master, cascade ID on the slave).
    pub icw3: u8,
    /// Initialisation progress.
    pub init_step: InitStep,
    /// ICW1 said an ICW4 follows.
    pub icw4_needed: bool,
    /// ICW1 single mode (no ICW3).
    pub single: bool,
    /// ICW4 automatic EOI.
    pub auto_eoi: bool,
    /// Rotate priority on automatic EOI (OCW2 R=1, SL=0, EOI=0).
    pub rotate_on_auto_eoi: bool,
    /// ICW4 special fully nested mode.
    pub special_fully_nested: bool,
    /// OCW3: reads of the command port return ISR instead of IRR.
    pub read_isr: bool,
    /// OCW3 poll command pending: the next command-port read is a poll.
    pub poll: bool,
    /// OCW3 special mask mode.
    pub special_mask: bool,
}

impl Default for PicChipState {
    fn default() -> Self {
        Self {
            irr: 0,
            isr: 0,
            imr: 0,
            lines: 0,
            elcr: 0,
            lowest_priority: 7,
            vector_base: 0,
            icw3: 0,
            init_step: InitStep::Ready,
            icw4_needed: false,
            single: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            read_isr: false,
            poll: false,
            special_mask: false,
        }
    }
}

impl PicChipState {
    fn priority(&self, irq: u8) -> u8 {
        irq.wrapping_sub(self.lowest_priority).wrapping_sub(1) & 7
    }

    /// The set bit of `bits` with the highest priority.
    fn highest(&self, bits: u8) -> Option<u8> {
        (0..8u8)
            .map(|p| (self.lowest_priority.wrapping_add(1).wrapping_add(p)) & 7)
            .find(|&irq| bits & (1 << irq) != 0)
    }

    /// The request this chip would present on INT, if any.
    fn pending(&self, is_master: bool) -> Option<u8> {
        let irq = self.highest(self.irr & !self.imr)?;
        let mut blocking = self.isr;
        if self.special_mask {
            blocking &= !self.imr;
        }
        if is_master && self.special_fully_nested {
            blocking &= !(1 << CASCADE_IR);
        }
        match self.highest(blocking) {
            Some(cur) if self.priority(cur) <= self.priority(irq) => None,
            _ => Some(irq),
        }
    }

    fn set_line(&mut self, irq: u8, level: bool) {
        let bit = 1u8 << (irq & 7);
        if self.elcr & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.lines & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// The cascade input of the master follows the slave's INT like a level.
    fn set_cascade(&mut self, level: bool) {
        let bit = 1u8 << CASCADE_IR;
        if level {
            self.irr |= bit;
            self.lines |= bit;
        } else {
            self.irr &= !bit;
            self.lines &= !bit;
        }
    }

    /// INTA on this chip: `Some(irq)` it delivered, `None` for spurious.
    fn ack(&mut self, is_master: bool) -> Option<u8> {
        let irq = self.pending(is_master)?;
        let bit = 1u8 << irq;
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.lowest_priority = irq;
            }
        } else {
            self.isr |= bit;
        }
        Some(irq)
    }

    fn write_cmd(&mut self, val: u8) {
        if val & 0x10 != 0 {
            // ICW1. Edge sense is reset: only lines that rise from now on request.
            self.imr = 0;
            self.isr = 0;
            self.irr &= self.elcr & self.lines;
            self.lowest_priority = 7;
            self.special_mask = false;
            self.read_isr = false;
            self.poll = false;
            self.auto_eoi = false;
            self.rotate_on_auto_eoi = false;
            self.special_fully_nested = false;
            self.icw4_needed = val & 0x01 != 0;
            self.single = val & 0x02 != 0;
            if val & 0x08 != 0 {
                tracing::debug!(
                    "8259A: ICW1 LTIM (level mode for all inputs) ignored; ELCR decides"
                );
            }
            self.init_step = InitStep::Icw2;
        } else if val & 0x08 != 0 {
            // OCW3.
            self.poll = val & 0x04 != 0;
            if val & 0x02 != 0 {
                self.read_isr = val & 0x01 != 0;
            }
            if val & 0x40 != 0 {
                self.special_mask = val & 0x20 != 0;
            }
        } else {
            // OCW2.
            let level = val & 7;
            match val >> 5 {
                0 => self.rotate_on_auto_eoi = false,
                4 => self.rotate_on_auto_eoi = true,
                1 | 5 => {
                    if let Some(irq) = self.highest(self.isr) {
                        self.isr &= !(1 << irq);
                        if val >> 5 == 5 {
                            self.lowest_priority = irq;
                        }
                    }
                }
                3 => self.isr &= !(1 << level),
                7 => {
                    self.isr &= !(1 << level);
                    self.lowest_priority = level;
                }
                6 => self.lowest_priority = level,
                _ => {} // 010: no operation
            }
        }
    }

    fn write_data(&mut self, val: u8) {
        match self.init_step {
            InitStep::Ready => self.imr = val,
            InitStep::Icw2 => {
                self.vector_base = val & 0xf8;
                self.init_step = if !self.single {
                    InitStep::Icw3
                } else if self.icw4_needed {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw3 => {
                self.icw3 = val;
                self.init_step = if self.icw4_needed {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw4 => {
                if val & 0x01 == 0 {
                    tracing::debug!("8259A: ICW4 MCS-80/85 mode requested; running in 8086 mode");
                }
                self.auto_eoi = val & 0x02 != 0;
                self.special_fully_nested = val & 0x10 != 0;
                self.init_step = InitStep::Ready;
            }
        }
    }

    fn read_cmd(&mut self, is_master: bool) -> u8 {
        if self.poll {
            self.poll = false;
            return match self.ack(is_master) {
                Some(irq) => 0x80 | irq,
                None => 0,
            };
        }
        if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }
}

/// Snapshot of a [`PicPair`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PicState {
    /// The master chip (IRQ0-7).
    pub master: PicChipState,
    /// The slave chip (IRQ8-15).
    pub slave: PicChipState,
}

/// Master and slave 8259A in the PC cascade, with the ELCR.
#[derive(Debug, Clone, Default)]
pub struct PicPair {
    master: PicChipState,
    slave: PicChipState,
}

impl PicPair {
    /// Both chips in their power-up state (uninitialised, all unmasked, all edge).
    pub fn new() -> Self {
        Self::default()
    }

    /// Guest read of `port` (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1); other ports read 0xFF.
    pub fn io_read(&mut self, port: u16) -> u8 {
        let v = match port {
            MASTER_CMD => {
                // A poll of the master that selects the cascade input also
                // performs the slave's INTA, as the hardware's cascade does.
                let was_poll = self.master.poll;
                let v = self.master.read_cmd(true);
                if was_poll && v == 0x80 | CASCADE_IR && !self.master.single {
                    self.slave.ack(false);
                }
                v
            }
            MASTER_DATA => self.master.imr,
            SLAVE_CMD => self.slave.read_cmd(false),
            SLAVE_DATA => self.slave.imr,
            ELCR_MASTER => self.master.elcr,
            ELCR_SLAVE => self.slave.elcr,
            _ => 0xff,
        };
        self.update_cascade();
        v
    }

    /// Guest write of `val` to `port`; writes to other ports are ignored.
    pub fn io_write(&mut self, port: u16, val: u8) {
        match port {
            MASTER_CMD => self.master.write_cmd(val),
            MASTER_DATA => self.master.write_data(val),
            SLAVE_CMD => self.slave.write_cmd(val),
            SLAVE_DATA => self.slave.write_data(val),
            ELCR_MASTER => self.master.elcr = val & ELCR_MASK_MASTER,
            ELCR_SLAVE => self.slave.elcr = val & ELCR_MASK_SLAVE,
            _ => {}
        }
        self.update_cascade();
    }

    /// Drives input `irq` (0-15) to `level`. Edge-triggered inputs request on a
    /// rising edge; level-triggered (ELCR) inputs request while high. IRQ2 is
    /// the cascade and cannot be driven from outside; out-of-range IRQs are ignored.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 if irq != CASCADE_IR => self.master.set_line(irq, level),
            8..=15 => self.slave.set_line(irq - 8, level),
            _ => return,
        }
        self.update_cascade();
    }

    /// The master's INT output: an interrupt is waiting for an INTA cycle.
    pub fn has_interrupt(&self) -> bool {
        self.master.pending(true).is_some()
    }

    /// The INTA cycle: returns the vector, moving the request from IRR to ISR
    /// (unless in auto-EOI). With nothing to deliver it returns the spurious
    /// vector of IR7 (master) or IR15 (slave, when the master selected the
    /// cascade), without setting their ISR bits, as the 8259A does.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.ack(true) {
            Some(CASCADE_IR) if !self.master.single => match self.slave.ack(false) {
                Some(irq) => self.slave.vector_base | irq,
                None => self.slave.vector_base | 7,
            },
            Some(irq) => self.master.vector_base | irq,
            None => self.master.vector_base | 7,
        };
        self.update_cascade();
        vector
    }

    /// Snapshot of both chips.
    pub fn state(&self) -> PicState {
        PicState {
            master: self.master.clone(),
            slave: self.slave.clone(),
        }
    }

    fn update_cascade(&mut self) {
        let out = self.slave.pending(false).is_some();
        self.master.set_cascade(out);
    }
}

#[cfg(test)]
#[path = "pic_tests.rs"]
mod tests;

impl vm_device::Persist for PicPair {
    type State = PicState;
    type Args = ();

    fn save(&self) -> PicState {
        self.state()
    }

    /// Bits no 8259A holds (ELCR bits of edge-only lines, a priority above 7) are
    /// cleared, as the hardware would read them back.
    fn restore(_: (), state: &PicState) -> Result<Self, vm_device::StateError> {
        let mut p = Self {
            master: state.master.clone(),
            slave: state.slave.clone(),
        };
        p.master.lowest_priority &= 7;
        p.slave.lowest_priority &= 7;
        p.master.elcr &= ELCR_MASK_MASTER;
        p.slave.elcr &= ELCR_MASK_SLAVE;
        p.update_cascade();
        Ok(p)
    }
}
