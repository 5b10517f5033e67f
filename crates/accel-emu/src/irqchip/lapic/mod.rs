//! The local APIC of one vCPU in xAPIC mode (Intel SDM Vol. 3A chapter 10):
//! the MMIO register file at 0xFEE00000, interrupt acceptance and priority
//! (IRR/ISR/TMR, TPR/PPR), EOI, inter-processor interrupts through the ICR,
//! NMI/INIT/SIPI latching, LINT0 virtual wire, and the APIC timer (see
//! [`timer`]).
//!
//! The model is a pure state machine: the caller passes `now_ns` (monotonic
//! nanoseconds of the VM's clock), routes returned [`LapicAction`]s (IPIs to
//! other LAPICs via [`crate::irqchip::route_ipi`], level EOIs to the IOAPIC),
//! and polls [`Lapic::pending_vector`] / [`Lapic::take_nmi`] / [`Lapic::take_init`] /
//! [`Lapic::take_sipi`] at instruction boundaries.

pub mod page;
pub mod timer;

use serde::{Deserialize, Serialize};

use super::route::ApicTarget;
use super::DeliveryMode;

pub use timer::BUS_NS_PER_TICK;

/// Version register: version 0x14 (integrated xAPIC), 6 LVT entries (max LVT 5).
pub const VERSION: u32 = 0x0005_0014;
/// Default physical base of the register page.
pub const DEFAULT_BASE: u64 = 0xfee0_0000;

/// IA32_APIC_BASE bits.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE x2APIC enable (not supported here).
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
/// IA32_APIC_BASE global enable.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Register offsets in the APIC page.
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x020;
    /// Version.
    pub const VERSION: u32 = 0x030;
    /// Task priority.
    pub const TPR: u32 = 0x080;
    /// Arbitration priority.
    pub const APR: u32 = 0x090;
    /// Processor priority.
    pub const PPR: u32 = 0x0a0;
    /// End of interrupt.
    pub const EOI: u32 = 0x0b0;
    /// Remote read.
    pub const RRD: u32 = 0x0c0;
    /// Logical destination.
    pub const LDR: u32 = 0x0d0;
    /// Destination format.
    pub const DFR: u32 = 0x0e0;
    /// Spurious interrupt vector.
    pub const SVR: u32 = 0x0f0;
    /// In-service register, 8 x 32 bits at 0x100-0x170.
    pub const ISR: u32 = 0x100;
    /// Trigger mode register, 8 x 32 bits at 0x180-0x1f0.
    pub const TMR: u32 = 0x180;
    /// Interrupt request register, 8 x 32 bits at 0x200-0x270.
    pub const IRR: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// Interrupt command, low half (writing it sends).
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command, high half (destination).
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u32 = 0x330;
    /// LVT performance counters.
    pub const LVT_PERF: u32 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count.
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

const LVT_MASKED: u32 = 1 << 16;
/// Writable bits of each LVT entry, in register order timer, thermal, perf, LINT0, LINT1, error.
const LVT_WRITABLE: [u32; 6] = [
    0x0007_00ff,
    0x0001_07ff,
    0x0001_07ff,
    0x0001_a7ff,
    0x0001_a7ff,
    0x0001_00ff,
];
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_ERROR: usize = 5;
const SVR_ENABLE: u32 = 1 << 8;
const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;

/// ESR bits (SDM 10.5.3).
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECV_ILLEGAL_VECTOR: u32 = 1 << 6;

/// Errors of APIC MSR accesses; the vCPU turns them into #GP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LapicError {
    /// A write to IA32_APIC_BASE set reserved bits.
    #[error("IA32_APIC_BASE write {0:#x} sets reserved bits")]
    ReservedApicBaseBits(u64),
    /// The guest tried to enable x2APIC mode, which is not emulated.
    #[error("x2APIC mode is not supported")]
    X2ApicUnsupported,
}

/// ICR destination shorthand (bits 19:18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shorthand {
    /// Use the destination field.
    None,
    /// Only the sender.
    SelfOnly,
    /// Every APIC including the sender.
    AllIncludingSelf,
    /// Every APIC except the sender.
    AllExcludingSelf,
}

/// An inter-processor interrupt the guest sent by writing ICR low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipi {
    /// Vector (start page for SIPI).
    pub vector: u8,
    /// Delivery mode (ExtINT is not valid in an IPI and is sent as such; receivers ignore it).
    pub delivery_mode: DeliveryMode,
    /// Destination field (ICR high bits 31:24).
    pub dest: u32,
    /// Logical destination mode.
    pub logical: bool,
    /// Destination shorthand.
    pub shorthand: Shorthand,
    /// Level bit (14): assert (true) or de-assert.
    pub level: bool,
    /// Trigger mode bit (15): level-triggered.
    pub level_triggered: bool,
}

