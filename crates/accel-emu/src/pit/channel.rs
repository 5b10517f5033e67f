//! One 8254 counter, computed from absolute PIT clock ticks.
//!
//! Counting is not simulated tick by tick: a running counter remembers the
//! tick at which its counting element (CE) held `start_value`, and the count
//! and OUT at any later tick follow from the mode (Intel 8254 data sheet,
//! "Mode Definitions"):
//!
//! - mode 0 (interrupt on terminal count): OUT low from the control word
//!   until the count reaches 0, then high; the CE keeps wrapping. Gate low
//!   suspends counting.
//! - mode 1 (retriggerable one-shot): a gate rising edge loads the count and
//!   drives OUT low until terminal count.
//! - mode 2 (rate generator): OUT low for the one clock where the count is
//!   1, then the count reloads; period N. Gate low stops and forces OUT high;
//!   a gate rising edge reloads.
//! - mode 3 (square wave): OUT high for ceil(N/2) clocks, low for floor(N/2);
//!   gate as mode 2.
//! - mode 4 (software strobe) / 5 (hardware strobe): OUT low for one clock
//!   after the count reaches 0; mode 5 starts on a gate rising edge.
//!
//! Simplifications: the one-clock load delay after a count write is not
//! modelled (counting starts at the write); a new count in modes 2/3 takes
//! effect immediately rather than at the end of the current period; BCD
//! counting is accepted but counts in binary.

use serde::{Deserialize, Serialize};

/// Access mode of a counter (control word bits 5:4).
pub(super) const ACCESS_LO: u8 = 1;
pub(super) const ACCESS_HI: u8 = 2;
pub(super) const ACCESS_LOHI: u8 = 3;

/// The state of one counter; also its snapshot form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// Counter mode 0-5.
    pub mode: u8,
    /// Read/write access: 1 = LSB, 2 = MSB, 3 = LSB then MSB.
    pub access: u8,
    /// BCD flag as programmed (counting is binary).
    pub bcd: bool,
    /// Count register as last written (0 means 65536).
    pub reload: u16,
    /// A complete count was written since the last control word.
    pub loaded: bool,
    /// Gate input level.
    pub gate: bool,
    /// Tick at which the CE held `start_value`; `None` while not counting.
    pub running_since: Option<u64>,
    /// CE value at `running_since` (1..=65536), or the frozen CE while stopped.
    pub start_value: u32,
    /// Modes 0/1/4/5: the terminal event already happened before `running_since`.
    pub terminal_done: bool,
    /// LSB of a two-byte count write, waiting for the MSB.
    pub write_lsb: Option<u8>,
    /// Next unlatched read in LSB-then-MSB access returns the MSB.
    pub read_msb_next: bool,
    /// Latched count (from a latch or read-back command).
    pub latched_count: Option<u16>,
    /// A latched count in LSB-then-MSB access has had its LSB read.
    pub latch_msb_next: bool,
    /// Latched status byte (read-back).
    pub latched_status: Option<u8>,
    /// Null count: a count was written but not yet loaded into the CE.
    pub null_count: bool,
}

impl ChannelState {
    /// A counter as after power-up. The 8254's power-up state is undefined;
    /// this picks mode 3, idle with OUT high and LSB-then-MSB access,
    /// counting nothing until programmed.
    pub fn new(gate: bool) -> Self {
        Self {
            mode: 3,
            access: ACCESS_LOHI,
            bcd: false,
            reload: 0,
            loaded: false,
            gate,
            running_since: None,
            start_value: 0,
            terminal_done: false,
            write_lsb: None,
            read_msb_next: false,
            latched_count: None,
            latch_msb_next: false,
            latched_status: None,
            null_count: false,
        }
    }

    fn reload_value(&self) -> u32 {
        match (self.reload, self.mode) {
            (0, _) => 0x1_0000,
            // N = 1 is illegal in modes 2 and 3.
            (1, 2 | 3) => 2,
            (n, _) => u32::from(n),
        }
    }

    fn elapsed(&self, tick: u64) -> Option<u64> {
        self.running_since.map(|s| tick.saturating_sub(s))
    }

    /// CE value at `tick` (16 bits).
    pub fn count(&self, tick: u64) -> u16 {
        let Some(e) = self.elapsed(tick) else {
            return self.start_value as u16;
        };
        let v = u64::from(self.start_value);
        let n = match self.mode {
            2 => v - e % v,
            3 => {
                let p = e % v;
                let high = v.div_ceil(2);
                // Counts down by two through each half period.
                let into_half = if p < high { p } else { p - high };
                (v - 2 * into_half).max(2) & !1
            }
            _ => v.wrapping_sub(e),
        };
        n as u16
    }

    /// OUT at `tick`.
    pub fn out(&self, tick: u64) -> bool {
        let Some(e) = self.elapsed(tick) else {
            return match self.mode {
                0 => self.terminal_done,
                _ => true,
            };
        };
        let v = u64::from(self.start_value);
        match self.mode {
            0 => self.terminal_done || e >= v,
            1 => self.terminal_done || e >= v,
            2 => e % v != v - 1,
            3 => e % v < v.div_ceil(2),
            _ => self.terminal_done || e != v,
        }
    }

