use super::timer::TimerMode;
use super::*;
use crate::irqchip::{route_ipi, Delivery};

/// A LAPIC the way Linux's setup_local_APIC leaves it: software-enabled with
/// spurious vector 0xff, flat logical mode, TPR 0.
fn enabled(id: u32) -> Lapic {
    let mut l = Lapic::new(id);
    l.write(reg::DFR, 0xffff_ffff, 0);
    l.write(reg::LDR, 1 << (24 + id), 0);
    l.write(reg::SVR, 0x1ff, 0);
    l
}

#[test]
fn reset_values() {
    let l = Lapic::new(3);
    assert_eq!(l.read(reg::ID, 0), 3 << 24);
    assert_eq!(l.read(reg::VERSION, 0), 0x50014);
    assert_eq!(l.read(reg::DFR, 0), 0xffff_ffff);
    assert_eq!(l.read(reg::SVR, 0), 0xff);
    assert_eq!(l.read(reg::LVT_TIMER, 0), 0x10000);
    assert_eq!(l.read(reg::LVT_LINT0, 0), 0x10000, "AP LINT0 masked");
    assert_eq!(l.apic_base(), 0xfee0_0800);
    assert!(!l.is_bsp());
    let bsp = Lapic::new(0);
    assert_eq!(bsp.apic_base(), 0xfee0_0900);
    assert!(bsp.ext_int_enabled(), "BSP starts in virtual-wire mode");
    assert!(!l.ext_int_enabled());
}

#[test]
fn software_disabled_drops_fixed_and_forces_masks() {
    let mut l = Lapic::new(1);
    l.accept_interrupt(0x40, false);
    assert_eq!(l.pending_vector(), None);
    assert_eq!(l.read(reg::IRR + 0x20, 0), 0);
    l.write(reg::LVT_LINT1, 0x400, 0);
    assert_eq!(
        l.read(reg::LVT_LINT1, 0),
        0x10400,
        "mask forced while disabled"
    );
    l.write(reg::SVR, 0x1ff, 0);
    l.write(reg::LVT_LINT1, 0x400, 0);
    assert_eq!(l.read(reg::LVT_LINT1, 0), 0x400);
    // Disabling again masks every LVT.
    l.write(reg::SVR, 0xff, 0);
    assert_eq!(l.read(reg::LVT_LINT1, 0), 0x10400);
}

#[test]
fn accept_priority_and_eoi() {
    let mut l = enabled(0);
    l.accept_interrupt(0x31, false);
    l.accept_interrupt(0x52, false);
    assert_eq!(l.read(reg::IRR + 0x10, 0), 1 << 0x11);
    assert_eq!(l.read(reg::IRR + 0x20, 0), 1 << 0x12);
    assert_eq!(l.pending_vector(), Some(0x52));
    assert_eq!(l.acknowledge(), Some(0x52));
    assert_eq!(l.read(reg::ISR + 0x20, 0), 1 << 0x12);
    assert_eq!(l.read(reg::PPR, 0), 0x50);
    // 0x31 is in a lower class than the one in service.
    assert_eq!(l.pending_vector(), None);
    // A same-class vector also waits; a higher class preempts.
    l.accept_interrupt(0x5f, false);
    assert_eq!(l.pending_vector(), None);
    l.accept_interrupt(0x61, false);
    assert_eq!(l.acknowledge(), Some(0x61));
    assert_eq!(l.write(reg::EOI, 0, 0), None);
    assert_eq!(l.read(reg::ISR + 0x30, 0), 0);
    assert_eq!(l.write(reg::EOI, 0, 0), None);
    assert_eq!(l.acknowledge(), Some(0x5f));
    l.write(reg::EOI, 0, 0);
    assert_eq!(l.acknowledge(), Some(0x31));
    l.write(reg::EOI, 0, 0);
    assert_eq!(l.acknowledge(), None);
    assert_eq!(l.write(reg::EOI, 0, 0), None, "EOI with nothing in service");
}

