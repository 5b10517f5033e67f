//! The KVM capabilities the VMM relies on, shared by [`crate::KvmVm::new`] (which
//! refuses to start without the required ones) and the host probe (which reports them).

use kvm_ioctls::Cap;

/// A capability and whether the VMM cannot work without it.
#[derive(Debug, Clone, Copy)]
pub struct CapInfo {
    pub cap: Cap,
    /// The `KVM_CAP_*` name.
    pub name: &'static str,
    pub required: bool,
}

const fn req(cap: Cap, name: &'static str) -> CapInfo {
    CapInfo {
        cap,
        name,
        required: true,
    }
}

const fn opt(cap: Cap, name: &'static str) -> CapInfo {
    CapInfo {
        cap,
        name,
        required: false,
    }
}

/// Every capability the VMM checks, required ones first.
pub const CAPS: &[CapInfo] = &[
    req(Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    req(Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    req(Cap::Pit2, "KVM_CAP_PIT2"),
    req(Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
    req(Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    req(Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    req(Cap::MpState, "KVM_CAP_MP_STATE"),
    opt(Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    opt(Cap::SetIdentityMapAddr, "KVM_CAP_SET_IDENTITY_MAP_ADDR"),
    opt(Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
    opt(Cap::Irqfd, "KVM_CAP_IRQFD"),
    opt(Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    opt(Cap::TscDeadlineTimer, "KVM_CAP_TSC_DEADLINE_TIMER"),
    opt(Cap::VcpuEvents, "KVM_CAP_VCPU_EVENTS"),
    opt(Cap::Xsave, "KVM_CAP_XSAVE"),
    opt(Cap::Xcrs, "KVM_CAP_XCRS"),
    opt(Cap::AdjustClock, "KVM_CAP_ADJUST_CLOCK"),
    opt(Cap::ReadonlyMem, "KVM_CAP_READONLY_MEM"),
];
