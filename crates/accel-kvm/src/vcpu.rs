//! [`KvmVcpu`]: one KVM vCPU and its `KVM_RUN` loop.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use accel::{Error, IoHandler, Result, VcpuExit};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_run, CpuId, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_INTERNAL_ERROR_DELIVERY_EV,
    KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_SIMUL_EX,
    KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};
use vmm_types::CpuState;

use crate::kick::Kicker;
use crate::state::{self, StateCtx, Support, XsaveComponent};
use crate::{convert, errno_err, setup};

/// One KVM vCPU. Vcpu 0 starts runnable; the in-kernel LAPIC keeps the others in
/// `KVM_MP_STATE_UNINITIALIZED` until they receive INIT and SIPI.
pub struct KvmVcpu {
    fd: VcpuFd,
    id: u32,
    kicker: Arc<Kicker>,
    /// The MSRs `state()` reads back: [`vmm_types::msr::STATE`] that KVM lists, plus
    /// TSC and TSC_DEADLINE always.
    state_msrs: Vec<u32>,
    /// Size of the `kvm_run` mapping, bounding the port I/O data area.
    mmap_size: usize,
    /// The optional state ioctls this KVM has. With KVM_GET/SET_XSAVE, MXCSR goes
    /// through them, because KVM_GET_FPU/KVM_SET_FPU ignore their `mxcsr` field.
    support: Support,
    /// Where the XSAVE components sit in the standard format (CPUID 0xD).
    xsave_components: Vec<XsaveComponent>,
    /// The last exit was port I/O or MMIO, which KVM completes only on the next
    /// KVM_RUN: done (with `immediate_exit`) before `run` returns a kick.
    io_pending: bool,
    /// What each debug register is set for while a debugger is attached.
    debug_slots: [Option<crate::debug::Slot>; 4],
    /// Where the debugger planted `int3`s.
    int3: Vec<u64>,
}

/// What to do after the borrow of the exit ends.
enum After {
    Nothing,
    /// An `int3` of the guest's own under KVM_GUESTDBG_USE_SW_BP: delivered to it.
    GuestInt3,
    Pio,
    Mmio,
    InternalError,
}

impl KvmVcpu {
    pub(crate) fn new(
        fd: VcpuFd,
        id: u32,
        table: &[kvm_cpuid_entry2],
        supported_cpuid: &[kvm_cpuid_entry2],
        msr_index_list: &[u32],
        mmap_size: usize,
        support: Support,
    ) -> Result<KvmVcpu> {
        let table = CpuId::from_entries(table)
            .map_err(|_| Error::InvalidState("CPUID table too large".into()))?;
        fd.set_cpuid2(&table)
            .map_err(|e| errno_err("KVM_SET_CPUID2", e))?;

        let msrs: Vec<(u32, u64)> = setup::boot_msrs()
            .into_iter()
            .filter(|(i, _)| msr_index_list.contains(i))
            .collect();
        state::set_msrs(&fd, &msrs)?;

        let mut lapic = fd.get_lapic().map_err(|e| errno_err("KVM_GET_LAPIC", e))?;
        setup::set_lint_virtual_wire(&mut lapic);
        fd.set_lapic(&lapic)
            .map_err(|e| errno_err("KVM_SET_LAPIC", e))?;

        let state_msrs = vmm_types::msr::STATE
            .iter()
            .copied()
            .filter(|&i| {
                msr_index_list.contains(&i)
                    || i == vmm_types::msr::IA32_TSC
                    || i == vmm_types::msr::IA32_TSC_DEADLINE
            })
            .collect();
        let vcpu = KvmVcpu {
            fd,
            id,
            kicker: Arc::new(Kicker::default()),
            state_msrs,
            mmap_size,
            support,
            xsave_components: state::xsave_components(supported_cpuid),
            io_pending: false,
            debug_slots: [None; 4],
            int3: Vec::new(),
        };
        vcpu.set_fpu(&vmm_types::FpuState::default())?;
        Ok(vcpu)
    }

    fn set_fpu(&self, fpu: &vmm_types::FpuState) -> Result<()> {
        if !self.support.xsave {
            return self
                .fd
                .set_fpu(&convert::fpu_to_kvm(fpu))
                .map_err(|e| errno_err("KVM_SET_FPU", e));
        }
        let mut xsave = self
            .fd
            .get_xsave()
            .map_err(|e| errno_err("KVM_GET_XSAVE", e))?;
        convert::fpu_to_xsave(fpu, &mut xsave.region);
        // SAFETY: this VMM never enables dynamically enabled XSTATE features
        // (ARCH_REQ_XCOMP_GUEST_PERM), so the vCPU's XSAVE area fits the 4096-byte
        // kvm_xsave, which came from KVM_GET_XSAVE of this same vCPU.
        unsafe { self.fd.set_xsave(&xsave) }.map_err(|e| errno_err("KVM_SET_XSAVE", e))
    }