#[test]
fn tpr_blocks_and_cr8_mapping() {
    let mut l = enabled(0);
    l.set_cr8(5);
    assert_eq!(l.tpr(), 0x50);
    assert_eq!(l.read(reg::TPR, 0), 0x50);
    l.accept_interrupt(0x55, false);
    assert_eq!(l.pending_vector(), None);
    l.write(reg::TPR, 0x40, 0);
    assert_eq!(l.cr8(), 4);
    assert_eq!(l.pending_vector(), Some(0x55));
    assert_eq!(l.read(reg::PPR, 0), 0x40);
    assert_eq!(l.read(reg::APR, 0), 0x50);
}

/// The IOAPIC level-triggered path: TMR set on accept, EOI forwarded.
#[test]
fn level_triggered_eoi_is_forwarded() {
    let mut l = enabled(0);
    l.accept_interrupt(0x41, true);
    assert_eq!(l.read(reg::TMR + 0x20, 0), 1 << 1);
    assert_eq!(l.acknowledge(), Some(0x41));
    assert_eq!(
        l.write(reg::EOI, 0, 0),
        Some(LapicAction::Eoi { vector: 0x41 })
    );
    // Edge re-accept clears TMR.
    l.accept_interrupt(0x41, false);
    assert_eq!(l.read(reg::TMR + 0x20, 0), 0);
}

#[test]
fn illegal_vectors_set_esr() {
    let mut l = enabled(0);
    l.write(reg::LVT_ERROR, 0xfe, 0);
    l.accept_interrupt(0x05, false);
    assert_eq!(l.read(reg::ESR, 0), 0, "ESR updates on write");
    l.write(reg::ESR, 0, 0);
    assert_eq!(l.read(reg::ESR, 0), 0x40);
    assert_eq!(l.pending_vector(), Some(0xfe), "error LVT fired");
    l.write(reg::ICR_LOW, 0x0000_0003, 0);
    l.write(reg::ESR, 0, 0);
    assert_eq!(l.read(reg::ESR, 0), 0x20);
    l.write(reg::ESR, 0, 0);
    assert_eq!(l.read(reg::ESR, 0), 0);
}

#[test]
fn icr_sends_ipis() {
    let mut l = enabled(0);
    l.write(reg::ICR_HIGH, 0x0300_0000, 0);
    assert_eq!(l.read(reg::ICR_HIGH, 0), 0x0300_0000);
    let a = l.write(reg::ICR_LOW, 0x0000_40fd, 0);
    assert_eq!(
        a,
        Some(LapicAction::SendIpi(Ipi {
            vector: 0xfd,
            delivery_mode: DeliveryMode::Fixed,
            dest: 3,
            logical: false,
            shorthand: Shorthand::None,
            level: true,
            level_triggered: false,
        }))
    );
    assert_eq!(
        l.read(reg::ICR_LOW, 0) & (1 << 12),
        0,
        "delivery status idle"
    );
    // Self IPI shorthand, NMI to all-but-self.
    let Some(LapicAction::SendIpi(ipi)) = l.write(reg::ICR_LOW, 0x0004_0030, 0) else {
        panic!()
    };
    assert_eq!(ipi.shorthand, Shorthand::SelfOnly);
    let Some(LapicAction::SendIpi(ipi)) = l.write(reg::ICR_LOW, 0x000c_0400, 0) else {
        panic!()
    };
    assert_eq!(
        (ipi.shorthand, ipi.delivery_mode),
        (Shorthand::AllExcludingSelf, DeliveryMode::Nmi)
    );
    // Reserved delivery mode sends nothing.
    assert_eq!(l.write(reg::ICR_LOW, 0x0000_0330, 0), None);
}

