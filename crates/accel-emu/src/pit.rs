//! The Intel 8254 programmable interval timer at ports 0x40-0x43, and the
//! PC's port 0x61 (NMI status and control) bits tied to it.
//!
//! Channel 0 drives IRQ0, channel 1 is the (unused) DRAM refresh timer, and
//! channel 2 feeds the speaker; its gate is port 0x61 bit 0 and its OUT reads
//! back as port 0x61 bit 5, which is how Linux calibrates the TSC.
//!
//! The PIT clock (1.193182 MHz) is mapped onto the caller's monotonic
//! nanoseconds exactly: tick(t) = floor(t * 1193182 / 10^9), computed from
//! the absolute time every time, so nothing accumulates rounding drift.
//!
//! Written by hand: no maintained crate offers an 8254 as a pure state machine
//! (vm-superio has none).

mod channel;

use serde::{Deserialize, Serialize};

pub use channel::ChannelState;

/// PIT input clock in Hz.
pub const PIT_FREQ_HZ: u64 = 1_193_182;
/// Channel 0 data port.
pub const PORT_CH0: u16 = 0x40;
/// Channel 1 data port.
pub const PORT_CH1: u16 = 0x41;
/// Channel 2 data port.
pub const PORT_CH2: u16 = 0x42;
/// Mode/command port (write-only).
pub const PORT_CMD: u16 = 0x43;
/// NMI status and control port (speaker gate, channel 2 OUT, refresh toggle).
pub const PORT_61: u16 = 0x61;

const NS_PER_SEC: u64 = 1_000_000_000;
/// The refresh request toggle (port 0x61 bit 4) flips every 15.085 µs.
const REFRESH_TOGGLE_NS: u64 = 15_085;
/// Writable bits of port 0x61: speaker gate, speaker data, parity/IOCHK enables.
const PORT61_WRITABLE: u8 = 0x0f;

/// PIT ticks elapsed at `ns`.
pub fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_FREQ_HZ) / u128::from(NS_PER_SEC)) as u64
}

/// The first nanosecond at which [`ns_to_ticks`] reaches `tick`.
pub fn ticks_to_ns(tick: u64) -> u64 {
    let ns = (u128::from(tick) * u128::from(NS_PER_SEC)).div_ceil(u128::from(PIT_FREQ_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Snapshot of a [`Pit`]; ticks are absolute in the VM's monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    /// Channels 0, 1, 2.
    pub channels: [ChannelState; 3],
    /// Port 0x61 bits 0-3 as written.
    pub port61: u8,
    /// Tick of the next channel 0 OUT rising edge not yet seen.
    pub irq_next_tick: Option<u64>,
    /// Tick of a channel 0 rising edge that passed and has not been reported by `advance`.
    pub irq_pending_tick: Option<u64>,
}

/// The 8254 PIT plus port 0x61.
#[derive(Debug, Clone)]
pub struct Pit {
    s: PitState,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// Power-up state: nothing counting, channel 2's gate low.
    pub fn new() -> Self {
        Pit {
            s: PitState {
                channels: [
                    ChannelState::new(true),
                    ChannelState::new(true),
                    ChannelState::new(false),
                ],
                port61: 0,
                irq_next_tick: None,
                irq_pending_tick: None,
            },
        }
    }

    /// Guest read of `port` (0x40-0x43, 0x61) at `now_ns`; others read 0xFF.
    pub fn io_read(&mut self, port: u16, now_ns: u64) -> u8 {
        let tick = ns_to_ticks(now_ns);
        self.sync(tick);
        match port {
            PORT_CH0..=PORT_CH2 => self.s.channels[usize::from(port - PORT_CH0)].read(tick),
            PORT_61 => {
                let refresh = ((now_ns / REFRESH_TOGGLE_NS) & 1) as u8;
                let out2 = u8::from(self.s.channels[2].out(tick));
                (self.s.port61 & PORT61_WRITABLE) | (refresh << 4) | (out2 << 5)
            }
            _ => 0xff,
        }
    }

    /// Guest write of `val` to `port` at `now_ns`; other ports are ignored.
    pub fn io_write(&mut self, port: u16, val: u8, now_ns: u64) {
        let tick = ns_to_ticks(now_ns);
        self.sync(tick);
        match port {
            PORT_CH0..=PORT_CH2 => self.s.channels[usize::from(port - PORT_CH0)].write(val, tick),
            PORT_CMD => self.command(val, tick),
            PORT_61 => {
                self.s.port61 = val & PORT61_WRITABLE;
                self.s.channels[2].set_gate(val & 1 != 0, tick);
            }
            _ => return,
        }
        self.s.irq_next_tick = self.s.channels[0].next_rising_edge(tick);
    }

    fn command(&mut self, val: u8, tick: u64) {
        let sel = val >> 6;
        let access = (val >> 4) & 3;
        if sel == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches status.
            for (i, ch) in self.s.channels.iter_mut().enumerate() {
                if val & (2 << i) != 0 {
                    if val & 0x20 == 0 {
                        ch.latch_count(tick);
                    }
                    if val & 0x10 == 0 {
                        ch.latch_status(tick);
                    }
                }
            }
            return;
        }
        let ch = &mut self.s.channels[usize::from(sel)];
        if access == 0 {
            ch.latch_count(tick);
        } else {
            ch.set_mode(access, (val >> 1) & 7, val & 1 != 0);
        }
    }

    /// When channel 0's OUT next rises (raising IRQ0), in ns; a rising edge
    /// already passed but not yet reported by [`Pit::advance`] gives its time.
    pub fn next_deadline(&self) -> Option<u64> {
        self.s
            .irq_pending_tick
            .or(self.s.irq_next_tick)
            .map(ticks_to_ns)
    }

    /// Brings the PIT up to `now_ns`. Returns true if channel 0's OUT rose at
    /// least once since the last call: the caller pulses IRQ0 (edge-triggered
    /// at the PIC and IOAPIC). Several missed periods collapse into one edge.
    pub fn advance(&mut self, now_ns: u64) -> bool {
        self.sync(ns_to_ticks(now_ns));
        self.s.irq_pending_tick.take().is_some()
    }

    /// Channel 0's OUT level at `now_ns` (for callers that model IRQ0 as a level).
    pub fn irq0_level(&self, now_ns: u64) -> bool {
        self.s.channels[0].out(ns_to_ticks(now_ns))
    }

    fn sync(&mut self, tick: u64) {
        if let Some(edge) = self.s.irq_next_tick {
            if edge <= tick {
                self.s.irq_pending_tick.get_or_insert(edge);
                self.s.irq_next_tick = self.s.channels[0].next_rising_edge(tick);
            }
        }
    }

    /// Snapshot.
    pub fn state(&self) -> PitState {
        self.s.clone()
    }
}

impl vm_device::Persist for Pit {
    type State = PitState;
    type Args = ();

    fn save(&self) -> PitState {
        self.state()
    }

    /// Fields no PIT holds (a count past its reload value, port 0x61 bits that
    /// are read-only) are brought back into range: another accelerator's PIT
    /// (KVM's) may express the same state a little differently.
    fn restore(_: (), state: &PitState) -> Result<Self, vm_device::StateError> {
        let mut s = state.clone();
        for ch in &mut s.channels {
            ch.sanitize();
        }
        s.port61 &= PORT61_WRITABLE;
        Ok(Pit { s })
    }
}

#[cfg(test)]
mod tests;
