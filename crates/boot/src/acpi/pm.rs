//! The ACPI fixed-hardware PM block: PM1a event/control registers, the PM
//! timer and the reset register, as one port-I/O [`BusDevice`].
//!
//! Register it at [`PM_IO_BASE`] (0x600), length [`PM_IO_LEN`]:
//!
//! | port | register |
//! |---|---|
//! | 0x600 | PM1a_STS (16 bit, write 1 to clear; PWRBTN_STS = bit 8) |
//! | 0x602 | PM1a_EN (16 bit; PWRBTN_EN = bit 8) |
//! | 0x604 | PM1a_CNT (16 bit; SCI_EN always set; SLP_TYP bits 10-12, SLP_EN bit 13) |
//! | 0x608 | PM_TMR (32 bit, 3.579545 MHz) |
//! | 0x60C | reset register (write [`RESET_VALUE`]) |
//!
//! Writing SLP_EN with SLP_TYP = [`S5_SLP_TYP`] reports [`PowerEvent::PowerOff`];
//! writing the reset value reports [`PowerEvent::Reset`]. The SCI (IRQ 9,
//! level, active high) is raised while an enabled status bit is set, which
//! [`PmDevice::press_power_button`] does for an ACPI shutdown request from the host.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vm_device::{BusDevice, IrqLine, Persist, StateError};

/// Default base port of the PM block.
pub const PM_IO_BASE: u16 = 0x600;
/// Ports covered by the PM block.
pub const PM_IO_LEN: u16 = 0x10;
/// Default SCI interrupt.
pub const SCI_IRQ: u8 = 9;
/// PM1a_STS offset (PM1a_EN follows at +2).
pub const PM1_STS: u16 = 0;
/// PM1a_EN offset.
pub const PM1_EN: u16 = 2;
/// PM1a_CNT offset.
pub const PM1_CNT: u16 = 4;
/// PM_TMR offset.
pub const PM_TMR: u16 = 8;
/// Reset register offset.
pub const RESET: u16 = 0xc;
/// Value the FADT tells the OS to write to the reset register.
pub const RESET_VALUE: u8 = 0x06;
/// SLP_TYP value of S5 (soft off), as the DSDT's `\_S5` package says.
pub const S5_SLP_TYP: u8 = 5;
/// PM timer frequency.
pub const PM_TIMER_HZ: u128 = 3_579_545;

const PWRBTN: u16 = 1 << 8;
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;
/// Status/enable bits implemented (timer overflow, global, power button, wake).
/// RTC_STS/RTC_EN: enable is accepted (Linux's rtc-cmos enables it and checks it
/// reads back) though the RTC alarm never wakes the platform.
const RTC: u16 = 1 << 10;
const STS_BITS: u16 = 1 | (1 << 5) | PWRBTN | RTC | (1 << 15);

/// What the guest asked the platform to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerEvent {
    /// Entered S5 (ACPI `poweroff`).
    PowerOff,
    /// Wrote the FADT reset register (ACPI `reboot`).
    Reset,
}

/// Serializable PM state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmState {
    pub pm1_sts: u16,
    pub pm1_en: u16,
    pub pm1_cnt: u16,
    /// PM timer value at save time.
    pub timer: u32,
}

/// The PM block.
pub struct PmDevice {
    sts: u16,
    en: u16,
    cnt: u16,
    start: Instant,
    timer_offset: u32,
    sci: Arc<dyn IrqLine>,
    on_event: Box<dyn Fn(PowerEvent) + Send>,
}

impl PmDevice {
    /// A PM block raising `sci` and reporting power events to `on_event`
    /// (called on the vCPU thread that wrote the register: it should only
    /// signal the VMM's main loop).
    pub fn new(sci: Arc<dyn IrqLine>, on_event: Box<dyn Fn(PowerEvent) + Send>) -> Self {
        Self {
            sts: 0,
            en: 0,
            cnt: SCI_EN,
            start: Instant::now(),
            timer_offset: 0,
            sci,
            on_event,
        }
    }

