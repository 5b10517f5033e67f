//! The controllers working together the way the `emu` run loop wires them.

use super::ioapic::{IoApic, IOREGSEL, IOWIN};
use super::lapic::{reg, Lapic, LapicAction};
use super::pic::PicPair;
use super::{route, Delivery};
use crate::pit::{self, Pit};

struct Machine {
    pic: PicPair,
    ioapic: IoApic,
    pit: Pit,
    cpus: Vec<Lapic>,
}

impl Machine {
    fn new(n: u32) -> Self {
        let mut cpus: Vec<Lapic> = (0..n).map(Lapic::new).collect();
        for (i, l) in cpus.iter_mut().enumerate() {
            l.write(reg::SVR, 0x1ff, 0);
            l.write(reg::LDR, 1 << (24 + i), 0);
        }
        Machine {
            pic: PicPair::new(),
            ioapic: IoApic::new(n as u8),
            pit: Pit::new(),
            cpus,
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let targets: Vec<_> = self.cpus.iter().map(|l| l.target()).collect();
        for i in route(&d, &targets) {
            self.cpus[i].accept_delivery(&d);
        }
    }

    fn set_gsi(&mut self, gsi: u32, level: bool) {
        if let Some(d) = self.ioapic.set_irq(gsi, level) {
            self.deliver(d);
        }
    }

    fn program_rte(&mut self, pin: u32, val: u64) {
        self.ioapic.mmio_write(IOREGSEL, 0x11 + 2 * pin);
        self.ioapic.mmio_write(IOWIN, (val >> 32) as u32);
        self.ioapic.mmio_write(IOREGSEL, 0x10 + 2 * pin);
        for d in self.ioapic.mmio_write(IOWIN, val as u32) {
            self.deliver(d);
        }
    }

    /// The guest's EOI on CPU `cpu`, with the level EOI forwarded to the IOAPIC.
    fn eoi(&mut self, cpu: usize) {
        if let Some(LapicAction::Eoi { vector }) = self.cpus[cpu].write(reg::EOI, 0, 0) {
            for d in self.ioapic.eoi(vector) {
                self.deliver(d);
            }
        }
    }
}

/// PIT channel 0 through the ISA override to IOAPIC pin 2, edge, to CPU 0.
#[test]
fn pit_ticks_reach_the_lapic_through_the_ioapic() {
    let mut m = Machine::new(2);
    m.program_rte(2, 0x0000_0000_0000_0030);
    m.pit.io_write(pit::PORT_CMD, 0x34, 0);
    m.pit.io_write(pit::PORT_CH0, 0x9d, 0);
    m.pit.io_write(pit::PORT_CH0, 0x12, 0); // 4765 ticks, about 4 ms
    let mut ticks = 0;
    let mut now = 0;
    while ticks < 5 {
        now = m.pit.next_deadline().unwrap();
        if m.pit.advance(now) {
            m.set_gsi(2, true);
            m.set_gsi(2, false);
        }
        assert_eq!(m.cpus[0].acknowledge(), Some(0x30));
        assert_eq!(m.cpus[1].pending_vector(), None);
        m.eoi(0);
        ticks += 1;
    }
    assert_eq!(now, pit::ticks_to_ns(5 * 4765));
}

/// A level-triggered PCI INTx line shared by the IOAPIC and the EOI path.
#[test]
fn level_interrupt_round_trip() {
    let mut m = Machine::new(2);
    // Logical flat destination CPU 1, level, vector 0x41.
    m.program_rte(11, 0x0200_0000_0000_a941);
    m.set_gsi(11, true);
    assert_eq!(m.cpus[1].acknowledge(), Some(0x41));
    // The handler has not yet quietened the device: EOI re-delivers.
    m.eoi(1);
    assert_eq!(m.cpus[1].acknowledge(), Some(0x41));
    m.set_gsi(11, false);
    m.eoi(1);
    assert_eq!(m.cpus[1].pending_vector(), None);
    assert_eq!(m.ioapic.redirection_entry(11).unwrap() & (1 << 14), 0);
}

/// An MSI written by a device, routed physically.
#[test]
fn msi_reaches_its_cpu() {
    let mut m = Machine::new(4);
    let d = Delivery::from_msi(0xfee0_2000, 0x4051).unwrap();
    m.deliver(d);
    assert_eq!(m.cpus[2].acknowledge(), Some(0x51));
    assert!(m.cpus.iter().all(|l| l.pending_vector().is_none()));
}

/// Before the OS sets up the APICs, the BSP takes PIC interrupts via LINT0.
#[test]
fn virtual_wire_pic_to_bsp() {
    let mut m = Machine::new(2);
    m.pic.io_write(0x20, 0x11);
    m.pic.io_write(0x21, 0x30);
    m.pic.io_write(0x21, 0x04);
    m.pic.io_write(0x21, 0x01);
    m.pic.io_write(0x21, 0xfe);
    m.pic.set_irq(0, true);
    assert!(m.cpus[0].ext_int_enabled());
    assert!(!m.cpus[1].ext_int_enabled());
    assert!(m.pic.has_interrupt());
    assert_eq!(m.pic.acknowledge(), 0x30);
    // Linux's check_timer masks the virtual wire once the IOAPIC takes over.
    m.cpus[0].write(reg::LVT_LINT0, 0x1_0700, 0);
    assert!(!m.cpus[0].ext_int_enabled());
}

/// The LAPIC timer and TPR: a timer interrupt below the task priority waits.
#[test]
fn lapic_timer_respects_tpr() {
    let mut m = Machine::new(1);
    let l = &mut m.cpus[0];
    l.write(reg::TIMER_DIVIDE, 0xb, 0);
    l.write(reg::LVT_TIMER, 0x00ef, 0);
    l.write(reg::TIMER_INITIAL, 1000, 0);
    l.set_cr8(0xf);
    assert!(l.advance(1000));
    assert_eq!(l.pending_vector(), None);
    l.set_cr8(0xd);
    assert_eq!(l.acknowledge(), Some(0xef));
}