/// Linux's INIT-SIPI-SIPI AP start-up sequence between two APICs.
#[test]
fn init_sipi_sipi() {
    let mut bsp = enabled(0);
    let mut ap = Lapic::new(1);
    let send = |bsp: &mut Lapic, ap: &mut Lapic, hi: u32, lo: u32| {
        bsp.write(reg::ICR_HIGH, hi, 0);
        if let Some(LapicAction::SendIpi(ipi)) = bsp.write(reg::ICR_LOW, lo, 0) {
            let targets = [bsp.target(), ap.target()];
            for i in route_ipi(&ipi, 0, &targets) {
                assert_eq!(i, 1);
                ap.accept_ipi(&ipi);
            }
        }
    };
    send(&mut bsp, &mut ap, 1 << 24, 0x0000_c500); // INIT assert, level
    send(&mut bsp, &mut ap, 1 << 24, 0x0000_8500); // INIT de-assert
    assert!(ap.take_init());
    assert!(!ap.take_init());
    ap.init_reset();
    send(&mut bsp, &mut ap, 1 << 24, 0x0000_0698); // SIPI, page 0x98
    assert_eq!(ap.take_sipi(), Some(0x98));
    assert_eq!(ap.take_sipi(), None);
}

#[test]
fn nmi_latch_and_delivery_modes() {
    let mut l = enabled(0);
    let d = Delivery {
        vector: 0,
        delivery_mode: DeliveryMode::Nmi,
        dest: 0,
        logical: false,
        level_triggered: false,
    };
    l.accept_delivery(&d);
    assert!(l.take_nmi());
    assert!(!l.take_nmi());
    let d = Delivery {
        vector: 0x33,
        delivery_mode: DeliveryMode::LowestPriority,
        ..d
    };
    l.accept_delivery(&d);
    assert_eq!(l.pending_vector(), Some(0x33));
}

#[test]
fn lint0_virtual_wire_and_global_disable() {
    let mut l = enabled(1);
    assert!(!l.ext_int_enabled());
    l.write(reg::LVT_LINT0, 0x700, 0);
    assert!(l.ext_int_enabled());
    l.write(reg::LVT_LINT0, 0x10700, 0);
    assert!(!l.ext_int_enabled());
    // Global disable: PIC goes straight to the core; register state resets.
    l.set_apic_base(0xfee0_0000).unwrap();
    assert!(l.ext_int_enabled());
    assert!(!l.sw_enabled());
    l.accept_interrupt(0x40, false);
    assert_eq!(l.pending_vector(), None);
    l.set_apic_base(0xfee0_0800).unwrap();
    assert_eq!(l.read(reg::SVR, 0), 0xff);
    assert_eq!(l.read(reg::ID, 0), 1 << 24);
}

#[test]
fn apic_base_msr_checks() {
    let mut l = Lapic::new(0);
    assert_eq!(
        l.set_apic_base(0xfee0_0c00),
        Err(LapicError::X2ApicUnsupported)
    );
    assert_eq!(
        l.set_apic_base(0xfee0_0801),
        Err(LapicError::ReservedApicBaseBits(0xfee0_0801))
    );
    assert!(l.set_apic_base(1 << 60).is_err());
    l.set_apic_base(0xfed0_0900).unwrap();
    assert_eq!(l.base_address(), 0xfed0_0000);
    assert!(l.is_bsp());
}

#[test]
fn register_masks() {
    let mut l = enabled(0);
    l.write(reg::LDR, 0xffff_ffff, 0);
    assert_eq!(l.read(reg::LDR, 0), 0xff00_0000);
    l.write(reg::DFR, 0, 0);
    assert_eq!(l.read(reg::DFR, 0), 0x0fff_ffff);
    l.write(reg::VERSION, 0, 0);
    assert_eq!(l.read(reg::VERSION, 0), VERSION);
    l.write(reg::LVT_TIMER, 0xffff_ffff, 0);
    assert_eq!(
        l.read(reg::LVT_TIMER, 0),
        0x0001_00ff,
        "reserved mode 11b reads as one-shot"
    );
    l.write(reg::LVT_LINT0, 0xffff_ffff, 0);
    assert_eq!(l.read(reg::LVT_LINT0, 0), 0x0001_a7ff);
    l.write(reg::ID, 0x0700_0000, 0);
    assert_eq!(l.apic_id(), 7);
    assert_eq!(l.read(0x3f0, 0), 0);
    // Sub-register offsets select the containing register.
    assert_eq!(l.read(reg::LDR + 4, 0), 0xff00_0000);
}

