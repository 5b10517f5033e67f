//! `accel::Vcpu` over the x86-emu interpreter: the run loop that interleaves
//! guest code with timers, interrupt acceptance and sleeping in HLT.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use accel::{IoHandler, VcpuExit, VcpuKick};
use vmm_types::{CpuState, Segment};
use x86_emu::{Cpu, StopReason};

use crate::bus::EmuBus;
use crate::vm::{lock, Kicker, Shared};

mod debug;
mod state;

/// Instructions per slice between timer and interrupt checks.
const SLICE: u64 = 20_000;

/// One emulated vCPU.
pub struct EmuVcpu {
    shared: Arc<Shared>,
    id: u32,
    cpu: Cpu,
    /// Application processor waiting for INIT/SIPI.
    wait_for_sipi: bool,
    /// INIT was received since power-up (an AP in `wait_for_sipi` is then waiting
    /// for SIPI rather than for INIT; this model accepts a SIPI either way).
    got_init: bool,
    /// Events a restored state had in flight, delivered when `run` next starts.
    pending: state::PendingEvents,
    /// Print instruction-rate statistics to stderr (`HAKO_EMU_STATS=1`).
    stats: bool,
    /// (time, icount) of the last statistics line.
    last_report: (u64, u64),
    /// The translator (None: interpreter only).
    jit: Option<x86_jit::Jit>,
    /// What a debugger asked for (breakpoints, watchpoints, single step).
    debugger: debug::Debugger,
}

impl EmuVcpu {
    pub(crate) fn new(shared: Arc<Shared>, id: u32, trace: Option<Box<dyn Write + Send>>) -> Self {
        let mut cpu = Cpu::new(id);
        cpu.cpuid = shared.cpuid_model(id);
        cpu.set_code_map(shared.code.clone());
        cpu.set_trace(trace);
        let jit = if shared.jit.load(Ordering::Relaxed) {
            match x86_jit::Jit::new(Some(shared.jit_group.clone())) {
                Ok(j) => Some(j),
                Err(e) => {
                    tracing::warn!(vcpu = id, "no translator, interpreting only: {e}");
                    None
                }
            }
        } else {
            None
        };
        EmuVcpu {
            shared,
            id,
            cpu,
            wait_for_sipi: id != 0,
            got_init: false,
            pending: Default::default(),
            stats: std::env::var_os("HAKO_EMU_STATS").is_some(),
            last_report: (0, 0),
            jit,
            debugger: debug::Debugger::default(),
        }
    }

    fn idx(&self) -> usize {
        self.id as usize
    }

    /// Handles INIT/SIPI latched at the local APIC.
    fn check_init_sipi(&mut self) {
        let slot = &self.shared.cpus[self.idx()];
        let mut l = lock(&slot.lapic);
        if l.take_init() {
            l.init_reset();
            drop(l);
            let apic_id = self.id;
            self.cpu = {
                let mut c = Cpu::new(apic_id);
                c.cpuid = self.shared.cpuid_model(apic_id);
                c.set_code_map(self.shared.code.clone());
                c
            };
            if let Some(j) = self.jit.as_mut() {
                j.reset();
            }
            self.wait_for_sipi = true;
            self.got_init = true;
            l = lock(&slot.lapic);
        }
        if let Some(v) = l.take_sipi() {
            if self.wait_for_sipi {
                drop(l);
                // Real mode at vector * 0x1000.
                let mut cs = Segment::data((v as u16) << 8);
                cs.base = (v as u64) << 12;
                cs.limit = 0xffff;
                cs.type_ = 0xb;
                cs.db = false;
                cs.g = false;
                self.cpu.seg[x86_emu::cpu::CS] = cs;
                self.cpu.rip = 0;
                self.cpu.halted = false;
                self.wait_for_sipi = false;
                let s = self.cpu.state();
                self.cpu.set_state(&s);
            }
        }
    }

    /// Takes a pending NMI or maskable interrupt if the CPU can accept it.
    /// Returns `Some(exit)` on triple fault during delivery.
    fn take_interrupt(&mut self, bus: &mut EmuBus) -> Option<VcpuExit> {
        let slot = &self.shared.cpus[self.idx()];
        let mut l = lock(&slot.lapic);
        if l.take_nmi() {
            drop(l);
            return self.cpu.inject_nmi(bus).map(|_| VcpuExit::Shutdown);
        }
        if !self.cpu.interrupts_enabled() {
            return None;
        }
        if let Some(v) = l.acknowledge() {
            drop(l);
            return self
                .cpu
                .inject_interrupt(bus, v)
                .map(|_| VcpuExit::Shutdown);
        }
        let ext = l.ext_int_enabled();
        drop(l);
        if ext {
            let v = {
                let mut p = lock(&self.shared.platform);
                if p.pic.has_interrupt() {
                    Some(p.pic.acknowledge())
                } else {
                    None
                }
            };
            if let Some(v) = v {
                return self
                    .cpu
                    .inject_interrupt(bus, v)
                    .map(|_| VcpuExit::Shutdown);
            }
        }
        None
    }

