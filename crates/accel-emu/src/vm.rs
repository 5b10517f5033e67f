//! The emulated VM: guest memory, the platform interrupt controllers and timer,
//! and interrupt routing between them and the vCPUs' local APICs.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use accel::{GuestMemory, Vcpu};
use vmm_types::dirty::DirtyLog;

use crate::irqchip::ioapic::IoApic;
use crate::irqchip::lapic::{Ipi, Lapic};
use crate::irqchip::pic::PicPair;
use crate::irqchip::{route, route_ipi, Delivery, DeliveryMode};
use crate::pit::Pit;
use crate::vcpu::EmuVcpu;

mod cpuid;
pub mod state;

/// IOAPIC MMIO window.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// IOAPIC MMIO window size.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// IOAPIC pin the PIT's IRQ0 is wired to (the usual ISA override 0 -> 2).
pub const PIT_IOAPIC_PIN: u32 = 2;

/// Locks a mutex, recovering from poisoning (a panicked vCPU thread must not
/// take the others down).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Chipset state shared by all vCPUs.
pub(crate) struct Platform {
    pub pic: PicPair,
    pub ioapic: IoApic,
    pub pit: Pit,
}

/// Per-vCPU state other threads touch: the local APIC and the wake-up signal.
pub(crate) struct CpuSlot {
    pub lapic: Mutex<Lapic>,
    pub wake: Condvar,
    pub kicked: AtomicBool,
}

/// Everything the VM and its vCPUs share.
pub(crate) struct Shared {
    pub mem: GuestMemory,
    pub platform: Mutex<Platform>,
    pub cpus: Vec<CpuSlot>,
    pub start: Instant,
    /// Added (wrapping) to the time since `start`: moved by a restore so that
    /// guest time continues from the saved clock.
    pub clock_offset: AtomicU64,
    pub trace: Mutex<Option<Box<dyn Write + Send>>>,
    /// Serializes split (page- or alignment-crossing) locked accesses.
    pub split_lock: Mutex<()>,
    /// Which guest pages hold decoded code: one map for all vCPUs, so a code write
    /// by one invalidates every vCPU's copy.
    pub code: Arc<x86_emu::CodeMap>,
    /// Whether vCPUs run hot code through the translator.
    pub jit: AtomicBool,
    /// The vCPUs' translators, told when a page starts holding code.
    pub jit_group: Arc<x86_jit::JitGroup>,
    /// The portable CPUID model (`--cpu portable`).
    pub portable_cpuid: AtomicBool,
    /// Where the vCPUs log their stores during a live migration.
    pub dirty: Mutex<Option<Arc<DirtyLog>>>,
}

impl Shared {
    /// The CPUID model of vCPU `apic_id`.
    pub fn cpuid_model(&self, apic_id: u32) -> x86_emu::cpuid::CpuidModel {
        cpuid::model(
            apic_id,
            self.cpus.len() as u32,
            self.portable_cpuid.load(Ordering::Relaxed),
        )
    }

    /// Monotonic nanoseconds of guest time: since the VM was created, or since the
    /// guest's start on whatever ran it before a restore. The guest's time base.
    pub fn now_ns(&self) -> u64 {
        (self.start.elapsed().as_nanos() as u64)
            .wrapping_add(self.clock_offset.load(Ordering::Relaxed))
    }

    /// Makes the guest clock read `ns` now.
    pub fn set_clock(&self, ns: u64) {
        let elapsed = self.start.elapsed().as_nanos() as u64;
        self.clock_offset
            .store(ns.wrapping_sub(elapsed), Ordering::Relaxed);
    }

    /// Wakes vCPU `idx` if it sleeps.
    pub fn wake(&self, idx: usize) {
        if let Some(c) = self.cpus.get(idx) {
            let _g = lock(&c.lapic);
            c.wake.notify_all();
        }
    }

    fn targets(&self) -> Vec<crate::irqchip::ApicTarget> {
        self.cpus.iter().map(|c| lock(&c.lapic).target()).collect()
    }