impl Ipi {
    /// The "INIT level de-assert" message (INIT, level-triggered, level 0) that
    /// older SMP boot code sends to synchronise arbitration IDs. Receivers ignore it.
    pub fn is_init_deassert(&self) -> bool {
        self.delivery_mode == DeliveryMode::Init && self.level_triggered && !self.level
    }
}

/// Something a register write asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapicAction {
    /// Deliver this IPI (route it with [`crate::irqchip::route_ipi`]).
    SendIpi(Ipi),
    /// The guest EOI'd a level-triggered interrupt: forward to the IOAPIC's `eoi(vector)`.
    Eoi {
        /// The vector that left service.
        vector: u8,
    },
}

/// Snapshot of a [`Lapic`]; times are in the VM's monotonic ns domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapicState {
    /// APIC ID (8 bits).
    pub apic_id: u32,
    /// IA32_APIC_BASE MSR.
    pub apic_base: u64,
    /// Task priority.
    pub tpr: u8,
    /// Logical destination register.
    pub ldr: u32,
    /// Destination format register.
    pub dfr: u32,
    /// Spurious interrupt vector register.
    pub svr: u32,
    /// In-service register, vectors 0-255.
    pub isr: [u32; 8],
    /// Trigger mode register.
    pub tmr: [u32; 8],
    /// Interrupt request register.
    pub irr: [u32; 8],
    /// Error status as last latched by an ESR write.
    pub esr: u32,
    /// Errors since the last ESR write.
    pub esr_pending: u32,
    /// ICR low as last written (delivery status always idle).
    pub icr_low: u32,
    /// ICR high.
    pub icr_high: u32,
    /// LVT timer, thermal, perf, LINT0, LINT1, error.
    pub lvt: [u32; 6],
    /// Timer initial count.
    pub timer_initial: u32,
    /// Timer divide configuration register.
    pub timer_divide: u32,
    /// When the current one-shot/periodic count started.
    pub timer_start_ns: u64,
    /// Next one-shot/periodic expiry.
    pub timer_next_ns: Option<u64>,
    /// Armed TSC deadline, in ns.
    pub tsc_deadline_ns: Option<u64>,
    /// NMI latched for the vCPU.
    pub pending_nmi: bool,
    /// INIT latched for the vCPU.
    pub pending_init: bool,
    /// Latest start-up IPI vector latched for the vCPU.
    pub pending_sipi: Option<u8>,
}

/// One local APIC.
#[derive(Debug, Clone)]
pub struct Lapic {
    s: LapicState,
}

fn bit_test(regs: &[u32; 8], v: u8) -> bool {
    regs[usize::from(v >> 5)] & (1 << (v & 31)) != 0
}
fn bit_set(regs: &mut [u32; 8], v: u8) {
    regs[usize::from(v >> 5)] |= 1 << (v & 31);
}
fn bit_clear(regs: &mut [u32; 8], v: u8) {
    regs[usize::from(v >> 5)] &= !(1 << (v & 31));
}
fn highest(regs: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| regs[i] != 0)
        .map(|i| (i as u32 * 32 + 31 - regs[i].leading_zeros()) as u8)
}

impl Lapic {
    /// A LAPIC in its power-up state at [`DEFAULT_BASE`], globally enabled and
    /// software-disabled. APIC ID 0 is the bootstrap processor (BSP bit set), and
    /// its LINT0 is left in ExtINT mode, unmasked (virtual wire), as firmware
    /// leaves it, so the PIC reaches the BSP before the OS programs the APIC.
    pub fn new(apic_id: u32) -> Self {
        let bsp = if apic_id == 0 { APIC_BASE_BSP } else { 0 };
        let mut l = Lapic {
            s: LapicState {
                apic_id: apic_id & 0xff,
                apic_base: DEFAULT_BASE | APIC_BASE_ENABLE | bsp,
                tpr: 0,
                ldr: 0,
                dfr: 0,
                svr: 0,
                isr: [0; 8],
                tmr: [0; 8],
                irr: [0; 8],
                esr: 0,
                esr_pending: 0,
                icr_low: 0,
                icr_high: 0,
                lvt: [0; 6],
                timer_initial: 0,
                timer_divide: 0,
                timer_start_ns: 0,
                timer_next_ns: None,
                tsc_deadline_ns: None,
                pending_nmi: false,
                pending_init: false,
                pending_sipi: None,
            },
        };
        l.reset_registers();
        l
    }

