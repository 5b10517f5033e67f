//! Motorola MC146818 CMOS real-time clock and its 128 bytes of CMOS RAM, at
//! ports 0x70 (index; bit 7 = NMI disable) and 0x71 (data).
//!
//! The clock shows UTC from a [`WallClock`] plus an offset the guest sets by
//! writing the time registers, so guest time follows the host without a
//! running counter. Facts from the MC146818 data sheet:
//!
//! - registers 0x00-0x09: seconds, seconds alarm, minutes, minutes alarm,
//!   hours, hours alarm, day of week (1 = Sunday), day of month, month, year;
//!   0x32 holds the century (PC convention, as the ACPI FADT says).
//! - status A (0x0A): bit 7 UIP (update in progress, read-only), bits 6:4
//!   divider (010 = 32.768 kHz running; 11x = divider chain reset, clock
//!   stopped), bits 3:0 periodic rate.
//! - status B (0x0B): bit 7 SET (updates stop so the time can be written;
//!   setting it clears UIE), 6 PIE, 5 AIE, 4 UIE, 3 SQWE, 2 DM (1 = binary,
//!   0 = BCD), 1 24/12 (1 = 24-hour), 0 DSE.
//! - status C (0x0C): bit 7 IRQF, 6 PF, 5 AF, 4 UF; reading clears it.
//! - status D (0x0D): bit 7 VRT (valid RAM and time), always set here.
//! - UIP goes high 244 µs before each once-a-second update; reading the time
//!   while UIP is clear is guaranteed consistent.
//!
//! Interrupt flags (periodic, alarm, update-ended) are computed from the time
//! that passed since they were last evaluated (see `irq.rs`); the IRQ8
//! output is high while an enabled flag is set, until status C is read.
//! [`RtcDevice`] drives an [`IrqLine`] from it and tells when to poll next.
//!
//! Written by hand: vm-superio has no RTC, and no maintained crate models the
//! MC146818 register file.

mod calendar;
mod irq;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vm_device::{BusDevice, IrqLine, Persist, StateError};

pub use calendar::DateTime;

/// Index port.
pub const PORT_INDEX: u16 = 0x70;
/// Data port.
pub const PORT_DATA: u16 = 0x71;

/// CMOS RAM size.
pub const CMOS_SIZE: usize = 128;

/// Register indices.
pub mod reg {
    /// Seconds.
    pub const SECONDS: u8 = 0x00;
    /// Seconds alarm.
    pub const SECONDS_ALARM: u8 = 0x01;
    /// Minutes.
    pub const MINUTES: u8 = 0x02;
    /// Minutes alarm.
    pub const MINUTES_ALARM: u8 = 0x03;
    /// Hours (bit 7 = PM in 12-hour mode).
    pub const HOURS: u8 = 0x04;
    /// Hours alarm.
    pub const HOURS_ALARM: u8 = 0x05;
    /// Day of week, 1 = Sunday.
    pub const DAY_OF_WEEK: u8 = 0x06;
    /// Day of month.
    pub const DAY_OF_MONTH: u8 = 0x07;
    /// Month.
    pub const MONTH: u8 = 0x08;
    /// Year within the century.
    pub const YEAR: u8 = 0x09;
    /// Status register A.
    pub const STATUS_A: u8 = 0x0a;
    /// Status register B.
    pub const STATUS_B: u8 = 0x0b;
    /// Status register C.
    pub const STATUS_C: u8 = 0x0c;
    /// Status register D.
    pub const STATUS_D: u8 = 0x0d;
    /// Century (PC/ACPI convention).
    pub const CENTURY: u8 = 0x32;
}

const A_UIP: u8 = 0x80;
const A_DIVIDER_MASK: u8 = 0x70;
const A_DIVIDER_RESET: u8 = 0x60;
const B_SET: u8 = 0x80;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;

/// How long before each update UIP is raised.
const UIP_LEAD_NS: i128 = 244_000;
const NS_PER_SEC: i128 = 1_000_000_000;

/// Time registers, recomputed on read while the clock runs.
const TIME_REGS: [u8; 8] = [
    reg::SECONDS,
    reg::MINUTES,
    reg::HOURS,
    reg::DAY_OF_WEEK,
    reg::DAY_OF_MONTH,
    reg::MONTH,
    reg::YEAR,
    reg::CENTURY,
];

/// Source of wall-clock time (UTC); injectable so tests are deterministic.
pub trait WallClock: Send {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The host's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Snapshot of an [`Rtc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcState {
    /// Selected register index (7 bits).
    pub index: u8,
    /// NMI disable bit of the last index write.
    pub nmi_disabled: bool,
    /// The 128 bytes of CMOS RAM (time registers hold their last frozen values).
    pub cmos: Vec<u8>,
    /// Guest time minus host time, in ns.
    pub offset_ns: i64,
    /// Interrupt flags (PF, AF, UF) raised and not yet read from status C.
    pub flags: u8,
    /// Guest time (ns) up to which the flags have been evaluated.
    pub flags_at_ns: Option<i64>,
}

