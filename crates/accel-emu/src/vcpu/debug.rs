//! Guest debugging on `emu`: breakpoints by comparing the address of the next
//! instruction (nothing is written into guest memory, and there is no limit on
//! their number), watchpoints on the load/store path, single steps. While a
//! debugger asks for any of them the vCPU runs one instruction at a time in the
//! interpreter: translated blocks would run past a breakpoint or a watched store,
//! and this costs nothing when no debugger is attached.

use accel::{DebugStop, GuestDebug, WatchKind};
use x86_emu::cpu::CS;
use x86_emu::mmu::Access;
use x86_emu::{Bus, Cpu, StopReason};

/// A watched range of guest-physical addresses (a watchpoint's linear range,
/// translated through the vCPU's page tables when it starts running).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhysWatch {
    pub phys: u64,
    pub len: u64,
    pub lin: u64,
    pub kind: WatchKind,
}

/// The debugger's requests and where the vCPU is in honouring them.
#[derive(Default)]
pub(crate) struct Debugger {
    pub asked: GuestDebug,
    /// The breakpoint the vCPU stopped at: the first instruction after it resumes
    /// runs even though its address is a breakpoint.
    pub resume_over: Option<u64>,
}

impl Debugger {
    pub fn set(&mut self, d: &GuestDebug) {
        self.asked = d.clone();
    }

    pub fn active(&self) -> bool {
        self.asked.active()
    }

    /// The watchpoints as physical ranges (page by page where they cross pages).
    pub fn translate(&self, cpu: &mut Cpu, bus: &mut dyn Bus) -> Vec<PhysWatch> {
        let mut v = Vec::new();
        for w in &self.asked.watchpoints {
            let mut lin = w.addr;
            let end = w.addr.saturating_add(w.len.max(1));
            while lin < end {
                let page_end = (lin | 0xfff).saturating_add(1).min(end);
                if let Some(phys) = cpu.probe(bus, lin, Access::Read) {
                    v.push(PhysWatch {
                        phys,
                        len: page_end - lin,
                        lin,
                        kind: w.kind,
                    });
                }
                lin = page_end;
            }
        }
        v
    }

    /// Runs at most one instruction under the debugger's eye. `Ok(None)`: it ran
    /// and nothing stopped it.
    pub fn step(
        &mut self,
        cpu: &mut Cpu,
        bus: &mut dyn Bus,
        watches: &[PhysWatch],
    ) -> Result<Option<DebugStop>, StopReason> {
        let lin = cpu.seg[CS].base.wrapping_add(cpu.rip);
        if self.asked.breakpoints.contains(&lin) && self.resume_over != Some(lin) {
            self.resume_over = Some(lin);
            return Ok(Some(DebugStop::Breakpoint));
        }
        self.resume_over = None;
        let mut wbus = WatchBus {
            inner: bus,
            watches,
            hit: None,
        };
        match cpu.run_exact(&mut wbus, 1) {
            StopReason::Shutdown => return Err(StopReason::Shutdown),
            StopReason::Halted | StopReason::Yield => {}
        }
        if let Some((phys, kind)) = wbus.hit {
            let w = watches
                .iter()
                .find(|w| phys.wrapping_sub(w.phys) < w.len)
                .expect("a hit is in a watched range");
            let addr = w.lin + (phys - w.phys);
            return Ok(Some(DebugStop::Watchpoint { addr, kind }));
        }
        Ok(self.asked.single_step.then_some(DebugStop::Step))
    }
}

/// The vCPU's bus with the watched ranges checked on every access.
struct WatchBus<'a> {
    inner: &'a mut dyn Bus,
    watches: &'a [PhysWatch],
    hit: Option<(u64, WatchKind)>,
}

impl WatchBus<'_> {
    fn check(&mut self, addr: u64, size: usize, write: bool) {
        if self.hit.is_some() {
            return;
        }
        for w in self.watches {
            let lo = addr.max(w.phys);
            let hi = addr.saturating_add(size as u64).min(w.phys + w.len);
            let kind_ok = match w.kind {
                WatchKind::Write => write,
                WatchKind::Read => !write,
                WatchKind::Access => true,
            };
            if lo < hi && kind_ok {
                let kind = if write {
                    WatchKind::Write
                } else {
                    WatchKind::Read
                };
                self.hit = Some((
                    lo,
                    if w.kind == WatchKind::Access {
                        WatchKind::Access
                    } else {
                        kind
                    },
                ));
                return;
            }
        }
    }
}

impl Bus for WatchBus<'_> {
    fn read(&mut self, addr: u64, size: usize) -> u64 {
        self.check(addr, size, false);
        self.inner.read(addr, size)
    }
    fn write(&mut self, addr: u64, size: usize, val: u64) {
        self.check(addr, size, true);
        self.inner.write(addr, size, val)
    }
    fn atomic_rmw(&mut self, addr: u64, size: usize, f: &mut dyn FnMut(u64) -> u64) -> u64 {
        self.check(addr, size, true);
        self.inner.atomic_rmw(addr, size, f)
    }
    fn is_ram(&mut self, addr: u64) -> bool {
        self.inner.is_ram(addr)
    }
    fn io_in(&mut self, port: u16, size: usize) -> u32 {
        self.inner.io_in(port, size)
    }
    fn io_out(&mut self, port: u16, size: usize, val: u32) {
        self.inner.io_out(port, size, val)
    }
    fn tsc(&mut self) -> u64 {
        self.inner.tsc()
    }
    fn rdmsr(&mut self, msr: u32) -> Option<u64> {
        self.inner.rdmsr(msr)
    }
    fn wrmsr(&mut self, msr: u32, val: u64) -> bool {
        self.inner.wrmsr(msr, val)
    }
    fn cr8(&mut self) -> u64 {
        self.inner.cr8()
    }
    fn set_cr8(&mut self, val: u64) {
        self.inner.set_cr8(val)
    }
    // No host_addr: nothing may bypass the checks (the interpreter does not use it).
    fn read_bytes(&mut self, addr: u64, buf: &mut [u8]) {
        self.check(addr, buf.len(), false);
        self.inner.read_bytes(addr, buf)
    }
    fn write_bytes(&mut self, addr: u64, data: &[u8]) {
        self.check(addr, data.len(), true);
        self.inner.write_bytes(addr, data)
    }
    fn note_write_page(&mut self, addr: u64) {
        self.inner.note_write_page(addr)
    }
}