    /// Delivers an IOAPIC/MSI message to the local APICs it addresses.
    pub fn deliver(&self, d: &Delivery) {
        if d.delivery_mode == DeliveryMode::ExtInt {
            self.wake(0);
            return;
        }
        let targets = self.targets();
        for idx in route(d, &targets) {
            let c = &self.cpus[idx];
            lock(&c.lapic).accept_delivery(d);
            c.wake.notify_all();
        }
    }

    /// Sends an IPI from vCPU `sender`.
    pub fn send_ipi(&self, ipi: &Ipi, sender: usize) {
        let targets = self.targets();
        for idx in route_ipi(ipi, sender, &targets) {
            let c = &self.cpus[idx];
            lock(&c.lapic).accept_ipi(ipi);
            c.wake.notify_all();
        }
    }

    /// A level-triggered vector was EOI'd at a local APIC: tell the IOAPIC.
    pub fn eoi(&self, vector: u8) {
        let ds = lock(&self.platform).ioapic.eoi(vector);
        for d in ds {
            self.deliver(&d);
        }
    }

    /// Drives GSI `gsi` (IOAPIC pin, and PIC input for GSIs below 16).
    pub fn set_irq(&self, gsi: u32, level: bool) {
        let d = {
            let mut p = lock(&self.platform);
            if gsi < 16 {
                p.pic.set_irq(gsi as u8, level);
            }
            p.ioapic.set_irq(gsi, level)
        };
        if let Some(d) = d {
            self.deliver(&d);
        }
        if gsi < 16 {
            self.wake(0);
        }
    }

    /// Advances the PIT to `now` and pulses IRQ0 if it fired.
    pub fn advance_pit(&self, now: u64) {
        let fired = lock(&self.platform).pit.advance(now);
        if fired {
            let (d1, d2) = {
                let mut p = lock(&self.platform);
                p.pic.set_irq(0, true);
                p.pic.set_irq(0, false);
                let d1 = p.ioapic.set_irq(PIT_IOAPIC_PIN, true);
                let d2 = p.ioapic.set_irq(PIT_IOAPIC_PIN, false);
                (d1, d2)
            };
            for d in [d1, d2].into_iter().flatten() {
                self.deliver(&d);
            }
        }
    }
}

/// The `emu` accelerator's VM.
pub struct EmuVm {
    pub(crate) shared: Arc<Shared>,
    created: Mutex<Vec<bool>>,
}

impl EmuVm {
    /// Creates an emulated VM over `mem` with `num_cpus` vCPUs (1..=255).
    pub fn new(mem: GuestMemory, num_cpus: u32) -> accel::Result<EmuVm> {
        if num_cpus == 0 || num_cpus > 255 {
            return Err(accel::Error::InvalidState(format!(
                "unsupported vCPU count {num_cpus}"
            )));
        }
        let cpus = (0..num_cpus)
            .map(|id| CpuSlot {
                lapic: Mutex::new(Lapic::new(id)),
                wake: Condvar::new(),
                kicked: AtomicBool::new(false),
            })
            .collect();
        let shared = Shared {
            mem,
            platform: Mutex::new(Platform {
                pic: PicPair::new(),
                ioapic: IoApic::new(0),
                pit: Pit::new(),
            }),
            cpus,
            start: Instant::now(),
            clock_offset: AtomicU64::new(0),
            trace: Mutex::new(None),
            split_lock: Mutex::new(()),
            code: Arc::default(),
            jit: AtomicBool::new(cfg!(target_arch = "x86_64")),
            jit_group: x86_jit::JitGroup::new(),
            portable_cpuid: AtomicBool::new(false),
            dirty: Mutex::new(None),
        };
        let group = shared.jit_group.clone();
        shared
            .code
            .set_new_code_hook(Box::new(move |pn| group.page_became_code(pn)));
        Ok(EmuVm {
            shared: Arc::new(shared),
            created: Mutex::new(vec![false; num_cpus as usize]),
        })
    }

