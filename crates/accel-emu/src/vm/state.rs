//! The emulated platform as a [`VmState`]: the PIC pair, IOAPIC and PIT converted
//! to and from the neutral shapes, and the clock everything is timed by.
//!
//! Time: the emulator's time base ([`Shared::now_ns`]) is the guest clock, so the
//! saved `clock_ns` is simply "now". Restoring moves the time base (an offset)
//! so that it reads the saved value, then rebuilds the PIT on it; counting PIT
//! channels are saved as how long they have been counting, so they continue where
//! they were on the new clock.

use vmm_types::{
    IoApicState as NIoApic, PicChipState as NPicChip, PicInitStep, PicState as NPic,
    PitChannelState as NChannel, PitState as NPit, VmState,
};

use crate::irqchip::ioapic::{IoApic, IoApicState};
use crate::irqchip::pic::{InitStep, PicChipState, PicPair, PicState};
use crate::pit::{ns_to_ticks, ticks_to_ns, ChannelState, Pit, PitState};

use super::{lock, Shared};
use vm_device::Persist;

fn pic_chip_to_neutral(c: &PicChipState) -> NPicChip {
    NPicChip {
        irr: c.irr,
        isr: c.isr,
        imr: c.imr,
        lines: c.lines,
        elcr: c.elcr,
        lowest_priority: c.lowest_priority,
        vector_base: c.vector_base,
        icw3: c.icw3,
        init_step: match c.init_step {
            InitStep::Ready => PicInitStep::Ready,
            InitStep::Icw2 => PicInitStep::Icw2,
            InitStep::Icw3 => PicInitStep::Icw3,
            InitStep::Icw4 => PicInitStep::Icw4,
        },
        icw4_needed: c.icw4_needed,
        single: c.single,
        auto_eoi: c.auto_eoi,
        rotate_on_auto_eoi: c.rotate_on_auto_eoi,
        special_fully_nested: c.special_fully_nested,
        read_isr: c.read_isr,
        poll: c.poll,
        special_mask: c.special_mask,
    }
}

fn pic_chip_from_neutral(c: &NPicChip) -> PicChipState {
    PicChipState {
        irr: c.irr,
        isr: c.isr,
        imr: c.imr,
        lines: c.lines,
        elcr: c.elcr,
        lowest_priority: c.lowest_priority,
        vector_base: c.vector_base,
        icw3: c.icw3,
        init_step: match c.init_step {
            PicInitStep::Ready => InitStep::Ready,
            PicInitStep::Icw2 => InitStep::Icw2,
            PicInitStep::Icw3 => InitStep::Icw3,
            PicInitStep::Icw4 => InitStep::Icw4,
        },
        icw4_needed: c.icw4_needed,
        single: c.single,
        auto_eoi: c.auto_eoi,
        rotate_on_auto_eoi: c.rotate_on_auto_eoi,
        special_fully_nested: c.special_fully_nested,
        read_isr: c.read_isr,
        poll: c.poll,
        special_mask: c.special_mask,
    }
}

/// The PIC pair in neutral form.
pub fn pic_to_neutral(p: &PicState) -> NPic {
    NPic {
        master: pic_chip_to_neutral(&p.master),
        slave: pic_chip_to_neutral(&p.slave),
    }
}

/// The PIC pair from neutral form.
pub fn pic_from_neutral(p: &NPic) -> PicState {
    PicState {
        master: pic_chip_from_neutral(&p.master),
        slave: pic_chip_from_neutral(&p.slave),
    }
}

/// The IOAPIC in neutral form.
pub fn ioapic_to_neutral(s: &IoApicState) -> NIoApic {
    NIoApic {
        id: ((s.id >> 24) & 0xf) as u8,
        ioregsel: s.ioregsel,
        redirection: s.redirection.clone(),
        irr: s.lines,
    }
}

/// The IOAPIC from neutral form.
pub fn ioapic_from_neutral(s: &NIoApic) -> IoApicState {
    IoApicState {
        ioregsel: s.ioregsel,
        id: u32::from(s.id & 0xf) << 24,
        redirection: s.redirection.clone(),
        lines: s.irr,
    }
}

