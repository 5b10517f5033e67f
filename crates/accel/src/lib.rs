//! The accelerator interface: what the VMM needs from `kvm` and `emu` alike.
//!
//! A [`Vm`] owns the guest's interrupt controllers (KVM's in-kernel irqchip, or
//! the emulator's user-space PIC/IOAPIC/LAPIC/PIT) and creates [`Vcpu`]s. A vCPU
//! runs guest code until something only the VMM can decide happens; port and MMIO
//! accesses that the accelerator does not handle itself go synchronously to an
//! [`IoHandler`] (the VMM's buses), so `run` returns only for lifecycle events.

use std::sync::Arc;

pub mod debug;

pub use debug::{DebugStop, GuestDebug, WatchKind, Watchpoint};

pub use vmm_types;
use vmm_types::dirty::DirtyLog;
use vmm_types::{CpuState, CpuidEntry, VmState};

/// Guest RAM, shared by the VMM, the devices and the accelerator.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Where a vCPU sends the port and MMIO accesses it does not handle itself.
pub trait IoHandler: Send + Sync {
    /// A port read of `data.len()` bytes (1, 2 or 4). Unclaimed ports read as all ones.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// A port write of `data.len()` bytes (1, 2 or 4).
    fn pio_write(&self, port: u16, data: &[u8]);
    /// An access to guest-physical memory that is not RAM. Unclaimed reads are all ones.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// A write to guest-physical memory that is not RAM.
    fn mmio_write(&self, addr: u64, data: &[u8]);
}

/// Why [`Vcpu::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuExit {
    /// The vCPU was kicked through its [`VcpuKick`]; the VMM should check why.
    Interrupted,
    /// The vCPU executed HLT with interrupts disabled: nothing but INIT/NMI can wake it.
    /// Accelerators return this only when they cannot wait for a wake-up themselves.
    HaltedForever,
    /// Triple fault (or KVM's shutdown exit): the guest reset itself the hard way.
    Shutdown,
    /// The guest asked for a reset through a platform mechanism the accelerator handles.
    Reset,
    /// The guest asked to power off through a platform mechanism the accelerator handles.
    PowerOff,
    /// A debugger's breakpoint, watchpoint or single step ([`Vcpu::set_guest_debug`]).
    Debug(DebugStop),
}

/// Errors an accelerator reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("accelerator not available: {0}")]
    Unavailable(String),
    #[error("the guest did something the accelerator cannot handle: {0}")]
    Guest(String),
    #[error("invalid vCPU state: {0}")]
    InvalidState(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Makes a vCPU's current or next [`Vcpu::run`] return [`VcpuExit::Interrupted`] promptly.
pub trait VcpuKick: Send + Sync {
    fn kick(&self);
}

/// One virtual CPU. Each runs on its own host thread.
pub trait Vcpu: Send {
    fn id(&self) -> u32;
    /// Sets the architectural state: the boot CPU's entry state, or a restore of
    /// what [`Vcpu::state`] of either accelerator returned. Parts left empty (no
    /// `lapic` page, no `xsave` image) keep what the vCPU has (see [`CpuState`]).
    /// On restore, call [`Vm::restore_state`] first: the TSC and the LAPIC timer
    /// continue from the VM clock.
    fn set_state(&mut self, state: &CpuState) -> Result<()>;
    /// The full state of a vCPU that is not running (its thread is outside `run`):
    /// registers, XSAVE image, debug registers, LAPIC page, MSRs of
    /// [`vmm_types::msr::STATE`], activity state and pending events.
    fn state(&mut self) -> Result<CpuState>;
    /// Runs guest code until an event the VMM must handle.
    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit>;
    fn kicker(&self) -> Arc<dyn VcpuKick>;
    /// Makes `run` stop for the debugger as `d` says (an empty `d`: no debugging).
    fn set_guest_debug(&mut self, d: &GuestDebug) -> Result<()> {
        if d.active() {
            return Err(Error::Unavailable(
                "this accelerator has no guest debugging".into(),
            ));
        }
        Ok(())
    }
}

/// A virtual machine on one accelerator.
pub trait Vm: Send + Sync {
    /// Short name of the accelerator ("kvm", "emu").
    fn accel_name(&self) -> &'static str;
    /// Creates vCPU `id` (0 is the boot CPU; the others wait for INIT/SIPI).
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>>;
    /// Drives interrupt line `gsi` of the IOAPIC (and the PIC for GSIs below 16).
    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<()>;
    /// Delivers a message-signalled interrupt.
    fn signal_msi(&self, addr: u64, data: u32) -> Result<()>;
    /// The PIC pair, IOAPIC, PIT and guest clock. Call with every vCPU outside `run`.
    fn save_state(&self) -> Result<VmState>;
    /// Loads what [`Vm::save_state`] of either accelerator returned; guest time
    /// continues from `s.clock_ns`. Call before the vCPUs' [`Vcpu::set_state`].
    fn restore_state(&self, s: &VmState) -> Result<()>;
    /// The CPUID table the guest sees (vCPU 0's; the others differ only in APIC IDs).
    fn cpuid(&self) -> Vec<CpuidEntry>;
    /// Refuses a restore of a guest that saw CPUID table `saved` when this VM lacks
    /// one of its features ([`vmm_types::cpuid::check_compatible`]).
    fn check_cpuid(&self, saved: &[CpuidEntry]) -> Result<()> {
        vmm_types::cpuid::check_compatible(saved, &self.cpuid())
            .map_err(|e| Error::InvalidState(e.to_string()))
    }
    /// Logs the guest pages the vCPUs write into `log` from now on (`None`: stop
    /// logging). Call with every vCPU outside `run`. The VMM's own writes (device
    /// DMA) are logged by the devices.
    fn set_dirty_log(&self, log: Option<Arc<DirtyLog>>) -> Result<()>;
    /// Brings the log given to [`Vm::set_dirty_log`] up to date with what the vCPUs
    /// wrote so far (KVM: its dirty bitmap, read and cleared). Call with every vCPU
    /// outside `run`: `emu` also drops its translator's write permissions here, so
    /// the next write to each page is logged again.
    fn sync_dirty_log(&self) -> Result<()>;
}