    /// Advances the timers; returns the earliest future deadline.
    fn advance_timers(&self, now: u64) -> Option<u64> {
        if self.id == 0 {
            self.shared.advance_pit(now);
        }
        let mut l = lock(&self.shared.cpus[self.idx()].lapic);
        l.advance(now);
        let mut next = l.next_timer_deadline();
        drop(l);
        if self.id == 0 {
            if let Some(p) = lock(&self.shared.platform).pit.next_deadline() {
                next = Some(next.map_or(p, |n| n.min(p)));
            }
        }
        next
    }

    /// Sleeps until an interrupt, a kick or the next timer deadline.
    fn sleep(&self, deadline: Option<u64>) {
        let slot = &self.shared.cpus[self.idx()];
        let g = lock(&slot.lapic);
        if slot.kicked.load(Ordering::SeqCst) || g.pending_vector().is_some() {
            return;
        }
        // Lock order: a LAPIC before the platform (nobody takes them the other way round).
        if self.id == 0 && g.ext_int_enabled() && lock(&self.shared.platform).pic.has_interrupt() {
            return;
        }
        let now = self.shared.now_ns();
        let wait = match deadline {
            Some(d) if d <= now => return,
            Some(d) => Duration::from_nanos(d - now),
            None => Duration::from_millis(100),
        };
        let _ = slot
            .wake
            .wait_timeout(g, wait.min(Duration::from_millis(100)));
    }
}

impl accel::Vcpu for EmuVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    fn set_state(&mut self, state: &CpuState) -> accel::Result<()> {
        self.load_state(state)
    }

    fn state(&mut self) -> accel::Result<CpuState> {
        Ok(self.save_state())
    }

    fn set_guest_debug(&mut self, d: &accel::GuestDebug) -> accel::Result<()> {
        self.debugger.set(d);
        Ok(())
    }

    fn run(&mut self, io: &dyn IoHandler) -> accel::Result<VcpuExit> {
        let shared = self.shared.clone();
        let slot = &shared.cpus[self.idx()];
        let base = lock(&slot.lapic).base_address();
        let mut bus = EmuBus::new(&shared, io, self.idx(), base);
        let watches = if self.debugger.active() {
            self.debugger.translate(&mut self.cpu, &mut bus)
        } else {
            Vec::new()
        };
        if let Some(e) = self.deliver_restored_events(&mut bus) {
            return Ok(e);
        }
        loop {
            if self.stats {
                let now = shared.now_ns();
                if now - self.last_report.0 > 2_000_000_000 {
                    let mips = (self.cpu.icount - self.last_report.1) as f64
                        / ((now - self.last_report.0) as f64 / 1e3);
                    let jit = self.jit.as_ref().map_or(String::new(), |j| {
                        let s = j.stats;
                        let total = (s.native_insns + s.interp_insns).max(1);
                        format!(
                            " blocks={} translate={:.1}ms code={}KiB interp={:.1}%",
                            s.blocks,
                            s.translate_ns as f64 / 1e6,
                            j.code_bytes() / 1024,
                            100.0 * s.interp_insns as f64 / total as f64
                        )
                    });
                    eprintln!(
                        "emu stats: vcpu {} icount={} rip={:#x} {mips:.1} MIPS{jit}",
                        self.id, self.cpu.icount, self.cpu.rip
                    );
                    self.last_report = (now, self.cpu.icount);
                }
            }
            if slot.kicked.swap(false, Ordering::SeqCst) {
                return Ok(VcpuExit::Interrupted);
            }
            self.check_init_sipi();
            let now = shared.now_ns();
            let next = self.advance_timers(now);
            if self.wait_for_sipi {
                self.sleep(None);
                continue;
            }
            if let Some(e) = self.take_interrupt(&mut bus) {
                return Ok(e);
            }
            if self.cpu.halted {
                if !self.cpu.interrupts_enabled() {
                    // HLT with IF=0 (a pending NMI/INIT was handled above).
                    tracing::debug!(vcpu = self.id, icount = self.cpu.icount, "halted forever");
                    return Ok(VcpuExit::HaltedForever);
                }
                self.sleep(next);
                continue;
            }
            if self.debugger.active() {
                match self.debugger.step(&mut self.cpu, &mut bus, &watches) {
                    Ok(Some(stop)) => return Ok(VcpuExit::Debug(stop)),
                    Ok(None) => continue,
                    Err(_) => return Ok(VcpuExit::Shutdown),
                }
            }
            let r = match self.jit.as_mut() {
                Some(j) => j.run(&mut self.cpu, &mut bus, SLICE),
                None => self.cpu.run(&mut bus, SLICE),
            };
            match r {
                StopReason::Shutdown => return Ok(VcpuExit::Shutdown),
                StopReason::Halted | StopReason::Yield => {}
            }
        }
    }

    fn kicker(&self) -> Arc<dyn VcpuKick> {
        Arc::new(Kicker {
            shared: self.shared.clone(),
            idx: self.idx(),
        })
    }
}