fn channel_to_neutral(c: &ChannelState, tick: u64) -> NChannel {
    NChannel {
        mode: c.mode,
        access: c.access,
        bcd: c.bcd,
        gate: c.gate,
        count: if c.loaded || c.running_since.is_some() {
            c.start_value
        } else {
            0
        },
        elapsed_ns: c.running_since.map(|s| ticks_to_ns(tick.saturating_sub(s))),
        write_lsb: c.write_lsb,
        read_msb_next: c.read_msb_next,
        latched_count: c.latched_count,
        latched_msb_next: c.latch_msb_next,
        latched_status: c.latched_status,
    }
}

fn channel_from_neutral(c: &NChannel, tick: u64) -> ChannelState {
    let count = c.count.min(0x1_0000);
    let mut ch = ChannelState::new(c.gate);
    ch.mode = c.mode;
    ch.access = c.access;
    ch.bcd = c.bcd;
    ch.reload = count as u16;
    ch.loaded = count != 0;
    ch.start_value = count;
    ch.running_since = c
        .elapsed_ns
        .filter(|_| count != 0)
        .map(|e| tick.saturating_sub(ns_to_ticks(e)));
    ch.write_lsb = c.write_lsb;
    ch.read_msb_next = c.read_msb_next;
    ch.latched_count = c.latched_count;
    ch.latch_msb_next = c.latched_msb_next;
    ch.latched_status = c.latched_status;
    ch
}

/// The PIT in neutral form at `now_ns`.
pub fn pit_to_neutral(p: &PitState, now_ns: u64) -> NPit {
    let tick = ns_to_ticks(now_ns);
    NPit {
        channels: std::array::from_fn(|i| channel_to_neutral(&p.channels[i], tick)),
        port61: p.port61,
    }
}

/// The PIT from neutral form at `now_ns`.
pub fn pit_from_neutral(p: &NPit, now_ns: u64) -> Pit {
    let tick = ns_to_ticks(now_ns);
    let mut channels: [ChannelState; 3] =
        std::array::from_fn(|i| channel_from_neutral(&p.channels[i], tick));
    // Channel 2's gate is port 0x61 bit 0.
    channels[2].gate = p.port61 & 1 != 0;
    let irq_next_tick = channels[0].next_rising_edge(tick);
    let s = PitState {
        channels,
        port61: p.port61,
        irq_next_tick,
        irq_pending_tick: None,
    };
    Pit::restore((), &s).expect("a PIT state is brought into range, never refused")
}

impl Shared {
    /// The platform's state. A PIT edge that is due is delivered first, so it is
    /// in the PIC/IOAPIC rather than lost.
    pub(crate) fn save_state(&self) -> VmState {
        let now = self.now_ns();
        self.advance_pit(now);
        let p = lock(&self.platform);
        VmState {
            pic: pic_to_neutral(&p.pic.state()),
            ioapic: ioapic_to_neutral(&p.ioapic.state()),
            pit: pit_to_neutral(&p.pit.state(), now),
            clock_ns: now,
        }
    }

    /// Loads a platform state: the clock first, then the devices on it.
    pub(crate) fn restore_state(&self, s: &VmState) -> Result<(), String> {
        if s.ioapic.redirection.len() != vmm_types::vm_state::IOAPIC_PINS {
            return Err(format!(
                "the IOAPIC state has {} redirection entries, not {}",
                s.ioapic.redirection.len(),
                vmm_types::vm_state::IOAPIC_PINS
            ));
        }
        self.set_clock(s.clock_ns);
        let now = self.now_ns();
        let mut p = lock(&self.platform);
        p.pic = PicPair::restore((), &pic_from_neutral(&s.pic)).map_err(|e| e.to_string())?;
        p.ioapic =
            IoApic::restore((), &ioapic_from_neutral(&s.ioapic)).map_err(|e| e.to_string())?;
        p.pit = pit_from_neutral(&s.pit, now);
        Ok(())
    }
}