    fn immediate_exit(&mut self) -> *const AtomicU8 {
        let run = self.fd.get_kvm_run();
        std::ptr::addr_of_mut!(run.immediate_exit).cast::<AtomicU8>()
    }

    fn run_loop(&mut self, io: &dyn IoHandler, immediate_exit: &AtomicU8) -> Result<VcpuExit> {
        loop {
            // Clear before looking at the pending flag: a kick sets the flag first, so
            // one that lands after this store is either seen below or re-arms the exit.
            immediate_exit.store(0, Ordering::SeqCst);
            if self.kicker.take_pending() {
                self.complete_io(immediate_exit)?;
                return Ok(VcpuExit::Interrupted);
            }
            let r = self.fd.run();
            self.io_pending = false;
            let after = match r {
                Ok(exit) => match exit {
                    KvmExit::IoIn(..) | KvmExit::IoOut(..) => After::Pio,
                    KvmExit::MmioRead(addr, data) => {
                        io.mmio_read(addr, data);
                        After::Mmio
                    }
                    KvmExit::MmioWrite(addr, data) => {
                        io.mmio_write(addr, data);
                        After::Mmio
                    }
                    KvmExit::Hlt => return Ok(VcpuExit::HaltedForever),
                    KvmExit::Shutdown => return Ok(VcpuExit::Shutdown),
                    KvmExit::Intr => After::Nothing,
                    KvmExit::SystemEvent(kind, _) => match kind {
                        KVM_SYSTEM_EVENT_SHUTDOWN => return Ok(VcpuExit::PowerOff),
                        KVM_SYSTEM_EVENT_RESET => return Ok(VcpuExit::Reset),
                        KVM_SYSTEM_EVENT_CRASH => {
                            return Err(Error::Guest("KVM reports a guest crash".into()))
                        }
                        other => {
                            return Err(Error::Guest(format!(
                                "unexpected KVM system event {other}"
                            )))
                        }
                    },
                    KvmExit::FailEntry(reason, cpu) => {
                        return Err(Error::Guest(format!(
                            "KVM_EXIT_FAIL_ENTRY on vCPU {}: hardware entry failure \
                             reason {reason:#x} (host CPU {cpu})",
                            self.id
                        )))
                    }
                    KvmExit::InternalError => After::InternalError,
                    KvmExit::Debug(arch) => {
                        if arch.exception != crate::debug::BP_VECTOR {
                            let stop = crate::debug::stop(&arch, &self.debug_slots);
                            return Ok(VcpuExit::Debug(stop));
                        }
                        if self.int3.contains(&arch.pc) {
                            return Ok(VcpuExit::Debug(accel::DebugStop::Breakpoint));
                        }
                        After::GuestInt3
                    }
                    other => {
                        return Err(Error::Guest(format!(
                            "unexpected KVM exit on vCPU {}: {other:?}",
                            self.id
                        )))
                    }
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => After::Nothing,
                Err(e) => return Err(errno_err("KVM_RUN", e)),
            };
            match after {
                After::Nothing => {}
                After::GuestInt3 => self.reinject_int3()?,
                After::Pio => {
                    self.handle_pio(io)?;
                    self.io_pending = true;
                }
                After::Mmio => self.io_pending = true,
                After::InternalError => return Err(self.internal_error()),
            }
        }
    }

    /// Hands the guest the `int3` it ran itself (not one the debugger planted): as
    /// an injected #BP, which KVM delivers with the instruction length it noted at
    /// the exit, so the guest's handler sees it as if no debugger were there.
    fn reinject_int3(&mut self) -> Result<()> {
        let mut ev = self
            .fd
            .get_vcpu_events()
            .map_err(|e| errno_err("KVM_GET_VCPU_EVENTS", e))?;
        ev.exception.injected = 1;
        ev.exception.nr = crate::debug::BP_VECTOR as u8;
        ev.exception.has_error_code = 0;
        ev.exception.error_code = 0;
        self.fd
            .set_vcpu_events(&ev)
            .map_err(|e| errno_err("KVM_SET_VCPU_EVENTS", e))
    }

    /// Lets KVM finish an I/O exit (an IN's data into RAX, RIP past the
    /// instruction) without entering the guest, so the state is consistent while
    /// the vCPU is out of `run` (the KVM API's advice for `immediate_exit`).
    fn complete_io(&mut self, immediate_exit: &AtomicU8) -> Result<()> {
        if !std::mem::take(&mut self.io_pending) {
            return Ok(());
        }
        immediate_exit.store(1, Ordering::SeqCst);
        let r = self.fd.run().map(|_| ());
        immediate_exit.store(0, Ordering::SeqCst);
        match r {
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
            Err(e) => Err(errno_err("KVM_RUN (completing I/O)", e)),
            Ok(()) => Err(Error::Guest(
                "KVM_RUN with immediate_exit entered the guest".into(),
            )),
        }
    }

    fn state_ctx(&self) -> StateCtx<'_> {
        StateCtx {
            fd: &self.fd,
            support: self.support,
            msrs: &self.state_msrs,
            xsave_components: &self.xsave_components,
        }
    }