/// The MC146818 RTC with CMOS RAM; a pure state machine taking the wall-clock
/// time as a parameter. [`RtcDevice`] puts it on a bus.
#[derive(Debug, Clone)]
pub struct Rtc {
    index: u8,
    nmi_disabled: bool,
    cmos: [u8; CMOS_SIZE],
    offset_ns: i64,
    flags: u8,
    flags_at_ns: Option<i64>,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl Rtc {
    /// A clock showing host UTC, 24-hour BCD mode, divider running (status A
    /// 0x26, B 0x02), valid RAM.
    pub fn new() -> Self {
        let mut cmos = [0u8; CMOS_SIZE];
        cmos[usize::from(reg::STATUS_A)] = 0x26;
        cmos[usize::from(reg::STATUS_B)] = B_24H;
        cmos[usize::from(reg::STATUS_D)] = D_VRT;
        Rtc {
            index: 0,
            nmi_disabled: false,
            cmos,
            offset_ns: 0,
            flags: 0,
            flags_at_ns: None,
        }
    }

    /// Whether the guest masked NMIs through port 0x70 bit 7.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// Guest read of `port` (0x70 or 0x71). The index port is write-only and reads 0xFF.
    pub fn read_port(&mut self, port: u16, now: SystemTime) -> u8 {
        match port {
            PORT_DATA => self.read_reg(self.index, now),
            _ => 0xff,
        }
    }

    /// Guest write of `val` to `port` (0x70 or 0x71).
    pub fn write_port(&mut self, port: u16, val: u8, now: SystemTime) {
        match port {
            PORT_INDEX => {
                self.index = val & 0x7f;
                self.nmi_disabled = val & 0x80 != 0;
            }
            PORT_DATA => self.write_reg(self.index, val, now),
            _ => {}
        }
    }

    /// Records the guest's memory size in the CMOS bytes firmware and old
    /// software read: 0x15/0x16 base memory (640 KiB), 0x17/0x18 and 0x30/0x31
    /// KiB above 1 MiB (capped at 0xFFFF), 0x34/0x35 64 KiB units above
    /// 16 MiB (capped), 0x5B-0x5D 64 KiB units above 4 GiB; then the checksum
    /// at 0x2E/0x2F over 0x10-0x2D.
    pub fn set_memory_size(&mut self, bytes_below_4g: u64, bytes_above_4g: u64) {
        const MIB: u64 = 1 << 20;
        let put16 = |cmos: &mut [u8; CMOS_SIZE], at: usize, v: u64| {
            let v = v.min(0xffff);
            cmos[at] = v as u8;
            cmos[at + 1] = (v >> 8) as u8;
        };
        put16(&mut self.cmos, 0x15, 640);
        let ext_kib = bytes_below_4g.saturating_sub(MIB) / 1024;
        put16(&mut self.cmos, 0x17, ext_kib);
        put16(&mut self.cmos, 0x30, ext_kib);
        put16(
            &mut self.cmos,
            0x34,
            bytes_below_4g.saturating_sub(16 * MIB) >> 16,
        );
        let high = (bytes_above_4g >> 16).min(0xff_ffff);
        self.cmos[0x5b] = high as u8;
        self.cmos[0x5c] = (high >> 8) as u8;
        self.cmos[0x5d] = (high >> 16) as u8;
        let sum: u16 = self.cmos[0x10..=0x2d].iter().map(|&b| u16::from(b)).sum();
        self.cmos[0x2e] = (sum >> 8) as u8;
        self.cmos[0x2f] = sum as u8;
    }

    /// The guest's current time in ns since the Unix epoch.
    fn guest_ns(&self, now: SystemTime) -> i128 {
        unix_ns(now) + i128::from(self.offset_ns)
    }

    fn reg(&self, r: u8) -> u8 {
        self.cmos[usize::from(r)]
    }

    /// Updates are stopped: SET, or the divider chain held in reset.
    fn frozen(&self) -> bool {
        self.reg(reg::STATUS_B) & B_SET != 0
            || self.reg(reg::STATUS_A) & A_DIVIDER_MASK >= A_DIVIDER_RESET
    }

    fn encode(&self, v: u32) -> u8 {
        if self.reg(reg::STATUS_B) & B_BINARY != 0 {
            v as u8
        } else {
            calendar::to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> Option<u32> {
        if self.reg(reg::STATUS_B) & B_BINARY != 0 {
            Some(u32::from(v))
        } else {
            calendar::from_bcd(v)
        }
    }

    fn encode_hour(&self, h: u32) -> u8 {
        if self.reg(reg::STATUS_B) & B_24H != 0 {
            self.encode(h)
        } else {
            let h12 = if h % 12 == 0 { 12 } else { h % 12 };
            self.encode(h12) | if h >= 12 { 0x80 } else { 0 }
        }
    }

    fn decode_hour(&self, v: u8) -> Option<u32> {
        if self.reg(reg::STATUS_B) & B_24H != 0 {
            return self.decode(v);
        }
        let h12 = self.decode(v & 0x7f)?;
        if !(1..=12).contains(&h12) {
            return None;
        }
        Some(h12 % 12 + if v & 0x80 != 0 { 12 } else { 0 })
    }

    /// Writes the current guest time into the time registers of CMOS RAM.
    fn latch_time(&mut self, now: SystemTime) {
        let secs = self.guest_ns(now).div_euclid(NS_PER_SEC) as i64;
        let t = DateTime::from_unix(secs);
        let vals = [
            self.encode(t.second),
            self.encode(t.minute),
            self.encode_hour(t.hour),
            self.encode(t.weekday),
            self.encode(t.day),
            self.encode(t.month),
            self.encode(t.year.rem_euclid(100) as u32),
            self.encode(t.year.div_euclid(100).rem_euclid(100) as u32),
        ];
        for (r, v) in TIME_REGS.iter().zip(vals) {
            self.cmos[usize::from(*r)] = v;
        }
    }

    /// Takes the time registers in CMOS RAM as the new guest time, starting at
    /// the beginning of a second now. Invalid values leave the time unchanged.
    fn commit_time(&mut self, now: SystemTime) {
        let field = |r: u8| self.decode(self.reg(r));
        let parsed = (|| {
            let year = i64::from(field(reg::CENTURY)?) * 100 + i64::from(field(reg::YEAR)?);
            let t = DateTime {
                year,
                month: field(reg::MONTH)?,
                day: field(reg::DAY_OF_MONTH)?,
                hour: self.decode_hour(self.reg(reg::HOURS))?,
                minute: field(reg::MINUTES)?,
                second: field(reg::SECONDS)?,
                weekday: 0,
            };
            t.to_unix()
        })();
        match parsed {
            Some(secs) => {
                let offset = i128::from(secs) * NS_PER_SEC - unix_ns(now);
                self.offset_ns = offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
                self.flags_at_ns = None;
            }
            None => tracing::warn!("RTC: guest wrote an invalid date/time; keeping the old time"),
        }
    }

    fn read_reg(&mut self, r: u8, now: SystemTime) -> u8 {
        match r {
            reg::STATUS_A => {
                let ns = self.guest_ns(now).rem_euclid(NS_PER_SEC);
                let uip = !self.frozen() && ns >= NS_PER_SEC - UIP_LEAD_NS;
                (self.reg(reg::STATUS_A) & !A_UIP) | if uip { A_UIP } else { 0 }
            }
            reg::STATUS_C => {
                self.update_flags(now);
                let mut c = std::mem::take(&mut self.flags);
                if c & self.reg(reg::STATUS_B) & (C_PF | C_AF | C_UF) != 0 {
                    c |= C_IRQF;
                }
                c
            }
            reg::STATUS_D => D_VRT,
            r if TIME_REGS.contains(&r) && !self.frozen() => {
                self.latch_time(now);
                self.reg(r)
            }
            r => self.cmos[usize::from(r & 0x7f)],
        }
    }

    fn write_reg(&mut self, r: u8, val: u8, now: SystemTime) {
        let was_frozen = self.frozen();
        match r {
            reg::STATUS_A => {
                self.cmos[usize::from(r)] = val & !A_UIP;
            }
            reg::STATUS_B => {
                // Setting SET clears UIE (data sheet).
                self.cmos[usize::from(r)] = if val & B_SET != 0 { val & !B_UIE } else { val };
            }
            reg::STATUS_C | reg::STATUS_D => {}
            r if TIME_REGS.contains(&r) => {
                if !was_frozen {
                    self.latch_time(now);
                }
                self.cmos[usize::from(r)] = val;
                if !was_frozen {
                    self.commit_time(now);
                }
                return;
            }
            r => self.cmos[usize::from(r & 0x7f)] = val,
        }
        let frozen = self.frozen();
        if was_frozen && !frozen {
            self.commit_time(now);
        } else if !was_frozen && frozen {
            self.latch_time(now);
        }
    }
}

impl Persist for Rtc {
    type State = RtcState;
    type Args = ();

    fn save(&self) -> RtcState {
        RtcState {
            index: self.index,
            nmi_disabled: self.nmi_disabled,
            cmos: self.cmos.to_vec(),
            offset_ns: self.offset_ns,
            flags: self.flags,
            flags_at_ns: self.flags_at_ns,
        }
    }

    fn restore(_: (), state: &RtcState) -> Result<Self, StateError> {
        let cmos: [u8; CMOS_SIZE] = state.cmos.as_slice().try_into().map_err(|_| {
            StateError::new(
                "rtc",
                format!("CMOS RAM of {} bytes, not {CMOS_SIZE}", state.cmos.len()),
            )
        })?;
        if state.index > 0x7f || state.flags & !(C_PF | C_AF | C_UF) != 0 {
            return Err(StateError::new(
                "rtc",
                "register index or flags out of range",
            ));
        }
        Ok(Rtc {
            index: state.index,
            nmi_disabled: state.nmi_disabled,
            cmos,
            offset_ns: state.offset_ns,
            flags: state.flags,
            flags_at_ns: state.flags_at_ns,
        })
    }
}

/// Snapshot of an [`RtcDevice`]: the chip and the level it drives IRQ8 at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcDeviceState {
    pub rtc: RtcState,
    pub irq_out: bool,
}

/// What a restored [`RtcDevice`] runs on.
pub struct RtcArgs<C> {
    pub clock: C,
    pub irq: Option<Arc<dyn IrqLine>>,
}

impl<C: WallClock> Persist for RtcDevice<C> {
    type State = RtcDeviceState;
    type Args = RtcArgs<C>;

    fn save(&self) -> RtcDeviceState {
        RtcDeviceState {
            rtc: self.rtc.save(),
            irq_out: self.irq_out,
        }
    }

    fn restore(args: RtcArgs<C>, state: &RtcDeviceState) -> Result<Self, StateError> {
        Ok(RtcDevice {
            rtc: Rtc::restore((), &state.rtc)?,
            clock: args.clock,
            irq: args.irq,
            irq_out: state.irq_out,
        })
    }
}

/// An [`Rtc`] with its clock, as a bus device: offset 0 is port 0x70, offset 1
/// port 0x71. With [`RtcDevice::with_irq`] it drives IRQ8; the VMM then calls
/// [`RtcDevice::poll`] when the duration it returned has passed.
pub struct RtcDevice<C: WallClock = SystemClock> {
    rtc: Rtc,
    clock: C,
    irq: Option<Arc<dyn IrqLine>>,
    irq_out: bool,
}

impl RtcDevice<SystemClock> {
    /// An RTC on the host clock.
    pub fn new() -> Self {
        Self::with_clock(Rtc::new(), SystemClock)
    }
}

impl Default for RtcDevice<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: WallClock> RtcDevice<C> {
    /// Wraps an RTC state machine and a clock.
    pub fn with_clock(rtc: Rtc, clock: C) -> Self {
        Self {
            rtc,
            clock,
            irq: None,
            irq_out: false,
        }
    }

    /// Connects the IRQ8 output (high while an enabled flag is pending).
    pub fn with_irq(mut self, irq: Arc<dyn IrqLine>) -> Self {
        self.irq = Some(irq);
        self
    }

    /// The state machine.
    pub fn rtc(&self) -> &Rtc {
        &self.rtc
    }

    /// Mutable access to the state machine (e.g. for [`Rtc::set_memory_size`]).
    pub fn rtc_mut(&mut self) -> &mut Rtc {
        &mut self.rtc
    }

    /// Updates IRQ8 for the current time and returns how long until the next
    /// interrupt event (`None`: nothing scheduled until the guest acts).
    pub fn poll(&mut self) -> Option<Duration> {
        let now = self.clock.now();
        self.sync_irq(now);
        self.rtc.next_irq_in(now)
    }

    fn sync_irq(&mut self, now: SystemTime) {
        if let Some(irq) = &self.irq {
            let level = self.rtc.irq_level(now);
            if level != self.irq_out {
                self.irq_out = level;
                irq.set_level(level);
            }
        }
    }
}

impl<C: WallClock> BusDevice for RtcDevice<C> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let now = self.clock.now();
        if let (Some(b), Ok(off)) = (data.first_mut(), u16::try_from(offset)) {
            if off < 2 {
                *b = self.rtc.read_port(PORT_INDEX + off, now);
            }
        }
        self.sync_irq(now);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let now = self.clock.now();
        if let (Some(&b), Ok(off)) = (data.first(), u16::try_from(offset)) {
            if off < 2 {
                self.rtc.write_port(PORT_INDEX + off, b, now);
            }
        }
        self.sync_irq(now);
    }
}

#[cfg(test)]
mod tests;
