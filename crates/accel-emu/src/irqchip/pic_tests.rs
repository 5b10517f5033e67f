use super::*;

/// The sequence Linux's init_8259A() writes (auto_eoi = 0), leaving all masked.
fn linux_init() -> PicPair {
    let mut p = PicPair::new();
    p.io_write(MASTER_DATA, 0xff);
    p.io_write(SLAVE_DATA, 0xff);
    p.io_write(MASTER_CMD, 0x11); // ICW1: edge, cascade, ICW4
    p.io_write(MASTER_DATA, 0x20); // ICW2: vectors 0x20-0x27
    p.io_write(MASTER_DATA, 1 << 2); // ICW3: slave on IR2
    p.io_write(MASTER_DATA, 0x01); // ICW4: 8086, normal EOI
    p.io_write(SLAVE_CMD, 0x11);
    p.io_write(SLAVE_DATA, 0x28);
    p.io_write(SLAVE_DATA, 2); // cascade identity
    p.io_write(SLAVE_DATA, 0x01);
    p.io_write(MASTER_DATA, 0xff);
    p.io_write(SLAVE_DATA, 0xff);
    p
}

fn unmask(p: &mut PicPair, master: u8, slave: u8) {
    p.io_write(MASTER_DATA, master);
    p.io_write(SLAVE_DATA, slave);
}

#[test]
fn imr_reads_back_for_presence_probe() {
    let mut p = PicPair::new();
    p.io_write(MASTER_DATA, 0xff);
    assert_eq!(p.io_read(MASTER_DATA), 0xff);
    p.io_write(MASTER_DATA, 0xfb);
    assert_eq!(p.io_read(MASTER_DATA), 0xfb);
    assert_eq!(p.io_read(0x22), 0xff);
}

#[test]
fn init_sequence_sets_vectors_and_masks() {
    let mut p = linux_init();
    let s = p.state();
    assert_eq!(s.master.vector_base, 0x20);
    assert_eq!(s.slave.vector_base, 0x28);
    assert_eq!(s.master.icw3, 4);
    assert_eq!(s.slave.icw3, 2);
    assert_eq!(s.master.init_step, InitStep::Ready);
    assert!(!s.master.auto_eoi);
    // Masked: a request is latched in IRR but no INT.
    p.set_irq(0, true);
    assert!(!p.has_interrupt());
    assert_eq!(p.io_read(MASTER_CMD), 0x01);
    unmask(&mut p, 0xfe, 0xff);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x20);
    assert!(!p.has_interrupt());
}

#[test]
fn edge_needs_a_new_rising_edge() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.set_irq(1, true);
    assert_eq!(p.acknowledge(), 0x21);
    p.io_write(MASTER_CMD, 0x20); // non-specific EOI
                                  // Line still high: no new request.
    p.set_irq(1, true);
    assert!(!p.has_interrupt());
    p.set_irq(1, false);
    p.set_irq(1, true);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x21);
}

#[test]
fn edge_request_survives_line_drop_before_ack() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.set_irq(4, true);
    p.set_irq(4, false);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x24);
}

#[test]
fn priority_and_nesting() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.set_irq(3, true);
    assert_eq!(p.acknowledge(), 0x23);
    // Lower priority waits while IR3 is in service; higher preempts.
    p.set_irq(5, true);
    assert!(!p.has_interrupt());
    p.set_irq(1, true);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x21);
    // ISR read via OCW3.
    p.io_write(MASTER_CMD, 0x0b);
    assert_eq!(p.io_read(MASTER_CMD), 0x0a);
    p.io_write(MASTER_CMD, 0x0a);
    assert_eq!(p.io_read(MASTER_CMD), 0x20);
    // Non-specific EOI clears the highest (IR1), then IR3; then IR5 is delivered.
    p.io_write(MASTER_CMD, 0x20);
    assert!(!p.has_interrupt());
    p.io_write(MASTER_CMD, 0x20);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x25);
}

#[test]
fn specific_eoi_clears_named_level() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.set_irq(6, true);
    p.acknowledge();
    p.set_irq(0, true);
    p.acknowledge();
    p.io_write(MASTER_CMD, 0x60 + 6); // specific EOI IR6
    p.io_write(MASTER_CMD, 0x0b);
    assert_eq!(p.io_read(MASTER_CMD), 0x01);
}

#[test]
fn slave_cascade_and_linux_mask_and_ack() {
    let mut p = linux_init();
    unmask(&mut p, 0xfb, 0xfe); // IR2 cascade and IRQ8 open
    p.set_irq(8, true);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x28);
    let s = p.state();
    assert_eq!(s.master.isr, 0x04);
    assert_eq!(s.slave.isr, 0x01);
    // Linux mask_and_ack_8259A for IRQ8: mask, specific EOI slave, then master.
    p.io_write(SLAVE_DATA, 0xff);
    p.io_write(SLAVE_CMD, 0x60);
    p.io_write(MASTER_CMD, 0x60 + 2);
    let s = p.state();
    assert_eq!((s.master.isr, s.slave.isr), (0, 0));
    assert!(!p.has_interrupt());
}

#[test]
fn two_slave_requests_are_both_delivered() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.set_irq(12, true);
    p.set_irq(14, true);
    assert_eq!(p.acknowledge(), 0x2c);
    // Master IR2 in service blocks the second slave request until both EOIs.
    assert!(!p.has_interrupt());
    p.io_write(SLAVE_CMD, 0x20);
    p.io_write(MASTER_CMD, 0x20);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x2e);
}