    /// Resets the register file as INIT does: everything but the APIC ID and
    /// IA32_APIC_BASE. A latched SIPI survives (it follows the INIT).
    pub fn init_reset(&mut self) {
        self.reset_registers();
    }

    fn reset_registers(&mut self) {
        let s = &mut self.s;
        s.tpr = 0;
        s.ldr = 0;
        s.dfr = 0xffff_ffff;
        s.svr = 0xff;
        s.isr = [0; 8];
        s.tmr = [0; 8];
        s.irr = [0; 8];
        s.esr = 0;
        s.esr_pending = 0;
        s.icr_low = 0;
        s.icr_high = 0;
        s.lvt = [LVT_MASKED; 6];
        if s.apic_base & APIC_BASE_BSP != 0 {
            s.lvt[LVT_LINT0] = DeliveryMode::ExtInt.bits() << 8;
        }
        s.timer_initial = 0;
        s.timer_divide = 0;
        s.timer_start_ns = 0;
        s.timer_next_ns = None;
        s.tsc_deadline_ns = None;
        s.pending_nmi = false;
        s.pending_init = false;
    }

    /// The APIC ID.
    pub fn apic_id(&self) -> u32 {
        self.s.apic_id
    }

    /// What routing needs to know about this APIC.
    pub fn target(&self) -> ApicTarget {
        ApicTarget {
            apic_id: self.s.apic_id,
            ldr: self.s.ldr,
            dfr: self.s.dfr,
            enabled: self.hw_enabled(),
            tpr: self.s.tpr,
        }
    }

    /// IA32_APIC_BASE.
    pub fn apic_base(&self) -> u64 {
        self.s.apic_base
    }

    /// The physical address of the register page.
    pub fn base_address(&self) -> u64 {
        self.s.apic_base & APIC_BASE_ADDR_MASK
    }

    /// WRMSR IA32_APIC_BASE. Clearing the global enable resets the APIC to its
    /// power-up register state (the ID is kept). Errors (the vCPU injects #GP):
    /// reserved bits, or the x2APIC enable bit.
    pub fn set_apic_base(&mut self, val: u64) -> Result<(), LapicError> {
        if val & APIC_BASE_X2APIC != 0 {
            return Err(LapicError::X2ApicUnsupported);
        }
        if val & !(APIC_BASE_ADDR_MASK | APIC_BASE_BSP | APIC_BASE_ENABLE) != 0 {
            return Err(LapicError::ReservedApicBaseBits(val));
        }
        let was_enabled = self.hw_enabled();
        self.s.apic_base = val;
        if was_enabled && !self.hw_enabled() {
            self.reset_registers();
        }
        Ok(())
    }

    /// Global enable (IA32_APIC_BASE bit 11).
    pub fn hw_enabled(&self) -> bool {
        self.s.apic_base & APIC_BASE_ENABLE != 0
    }

    /// Software enable (SVR bit 8).
    pub fn sw_enabled(&self) -> bool {
        self.s.svr & SVR_ENABLE != 0
    }

    /// The bootstrap processor flag (IA32_APIC_BASE bit 8).
    pub fn is_bsp(&self) -> bool {
        self.s.apic_base & APIC_BASE_BSP != 0
    }

    /// Task priority register.
    pub fn tpr(&self) -> u8 {
        self.s.tpr
    }

    /// Sets the task priority register.
    pub fn set_tpr(&mut self, tpr: u8) {
        self.s.tpr = tpr;
    }

    /// CR8 as the guest reads it: TPR bits 7:4.
    pub fn cr8(&self) -> u64 {
        u64::from(self.s.tpr >> 4)
    }

    /// MOV to CR8: TPR = CR8[3:0] << 4. (Reserved CR8 bits are the vCPU's #GP to raise.)
    pub fn set_cr8(&mut self, cr8: u64) {
        self.s.tpr = ((cr8 & 0xf) << 4) as u8;
    }

    /// Processor priority (SDM 10.8.3.1).
    pub fn ppr(&self) -> u8 {
        let isrv = highest(&self.s.isr).unwrap_or(0);
        if self.s.tpr >> 4 >= isrv >> 4 {
            self.s.tpr
        } else {
            isrv & 0xf0
        }
    }

    fn apr(&self) -> u8 {
        let isrv = highest(&self.s.isr).unwrap_or(0);
        let irrv = highest(&self.s.irr).unwrap_or(0);
        if self.s.tpr >> 4 >= (isrv >> 4).max(irrv >> 4) {
            self.s.tpr
        } else {
            (self.s.tpr & 0xf0).max(isrv & 0xf0).max(irrv & 0xf0)
        }
    }

