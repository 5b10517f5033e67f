//! The local APIC timer (Intel SDM Vol. 3A 10.5.4): one-shot, periodic and
//! TSC-deadline modes.
//!
//! The counter runs off the APIC bus clock divided by the divide
//! configuration register. This model's bus clock is 1 GHz
//! ([`BUS_NS_PER_TICK`] = 1 ns), as KVM's, so with divide-by-1 one count is
//! one nanosecond and everything maps onto `now_ns` exactly. The guest learns
//! the rate by calibration (or CPUID 0x15/0x16 if the VMM reports it).
//!
//! `now_ns` must be monotonic. The count start may lie "before zero" after a
//! divide change (arithmetic on it wraps). Expiry times are absolute (`start + k * period`), so periodic mode never
//! drifts; when the caller is late, missed periods collapse into one interrupt.
//! In TSC-deadline mode the caller converts IA32_TSC_DEADLINE to ns and passes
//! it to [`Lapic::set_tsc_deadline_ns`].

use super::{bit_clear, bit_set, Lapic, LVT_MASKED, LVT_TIMER};

/// Nanoseconds per APIC bus clock tick (1 GHz bus).
pub const BUS_NS_PER_TICK: u64 = 1;

/// Timer mode field of LVT timer (bits 18:17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    /// Counts down once.
    OneShot,
    /// Reloads the initial count at zero.
    Periodic,
    /// Fires at an absolute TSC deadline.
    TscDeadline,
}

impl Lapic {
    /// Current timer mode.
    pub fn timer_mode(&self) -> TimerMode {
        match (self.s.lvt[LVT_TIMER] >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// The divisor selected by the divide configuration register (bits 3, 1:0).
    pub fn timer_divisor(&self) -> u64 {
        let d = self.s.timer_divide;
        let code = (d & 3) | ((d >> 1) & 4);
        if code == 7 {
            1
        } else {
            2 << code
        }
    }

    fn ns_per_count(&self) -> u64 {
        self.timer_divisor() * BUS_NS_PER_TICK
    }

    fn period_ns(&self) -> u64 {
        u64::from(self.s.timer_initial) * self.ns_per_count()
    }

    /// IA32_TSC_DEADLINE as last armed, in ns (None = disarmed or fired).
    pub fn tsc_deadline_ns(&self) -> Option<u64> {
        self.s.tsc_deadline_ns
    }

    /// WRMSR IA32_TSC_DEADLINE, converted to ns by the caller (`None` for 0).
    /// Ignored unless the timer is in TSC-deadline mode. A deadline already
    /// past fires at the next [`Lapic::advance`].
    pub fn set_tsc_deadline_ns(&mut self, deadline: Option<u64>) {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.s.tsc_deadline_ns = deadline;
        }
    }

    /// When the timer next raises an interrupt (ns), if it is armed and unmasked.
    /// A halted vCPU sleeps until then.
    pub fn next_timer_deadline(&self) -> Option<u64> {
        if self.s.lvt[LVT_TIMER] & LVT_MASKED != 0 {
            return None;
        }
        match self.timer_mode() {
            TimerMode::TscDeadline => self.s.tsc_deadline_ns,
            _ => self.s.timer_next_ns,
        }
    }

    /// Brings the timer up to `now_ns`: an expiry at or before it sets the
    /// timer vector in IRR (unless LVT timer is masked). Returns true if the
    /// timer expired.
    pub fn advance(&mut self, now_ns: u64) -> bool {
        let fired = match self.timer_mode() {
            TimerMode::TscDeadline => match self.s.tsc_deadline_ns {
                Some(d) if d <= now_ns => {
                    self.s.tsc_deadline_ns = None;
                    true
                }
                _ => false,
            },
            mode => match self.s.timer_next_ns {
                Some(next) if next <= now_ns => {
                    let period = self.period_ns();
                    self.s.timer_next_ns = if mode == TimerMode::Periodic && period > 0 {
                        let k = now_ns.wrapping_sub(self.s.timer_start_ns) / period + 1;
                        Some(self.s.timer_start_ns.wrapping_add(k.wrapping_mul(period)))
                    } else {
                        None
                    };
                    true
                }
                _ => false,
            },
        };
        let lvt = self.s.lvt[LVT_TIMER];
        if fired && lvt & LVT_MASKED == 0 {
            let v = lvt as u8;
            if v < 16 {
                self.raise_error(super::ESR_RECV_ILLEGAL_VECTOR);
            } else if self.sw_enabled() {
                bit_set(&mut self.s.irr, v);
                bit_clear(&mut self.s.tmr, v);
            }
        }
        fired
    }

    /// Current-count register value at `now_ns`.
    pub(super) fn timer_current_count(&self, now_ns: u64) -> u32 {
        if self.timer_mode() == TimerMode::TscDeadline
            || self.s.timer_initial == 0
            || self.s.timer_next_ns.is_none()
        {
            return 0;
        }
        let initial = u64::from(self.s.timer_initial);
        let elapsed = now_ns.wrapping_sub(self.s.timer_start_ns) / self.ns_per_count();
        let count = match self.timer_mode() {
            TimerMode::Periodic => initial - elapsed % initial,
            _ => initial.saturating_sub(elapsed),
        };
        count as u32
    }

    /// Initial-count write: (re)starts a one-shot/periodic count; 0 stops it.
    /// Ignored in TSC-deadline mode.
    pub(super) fn set_timer_initial(&mut self, val: u32, now_ns: u64) {
        if self.timer_mode() == TimerMode::TscDeadline {
            return;
        }
        self.s.timer_initial = val;
        self.s.timer_start_ns = now_ns;
        self.s.timer_next_ns = if val == 0 {
            None
        } else {
            now_ns.checked_add(self.period_ns())
        };
    }

    /// Divide-configuration write. A running count keeps its current value and
    /// continues at the new rate.
    pub(super) fn set_timer_divide(&mut self, val: u32, now_ns: u64) {
        let running = self.s.timer_next_ns.is_some() && self.timer_mode() != TimerMode::TscDeadline;
        let current = self.timer_current_count(now_ns);
        self.s.timer_divide = val & 0xb;
        if running && current > 0 {
            // Re-base so that the count at now_ns is `current` at the new rate:
            // start lies (initial - current) new-rate counts in the past.
            let done = u64::from(self.s.timer_initial - current) * self.ns_per_count();
            self.s.timer_start_ns = now_ns.wrapping_sub(done);
            self.s.timer_next_ns = now_ns.checked_add(u64::from(current) * self.ns_per_count());
        }
    }

    /// LVT timer write: a mode change disarms the timer and clears the deadline.
    pub(super) fn set_lvt_timer(&mut self, val: u32) {
        let old_mode = self.timer_mode();
        self.s.lvt[LVT_TIMER] = val;
        if self.timer_mode() != old_mode {
            self.s.timer_initial = 0;
            self.s.timer_next_ns = None;
            self.s.tsc_deadline_ns = None;
        }
    }
}
