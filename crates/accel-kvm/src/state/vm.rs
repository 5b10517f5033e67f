//! The in-kernel PIC pair, IOAPIC and PIT (KVM_GET_IRQCHIP, KVM_GET_PIT2) to and
//! from the neutral [`vmm_types::VmState`] parts.
//!
//! Where KVM keeps less than the neutral state: the 8259A's ICW3 and single mode
//! (read back as the PC wiring: master 0x04, slave 0x02, cascaded), port 0x61's
//! check-enable bits 2-3 (read back 0), and a counting PIT channel's phase: KVM's
//! KVM_SET_PIT2 restarts every channel's count from its initial value at the
//! moment of the call, so `elapsed_ns` is saved but not honoured on load.

use kvm_bindings::{
    kvm_ioapic_state, kvm_pic_state, kvm_pit_channel_state, kvm_pit_state2,
    KVM_PIT_FLAGS_SPEAKER_DATA_ON,
};
use vmm_types::{IoApicState, PicChipState, PicInitStep, PitChannelState, PitState};

/// The ELCR bits that exist (PIIX: IRQ0-2 and IRQ8, 13 are always edge).
const ELCR_MASK_MASTER: u8 = 0xf8;
const ELCR_MASK_SLAVE: u8 = 0xde;
/// The 8254 read/write states of KVM's model (i8254.c).
const RW_STATE_MSB: u8 = 2;
const RW_STATE_WORD0: u8 = 3;
const RW_STATE_WORD1: u8 = 4;
/// KVM's "never programmed" mode of a channel after reset.
const MODE_UNPROGRAMMED: u8 = 0xff;

/// One 8259A from KVM; `master` picks the PC wiring for the ICW3 KVM does not keep.
pub fn pic_from_kvm(k: &kvm_pic_state, master: bool) -> PicChipState {
    PicChipState {
        irr: k.irr,
        isr: k.isr,
        imr: k.imr,
        lines: k.last_irr,
        elcr: k.elcr,
        lowest_priority: k.priority_add.wrapping_add(7) & 7,
        vector_base: k.irq_base,
        icw3: if master { 0x04 } else { 0x02 },
        init_step: match k.init_state {
            1 => PicInitStep::Icw2,
            2 => PicInitStep::Icw3,
            3 => PicInitStep::Icw4,
            _ => PicInitStep::Ready,
        },
        icw4_needed: k.init4 != 0,
        single: false,
        auto_eoi: k.auto_eoi != 0,
        rotate_on_auto_eoi: k.rotate_on_auto_eoi != 0,
        special_fully_nested: k.special_fully_nested_mode != 0,
        read_isr: k.read_reg_select != 0,
        poll: k.poll != 0,
        special_mask: k.special_mask != 0,
    }
}

/// One 8259A to KVM.
pub fn pic_to_kvm(c: &PicChipState, master: bool) -> kvm_pic_state {
    let elcr_mask = if master {
        ELCR_MASK_MASTER
    } else {
        ELCR_MASK_SLAVE
    };
    kvm_pic_state {
        last_irr: c.lines,
        irr: c.irr,
        imr: c.imr,
        isr: c.isr,
        priority_add: c.lowest_priority.wrapping_add(1) & 7,
        irq_base: c.vector_base,
        read_reg_select: c.read_isr as u8,
        poll: c.poll as u8,
        special_mask: c.special_mask as u8,
        init_state: match c.init_step {
            PicInitStep::Ready => 0,
            PicInitStep::Icw2 => 1,
            PicInitStep::Icw3 => 2,
            PicInitStep::Icw4 => 3,
        },
        auto_eoi: c.auto_eoi as u8,
        rotate_on_auto_eoi: c.rotate_on_auto_eoi as u8,
        special_fully_nested_mode: c.special_fully_nested as u8,
        init4: c.icw4_needed as u8,
        elcr: c.elcr & elcr_mask,
        elcr_mask,
    }
}

