//! The VM as a `gdbstub` target: each vCPU a thread, all-stop. Registers and
//! state go through the parked vCPU threads; memory is read through the selected
//! vCPU's page tables (walk.rs); breakpoints, watchpoints and single steps become
//! each vCPU's `GuestDebug` when the debugger resumes the VM.

use std::num::NonZeroUsize;
use std::sync::Arc;

use accel::{GuestDebug, GuestMemory, Watchpoint};
use gdbstub::common::{Signal, Tid};
use gdbstub::outputln;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use vm_memory::{Bytes, GuestAddress};
use vmm_types::CpuState;

use super::{regs, walk};
use crate::control::{Control, VcpuReply, VcpuRequest};

/// What the debugger wants of one vCPU when the VM resumes. `gdbstub`'s contract:
/// after `clear_resume_actions` every thread continues unless told otherwise, and
/// under scheduler locking only the threads named get to run (`None`: stays stopped).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Continue,
    Step,
}

pub struct VmTarget {
    pub(crate) control: Arc<Control>,
    pub(crate) mem: GuestMemory,
    pub(crate) ncpus: usize,
    pub(crate) accel: &'static str,
    breakpoints: Vec<u64>,
    watchpoints: Vec<Watchpoint>,
    /// KVM's software breakpoints: `int3` written at (linear address, physical
    /// address), with the byte it replaced.
    int3: Vec<(u64, u64, u8)>,
    /// Software breakpoints are int3s (KVM, but not PVM-backed: there a guest int3
    /// under KVM_GUESTDBG_USE_SW_BP is an emulation failure, so they take debug
    /// registers as hardware ones do).
    use_int3: bool,
    actions: Vec<Option<Action>>,
    /// Scheduler locking: threads without an explicit action stay stopped.
    locked: bool,
}

/// Why a debugger request failed (fatal to the session: the VM ended).
#[derive(Debug)]
pub struct Ended;

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the VM ended")
    }
}

pub fn tid(idx: usize) -> Tid {
    NonZeroUsize::new(idx + 1).expect("idx + 1 is not zero")
}

fn idx(tid: Tid) -> usize {
    tid.get() - 1
}

impl VmTarget {
    pub(crate) fn new(
        control: Arc<Control>,
        mem: GuestMemory,
        ncpus: usize,
        accel: &'static str,
    ) -> VmTarget {
        VmTarget {
            control,
            mem,
            ncpus,
            accel,
            breakpoints: Vec::new(),
            watchpoints: Vec::new(),
            int3: Vec::new(),
            use_int3: accel == "kvm" && !accel_kvm::probe::probe().kvm.pvm,
            actions: vec![Some(Action::Continue); ncpus],
            locked: false,
        }
    }

    fn valid(&self, tid: Tid) -> Option<usize> {
        let i = idx(tid);
        (i < self.ncpus).then_some(i)
    }

    pub(crate) fn state(&self, i: usize) -> Result<CpuState, Ended> {
        match self.control.on_vcpu(i, VcpuRequest::Save) {
            Some(VcpuReply::Saved(Ok(s))) => Ok(*s),
            _ => Err(Ended),
        }
    }

    fn ask(&self, i: usize, req: VcpuRequest) -> TargetResult<(), Self> {
        match self.control.on_vcpu(i, req) {
            Some(VcpuReply::Done(Ok(()))) => Ok(()),
            Some(VcpuReply::Done(Err(e))) => {
                tracing::warn!("gdb: vCPU {i}: {e}");
                Err(TargetError::NonFatal)
            }
            _ => Err(TargetError::Fatal(Ended)),
        }
    }

    /// Hands every vCPU what it should do and lets the VM run.
    pub(crate) fn apply_and_resume(&mut self) -> Result<(), Ended> {
        for i in 0..self.ncpus {
            let d = GuestDebug {
                single_step: self.actions[i] == Some(Action::Step),
                breakpoints: self.breakpoints.clone(),
                watchpoints: self.watchpoints.clone(),
                int3: self.int3.iter().map(|b| b.0).collect(),
            };
            match self.control.on_vcpu(i, VcpuRequest::Debug(d)) {
                Some(VcpuReply::Done(Ok(()))) => {}
                Some(VcpuReply::Done(Err(e))) => tracing::warn!("gdb: vCPU {i}: {e}"),
                _ => return Err(Ended),
            }
        }
        self.control.clear_debug_stop();
        let held: Vec<bool> = self
            .actions
            .iter()
            .map(|a| self.locked && a.is_none())
            .collect();
        self.control.resume_holding(&held);
        Ok(())
    }

    /// Takes every breakpoint, watchpoint and step away (the debugger detached).
    pub(crate) fn forget_all(&mut self) {
        for (_, phys, orig) in std::mem::take(&mut self.int3) {
            let _ = self.mem.write_obj(orig, GuestAddress(phys));
        }
        self.breakpoints.clear();
        self.watchpoints.clear();
        self.actions.fill(Some(Action::Continue));
    }