    /// Completes a `KVM_EXIT_IO`: string instructions (`rep ins/outs`) leave `count`
    /// elements of `size` bytes each in the data area; each is one access on the bus.
    fn handle_pio(&mut self, io: &dyn IoHandler) -> Result<()> {
        let mmap_size = self.mmap_size;
        let run: &mut kvm_run = self.fd.get_kvm_run();
        if run.exit_reason != KVM_EXIT_IO {
            return Err(Error::Guest("port I/O exit without KVM_EXIT_IO".into()));
        }
        // SAFETY: exit_reason is KVM_EXIT_IO, so `io` is the union member KVM filled in.
        let kio = unsafe { run.__bindgen_anon_1.io };
        let size = usize::from(kio.size);
        let len = size * kio.count as usize;
        let offset = kio.data_offset as usize;
        if !matches!(size, 1 | 2 | 4) || offset.checked_add(len).is_none_or(|end| end > mmap_size) {
            return Err(Error::Guest(format!(
                "malformed port I/O exit: size {size}, count {}, offset {offset:#x}",
                kio.count
            )));
        }
        let base = (run as *mut kvm_run).cast::<u8>();
        // SAFETY: `base` is the start of the vCPU's kvm_run mapping of `mmap_size` bytes,
        // and offset+len lies inside it (checked above); nothing else references those
        // bytes while this vCPU thread is outside KVM_RUN.
        let data = unsafe { std::slice::from_raw_parts_mut(base.add(offset), len) };
        for element in data.chunks_exact_mut(size) {
            if u32::from(kio.direction) == KVM_EXIT_IO_IN {
                io.pio_read(kio.port, element);
            } else {
                io.pio_write(kio.port, element);
            }
        }
        Ok(())
    }

    fn internal_error(&mut self) -> Error {
        let run = self.fd.get_kvm_run();
        // SAFETY: called only for KVM_EXIT_INTERNAL_ERROR, whose union member is `internal`.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let what = match internal.suberror {
            KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
            KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
            KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
            KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected hardware exit reason",
            _ => "unknown suberror",
        };
        let n = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal.data[..n]
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        let rip = self
            .fd
            .get_regs()
            .map(|r| format!("{:#x}", r.rip))
            .unwrap_or_else(|_| "?".into());
        Error::Guest(format!(
            "KVM internal error on vCPU {} at RIP {rip}: {what} (suberror {}, data [{}])",
            self.id,
            internal.suberror,
            data.join(", ")
        ))
    }
}

impl accel::Vcpu for KvmVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    fn set_state(&mut self, state: &CpuState) -> Result<()> {
        self.state_ctx().restore(state)
    }

    fn state(&mut self) -> Result<CpuState> {
        self.state_ctx().save()
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit> {
        let ie = self.immediate_exit();
        // SAFETY: `ie` points into this vCPU's kvm_run mapping, which lives as long as
        // `self.fd`; `leave` is called below on this thread before `run` returns.
        unsafe { self.kicker.enter(ie) };
        // SAFETY: same pointer; an AtomicU8 has the size and alignment of the u8 field,
        // which KVM only reads.
        let result = self.run_loop(io, unsafe { &*ie });
        self.kicker.leave();
        result
    }

    fn kicker(&self) -> Arc<dyn accel::VcpuKick> {
        self.kicker.clone()
    }

    fn set_guest_debug(&mut self, d: &accel::GuestDebug) -> Result<()> {
        let (g, slots) = crate::debug::to_kvm(d)?;
        self.fd
            .set_guest_debug(&g)
            .map_err(|e| errno_err("KVM_SET_GUEST_DEBUG", e))?;
        self.debug_slots = slots;
        self.int3 = d.int3.clone();
        Ok(())
    }
}