#[test]
fn spurious_irq7_and_irq15() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    assert!(!p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x27);
    assert_eq!(p.state().master.isr, 0, "spurious IR7 sets no ISR bit");
    // A slave level request that goes away between INTR and INTA: IRQ15 spurious.
    p.io_write(ELCR_SLAVE, 0x08); // IRQ11 level
    p.set_irq(11, true);
    assert!(p.has_interrupt());
    p.set_irq(11, false);
    // The master already saw its cascade input; ack it by hand through the chip.
    p.master.irr |= 1 << 2;
    assert_eq!(p.acknowledge(), 0x2f);
    let s = p.state();
    assert_eq!(s.slave.isr, 0);
    assert_eq!(
        s.master.isr, 0x04,
        "master IR2 is in service; Linux EOIs the master"
    );
}

#[test]
fn level_triggered_via_elcr() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.io_write(ELCR_MASTER, 0xff);
    assert_eq!(p.io_read(ELCR_MASTER), 0xf8, "IRQ0-2 cannot be level");
    p.io_write(ELCR_SLAVE, 0xff);
    assert_eq!(p.io_read(ELCR_SLAVE), 0xde);
    p.set_irq(10, true);
    assert_eq!(p.acknowledge(), 0x2a);
    p.io_write(SLAVE_CMD, 0x20);
    p.io_write(MASTER_CMD, 0x20);
    // Still asserted: requests again without a new edge.
    assert!(p.has_interrupt());
    p.set_irq(10, false);
    assert!(!p.has_interrupt());
}

#[test]
fn auto_eoi_mode() {
    let mut p = PicPair::new();
    p.io_write(MASTER_CMD, 0x11);
    p.io_write(MASTER_DATA, 0x08);
    p.io_write(MASTER_DATA, 0x04);
    p.io_write(MASTER_DATA, 0x03); // AEOI
    p.io_write(MASTER_DATA, 0x00);
    p.set_irq(0, true);
    assert_eq!(p.acknowledge(), 0x08);
    assert_eq!(p.state().master.isr, 0);
    p.set_irq(3, true);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x0b);
}

#[test]
fn rotation_commands() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    // Set priority: IR4 lowest, so IR5 highest.
    p.io_write(MASTER_CMD, 0xc0 | 4);
    p.set_irq(1, true);
    p.set_irq(5, true);
    assert_eq!(p.acknowledge(), 0x25);
    // Rotate on non-specific EOI: IR5 becomes lowest, IR6 highest.
    p.io_write(MASTER_CMD, 0xa0);
    assert_eq!(p.state().master.lowest_priority, 5);
    assert_eq!(p.acknowledge(), 0x21);
    // Rotate on specific EOI.
    p.io_write(MASTER_CMD, 0xe0 | 1);
    assert_eq!(p.state().master.lowest_priority, 1);
    assert_eq!(p.state().master.isr, 0);
}

#[test]
fn special_mask_mode_allows_lower_priority() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.set_irq(1, true);
    assert_eq!(p.acknowledge(), 0x21);
    p.io_write(MASTER_DATA, 0x02); // mask IR1 while it is in service
    p.io_write(MASTER_CMD, 0x68); // OCW3: set special mask
    p.set_irq(6, true);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x26);
    p.io_write(MASTER_CMD, 0x48); // reset special mask
    assert!(!p.state().master.special_mask);
}

#[test]
fn poll_command() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.io_write(MASTER_CMD, 0x0c);
    assert_eq!(p.io_read(MASTER_CMD), 0x00);
    p.set_irq(3, true);
    p.io_write(MASTER_CMD, 0x0c);
    assert_eq!(p.io_read(MASTER_CMD), 0x83);
    assert_eq!(p.state().master.isr, 0x08);
    // The next read is a normal IRR read again.
    assert_eq!(p.io_read(MASTER_CMD), 0x00);
}

#[test]
fn reinit_clears_isr_and_masks() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.set_irq(0, true);
    p.acknowledge();
    p.io_write(MASTER_CMD, 0x11);
    let s = p.state();
    assert_eq!(
        (s.master.isr, s.master.imr, s.master.init_step),
        (0, 0, InitStep::Icw2)
    );
}

#[test]
fn out_of_range_irq_is_ignored() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0x00);
    p.set_irq(16, true);
    p.set_irq(2, true);
    assert!(!p.has_interrupt());
}

#[test]
fn state_round_trip() {
    let mut p = linux_init();
    unmask(&mut p, 0x00, 0xf0);
    p.io_write(ELCR_SLAVE, 0x0c);
    p.set_irq(9, true);
    p.set_irq(4, true);
    let v = p.acknowledge();
    let json = serde_json::to_string(&p.state()).unwrap();
    let back: PicState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p.state());
    let (a, b) = vm_device::persist::round_trip(&p, ()).unwrap();
    assert_eq!(a, b);
    let mut q = <PicPair as vm_device::Persist>::restore((), &back).unwrap();
    assert_eq!(q.state(), p.state());
    assert_eq!(q.has_interrupt(), p.has_interrupt());
    assert_eq!(q.acknowledge(), p.acknowledge());
    assert_ne!(v, 0);
}

#[test]
fn masked_cascade_blocks_slave() {
    let mut p = linux_init();
    unmask(&mut p, 0xff, 0x00);
    p.set_irq(9, true);
    assert!(!p.has_interrupt());
    p.io_write(MASTER_DATA, 0xfb);
    assert!(p.has_interrupt());
    assert_eq!(p.acknowledge(), 0x29);
}

#[test]
fn default_state_restores_to_power_up() {
    let mut p = <PicPair as vm_device::Persist>::restore((), &PicState::default()).unwrap();
    assert_eq!(p.state(), PicPair::new().state());
    p.set_irq(0, true);
    p.set_irq(1, true);
    assert_eq!(
        p.acknowledge(),
        0x00,
        "IR0 has the highest priority at power-up"
    );
}