    /// Copies guest memory at virtual `addr` as vCPU `i` sees it, page by page.
    fn access(
        &self,
        i: usize,
        addr: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> bool,
    ) -> TargetResult<usize, Self> {
        let s = self.state(i).map_err(TargetError::Fatal)?;
        let mut done = 0usize;
        while done < len {
            let lin = addr.wrapping_add(done as u64);
            let n = ((0x1000 - (lin & 0xfff)) as usize).min(len - done);
            let Ok(phys) = walk::walk(&self.mem, &s.sregs, lin).phys else {
                break;
            };
            if !f(phys, done, n) {
                break;
            }
            done += n;
        }
        if done == 0 && len > 0 {
            return Err(TargetError::Errno(14)); // EFAULT: unmapped or not RAM
        }
        Ok(done)
    }
}

impl Target for VmTarget {
    type Arch = X86_64_SSE;
    type Error = Ended;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadBase for VmTarget {
    fn read_registers(&mut self, r: &mut X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        let i = self.valid(tid).ok_or(TargetError::NonFatal)?;
        *r = regs::to_gdb(&self.state(i).map_err(TargetError::Fatal)?);
        Ok(())
    }

    fn write_registers(&mut self, r: &X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        let i = self.valid(tid).ok_or(TargetError::NonFatal)?;
        let mut s = self.state(i).map_err(TargetError::Fatal)?;
        regs::from_gdb(r, &mut s);
        self.ask(i, VcpuRequest::Load(Box::new(s)))
    }

    fn read_addrs(&mut self, addr: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let i = self.valid(tid).ok_or(TargetError::NonFatal)?;
        let mem = self.mem.clone();
        let n = self.access(i, addr, data.len(), |phys, at, n| {
            mem.read_slice(&mut data[at..at + n], GuestAddress(phys))
                .is_ok()
        })?;
        // The debugger sees the guest's bytes, not the int3s it planted.
        for &(lin, _, orig) in &self.int3 {
            if let Some(k) = lin.checked_sub(addr).filter(|&k| k < n as u64) {
                data[k as usize] = orig;
            }
        }
        Ok(n)
    }

    fn write_addrs(&mut self, addr: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let i = self.valid(tid).ok_or(TargetError::NonFatal)?;
        let mem = self.mem.clone();
        let n = self.access(i, addr, data.len(), |phys, at, n| {
            mem.write_slice(&data[at..at + n], GuestAddress(phys))
                .is_ok()
        })?;
        if n < data.len() {
            return Err(TargetError::Errno(14));
        }
        Ok(())
    }

    fn list_active_threads(&mut self, register: &mut dyn FnMut(Tid)) -> Result<(), Ended> {
        for i in 0..self.ncpus {
            register(tid(i));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for VmTarget {
    fn resume(&mut self) -> Result<(), Ended> {
        self.apply_and_resume()
    }

    fn clear_resume_actions(&mut self) -> Result<(), Ended> {
        self.actions.fill(None);
        self.locked = false;
        Ok(())
    }

    fn set_resume_action_continue(&mut self, tid: Tid, _sig: Option<Signal>) -> Result<(), Ended> {
        if let Some(i) = self.valid(tid) {
            self.actions[i] = Some(Action::Continue);
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for VmTarget {
    /// Threads without an explicit action stay stopped (see [`Action`]).
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Ended> {
        self.locked = true;
        Ok(())
    }
}

impl MultiThreadSingleStep for VmTarget {
    fn set_resume_action_step(&mut self, tid: Tid, _sig: Option<Signal>) -> Result<(), Ended> {
        if let Some(i) = self.valid(tid) {
            self.actions[i] = Some(Action::Step);
        }
        Ok(())
    }
}

impl Breakpoints for VmTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl VmTarget {
    fn add_bp(&mut self, addr: u64) -> bool {
        if !self.breakpoints.contains(&addr) {
            self.breakpoints.push(addr);
        }
        true
    }

    fn remove_bp(&mut self, addr: u64) -> bool {
        let before = self.breakpoints.len();
        self.breakpoints.retain(|&a| a != addr);
        self.breakpoints.len() != before
    }
}

// On emu software and hardware breakpoints are the same thing: the vCPU compares
// the address of every instruction. On kvm a software breakpoint is an int3 in
// guest memory (a debug register on PVM, see `use_int3`), a hardware one a debug
// register.
impl SwBreakpoint for VmTarget {
    /// A breakpoint where vCPU 0's page tables map nothing is refused (GDB says it
    /// cannot insert it): it could never be reached as code.
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let s = self.state(0).map_err(TargetError::Fatal)?;
        let Ok(phys) = walk::walk(&self.mem, &s.sregs, addr).phys else {
            return Err(TargetError::Errno(14));
        };
        if !self.use_int3 {
            return Ok(self.add_bp(addr));
        }
        // KVM: an int3 in guest memory (no limit, unlike the debug registers).
        if self.int3.iter().any(|b| b.0 == addr) {
            return Ok(true);
        }
        let orig: u8 = self
            .mem
            .read_obj(GuestAddress(phys))
            .map_err(|_| TargetError::Errno(14))?;
        self.mem
            .write_obj(0xccu8, GuestAddress(phys))
            .map_err(|_| TargetError::Errno(14))?;
        self.int3.push((addr, phys, orig));
        Ok(true)
    }
    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if let Some(k) = self.int3.iter().position(|b| b.0 == addr) {
            let (_, phys, orig) = self.int3.remove(k);
            let _ = self.mem.write_obj(orig, GuestAddress(phys));
            return Ok(true);
        }
        Ok(self.remove_bp(addr))
    }
}

impl HwBreakpoint for VmTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_bp(addr))
    }
    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_bp(addr))
    }
}