/// The IOAPIC from KVM.
pub fn ioapic_from_kvm(k: &kvm_ioapic_state) -> IoApicState {
    IoApicState {
        id: (k.id & 0xf) as u8,
        ioregsel: k.ioregsel as u8,
        redirection: k
            .redirtbl
            .iter()
            // SAFETY: both members of the union are plain 64-bit data; `bits` is the
            // whole entry.
            .map(|e| unsafe { e.bits })
            .collect(),
        irr: k.irr,
    }
}

/// Writes the IOAPIC into `k` (from KVM_GET_IRQCHIP, so its base address stays).
pub fn ioapic_to_kvm(s: &IoApicState, k: &mut kvm_ioapic_state) -> Result<(), String> {
    if s.redirection.len() != k.redirtbl.len() {
        return Err(format!(
            "the IOAPIC state has {} redirection entries; KVM's IOAPIC has {}",
            s.redirection.len(),
            k.redirtbl.len()
        ));
    }
    k.id = u32::from(s.id & 0xf);
    k.ioregsel = u32::from(s.ioregsel);
    k.irr = s.irr;
    for (d, v) in k.redirtbl.iter_mut().zip(&s.redirection) {
        d.bits = *v;
    }
    Ok(())
}

fn channel_from_kvm(c: &kvm_pit_channel_state, now_ns: i64) -> PitChannelState {
    if c.mode == MODE_UNPROGRAMMED {
        return PitChannelState {
            gate: c.gate != 0,
            ..PitChannelState::default()
        };
    }
    let access = c.rw_mode;
    PitChannelState {
        mode: c.mode,
        access,
        bcd: c.bcd != 0,
        gate: c.gate != 0,
        count: c.count.min(0x1_0000),
        elapsed_ns: (c.count != 0).then(|| now_ns.saturating_sub(c.count_load_time).max(0) as u64),
        write_lsb: (access == 3 && c.write_state == RW_STATE_WORD1).then_some(c.write_latch),
        read_msb_next: access == 3 && c.read_state == RW_STATE_WORD1,
        latched_count: (c.count_latched != 0).then_some(c.latched_count),
        latched_msb_next: access == 3 && c.count_latched == RW_STATE_MSB,
        latched_status: (c.status_latched != 0).then_some(c.status),
    }
}

fn channel_to_kvm(c: &PitChannelState, now_ns: i64) -> kvm_pit_channel_state {
    let unprogrammed = c.count == 0 && c.elapsed_ns.is_none() && c.mode == 3 && c.access == 3;
    let access = c.access;
    let word = |msb: bool| {
        if access == 3 {
            if msb {
                RW_STATE_WORD1
            } else {
                RW_STATE_WORD0
            }
        } else {
            access
        }
    };
    kvm_pit_channel_state {
        count: c.count,
        latched_count: c.latched_count.unwrap_or(0),
        count_latched: match c.latched_count {
            None => 0,
            Some(_) if access == 3 && c.latched_msb_next => RW_STATE_MSB,
            Some(_) => access,
        },
        status_latched: c.latched_status.is_some() as u8,
        status: c.latched_status.unwrap_or(0),
        read_state: word(c.read_msb_next),
        write_state: word(c.write_lsb.is_some()),
        write_latch: c.write_lsb.unwrap_or(0),
        rw_mode: access,
        mode: if unprogrammed {
            MODE_UNPROGRAMMED
        } else {
            c.mode
        },
        bcd: c.bcd as u8,
        gate: c.gate as u8,
        count_load_time: now_ns.saturating_sub(c.elapsed_ns.unwrap_or(0) as i64),
    }
}

/// The PIT from KVM; `now_ns` is CLOCK_MONOTONIC, the clock of `count_load_time`.
pub fn pit_from_kvm(k: &kvm_pit_state2, now_ns: i64) -> PitState {
    let channels = std::array::from_fn(|i| channel_from_kvm(&k.channels[i], now_ns));
    let gate2 = k.channels[2].gate != 0;
    let data = k.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON != 0;
    PitState {
        channels,
        port61: gate2 as u8 | (u8::from(data) << 1),
    }
}

