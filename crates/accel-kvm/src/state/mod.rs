//! A KVM vCPU's full [`CpuState`] and the VM's [`vmm_types::VmState`], in the
//! orders docs/snapshot.md section 3 fixes:
//!
//! - save: KVM_GET_MP_STATE first (it also makes KVM act on a latched INIT/SIPI),
//!   then regs, sregs, XSAVE, XCRs, LAPIC, MSRs, debug registers, and
//!   KVM_GET_VCPU_EVENTS last;
//! - restore: sregs (APIC base), regs, XSAVE (or FPU), XCRs, LAPIC, MSRs (TSC
//!   before TSC_DEADLINE, after the LAPIC's timer mode), debug registers, vCPU
//!   events, mp_state.
//!
//! Each ioctl's failure names the ioctl, so a backend that lacks one (see
//! [`Support`]) says which.

pub mod events;
pub mod vm;

use accel::{Error, Result};
use kvm_bindings::{kvm_lapic_state, kvm_xcr, kvm_xcrs, kvm_xsave};
use kvm_ioctls::VcpuFd;
use vmm_types::{lapic, msr, xsave, CpuState};

use crate::{convert, errno_err};

/// Which optional state ioctls the KVM in use offers (from its capabilities).
#[derive(Debug, Clone, Copy, Default)]
pub struct Support {
    pub xsave: bool,
    pub xcrs: bool,
    pub vcpu_events: bool,
    pub debugregs: bool,
}

/// Where one XSAVE state component lives in the standard format.
#[derive(Debug, Clone, Copy)]
pub struct XsaveComponent {
    pub bit: u32,
    pub offset: usize,
    pub size: usize,
}

/// The standard-format offsets of the XSAVE components 2..63 KVM reports
/// (CPUID leaf 0xD subleaf n: EAX size, EBX offset).
pub fn xsave_components(supported: &[kvm_bindings::kvm_cpuid_entry2]) -> Vec<XsaveComponent> {
    supported
        .iter()
        .filter(|e| e.function == 0xd && (2..64).contains(&e.index) && e.eax != 0)
        .map(|e| XsaveComponent {
            bit: e.index,
            offset: e.ebx as usize,
            size: e.eax as usize,
        })
        .collect()
}

/// The length of a standard-format image holding the components `xcr0` enables.
pub fn xsave_len(xcr0: u64, components: &[XsaveComponent]) -> usize {
    components
        .iter()
        .filter(|c| xcr0 & (1u64 << c.bit) != 0)
        .map(|c| c.offset + c.size)
        .fold(xsave::MIN_SIZE, usize::max)
        .min(4096)
}

/// What a vCPU's state save and restore need besides its fd.
pub struct StateCtx<'a> {
    pub fd: &'a VcpuFd,
    pub support: Support,
    /// The MSRs saved: [`msr::STATE`] that KVM lists, and always TSC and TSC_DEADLINE.
    pub msrs: &'a [u32],
    pub xsave_components: &'a [XsaveComponent],
}