    /// LINT0 delivers the PIC's INTR to this CPU: the APIC is globally
    /// disabled (INTR goes straight to the core), or LINT0 is unmasked in
    /// ExtINT mode (virtual wire). The vCPU then takes PIC interrupts.
    pub fn ext_int_enabled(&self) -> bool {
        let lint0 = self.s.lvt[LVT_LINT0];
        !self.hw_enabled()
            || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == DeliveryMode::ExtInt.bits())
    }

    /// A fixed interrupt arrives (IOAPIC, MSI or IPI). Dropped when the APIC is
    /// disabled; vectors 0-15 are illegal and set the receive-error bit.
    pub fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) {
        if !self.hw_enabled() || !self.sw_enabled() {
            return;
        }
        if vector < 16 {
            self.raise_error(ESR_RECV_ILLEGAL_VECTOR);
            return;
        }
        bit_set(&mut self.s.irr, vector);
        if level_triggered {
            bit_set(&mut self.s.tmr, vector);
        } else {
            bit_clear(&mut self.s.tmr, vector);
        }
    }

    /// Accepts a routed [`super::Delivery`] by its delivery mode. SMI and
    /// ExtINT are not handled here (ExtINT: see [`Lapic::ext_int_enabled`]).
    pub fn accept_delivery(&mut self, d: &super::Delivery) {
        self.accept_message(d.delivery_mode, d.vector, d.level_triggered);
    }

    /// Accepts an IPI this APIC was routed (INIT de-assert is ignored).
    pub fn accept_ipi(&mut self, ipi: &Ipi) {
        if !ipi.is_init_deassert() {
            self.accept_message(ipi.delivery_mode, ipi.vector, ipi.level_triggered);
        }
    }

    fn accept_message(&mut self, mode: DeliveryMode, vector: u8, level_triggered: bool) {
        match mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.accept_interrupt(vector, level_triggered)
            }
            DeliveryMode::Nmi => self.accept_nmi(),
            DeliveryMode::Init => self.accept_init(),
            DeliveryMode::StartUp => self.accept_sipi(vector),
            DeliveryMode::Smi | DeliveryMode::ExtInt => {
                tracing::debug!(?mode, apic_id = self.s.apic_id, "LAPIC: message ignored");
            }
        }
    }

    /// Latches an NMI for the vCPU.
    pub fn accept_nmi(&mut self) {
        self.s.pending_nmi = true;
    }

    /// Latches an INIT for the vCPU.
    pub fn accept_init(&mut self) {
        self.s.pending_init = true;
    }

    /// Latches a start-up IPI (the vCPU honours it only in wait-for-SIPI state).
    pub fn accept_sipi(&mut self, vector: u8) {
        self.s.pending_sipi = Some(vector);
    }

    /// Takes a latched NMI.
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.s.pending_nmi)
    }

    /// Takes a latched INIT; the vCPU then resets itself and calls [`Lapic::init_reset`].
    pub fn take_init(&mut self) -> bool {
        std::mem::take(&mut self.s.pending_init)
    }

    /// Takes a latched SIPI vector.
    pub fn take_sipi(&mut self) -> Option<u8> {
        self.s.pending_sipi.take()
    }

    /// The interrupt the vCPU should take next if RFLAGS.IF allows: the highest
    /// IRR vector whose priority class is above the PPR's.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.hw_enabled() || !self.sw_enabled() {
            return None;
        }
        let v = highest(&self.s.irr)?;
        (v & 0xf0 > self.ppr() & 0xf0).then_some(v)
    }

    /// The vCPU takes the interrupt: moves the pending vector from IRR to ISR.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending_vector()?;
        bit_clear(&mut self.s.irr, v);
        bit_set(&mut self.s.isr, v);
        Some(v)
    }

    /// Reads the register at `offset` in the APIC page (`offset & 0xff0`
    /// selects it; the caller extracts narrower accesses). Reserved and
    /// write-only registers read 0.
    pub fn read(&self, offset: u32, now_ns: u64) -> u32 {
        let s = &self.s;
        match offset & 0xff0 {
            reg::ID => s.apic_id << 24,
            reg::VERSION => VERSION,
            reg::TPR => u32::from(s.tpr),
            reg::APR => u32::from(self.apr()),
            reg::PPR => u32::from(self.ppr()),
            reg::LDR => s.ldr,
            reg::DFR => s.dfr,
            reg::SVR => s.svr,
            o @ 0x100..=0x170 => s.isr[((o - reg::ISR) >> 4) as usize],
            o @ 0x180..=0x1f0 => s.tmr[((o - reg::TMR) >> 4) as usize],
            o @ 0x200..=0x270 => s.irr[((o - reg::IRR) >> 4) as usize],
            reg::ESR => s.esr,
            reg::ICR_LOW => s.icr_low,
            reg::ICR_HIGH => s.icr_high,
            o @ 0x320..=0x370 => s.lvt[((o - reg::LVT_TIMER) >> 4) as usize],
            reg::TIMER_INITIAL => s.timer_initial,
            reg::TIMER_CURRENT => self.timer_current_count(now_ns),
            reg::TIMER_DIVIDE => s.timer_divide,
            _ => 0,
        }
    }

    /// Writes the register at `offset`. Read-only registers ignore writes.
    pub fn write(&mut self, offset: u32, val: u32, now_ns: u64) -> Option<LapicAction> {
        match offset & 0xff0 {
            reg::ID => self.s.apic_id = val >> 24,
            reg::TPR => self.s.tpr = val as u8,
            reg::EOI => return self.eoi(),
            reg::LDR => self.s.ldr = val & 0xff00_0000,
            reg::DFR => self.s.dfr = val | 0x0fff_ffff,
            reg::SVR => {
                self.s.svr = val & 0x3ff;
                if val & SVR_ENABLE == 0 {
                    for lvt in &mut self.s.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            reg::ESR => {
                self.s.esr = std::mem::take(&mut self.s.esr_pending);
            }
            reg::ICR_LOW => {
                self.s.icr_low = val & ICR_LOW_WRITABLE;
                return self.send_ipi();
            }
            reg::ICR_HIGH => self.s.icr_high = val & 0xff00_0000,
            o @ 0x320..=0x370 => {
                let idx = ((o - reg::LVT_TIMER) >> 4) as usize;
                let mut v = val & LVT_WRITABLE[idx];
                if idx == LVT_TIMER && (v >> 17) & 3 == 3 {
                    v &= !(3 << 17); // reserved mode: keep one-shot
                }
                // Remote IRR of LINT0/1 (bit 14) is read-only and not modelled.
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                if idx == LVT_TIMER {
                    self.set_lvt_timer(v);
                } else {
                    self.s.lvt[idx] = v;
                }
            }
            reg::TIMER_INITIAL => self.set_timer_initial(val, now_ns),
            reg::TIMER_DIVIDE => self.set_timer_divide(val, now_ns),
            _ => {}
        }
        None
    }

    fn eoi(&mut self) -> Option<LapicAction> {
        let v = highest(&self.s.isr)?;
        bit_clear(&mut self.s.isr, v);
        bit_test(&self.s.tmr, v).then_some(LapicAction::Eoi { vector: v })
    }

    fn send_ipi(&mut self) -> Option<LapicAction> {
        let lo = self.s.icr_low;
        let delivery_mode = DeliveryMode::from_bits(lo >> 8)?;
        let vector = lo as u8;
        if matches!(
            delivery_mode,
            DeliveryMode::Fixed | DeliveryMode::LowestPriority
        ) && vector < 16
        {
            self.raise_error(ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        let shorthand = match (lo >> 18) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        Some(LapicAction::SendIpi(Ipi {
            vector,
            delivery_mode,
            dest: self.s.icr_high >> 24,
            logical: lo & (1 << 11) != 0,
            shorthand,
            level: lo & (1 << 14) != 0,
            level_triggered: lo & (1 << 15) != 0,
        }))
    }

    fn raise_error(&mut self, bits: u32) {
        self.s.esr_pending |= bits;
        let lvt = self.s.lvt[LVT_ERROR];
        let v = lvt as u8;
        if lvt & LVT_MASKED == 0 && v >= 16 && self.sw_enabled() {
            bit_set(&mut self.s.irr, v);
            bit_clear(&mut self.s.tmr, v);
        }
    }

    /// Snapshot.
    pub fn state(&self) -> LapicState {
        self.s.clone()
    }
}

impl vm_device::Persist for Lapic {
    type State = LapicState;
    type Args = ();

    fn save(&self) -> LapicState {
        self.state()
    }

    fn restore(_: (), state: &LapicState) -> Result<Self, vm_device::StateError> {
        if state.apic_id > 0xff {
            return Err(vm_device::StateError::new(
                "lapic",
                format!("APIC ID {:#x} does not fit an xAPIC", state.apic_id),
            ));
        }
        Ok(Lapic { s: state.clone() })
    }
}

#[cfg(test)]
mod tests;
