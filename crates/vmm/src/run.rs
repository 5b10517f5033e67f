//! Running a VM: one host thread per vCPU, each parking at the [`Control`]'s
//! checkpoint between runs, until the guest (or the user) ends the VM.

use std::sync::Arc;
use std::thread;

use accel::{Vcpu, VcpuExit};
use anyhow::Context;

use crate::control::Control;
use crate::handle::{RunState, VmHandle};
use crate::machine::Machine;
use vmm_types::{CpuState, VmState};

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset itself (i8042, reset register).
    Reset,
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// Triple fault / shutdown.
    TripleFault,
    /// Every vCPU halted with interrupts disabled: nothing can wake the guest.
    AllHalted,
    /// The user typed the console's quit sequence.
    ConsoleQuit,
    /// hako received SIGTERM, SIGHUP or SIGINT.
    Signal(i32),
    /// Stopped through the VM's handle (`stop`).
    Stopped,
    /// Live-migrated to this URI: the VM runs there now.
    Migrated(String),
    /// The guest wrote this value to the isa-debug-exit port.
    DebugExit(u32),
    /// The VMM failed.
    Error(String),
}

impl ExitReason {
    /// Whether the guest ended itself (or the user ended it): exit status 0.
    pub fn is_clean(&self) -> bool {
        !matches!(self, ExitReason::Error(_))
    }

    /// The exit status the guest chose through isa-debug-exit, if it did.
    pub fn debug_exit_status(&self) -> Option<u8> {
        match self {
            ExitReason::DebugExit(v) => Some(devices::debug_exit::exit_status(*v)),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ExitReason::Reset => "the guest reset itself".into(),
            ExitReason::PowerOff => "the guest powered off".into(),
            ExitReason::TripleFault => "the guest triple-faulted (shutdown)".into(),
            ExitReason::AllHalted => {
                "every vCPU halted with interrupts disabled; the guest has finished".into()
            }
            ExitReason::ConsoleQuit => "quit from the console".into(),
            ExitReason::Signal(n) => format!("terminated by signal {n}"),
            ExitReason::Stopped => "stopped through the control API".into(),
            ExitReason::Migrated(uri) => format!("migrated to {uri}: the VM runs there now"),
            ExitReason::DebugExit(v) => format!(
                "the guest wrote {v:#x} to isa-debug-exit (exit status {})",
                devices::debug_exit::exit_status(*v)
            ),
            ExitReason::Error(e) => e.clone(),
        }
    }
}

fn vcpu_loop(mut vcpu: Box<dyn Vcpu>, m: &Machine, ctl: &Control) {
    let id = vcpu.id();
    let idx = id as usize;
    while ctl.checkpoint(idx, &mut *vcpu) {
        match vcpu.run(&*m.buses) {
            Ok(VcpuExit::Interrupted) => {}
            Ok(VcpuExit::HaltedForever) => {
                // Returns when paused (to park above) or when the VM ended.
                ctl.halted_forever(idx);
            }
            Ok(VcpuExit::Shutdown) => ctl.request(ExitReason::TripleFault),
            Ok(VcpuExit::Reset) => ctl.request(ExitReason::Reset),
            Ok(VcpuExit::PowerOff) => ctl.request(ExitReason::PowerOff),
            Ok(VcpuExit::Debug(stop)) => ctl.debug_stop(idx, stop),
            Err(e) => ctl.request(ExitReason::Error(format!("vCPU {id}: {e}"))),
        }
    }
}

/// How the vCPUs start.
pub enum Start {
    /// From the kernel's entry state (vCPU 0) and waiting for INIT/SIPI (the others).
    Boot,
    /// From a snapshot or a migration: the interrupt controllers and clock, then
    /// one state per vCPU in order.
    Restored {
        vm: Box<VmState>,
        vcpus: Vec<CpuState>,
    },
}

impl Machine {
    /// Starts the vCPU threads (paused if `paused`) and returns the VM's handle.
    pub fn start(self, start: Start, paused: bool) -> anyhow::Result<VmHandle> {
        let ncpus = self.config.cpus;
        let ctl = self.control.clone();
        let mut vcpus = Vec::new();
        if let Start::Restored { vm, vcpus } = &start {
            if vcpus.len() != ncpus as usize {
                anyhow::bail!("{} saved vCPU states for {ncpus} vCPUs", vcpus.len());
            }
            // Before any vCPU is created: KVM wants the irqchip and clock first.
            self.vm
                .restore_state(vm)
                .context("cannot restore the interrupt controllers and clock")?;
        }
        for id in 0..ncpus {
            let mut v = self
                .vm
                .create_vcpu(id)
                .with_context(|| format!("cannot create vCPU {id}"))?;
            match &start {
                Start::Boot if id == 0 => v
                    .set_state(&self.boot_cpu)
                    .context("cannot set the boot CPU's state")?,
                Start::Boot => {}
                Start::Restored { vcpus, .. } => {
                    v.set_state(&vcpus[id as usize])
                        .with_context(|| format!("cannot load vCPU {id}'s saved state"))?;
                }
            }
            ctl.add_kicker(v.kicker());
            vcpus.push(v);
        }
        if paused {
            // Before the threads run: each parks at its first checkpoint.
            ctl.set_paused();
        }
        let m = Arc::new(self);
        let mut threads = Vec::new();
        for v in vcpus {
            let mc = m.clone();
            let name = format!("vcpu{}", v.id());
            let c = ctl.clone();
            threads.push(
                thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        sandbox::enter(sandbox::ThreadKind::Vcpu);
                        vcpu_loop(v, &mc, &c)
                    })
                    .context("cannot start a vCPU thread")?,
            );
        }
        let initial = if paused {
            RunState::Created
        } else {
            RunState::Running
        };
        Ok(VmHandle::new(m, threads, initial))
    }
}