/// Writes the PIT into `k` (from KVM_GET_PIT2, so its other flags stay).
pub fn pit_to_kvm(p: &PitState, now_ns: i64, k: &mut kvm_pit_state2) {
    for (d, c) in k.channels.iter_mut().zip(&p.channels) {
        *d = channel_to_kvm(c, now_ns);
    }
    k.channels[2].gate = p.port61 & 1;
    if p.port61 & 2 != 0 {
        k.flags |= KVM_PIT_FLAGS_SPEAKER_DATA_ON;
    } else {
        k.flags &= !KVM_PIT_FLAGS_SPEAKER_DATA_ON;
    }
}

/// CLOCK_MONOTONIC in nanoseconds (KVM's ktime_get(), the PIT's load-time clock).
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pic_round_trips() {
        let c = PicChipState {
            irr: 0x11,
            isr: 0x02,
            imr: 0xf0,
            lines: 0x10,
            elcr: 0x08,
            lowest_priority: 3,
            vector_base: 0x20,
            icw3: 0x04,
            init_step: PicInitStep::Icw3,
            icw4_needed: true,
            single: false,
            auto_eoi: true,
            rotate_on_auto_eoi: false,
            special_fully_nested: true,
            read_isr: true,
            poll: false,
            special_mask: true,
        };
        let k = pic_to_kvm(&c, true);
        assert_eq!((k.priority_add, k.init_state, k.elcr_mask), (4, 2, 0xf8));
        assert_eq!(pic_from_kvm(&k, true), c);
        let slave = PicChipState { icw3: 2, ..c };
        assert_eq!(pic_from_kvm(&pic_to_kvm(&slave, false), false), slave);
    }

    #[test]
    fn ioapic_round_trips() {
        let s = IoApicState {
            id: 5,
            ioregsel: 0x12,
            redirection: (0..24u64)
                .map(|i| (i << 56) | (0x30 + i) | (1 << 15))
                .collect(),
            irr: 1 << 9,
        };
        let mut k = kvm_ioapic_state {
            base_address: 0xfec0_0000,
            ..Default::default()
        };
        ioapic_to_kvm(&s, &mut k).unwrap();
        assert_eq!(k.base_address, 0xfec0_0000);
        assert_eq!(ioapic_from_kvm(&k), s);
        let short = IoApicState {
            redirection: vec![0; 3],
            ..s
        };
        assert!(ioapic_to_kvm(&short, &mut k).is_err());
    }

    #[test]
    fn pit_round_trips() {
        let mut p = PitState::default();
        p.channels[0] = PitChannelState {
            mode: 2,
            access: 3,
            count: 11932,
            elapsed_ns: Some(5_000),
            read_msb_next: true,
            latched_count: Some(0x1234),
            latched_msb_next: true,
            ..PitChannelState::default()
        };
        p.channels[2] = PitChannelState {
            mode: 0,
            access: 1,
            gate: true,
            count: 0x1_0000,
            elapsed_ns: Some(0),
            latched_status: Some(0x81),
            ..PitChannelState::default()
        };
        p.port61 = 3;
        let mut k = kvm_pit_state2::default();
        pit_to_kvm(&p, 1_000_000, &mut k);
        assert_eq!(k.channels[0].count_load_time, 995_000);
        assert_eq!(k.channels[1].mode, MODE_UNPROGRAMMED, "never programmed");
        assert_eq!(k.flags, KVM_PIT_FLAGS_SPEAKER_DATA_ON);
        assert_eq!(pit_from_kvm(&k, 1_000_000), p);
        let mut w = PitChannelState {
            mode: 3,
            access: 3,
            count: 2,
            elapsed_ns: Some(7),
            write_lsb: Some(0x55),
            ..PitChannelState::default()
        };
        let kc = channel_to_kvm(&w, 100);
        assert_eq!((kc.write_state, kc.write_latch), (RW_STATE_WORD1, 0x55));
        assert_eq!(channel_from_kvm(&kc, 100), w);
        w.write_lsb = None;
        assert_eq!(channel_to_kvm(&w, 100).write_state, RW_STATE_WORD0);
    }
}
