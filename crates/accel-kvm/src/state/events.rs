//! `kvm_mp_state` and `kvm_vcpu_events` to and from the neutral activity state and
//! pending events.

use kvm_bindings::{
    kvm_mp_state, kvm_vcpu_events, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_UNINITIALIZED,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SIPI_VECTOR,
    KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI,
};
use vmm_types::{CpuEvents, ExceptionEvent, InterruptEvent, InterruptShadow, MpState};

/// The activity state; `sipi_vector` comes from the vCPU events.
pub fn mp_state_from_kvm(m: kvm_mp_state, sipi_vector: u32) -> Result<MpState, String> {
    Ok(match m.mp_state {
        KVM_MP_STATE_RUNNABLE => MpState::Runnable,
        KVM_MP_STATE_HALTED => MpState::Halted,
        KVM_MP_STATE_UNINITIALIZED => MpState::WaitForInit,
        KVM_MP_STATE_INIT_RECEIVED => MpState::WaitForSipi,
        KVM_MP_STATE_SIPI_RECEIVED => MpState::SipiReceived(sipi_vector as u8),
        other => return Err(format!("KVM reports an unknown x86 mp_state {other}")),
    })
}

/// The activity state to KVM (a SIPI's vector travels in the events).
pub fn mp_state_to_kvm(m: MpState) -> kvm_mp_state {
    kvm_mp_state {
        mp_state: match m {
            MpState::Runnable => KVM_MP_STATE_RUNNABLE,
            MpState::Halted => KVM_MP_STATE_HALTED,
            MpState::WaitForInit => KVM_MP_STATE_UNINITIALIZED,
            MpState::WaitForSipi => KVM_MP_STATE_INIT_RECEIVED,
            MpState::SipiReceived(_) => KVM_MP_STATE_SIPI_RECEIVED,
        },
    }
}

/// The pending events. Without KVM_CAP_EXCEPTION_PAYLOAD (not enabled here) KVM
/// reports a pending exception as injected.
pub fn events_from_kvm(e: &kvm_vcpu_events) -> CpuEvents {
    let shadow = u32::from(e.interrupt.shadow);
    CpuEvents {
        interrupt_shadow: if shadow & KVM_X86_SHADOW_INT_MOV_SS != 0 {
            InterruptShadow::MovSs
        } else if shadow & KVM_X86_SHADOW_INT_STI != 0 {
            InterruptShadow::Sti
        } else {
            InterruptShadow::None
        },
        exception: (e.exception.injected != 0 || e.exception.pending != 0).then(|| {
            ExceptionEvent {
                vector: e.exception.nr,
                error_code: (e.exception.has_error_code != 0).then_some(e.exception.error_code),
                injected: e.exception.injected != 0,
            }
        }),
        interrupt: (e.interrupt.injected != 0).then_some(InterruptEvent {
            vector: e.interrupt.nr,
            soft: e.interrupt.soft != 0,
        }),
        nmi_pending: e.nmi.pending != 0,
        nmi_injected: e.nmi.injected != 0,
        nmi_masked: e.nmi.masked != 0,
    }
}

/// Writes the neutral events (and a SIPI vector) into `k`, which holds what
/// KVM_GET_VCPU_EVENTS returned, so SMM state stays as KVM has it. A pending
/// exception is loaded as injected: KVM drops `pending` without the payload
/// capability, and injecting delivers it at the next entry all the same.
pub fn events_to_kvm(e: &CpuEvents, mp: MpState, k: &mut kvm_vcpu_events) {
    k.exception.injected = e.exception.is_some() as u8;
    k.exception.pending = 0;
    k.exception.nr = e.exception.map_or(0, |x| x.vector);
    k.exception.has_error_code = e.exception.is_some_and(|x| x.error_code.is_some()) as u8;
    k.exception.error_code = e.exception.and_then(|x| x.error_code).unwrap_or(0);
    k.exception_has_payload = 0;
    k.exception_payload = 0;
    k.interrupt.injected = e.interrupt.is_some() as u8;
    k.interrupt.nr = e.interrupt.map_or(0, |i| i.vector);
    k.interrupt.soft = e.interrupt.is_some_and(|i| i.soft) as u8;
    k.interrupt.shadow = match e.interrupt_shadow {
        InterruptShadow::None => 0,
        InterruptShadow::Sti => KVM_X86_SHADOW_INT_STI as u8,
        InterruptShadow::MovSs => KVM_X86_SHADOW_INT_MOV_SS as u8,
    };
    k.nmi.injected = e.nmi_injected as u8;
    k.nmi.pending = e.nmi_pending as u8;
    k.nmi.masked = e.nmi_masked as u8;
    k.sipi_vector = match mp {
        MpState::SipiReceived(v) => u32::from(v),
        _ => k.sipi_vector,
    };
    k.flags = KVM_VCPUEVENT_VALID_NMI_PENDING
        | KVM_VCPUEVENT_VALID_SHADOW
        | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let e = CpuEvents {
            interrupt_shadow: InterruptShadow::MovSs,
            exception: Some(ExceptionEvent {
                vector: 14,
                error_code: Some(2),
                injected: true,
            }),
            interrupt: Some(InterruptEvent {
                vector: 0x30,
                soft: false,
            }),
            nmi_pending: true,
            nmi_injected: false,
            nmi_masked: true,
        };
        let mut k = kvm_vcpu_events::default();
        k.smi.smm = 1;
        events_to_kvm(&e, MpState::SipiReceived(0x9a), &mut k);
        assert_eq!(k.smi.smm, 1, "SMM state is KVM's");
        assert_eq!(k.sipi_vector, 0x9a);
        assert_eq!(
            (
                k.exception.nr,
                k.exception.error_code,
                k.exception.has_error_code
            ),
            (14, 2, 1)
        );
        assert_eq!(events_from_kvm(&k), e);
        let sipi = mp_state_from_kvm(mp_state_to_kvm(MpState::SipiReceived(0x9a)), k.sipi_vector);
        assert_eq!(sipi.unwrap(), MpState::SipiReceived(0x9a));
        for m in [
            MpState::Runnable,
            MpState::Halted,
            MpState::WaitForInit,
            MpState::WaitForSipi,
        ] {
            assert_eq!(mp_state_from_kvm(mp_state_to_kvm(m), 0).unwrap(), m);
        }
        assert!(mp_state_from_kvm(kvm_mp_state { mp_state: 99 }, 0).is_err());
    }

    #[test]
    fn a_pending_exception_is_loaded_as_injected() {
        let e = CpuEvents {
            exception: Some(ExceptionEvent {
                vector: 6,
                error_code: None,
                injected: false,
            }),
            ..Default::default()
        };
        let mut k = kvm_vcpu_events::default();
        events_to_kvm(&e, MpState::Runnable, &mut k);
        assert_eq!(
            (k.exception.injected, k.exception.pending, k.exception.nr),
            (1, 0, 6)
        );
        assert_eq!(k.exception.has_error_code, 0);
    }
}