    /// The host asks the guest to shut down (ACPI power button press).
    pub fn press_power_button(&mut self) {
        self.sts |= PWRBTN;
        self.update_sci();
    }

    fn update_sci(&self) {
        self.sci.set_level(self.sts & self.en & STS_BITS != 0);
    }

    fn timer(&self) -> u32 {
        let ticks = self.start.elapsed().as_nanos() * PM_TIMER_HZ / 1_000_000_000;
        (ticks as u32).wrapping_add(self.timer_offset)
    }

    fn reg_byte(&self, off: u64) -> u8 {
        let (word, shift) = match off {
            0 | 1 => (u32::from(self.sts), off * 8),
            2 | 3 => (u32::from(self.en), (off - 2) * 8),
            4 | 5 => (u32::from(self.cnt & !SLP_EN), (off - 4) * 8),
            8..=11 => (self.timer(), (off - 8) * 8),
            _ => (0, 0),
        };
        (word >> shift) as u8
    }
}

/// What a restored PM block is wired to (as for [`PmDevice::new`]).
pub struct PmArgs {
    pub sci: Arc<dyn IrqLine>,
    pub on_event: Box<dyn Fn(PowerEvent) + Send>,
}

impl Persist for PmDevice {
    type State = PmState;
    type Args = PmArgs;

    /// The PM timer runs on host time: it is saved as its value now and continues
    /// from there, so two saves in a row differ in `timer` by the ticks between them.
    fn save(&self) -> PmState {
        PmState {
            pm1_sts: self.sts,
            pm1_en: self.en,
            pm1_cnt: self.cnt,
            timer: self.timer(),
        }
    }

    fn restore(args: PmArgs, s: &PmState) -> Result<Self, StateError> {
        if s.pm1_sts & !STS_BITS != 0 || s.pm1_en & !STS_BITS != 0 {
            return Err(StateError::new(
                "acpi-pm",
                format!(
                    "status {:#x} / enable {:#x} has bits the block does not implement",
                    s.pm1_sts, s.pm1_en
                ),
            ));
        }
        if s.pm1_cnt & SCI_EN == 0 || s.pm1_cnt & SLP_EN != 0 {
            return Err(StateError::new(
                "acpi-pm",
                format!("PM1a_CNT {:#x} is not a value the block holds", s.pm1_cnt),
            ));
        }
        let d = PmDevice {
            sts: s.pm1_sts,
            en: s.pm1_en,
            cnt: s.pm1_cnt,
            start: Instant::now(),
            timer_offset: s.timer,
            sci: args.sci,
            on_event: args.on_event,
        };
        d.update_sci();
        Ok(d)
    }
}

impl BusDevice for PmDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = self.reg_byte(offset + i as u64);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut cnt_written = false;
        for (i, &v) in data.iter().enumerate() {
            let o = offset + i as u64;
            let v16 = u16::from(v);
            match o {
                0 => self.sts &= !(v16 & STS_BITS),
                1 => self.sts &= !((v16 << 8) & STS_BITS),
                2 => self.en = (self.en & 0xff00) | (v16 & STS_BITS),
                3 => self.en = (self.en & 0x00ff) | ((v16 << 8) & STS_BITS),
                4 => self.cnt = (self.cnt & 0xff00) | v16 | SCI_EN,
                5 => {
                    self.cnt = (self.cnt & 0x00ff) | (v16 << 8);
                    cnt_written = true;
                }
                0xc if v == RESET_VALUE => (self.on_event)(PowerEvent::Reset),
                _ => {}
            }
        }
        self.update_sci();
        if cnt_written && self.cnt & SLP_EN != 0 {
            self.cnt &= !SLP_EN;
            let typ = ((self.cnt >> 10) & 7) as u8;
            if typ == S5_SLP_TYP {
                (self.on_event)(PowerEvent::PowerOff);
            } else {
                tracing::warn!("guest requested unsupported sleep state SLP_TYP={typ}");
            }
        }
    }
}
