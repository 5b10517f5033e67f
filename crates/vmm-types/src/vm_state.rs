//! Per-VM state outside the vCPUs: the PC's interrupt controllers and timer and
//! the guest clock, in accelerator-neutral terms. `accel-kvm` fills it from
//! KVM_GET_IRQCHIP / KVM_GET_PIT2 / KVM_GET_CLOCK, `accel-emu` from its own models.

use serde::{Deserialize, Serialize};

/// Where one 8259A is in its initialisation sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PicInitStep {
    /// Initialised: data-port writes set the IMR.
    #[default]
    Ready,
    /// ICW2 (vector base) expected next.
    Icw2,
    /// ICW3 (cascade) expected next.
    Icw3,
    /// ICW4 (mode) expected next.
    Icw4,
}

/// One Intel 8259A (data sheet terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicChipState {
    pub irr: u8,
    pub isr: u8,
    pub imr: u8,
    /// Input line levels last seen (edge detection).
    pub lines: u8,
    /// Edge/level control register (PIIX ELCR), 1 = level-triggered.
    pub elcr: u8,
    /// The input with the lowest priority (rotation); the next one up is the highest.
    pub lowest_priority: u8,
    /// ICW2: vector base (bits 7:3).
    pub vector_base: u8,
    /// ICW3 as written (KVM does not keep it: it reads back as the PC wiring).
    pub icw3: u8,
    pub init_step: PicInitStep,
    /// ICW1 IC4: an ICW4 follows.
    pub icw4_needed: bool,
    /// ICW1 SNGL: no cascade (KVM does not keep it: reads back false).
    pub single: bool,
    pub auto_eoi: bool,
    pub rotate_on_auto_eoi: bool,
    pub special_fully_nested: bool,
    /// OCW3 RR/RIS: command-port reads return ISR.
    pub read_isr: bool,
    /// OCW3 P: the next command-port read is a poll.
    pub poll: bool,
    pub special_mask: bool,
}

impl Default for PicChipState {
    /// Power-up: uninitialised, nothing masked, IR7 lowest priority.
    fn default() -> Self {
        PicChipState {
            irr: 0,
            isr: 0,
            imr: 0,
            lines: 0,
            elcr: 0,
            lowest_priority: 7,
            vector_base: 0,
            icw3: 0,
            init_step: PicInitStep::Ready,
            icw4_needed: false,
            single: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            read_isr: false,
            poll: false,
            special_mask: false,
        }
    }
}

/// The PC's cascaded 8259A pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicState {
    /// IRQ0-7 (ports 0x20/0x21, ELCR 0x4d0).
    pub master: PicChipState,
    /// IRQ8-15 (ports 0xa0/0xa1, ELCR 0x4d1).
    pub slave: PicChipState,
}

/// Number of IOAPIC pins in the neutral state.
pub const IOAPIC_PINS: usize = 24;

/// The I/O APIC (82093AA register model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoApicState {
    /// The 4-bit IOAPIC ID (register 0 bits 27:24).
    pub id: u8,
    pub ioregsel: u8,
    /// Redirection entries, 64 bits each as the registers 0x10+2n/0x11+2n hold them
    /// (remote IRR and delivery status included). [`IOAPIC_PINS`] entries.
    pub redirection: Vec<u64>,
    /// Asserted input pins (bit n = pin n), KVM's `irr`.
    pub irr: u32,
}

impl Default for IoApicState {
    /// Power-up: ID 0, every entry masked.
    fn default() -> Self {
        IoApicState {
            id: 0,
            ioregsel: 0,
            redirection: vec![1 << 16; IOAPIC_PINS],
            irr: 0,
        }
    }
}

/// One Intel 8254 counter. The count is not simulated: a counting channel is
/// described by the value it was loaded with and how long ago (guest nanoseconds)
/// that was, so each side can rebuild it on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitChannelState {
    /// Counter mode 0-5.
    pub mode: u8,
    /// Read/write access: 1 LSB, 2 MSB, 3 LSB then MSB.
    pub access: u8,
    pub bcd: bool,
    /// Gate input (channel 2: port 0x61 bit 0).
    pub gate: bool,
    /// The count the counting element started from, 1..=65536 (0: never loaded).
    pub count: u32,
    /// Nanoseconds the counter has been counting from `count` (None: not counting).
    pub elapsed_ns: Option<u64>,
    /// LSB of a two-byte count write waiting for its MSB.
    pub write_lsb: Option<u8>,
    /// In LSB-then-MSB access, the next unlatched read returns the MSB.
    pub read_msb_next: bool,
    /// A latched count waiting to be read.
    pub latched_count: Option<u16>,
    /// In LSB-then-MSB access, the LSB of the latched count was read.
    pub latched_msb_next: bool,
    /// A latched read-back status byte.
    pub latched_status: Option<u8>,
}

impl Default for PitChannelState {
    fn default() -> Self {
        PitChannelState {
            mode: 3,
            access: 3,
            bcd: false,
            gate: true,
            count: 0,
            elapsed_ns: None,
            write_lsb: None,
            read_msb_next: false,
            latched_count: None,
            latched_msb_next: false,
            latched_status: None,
        }
    }
}

/// The 8254 PIT and the speaker bits of port 0x61.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    pub channels: [PitChannelState; 3],
    /// Port 0x61 bits 0-3 as written: bit 0 speaker gate (channel 2's gate), bit 1
    /// speaker data, bits 2-3 parity/IOCHK check enables (KVM keeps bits 0-1 only).
    pub port61: u8,
}

impl Default for PitState {
    fn default() -> Self {
        let ch2 = PitChannelState {
            gate: false,
            ..PitChannelState::default()
        };
        PitState {
            channels: [PitChannelState::default(), PitChannelState::default(), ch2],
            port61: 0,
        }
    }
}

/// Everything a VM holds outside its vCPUs and devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    pub pic: PicState,
    pub ioapic: IoApicState,
    pub pit: PitState,
    /// The guest clock in nanoseconds (KVM: kvmclock; emu: its time base, which is
    /// also its TSC and LAPIC/PIT clock). Restoring continues guest time from here.
    pub clock_ns: u64,
}
