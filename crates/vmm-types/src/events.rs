//! The vCPU's activity state and the events in flight at an instruction boundary
//! (Intel SDM Vol. 3A, 6.7-6.9 and 24.4.2), in accelerator-neutral terms.

use serde::{Deserialize, Serialize};

/// What the vCPU is doing (SDM "activity state" plus the INIT/SIPI protocol).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MpState {
    /// Executing instructions.
    #[default]
    Runnable,
    /// Executed HLT; an interrupt, NMI or INIT wakes it.
    Halted,
    /// An application processor that has not received INIT since power-up.
    WaitForInit,
    /// INIT received: waiting for a start-up IPI.
    WaitForSipi,
    /// A start-up IPI with this vector arrived and is not yet acted on.
    SipiReceived(u8),
}

/// Interrupts inhibited for one instruction (SDM 6.8.3, "blocking by STI / by MOV SS").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterruptShadow {
    #[default]
    None,
    /// After STI: maskable interrupts are blocked.
    Sti,
    /// After MOV SS / POP SS: interrupts, NMIs and debug traps are blocked.
    MovSs,
}

/// An exception that is pending (detected, not yet delivered) or whose delivery
/// began and must be completed (injected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionEvent {
    pub vector: u8,
    pub error_code: Option<u32>,
    /// Delivery through the IDT already began (KVM "injected"), as opposed to pending.
    pub injected: bool,
}

/// An external or software interrupt whose delivery began and must be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptEvent {
    pub vector: u8,
    /// A software interrupt (INT n); RIP still points at the instruction.
    pub soft: bool,
}

/// Events in flight at the instruction boundary the state was taken at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuEvents {
    pub interrupt_shadow: InterruptShadow,
    pub exception: Option<ExceptionEvent>,
    /// An interrupt acknowledged from the interrupt controller but not yet delivered.
    pub interrupt: Option<InterruptEvent>,
    /// An NMI is latched and waits to be delivered.
    pub nmi_pending: bool,
    /// An NMI's delivery began and must be completed.
    pub nmi_injected: bool,
    /// NMIs are blocked (an NMI handler runs and has not executed IRET yet).
    pub nmi_masked: bool,
}