fn kind(k: WatchKind) -> accel::WatchKind {
    match k {
        WatchKind::Write => accel::WatchKind::Write,
        WatchKind::Read => accel::WatchKind::Read,
        WatchKind::ReadWrite => accel::WatchKind::Access,
    }
}

impl HwWatchpoint for VmTarget {
    fn add_hw_watchpoint(&mut self, addr: u64, len: u64, k: WatchKind) -> TargetResult<bool, Self> {
        let w = Watchpoint {
            addr,
            len,
            kind: kind(k),
        };
        if !self.watchpoints.contains(&w) {
            self.watchpoints.push(w);
        }
        Ok(true)
    }
    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        k: WatchKind,
    ) -> TargetResult<bool, Self> {
        let w = Watchpoint {
            addr,
            len,
            kind: kind(k),
        };
        let before = self.watchpoints.len();
        self.watchpoints.retain(|x| *x != w);
        Ok(self.watchpoints.len() != before)
    }
}

impl MonitorCmd for VmTarget {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), Ended> {
        let cmd = String::from_utf8_lossy(cmd);
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let num = |s: &str| {
            let s = s.trim_start_matches("0x");
            u64::from_str_radix(s, 16).ok()
        };
        match words.as_slice() {
            ["accel"] => outputln!(out, "{}", self.accel),
            ["vcpus"] => {
                for i in 0..self.ncpus {
                    let s = self.state(i)?;
                    outputln!(
                        out,
                        "vCPU {i}: {:?} rip={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                        s.mp_state,
                        s.regs.rip,
                        s.sregs.cr0,
                        s.sregs.cr3,
                        s.sregs.cr4,
                        s.sregs.efer
                    );
                }
            }
            ["phys", a, n] => match (num(a), n.parse::<usize>()) {
                (Some(a), Ok(n)) if n <= 4096 => {
                    let mut buf = vec![0u8; n];
                    match self.mem.read_slice(&mut buf, GuestAddress(a)) {
                        Ok(()) => {
                            for (k, c) in buf.chunks(16).enumerate() {
                                let hex: Vec<String> =
                                    c.iter().map(|b| format!("{b:02x}")).collect();
                                outputln!(out, "{:#014x}: {}", a + 16 * k as u64, hex.join(" "));
                            }
                        }
                        Err(_) => outputln!(out, "{a:#x}+{n} is not guest RAM"),
                    }
                }
                _ => outputln!(out, "usage: monitor phys HEXADDR LEN (LEN <= 4096)"),
            },
            ["walk", a] | ["walk", a, _] => match num(a) {
                Some(lin) => {
                    let v = words
                        .get(2)
                        .and_then(|s| s.parse::<usize>().ok())
                        .unwrap_or(0);
                    if v >= self.ncpus {
                        outputln!(out, "no vCPU {v}");
                        return Ok(());
                    }
                    let s = self.state(v)?;
                    let w = walk::walk(&self.mem, &s.sregs, lin);
                    for st in &w.steps {
                        outputln!(
                            out,
                            "level {}: entry at {:#x} = {:#018x}",
                            st.level,
                            st.entry_addr,
                            st.entry
                        );
                    }
                    match w.phys {
                        Ok(p) => outputln!(out, "{lin:#x} -> {p:#x}"),
                        Err(e) => outputln!(out, "{e}"),
                    }
                }
                None => outputln!(out, "usage: monitor walk HEXADDR [VCPU]"),
            },
            _ => outputln!(
                out,
                "monitor commands: accel | vcpus | phys HEXADDR LEN | walk HEXADDR [VCPU]"
            ),
        }
        Ok(())
    }
}