#[test]
fn timer_one_shot_and_current_count() {
    let mut l = enabled(0);
    l.write(reg::TIMER_DIVIDE, 0x3, 0); // divide by 16
    assert_eq!(l.timer_divisor(), 16);
    l.write(reg::LVT_TIMER, 0xef, 0);
    l.write(reg::TIMER_INITIAL, 1000, 1_000);
    assert_eq!(l.next_timer_deadline(), Some(1_000 + 16_000));
    assert_eq!(l.read(reg::TIMER_CURRENT, 1_000), 1000);
    assert_eq!(l.read(reg::TIMER_CURRENT, 1_000 + 160), 990);
    assert!(!l.advance(16_999));
    assert_eq!(l.pending_vector(), None);
    assert!(l.advance(17_000));
    assert_eq!(l.pending_vector(), Some(0xef));
    assert_eq!(l.read(reg::TIMER_CURRENT, 20_000), 0);
    assert_eq!(l.next_timer_deadline(), None);
    assert!(!l.advance(1_000_000));
}

#[test]
fn divide_values() {
    let mut l = enabled(0);
    for (dcr, div) in [
        (0x0, 2),
        (0x1, 4),
        (0x2, 8),
        (0x3, 16),
        (0x8, 32),
        (0x9, 64),
        (0xa, 128),
        (0xb, 1),
    ] {
        l.write(reg::TIMER_DIVIDE, dcr, 0);
        assert_eq!(l.timer_divisor(), div, "dcr {dcr:#x}");
    }
    l.write(reg::TIMER_DIVIDE, 0xffff_ffff, 0);
    assert_eq!(l.read(reg::TIMER_DIVIDE, 0), 0xb);
}

#[test]
fn timer_periodic_no_drift_and_lost_ticks_collapse() {
    let mut l = enabled(0);
    l.write(reg::TIMER_DIVIDE, 0xb, 0); // divide by 1: 1 count = 1 ns
    l.write(reg::LVT_TIMER, 0x2_00ec, 0);
    assert_eq!(l.timer_mode(), TimerMode::Periodic);
    l.write(reg::TIMER_INITIAL, 100, 50);
    assert_eq!(l.read(reg::TIMER_CURRENT, 50 + 30), 70);
    assert_eq!(l.read(reg::TIMER_CURRENT, 50 + 130), 70);
    assert!(l.advance(150));
    assert_eq!(l.next_timer_deadline(), Some(250));
    assert_eq!(l.acknowledge(), Some(0xec));
    l.write(reg::EOI, 0, 0);
    // Late by 3.5 periods: one interrupt, next expiry stays on the grid.
    assert!(l.advance(555));
    assert_eq!(l.next_timer_deadline(), Some(650));
    assert_eq!(l.acknowledge(), Some(0xec));
    assert_eq!(l.acknowledge(), None);
    // Masked: still counts, raises nothing, no wakeup deadline.
    l.write(reg::LVT_TIMER, 0x3_00ec, 0);
    assert_eq!(l.next_timer_deadline(), None);
    assert!(l.advance(700));
    assert_eq!(l.pending_vector(), None);
    // Initial count 0 stops it.
    l.write(reg::LVT_TIMER, 0x2_00ec, 0);
    l.write(reg::TIMER_INITIAL, 0, 800);
    assert_eq!(l.next_timer_deadline(), None);
}

