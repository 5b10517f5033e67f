//! RTC interrupt flags (MC146818 status C) and the IRQ8 output.
//!
//! Nothing ticks inside: flags are evaluated for the guest time that passed
//! since the last evaluation, whenever the guest reads status C or the VMM
//! asks for the IRQ level.
//!
//! - UF (update-ended): a second boundary passed.
//! - PF (periodic): a boundary of the periodic rate passed. With the
//!   32.768 kHz time base (divider 010), rate select 3-15 gives
//!   32768 >> (rate - 1) Hz, rates 1 and 2 give 256 and 128 Hz, 0 is off.
//! - AF (alarm): a second boundary passed at which hours, minutes and
//!   seconds equal the alarm registers; an alarm byte 0xC0-0xFF matches any value.
//!
//! Flags are set whatever the enable bits in status B; IRQF (and the IRQ8
//! output) is set when a flag is set together with its enable bit.

use std::time::{Duration, SystemTime};

use super::{
    reg, DateTime, Rtc, A_DIVIDER_MASK, B_AIE, B_PIE, B_UIE, C_AF, C_PF, C_UF, NS_PER_SEC,
};

/// Divider bits 6:4 = 010: the 32.768 kHz time base, running.
const A_DIVIDER_32K: u8 = 0x20;
/// Iteration bound of the alarm search (hour and minute steps jump ahead).
const ALARM_SEARCH_STEPS: usize = 400;

impl Rtc {
    fn guest_ns_i64(&self, now: SystemTime) -> i64 {
        self.guest_ns(now)
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Frequency of the periodic interrupt, if one is selected.
    fn periodic_hz(&self) -> Option<i128> {
        let a = self.reg(reg::STATUS_A);
        if a & A_DIVIDER_MASK != A_DIVIDER_32K {
            return None;
        }
        match a & 0xf {
            0 => None,
            1 => Some(256),
            2 => Some(128),
            r => Some(32_768 >> (r - 1)),
        }
    }

    /// Index of the periodic interval containing guest time `ns`.
    fn periodic_index(ns: i64, hz: i128) -> i128 {
        (i128::from(ns) * hz).div_euclid(NS_PER_SEC)
    }

    /// Whether alarm byte `r` accepts `value` (`hour` selects the hour encoding).
    fn alarm_field_ok(&self, r: u8, value: u32, hour: bool) -> bool {
        let v = self.reg(r);
        if v & 0xc0 == 0xc0 {
            return true;
        }
        let decoded = if hour {
            self.decode_hour(v)
        } else {
            self.decode(v)
        };
        decoded == Some(value)
    }

    /// The first guest second strictly after `from` at which the alarm matches.
    fn next_alarm_after(&self, from: i64) -> Option<i64> {
        let mut s = from.checked_add(1)?;
        for _ in 0..ALARM_SEARCH_STEPS {
            let t = DateTime::from_unix(s);
            if !self.alarm_field_ok(reg::HOURS_ALARM, t.hour, true) {
                s = s - i64::from(t.minute * 60 + t.second) + 3600;
            } else if !self.alarm_field_ok(reg::MINUTES_ALARM, t.minute, false) {
                s = s - i64::from(t.second) + 60;
            } else if !self.alarm_field_ok(reg::SECONDS_ALARM, t.second, false) {
                s += 1;
            } else {
                return Some(s);
            }
        }
        None
    }

    /// Raises the flags for the events between the last evaluation and `now`.
    pub(super) fn update_flags(&mut self, now: SystemTime) {
        if self.frozen() {
            self.flags_at_ns = None;
            return;
        }
        let g = self.guest_ns_i64(now);
        let last = match self.flags_at_ns {
            Some(last) if last <= g => last,
            // First evaluation, or the clock went backwards: start from here.
            _ => {
                self.flags_at_ns = Some(g);
                return;
            }
        };
        let (last_sec, g_sec) = (last.div_euclid(1_000_000_000), g.div_euclid(1_000_000_000));
        if g_sec > last_sec {
            self.flags |= C_UF;
            if self.next_alarm_after(last_sec).is_some_and(|a| a <= g_sec) {
                self.flags |= C_AF;
            }
        }
        if let Some(hz) = self.periodic_hz() {
            if Self::periodic_index(g, hz) > Self::periodic_index(last, hz) {
                self.flags |= C_PF;
            }
        }
        self.flags_at_ns = Some(g);
    }

    /// The IRQ8 output at `now`: an enabled interrupt flag is set and status
    /// C has not been read since.
    pub fn irq_level(&mut self, now: SystemTime) -> bool {
        self.update_flags(now);
        self.flags & self.reg(reg::STATUS_B) & (C_PF | C_AF | C_UF) != 0
    }

    /// How long after `now` the next enabled interrupt event happens, so the
    /// VMM knows when to look at [`Rtc::irq_level`] again. `None` when no
    /// interrupt is enabled, updates are stopped, or IRQ8 is already high
    /// (it stays high until the guest reads status C).
    pub fn next_irq_in(&mut self, now: SystemTime) -> Option<Duration> {
        if self.irq_level(now) || self.frozen() {
            return None;
        }
        let b = self.reg(reg::STATUS_B);
        let g = i128::from(self.guest_ns_i64(now));
        let mut best: Option<i128> = None;
        let mut consider = |t: i128| {
            let d = t - g;
            if d > 0 && best.is_none_or(|b| d < b) {
                best = Some(d);
            }
        };
        let g_sec = g.div_euclid(NS_PER_SEC);
        if b & B_UIE != 0 {
            consider((g_sec + 1) * NS_PER_SEC);
        }
        if b & B_PIE != 0 {
            if let Some(hz) = self.periodic_hz() {
                let k = (g * hz).div_euclid(NS_PER_SEC) + 1;
                consider((k * NS_PER_SEC + hz - 1) / hz);
            }
        }
        if b & B_AIE != 0 {
            if let Some(a) = self.next_alarm_after(g_sec as i64) {
                consider(i128::from(a) * NS_PER_SEC);
            }
        }
        best.map(|d| Duration::from_nanos(u64::try_from(d).unwrap_or(u64::MAX)))
    }
}
