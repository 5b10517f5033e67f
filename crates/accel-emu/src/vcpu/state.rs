//! An emulated vCPU's [`CpuState`]: the x86-emu CPU's registers plus what the
//! platform keeps for it (the local APIC page, the TSC, wait-for-SIPI, the
//! latched NMI) and the events a restored state had in flight.
//!
//! TSC: the emulator's TSC is the guest clock ([`crate::vm`]'s time base, 1 GHz)
//! plus the CPU's offset, so `IA32_TSC` saves as `now + offset` and restoring it
//! sets the offset against the (already restored) clock. `IA32_TSC_DEADLINE` is in
//! guest TSC units in the state and on the platform clock in the LAPIC.
//!
//! Not modelled, so not saved: NMI blocking (`nmi_masked` saves false and is
//! ignored on load), MOV SS blocking (the shadow saves as STI blocking), and any
//! XSAVE component beyond x87/SSE (a state whose XCR0 enables one is refused).

use vmm_types::xsave::{XFEATURE_SSE, XFEATURE_X87};
use vmm_types::{msr, CpuEvents, CpuState, ExceptionEvent, MpState};
use x86_emu::StopReason;

use super::EmuVcpu;
use crate::bus::EmuBus;
use crate::vm::lock;

/// Events of a restored state that the next `run` delivers before any instruction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingEvents {
    pub exception: Option<ExceptionEvent>,
    /// An acknowledged external interrupt whose delivery must be completed.
    pub interrupt: Option<u8>,
}

impl EmuVcpu {
    /// The full state (processes a latched INIT/SIPI first, as KVM_GET_MP_STATE does).
    pub(super) fn save_state(&mut self) -> CpuState {
        self.check_init_sipi();
        let now = self.shared.now_ns();
        let mut s = self.cpu.state();
        let offset = self.cpu.msrs.tsc_offset;
        let mut l = lock(&self.shared.cpus[self.idx()].lapic);
        l.advance(now);
        s.sregs.apic_base = l.apic_base();
        s.sregs.cr8 = l.cr8();
        s.lapic = l.to_page(now);
        let deadline = l.tsc_deadline_ns().map_or(0, |d| d.wrapping_add(offset));
        let nmi_pending = l.nmi_pending();
        drop(l);
        s.msrs = msr::STATE
            .iter()
            .map(|&i| {
                let v = match i {
                    msr::IA32_TSC => now.wrapping_add(offset),
                    msr::IA32_TSC_DEADLINE => deadline,
                    _ => s.msr(i).unwrap_or(0),
                };
                (i, v)
            })
            .collect();
        s.mp_state = match (self.wait_for_sipi, self.got_init) {
            (true, true) => MpState::WaitForSipi,
            (true, false) => MpState::WaitForInit,
            _ => s.mp_state,
        };
        s.events = CpuEvents {
            exception: self.pending.exception,
            interrupt: self
                .pending
                .interrupt
                .map(|vector| vmm_types::InterruptEvent {
                    vector,
                    soft: false,
                }),
            nmi_pending,
            ..s.events
        };
        s
    }

    /// Loads a state from either accelerator (or an entry state built by hand).
    pub(super) fn load_state(&mut self, s: &CpuState) -> accel::Result<()> {
        let invalid = |m: String| Err(accel::Error::InvalidState(m));
        if s.xcr0 & !(XFEATURE_X87 | XFEATURE_SSE) != 0 {
            return invalid(format!(
                "XCR0 {:#x} enables XSAVE state components (AVX or later) that emu does \
                 not implement",
                s.xcr0
            ));
        }
        if !s.lapic.is_empty() && s.lapic.len() != vmm_types::lapic::PAGE_SIZE {
            return invalid(format!(
                "the local APIC page has {} bytes, not {}",
                s.lapic.len(),
                vmm_types::lapic::PAGE_SIZE
            ));
        }
        if let Some(e) = s.events.exception {
            if e.vector >= 32 {
                return invalid(format!(
                    "pending exception vector {} is not an exception",
                    e.vector
                ));
            }
        }
        self.cpu.set_state(s);
        let now = self.shared.now_ns();
        if let Some(tsc) = s.msr(msr::IA32_TSC) {
            self.cpu.msrs.tsc_offset = tsc.wrapping_sub(now);
        }
        let offset = self.cpu.msrs.tsc_offset;
        {
            let mut l = lock(&self.shared.cpus[self.idx()].lapic);
            if s.sregs.apic_base != 0 {
                l.set_apic_base(s.sregs.apic_base)
                    .map_err(|e| accel::Error::InvalidState(e.to_string()))?;
            }
            if s.lapic.is_empty() {
                l.set_cr8(s.sregs.cr8);
            } else {
                l.load_page(&s.lapic, now)
                    .map_err(accel::Error::InvalidState)?;
                l.clear_init_sipi();
                l.set_nmi_pending(s.events.nmi_pending || s.events.nmi_injected);
                let deadline = s.msr(msr::IA32_TSC_DEADLINE).unwrap_or(0);
                l.set_tsc_deadline_ns((deadline != 0).then(|| {
                    let p = deadline.wrapping_sub(offset);
                    if (p as i64) <= 0 {
                        1
                    } else {
                        p
                    }
                }));
            }
            (self.wait_for_sipi, self.got_init) = match s.mp_state {
                MpState::Runnable | MpState::Halted => (false, self.got_init),
                MpState::WaitForInit => (true, false),
                MpState::WaitForSipi => (true, true),
                MpState::SipiReceived(v) => {
                    l.accept_sipi(v);
                    (true, true)
                }
            };
        }
        // A software interrupt being delivered restarts from its INT instruction
        // (RIP still points at it); anything else completes at the next `run`.
        self.pending = PendingEvents {
            exception: s.events.exception,
            interrupt: s.events.interrupt.filter(|i| !i.soft).map(|i| i.vector),
        };
        if let Some(j) = self.jit.as_mut() {
            j.reset();
        }
        Ok(())
    }

    /// Delivers the events a restored state had in flight. `Some(exit)` on a triple fault.
    pub(super) fn deliver_restored_events(&mut self, bus: &mut EmuBus) -> Option<accel::VcpuExit> {
        let p = std::mem::take(&mut self.pending);
        if let Some(e) = p.exception {
            if self.cpu.inject_exception(bus, e.vector, e.error_code) == Some(StopReason::Shutdown)
            {
                return Some(accel::VcpuExit::Shutdown);
            }
        }
        if let Some(v) = p.interrupt {
            if self.cpu.inject_interrupt(bus, v) == Some(StopReason::Shutdown) {
                return Some(accel::VcpuExit::Shutdown);
            }
        }
        None
    }
}
