//! Running a VM: one host thread per vCPU, the console's input pump, and the
//! coordination that ends them all when the guest (or the user) ends the VM.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use accel::{Vcpu, VcpuExit, VcpuKick};
use anyhow::{Context, Result};
use vm_device::bus::lock;

use crate::machine::Machine;
use crate::platform::InputSink;

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
            ExitReason::DebugExit(v) => format!(
                "the guest wrote {v:#x} to isa-debug-exit (exit status {})",
                devices::debug_exit::exit_status(*v)
            ),
            ExitReason::Error(e) => e.clone(),
        }
    }
}

/// Shared between the vCPU threads, devices and the console.
#[derive(Default)]
pub struct ExitState {
    reason: Mutex<Option<ExitReason>>,
    cv: Condvar,
    kickers: Mutex<Vec<Arc<dyn VcpuKick>>>,
    halted: Mutex<u32>,
}

impl ExitState {
    /// Records why the VM ends (the first reason wins) and stops every vCPU.
    pub fn request(&self, r: ExitReason) {
        {
            let mut g = lock(&self.reason);
            if g.is_none() {
                *g = Some(r);
            }
        }
        self.cv.notify_all();
        for k in lock(&self.kickers).iter() {
            k.kick();
        }
    }

    pub fn reason(&self) -> Option<ExitReason> {
        lock(&self.reason).clone()
    }

    fn wait(&self) -> ExitReason {
        let mut g = lock(&self.reason);
        loop {
            if let Some(r) = g.clone() {
                return r;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn vcpu_loop(mut vcpu: Box<dyn Vcpu>, m: &Machine, ncpus: u32) {
    let id = vcpu.id();
    while m.exit.reason().is_none() {
        match vcpu.run(&*m.buses) {
            Ok(VcpuExit::Interrupted) => {}
            Ok(VcpuExit::HaltedForever) => {
                let all = {
                    let mut h = lock(&m.exit.halted);
                    *h += 1;
                    *h == ncpus
                };
                if all {
                    m.exit.request(ExitReason::AllHalted);
                }
                m.exit.wait();
            }
            Ok(VcpuExit::Shutdown) => m.exit.request(ExitReason::TripleFault),
            Ok(VcpuExit::Reset) => m.exit.request(ExitReason::Reset),
            Ok(VcpuExit::PowerOff) => m.exit.request(ExitReason::PowerOff),
            Err(e) => m.exit.request(ExitReason::Error(format!("vCPU {id}: {e}"))),
        }
    }
}

impl Machine {
    /// Runs the VM until it ends; returns why. `interactive` enables the console escape.
    pub fn run(self, interactive: bool) -> Result<ExitReason> {
        let m = Arc::new(self);
        let ncpus = m.config.cpus;
        let mut vcpus = Vec::new();
        for id in 0..ncpus {
            let mut v =
                m.vm.create_vcpu(id)
                    .with_context(|| format!("cannot create vCPU {id}"))?;
            if id == 0 {
                v.set_state(&m.boot_cpu)
                    .context("cannot set the boot CPU's state")?;
            }
            lock(&m.exit.kickers).push(v.kicker());
            vcpus.push(v);
        }

        // Signals first: threads spawned after this inherit the blocked mask.
        route_signals(m.exit.clone())?;
        route_stdin(interactive, m.input.clone(), m.exit.clone())?;

        let mut handles = Vec::new();
        for v in vcpus {
            let mc = m.clone();
            let name = format!("vcpu{}", v.id());
            handles.push(
                thread::Builder::new()
                    .name(name)
                    .spawn(move || vcpu_loop(v, &mc, ncpus))
                    .context("cannot start a vCPU thread")?,
            );
        }
        let reason = m.exit.wait();
        for h in handles {
            if h.join().is_err() {
                return Ok(ExitReason::Error("a vCPU thread panicked".into()));
            }
        }
        Ok(reason)
    }
}

/// Where the (single, process-wide) stdin reader sends input: the running VM's console.
#[derive(Default)]
struct StdinRouter {
    target: Mutex<Option<(InputSink, Arc<ExitState>)>>,
}

static STDIN_ROUTER: OnceLock<Arc<StdinRouter>> = OnceLock::new();

/// Points stdin at `input`, starting the reader thread on first use. The thread is
/// detached (a blocking read cannot be interrupted) and dies with the process; a
/// restarted VM takes over the same thread.
fn route_stdin(interactive: bool, input: InputSink, exit: Arc<ExitState>) -> Result<()> {
    let mut started = None;
    let router = STDIN_ROUTER.get_or_init(|| {
        let r = Arc::new(StdinRouter::default());
        started = Some(r.clone());
        r
    });
    *lock(&router.target) = Some((input, exit));
    if let Some(r) = started {
        let rq = r.clone();
        thread::Builder::new()
            .name("console-in".into())
            .spawn(move || {
                crate::console::pump_stdin(
                    interactive,
                    |mut bytes| {
                        while !bytes.is_empty() {
                            let Some((sink, exit)) = lock(&r.target).clone() else {
                                return;
                            };
                            if exit.reason().is_some() {
                                return;
                            }
                            let n = sink(bytes);
                            bytes = &bytes[n..];
                            if n == 0 {
                                thread::sleep(Duration::from_millis(2));
                            }
                        }
                    },
                    || {
                        if let Some((_, exit)) = lock(&rq.target).clone() {
                            exit.request(ExitReason::ConsoleQuit);
                        }
                    },
                );
            })
            .context("cannot start the console thread")?;
    }
    Ok(())
}

/// The signals that end the VM in an orderly way (terminal restored, files flushed).
const EXIT_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT];

static SIGNAL_EXIT: OnceLock<Arc<Mutex<Option<Arc<ExitState>>>>> = OnceLock::new();

/// Turns SIGTERM/SIGHUP/SIGINT into an orderly exit of the running VM: they are
/// blocked in this thread (and so in every thread spawned after it) and taken by a
/// dedicated thread with `sigwait`.
fn route_signals(exit: Arc<ExitState>) -> Result<()> {
    let mut first = false;
    let target = SIGNAL_EXIT.get_or_init(|| {
        first = true;
        Arc::new(Mutex::new(None))
    });
    *lock(target) = Some(exit);
    if !first {
        return Ok(());
    }
    // SAFETY: an all-zero sigset_t is a valid argument for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in EXIT_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let t = target.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: `set` holds the blocked signals; `sig` is a valid out-pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                if let Some(exit) = lock(&t).clone() {
                    exit.request(ExitReason::Signal(sig));
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