fn region_bytes(x: &kvm_xsave) -> Vec<u8> {
    x.region.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn bytes_to_region(b: &[u8], x: &mut kvm_xsave) {
    x.region.fill(0);
    for (w, c) in x.region.iter_mut().zip(b.chunks(4)) {
        let mut q = [0u8; 4];
        q[..c.len()].copy_from_slice(c);
        *w = u32::from_le_bytes(q);
    }
}

fn lapic_bytes(l: &kvm_lapic_state) -> Vec<u8> {
    l.regs.iter().map(|&b| b as u8).collect()
}

/// Orders MSRs for KVM_SET_MSRS: TSC first, TSC_DEADLINE last (KVM converts the
/// deadline with the TSC it has when it gets there).
fn restore_order(msrs: &[(u32, u64)]) -> Vec<(u32, u64)> {
    let rank = |i: u32| match i {
        msr::IA32_TSC => 0,
        msr::IA32_TSC_DEADLINE => 2,
        _ => 1,
    };
    let mut v = msrs.to_vec();
    v.sort_by_key(|m| rank(m.0));
    v
}

/// Sets MSRs, naming the first one KVM refuses.
pub fn set_msrs(fd: &VcpuFd, msrs: &[(u32, u64)]) -> Result<()> {
    let k = convert::msrs_to_kvm(msrs).map_err(|e| Error::InvalidState(e.to_string()))?;
    let n = fd.set_msrs(&k).map_err(|e| errno_err("KVM_SET_MSRS", e))?;
    if n < msrs.len() {
        return Err(Error::InvalidState(format!(
            "KVM refused MSR {:#x} = {:#x}",
            msrs[n].0, msrs[n].1
        )));
    }
    Ok(())
}

impl StateCtx<'_> {
    /// The full state, in the save order.
    pub fn save(&self) -> Result<CpuState> {
        let fd = self.fd;
        let mp = fd
            .get_mp_state()
            .map_err(|e| errno_err("KVM_GET_MP_STATE", e))?;
        let regs = fd.get_regs().map_err(|e| errno_err("KVM_GET_REGS", e))?;
        let sregs = fd.get_sregs().map_err(|e| errno_err("KVM_GET_SREGS", e))?;
        let image = if self.support.xsave {
            Some(region_bytes(
                &fd.get_xsave().map_err(|e| errno_err("KVM_GET_XSAVE", e))?,
            ))
        } else {
            None
        };
        let xcr0 = if self.support.xcrs {
            let x = fd.get_xcrs().map_err(|e| errno_err("KVM_GET_XCRS", e))?;
            x.xcrs[..(x.nr_xcrs as usize).min(x.xcrs.len())]
                .iter()
                .find(|x| x.xcr == 0)
                .map_or(1, |x| x.value)
        } else {
            1
        };
        let (fpu, xsave) = match image {
            Some(mut img) => {
                let fpu = xsave::read_legacy(&img);
                img.truncate(xsave_len(xcr0, self.xsave_components));
                let canonical = xsave::canonical(&fpu, &img, xcr0);
                (fpu, canonical)
            }
            None => {
                let f =
                    convert::fpu_from_kvm(&fd.get_fpu().map_err(|e| errno_err("KVM_GET_FPU", e))?);
                let img = xsave::canonical(&f, &[], xcr0);
                (f, img)
            }
        };
        let lapic = lapic_bytes(&fd.get_lapic().map_err(|e| errno_err("KVM_GET_LAPIC", e))?);
        let list: Vec<(u32, u64)> = self.msrs.iter().map(|&i| (i, 0)).collect();
        let mut k = convert::msrs_to_kvm(&list).map_err(|e| Error::InvalidState(e.to_string()))?;
        let n = fd
            .get_msrs(&mut k)
            .map_err(|e| errno_err("KVM_GET_MSRS", e))?;
        if n < list.len() {
            return Err(Error::InvalidState(format!(
                "KVM could not read MSR {:#x}",
                list[n].0
            )));
        }
        let msrs = convert::msrs_from_kvm(&k, n);
        let debug = if self.support.debugregs {
            let d = fd
                .get_debug_regs()
                .map_err(|e| errno_err("KVM_GET_DEBUGREGS", e))?;
            vmm_types::DebugRegs {
                db: d.db,
                dr6: d.dr6,
                dr7: d.dr7,
            }
        } else {
            Default::default()
        };
        let (events, sipi) = if self.support.vcpu_events {
            let e = fd
                .get_vcpu_events()
                .map_err(|e| errno_err("KVM_GET_VCPU_EVENTS", e))?;
            (events::events_from_kvm(&e), e.sipi_vector)
        } else {
            (Default::default(), 0)
        };
        let mp_state = events::mp_state_from_kvm(mp, sipi).map_err(Error::InvalidState)?;
        Ok(CpuState {
            regs: convert::regs_from_kvm(&regs),
            sregs: convert::sregs_from_kvm(&sregs),
            fpu,
            msrs,
            xcr0,
            xsave,
            debug,
            lapic,
            mp_state,
            events,
        })
    }

    /// Loads a state, in the restore order. Empty `lapic`/`xsave` keep what the
    /// vCPU has / mean no extended state; a boot entry state sets no events.
    pub fn restore(&self, s: &CpuState) -> Result<()> {
        let fd = self.fd;
        if !s.lapic.is_empty() && s.lapic.len() != lapic::PAGE_SIZE {
            return Err(Error::InvalidState(format!(
                "the local APIC page has {} bytes, not {}",
                s.lapic.len(),
                lapic::PAGE_SIZE
            )));
        }
        let mut sregs = fd.get_sregs().map_err(|e| errno_err("KVM_GET_SREGS", e))?;
        convert::sregs_to_kvm(&s.sregs, &mut sregs);
        fd.set_sregs(&sregs)
            .map_err(|e| errno_err("KVM_SET_SREGS", e))?;
        fd.set_regs(&convert::regs_to_kvm(&s.regs))
            .map_err(|e| errno_err("KVM_SET_REGS", e))?;
        if self.support.xsave {
            let mut x = fd.get_xsave().map_err(|e| errno_err("KVM_GET_XSAVE", e))?;
            // MXCSR_MASK is the CPU's, not the guest's: keep what KVM has.
            let mask = x.region[7];
            bytes_to_region(&xsave::canonical(&s.fpu, &s.xsave, s.xcr0.max(1)), &mut x);
            x.region[7] = mask;
            // SAFETY: this VMM never enables dynamically enabled XSTATE features
            // (ARCH_REQ_XCOMP_GUEST_PERM), so the vCPU's XSAVE area fits the
            // 4096-byte kvm_xsave.
            unsafe { fd.set_xsave(&x) }.map_err(|e| errno_err("KVM_SET_XSAVE", e))?;
        } else {
            if xsave::xstate_bv(&s.xsave) & !(xsave::XFEATURE_X87 | xsave::XFEATURE_SSE) != 0 {
                return Err(Error::InvalidState(
                    "the state has XSAVE components but this KVM has no KVM_SET_XSAVE".into(),
                ));
            }
            fd.set_fpu(&convert::fpu_to_kvm(&s.fpu))
                .map_err(|e| errno_err("KVM_SET_FPU", e))?;
        }
        if self.support.xcrs {
            let mut x = kvm_xcrs {
                nr_xcrs: 1,
                ..Default::default()
            };
            x.xcrs[0] = kvm_xcr {
                xcr: 0,
                value: s.xcr0.max(1),
                ..Default::default()
            };
            fd.set_xcrs(&x).map_err(|e| errno_err("KVM_SET_XCRS", e))?;
        } else if s.xcr0 > 1 {
            return Err(Error::InvalidState(format!(
                "the state has XCR0 {:#x} but this KVM has no KVM_SET_XCRS",
                s.xcr0
            )));
        }
        if !s.lapic.is_empty() {
            let mut l = kvm_lapic_state::default();
            for (d, b) in l.regs.iter_mut().zip(&s.lapic) {
                *d = *b as _;
            }
            fd.set_lapic(&l)
                .map_err(|e| errno_err("KVM_SET_LAPIC", e))?;
        }
        if !s.msrs.is_empty() {
            set_msrs(fd, &restore_order(&s.msrs))?;
        }
        if self.support.debugregs {
            let mut d = fd
                .get_debug_regs()
                .map_err(|e| errno_err("KVM_GET_DEBUGREGS", e))?;
            d.db = s.debug.db;
            d.dr6 = s.debug.dr6;
            d.dr7 = s.debug.dr7;
            d.flags = 0;
            fd.set_debug_regs(&d)
                .map_err(|e| errno_err("KVM_SET_DEBUGREGS", e))?;
        }
        if self.support.vcpu_events {
            let mut e = fd
                .get_vcpu_events()
                .map_err(|e| errno_err("KVM_GET_VCPU_EVENTS", e))?;
            events::events_to_kvm(&s.events, s.mp_state, &mut e);
            fd.set_vcpu_events(&e)
                .map_err(|e| errno_err("KVM_SET_VCPU_EVENTS", e))?;
        }
        fd.set_mp_state(events::mp_state_to_kvm(s.mp_state))
            .map_err(|e| errno_err("KVM_SET_MP_STATE", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_length_follows_xcr0() {
        let c = [
            XsaveComponent {
                bit: 2,
                offset: 576,
                size: 256,
            },
            XsaveComponent {
                bit: 9,
                offset: 2688,
                size: 8,
            },
        ];
        assert_eq!(xsave_len(1, &c), 576);
        assert_eq!(xsave_len(0b111, &c), 832);
        assert_eq!(xsave_len(0b10_0000_0111, &c), 2696);
    }

    #[test]
    fn tsc_goes_first_and_the_deadline_last() {
        let m = [
            (msr::IA32_TSC_DEADLINE, 5),
            (msr::IA32_PAT, 1),
            (msr::IA32_TSC, 9),
        ];
        let o = restore_order(&m);
        assert_eq!(
            o,
            vec![
                (msr::IA32_TSC, 9),
                (msr::IA32_PAT, 1),
                (msr::IA32_TSC_DEADLINE, 5)
            ]
        );
    }

    #[test]
    fn xsave_region_bytes_round_trip() {
        let mut x = kvm_xsave::default();
        let mut b = vec![0u8; 832];
        b[1] = 3;
        b[831] = 0x77;
        bytes_to_region(&b, &mut x);
        assert_eq!(x.region[0], 0x300);
        assert_eq!(&region_bytes(&x)[..832], &b[..]);
    }
}