    /// The first OUT rising edge strictly after `tick`.
    pub fn next_rising_edge(&self, tick: u64) -> Option<u64> {
        let s = self.running_since?;
        let v = u64::from(self.start_value);
        let edge = match self.mode {
            2 | 3 => {
                let k = tick.saturating_sub(s) / v.max(1) + 1;
                s.checked_add(k.checked_mul(v)?)?
            }
            0 | 1 if !self.terminal_done => s.checked_add(v)?,
            4 | 5 if !self.terminal_done => s.checked_add(v + 1)?,
            _ => return None,
        };
        (edge > tick).then_some(edge)
    }

    /// Control word for this counter (not a latch command).
    pub fn set_mode(&mut self, access: u8, mode: u8, bcd: bool) {
        self.access = access;
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.bcd = bcd;
        if bcd {
            tracing::debug!("8254: BCD counting requested; counting in binary");
        }
        self.loaded = false;
        self.running_since = None;
        self.terminal_done = false;
        self.write_lsb = None;
        self.read_msb_next = false;
        self.null_count = true;
    }

    /// Counter latch command: freezes the current count for reading, unless a
    /// latch is already pending.
    pub fn latch_count(&mut self, tick: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count(tick));
            self.latch_msb_next = false;
        }
    }

    /// Read-back status latch.
    pub fn latch_status(&mut self, tick: u64) {
        if self.latched_status.is_none() {
            let st = (u8::from(self.out(tick)) << 7)
                | (u8::from(self.null_count) << 6)
                | (self.access << 4)
                | (self.mode << 1)
                | u8::from(self.bcd);
            self.latched_status = Some(st);
        }
    }

    /// A byte written to the counter's data port.
    pub fn write(&mut self, val: u8, tick: u64) {
        let value = match self.access {
            ACCESS_LO => u16::from(val),
            ACCESS_HI => u16::from(val) << 8,
            _ => match self.write_lsb.take() {
                None => {
                    self.write_lsb = Some(val);
                    if self.mode == 0 {
                        // Writing the first byte stops a mode 0 count.
                        self.freeze(tick);
                        self.terminal_done = false;
                    }
                    return;
                }
                Some(lsb) => u16::from(lsb) | (u16::from(val) << 8),
            },
        };
        self.reload = value;
        self.loaded = true;
        self.null_count = false;
        self.start_value = self.reload_value();
        self.terminal_done = false;
        match self.mode {
            1 | 5 => {} // waits for a gate trigger
            _ => self.running_since = self.gate.then_some(tick),
        }
    }

    /// A byte read from the counter's data port.
    pub fn read(&mut self, tick: u64) -> u8 {
        if let Some(st) = self.latched_status.take() {
            return st;
        }
        if let Some(c) = self.latched_count {
            let (byte, done) = match self.access {
                ACCESS_LO => (c as u8, true),
                ACCESS_HI => ((c >> 8) as u8, true),
                _ if !self.latch_msb_next => (c as u8, false),
                _ => ((c >> 8) as u8, true),
            };
            if done {
                self.latched_count = None;
                self.latch_msb_next = false;
            } else {
                self.latch_msb_next = true;
            }
            return byte;
        }
        let c = self.count(tick);
        match self.access {
            ACCESS_LO => c as u8,
            ACCESS_HI => (c >> 8) as u8,
            _ => {
                self.read_msb_next = !self.read_msb_next;
                if self.read_msb_next {
                    c as u8
                } else {
                    (c >> 8) as u8
                }
            }
        }
    }

    /// Stops counting, keeping the CE value and terminal state.
    fn freeze(&mut self, tick: u64) {
        if let Some(e) = self.elapsed(tick) {
            let done = match self.mode {
                0 | 1 => e >= u64::from(self.start_value),
                4 | 5 => e > u64::from(self.start_value),
                _ => false,
            };
            self.terminal_done |= done;
            self.start_value = u32::from(self.count(tick));
            self.running_since = None;
        }
    }

    /// Drives the gate input.
    pub fn set_gate(&mut self, gate: bool, tick: u64) {
        let rising = gate && !self.gate;
        let falling = !gate && self.gate;
        self.gate = gate;
        match self.mode {
            0 | 4 => {
                if falling {
                    self.freeze(tick);
                } else if rising && self.loaded && self.running_since.is_none() {
                    if self.start_value == 0 {
                        self.start_value = 0x1_0000;
                    }
                    self.running_since = Some(tick);
                }
            }
            2 | 3 => {
                if falling {
                    self.running_since = None;
                    self.start_value = self.reload_value();
                } else if rising && self.loaded {
                    self.start_value = self.reload_value();
                    self.running_since = Some(tick);
                }
            }
            _ => {
                if rising && self.loaded {
                    self.start_value = self.reload_value();
                    self.terminal_done = false;
                    self.running_since = Some(tick);
                }
            }
        }
    }

    /// Clamps snapshot fields a corrupt file could make inconsistent.
    pub(super) fn sanitize(&mut self) {
        if self.mode > 5 {
            self.mode = 3;
        }
        if !(ACCESS_LO..=ACCESS_LOHI).contains(&self.access) {
            self.access = ACCESS_LOHI;
        }
        self.start_value = self.start_value.min(0x1_0000);
        if self.start_value == 0 && self.running_since.is_some() {
            self.start_value = self.reload_value();
        }
    }
}