/// Linux's calibrate_APIC_clock: divide by 16, one-shot-like periodic count
/// of 0xffffffff, read the current count twice across a known interval.
#[test]
fn timer_calibration_sequence() {
    let mut l = enabled(0);
    l.write(reg::TIMER_DIVIDE, 0x3, 0);
    l.write(reg::LVT_TIMER, 0x1_00ec, 0); // masked one-shot
    l.write(reg::TIMER_INITIAL, 0xffff_ffff, 1_000_000);
    let t0 = l.read(reg::TIMER_CURRENT, 1_000_000);
    let t1 = l.read(reg::TIMER_CURRENT, 1_000_000 + 100_000_000); // 100 ms later
    let delta = u64::from(t0 - t1);
    // 1 GHz bus / 16 = 62.5 MHz: 6.25 M counts in 100 ms.
    assert_eq!(delta, 6_250_000);
    assert_eq!(delta * 16 * 10, 1_000_000_000, "bus clock derives as 1 GHz");
}

#[test]
fn divide_change_keeps_count() {
    let mut l = enabled(0);
    l.write(reg::TIMER_DIVIDE, 0xb, 0);
    l.write(reg::LVT_TIMER, 0x30, 0);
    l.write(reg::TIMER_INITIAL, 1000, 0);
    l.write(reg::TIMER_DIVIDE, 0x0, 400); // now divide by 2, 600 counts left
    assert_eq!(l.read(reg::TIMER_CURRENT, 400), 600);
    assert_eq!(l.read(reg::TIMER_CURRENT, 600), 500);
    assert_eq!(l.next_timer_deadline(), Some(400 + 1200));
}

#[test]
fn tsc_deadline_mode() {
    let mut l = enabled(0);
    // Ignored outside deadline mode.
    l.set_tsc_deadline_ns(Some(10));
    assert_eq!(l.tsc_deadline_ns(), None);
    l.write(reg::LVT_TIMER, 0x4_00ee, 0);
    assert_eq!(l.timer_mode(), TimerMode::TscDeadline);
    // Initial-count writes are ignored in this mode.
    l.write(reg::TIMER_INITIAL, 5, 0);
    assert_eq!(l.read(reg::TIMER_INITIAL, 0), 0);
    l.set_tsc_deadline_ns(Some(5_000));
    assert_eq!(l.next_timer_deadline(), Some(5_000));
    assert!(!l.advance(4_999));
    assert!(l.advance(5_000));
    assert_eq!(
        l.tsc_deadline_ns(),
        None,
        "deadline MSR reads 0 after firing"
    );
    assert_eq!(l.pending_vector(), Some(0xee));
    // Re-arm and disarm.
    l.set_tsc_deadline_ns(Some(9_000));
    l.set_tsc_deadline_ns(None);
    assert!(!l.advance(10_000));
    // Switching mode clears the deadline.
    l.set_tsc_deadline_ns(Some(20_000));
    l.write(reg::LVT_TIMER, 0x00ee, 0);
    assert_eq!(l.tsc_deadline_ns(), None);
    assert_eq!(l.next_timer_deadline(), None);
}

#[test]
fn state_round_trip() {
    let mut l = enabled(2);
    l.write(reg::LVT_TIMER, 0x2_0031, 0);
    l.write(reg::TIMER_INITIAL, 12345, 77);
    l.accept_interrupt(0x80, true);
    l.acknowledge();
    l.accept_interrupt(0x41, false);
    l.accept_sipi(0x9);
    l.set_tpr(0x20);
    let json = serde_json::to_string(&l.state()).unwrap();
    let back: LapicState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, l.state());
    let (a, b) = vm_device::persist::round_trip(&l, ()).unwrap();
    assert_eq!(a, b);
    let mut r = <Lapic as vm_device::Persist>::restore((), &back).unwrap();
    assert_eq!(r.state(), l.state());
    for off in (0..0x400).step_by(0x10) {
        assert_eq!(r.read(off, 5000), l.read(off, 5000), "offset {off:#x}");
    }
    assert_eq!(r.next_timer_deadline(), l.next_timer_deadline());
    assert_eq!(r.write(reg::EOI, 0, 0), l.write(reg::EOI, 0, 0));
}