    /// Shows vCPUs created from now on the portable CPUID model (`--cpu portable`):
    /// the features a VM that moves between accelerators may rely on.
    pub fn set_portable_cpuid(&self, on: bool) {
        self.shared.portable_cpuid.store(on, Ordering::Relaxed);
    }

    /// The portable CPUID table of a VM with `num_cpus` vCPUs: what KVM is cut down to
    /// for a VM that may move to `emu` (vCPU 0's; the others differ in APIC IDs).
    pub fn portable_cpuid(num_cpus: u32) -> Vec<vmm_types::CpuidEntry> {
        cpuid::table(&cpuid::model(0, num_cpus, true))
    }

    /// Turns the translator on or off for vCPUs created from now on (it is on by
    /// default on x86-64 hosts, and never on others).
    pub fn set_jit(&self, on: bool) {
        self.shared
            .jit
            .store(on && cfg!(target_arch = "x86_64"), Ordering::Relaxed);
    }

    /// Writes a per-instruction trace of vCPU 0 (RIP, RFLAGS and the GPRs before
    /// each instruction, in a layout close to QEMU's `-d cpu`) to `w`. Must be
    /// called before vCPU 0 is created.
    pub fn set_trace(&self, w: Box<dyn Write + Send>) {
        *lock(&self.shared.trace) = Some(w);
    }
}

impl accel::Vm for EmuVm {
    fn accel_name(&self) -> &'static str {
        "emu"
    }

    fn create_vcpu(&self, id: u32) -> accel::Result<Box<dyn Vcpu>> {
        let mut created = lock(&self.created);
        match created.get_mut(id as usize) {
            Some(c) if !*c => *c = true,
            Some(_) => {
                return Err(accel::Error::InvalidState(format!(
                    "vCPU {id} already exists"
                )))
            }
            None => return Err(accel::Error::InvalidState(format!("no vCPU {id}"))),
        }
        let trace = if id == 0 {
            lock(&self.shared.trace).take()
        } else {
            None
        };
        Ok(Box::new(EmuVcpu::new(self.shared.clone(), id, trace)))
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> accel::Result<()> {
        self.shared.set_irq(gsi, level);
        Ok(())
    }

    fn signal_msi(&self, addr: u64, data: u32) -> accel::Result<()> {
        match Delivery::from_msi(addr, data) {
            Some(d) => self.shared.deliver(&d),
            None => tracing::debug!("dropping invalid MSI {addr:#x}/{data:#x}"),
        }
        Ok(())
    }

    fn save_state(&self) -> accel::Result<vmm_types::VmState> {
        Ok(self.shared.save_state())
    }

    fn set_dirty_log(&self, log: Option<Arc<DirtyLog>>) -> accel::Result<()> {
        *lock(&self.shared.dirty) = log;
        // Entries filled before logging started would let stores go unlogged.
        self.shared.jit_group.drop_write_entries();
        Ok(())
    }

    fn sync_dirty_log(&self) -> accel::Result<()> {
        // The interpreter logs each store as it makes it; the translator logs a page
        // when it fills a write entry for it, so those are dropped each round.
        self.shared.jit_group.drop_write_entries();
        Ok(())
    }

    fn restore_state(&self, s: &vmm_types::VmState) -> accel::Result<()> {
        self.shared
            .restore_state(s)
            .map_err(accel::Error::InvalidState)
    }

    fn cpuid(&self) -> Vec<vmm_types::CpuidEntry> {
        cpuid::table(&self.shared.cpuid_model(0))
    }
}

/// Kicks one vCPU out of `run`.
pub(crate) struct Kicker {
    pub shared: Arc<Shared>,
    pub idx: usize,
}

impl accel::VcpuKick for Kicker {
    fn kick(&self) {
        if let Some(c) = self.shared.cpus.get(self.idx) {
            c.kicked.store(true, Ordering::SeqCst);
            let _g = lock(&c.lapic);
            c.wake.notify_all();
        }
    }
}
