//! The host side of an interactive VM: stdin to the guest's console, and the
//! signals that end it in an orderly way.

use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use vmm::{Ender, ExitReason, VmHandle};

/// Locks `m`, a poisoned lock included (a panicked thread leaves nothing half-done
/// in these targets).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the (single, process-wide) stdin reader sends input: the running VM's console.
#[derive(Default)]
struct StdinRouter {
    target: Mutex<Option<VmHandle>>,
}

static STDIN_ROUTER: OnceLock<Arc<StdinRouter>> = OnceLock::new();

/// Points stdin at the VM of `vm`, starting the reader thread on first use. The
/// thread is detached (a blocking read cannot be interrupted) and dies with the
/// process; a restarted VM takes over the same thread.
pub fn route_stdin(interactive: bool, vm: &VmHandle) -> Result<()> {
    let mut started = None;
    let router = STDIN_ROUTER.get_or_init(|| {
        let r = Arc::new(StdinRouter::default());
        started = Some(r.clone());
        r
    });
    *lock(&router.target) = Some(vm.clone());
    if let Some(r) = started {
        let rq = r.clone();
        thread::Builder::new()
            .name("console-in".into())
            .spawn(move || {
                sandbox::enter(sandbox::ThreadKind::Io);
                crate::console::pump_stdin(
                    interactive,
                    |mut bytes| {
                        while !bytes.is_empty() {
                            let Some(vm) = lock(&r.target).clone() else {
                                return;
                            };
                            if vm.ended() {
                                return;
                            }
                            let n = vm.input()(bytes);
                            bytes = &bytes[n..];
                            if n == 0 {
                                thread::sleep(Duration::from_millis(2));
                            }
                        }
                    },
                    || {
                        if let Some(vm) = lock(&rq.target).clone() {
                            vm.end(ExitReason::ConsoleQuit);
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

/// Where the signals go: the VM to end, or (with none) what to do about them.
#[derive(Default)]
pub struct SignalTarget {
    vm: Option<Ender>,
    /// A signal that came while no VM was set: the next one set ends at once.
    pending: Option<i32>,
    /// No VM is coming soon (waiting for a migration): a signal ends `hako` now.
    idle: bool,
}

impl SignalTarget {
    /// Sends signals to the VM `vm` ends (delivering one that came meanwhile).
    pub fn set_vm(&mut self, vm: Option<Ender>) {
        if let (Some(v), Some(sig)) = (&vm, self.pending.take()) {
            v.end(ExitReason::Signal(sig));
        }
        self.vm = vm;
    }

    /// While `idle`, a signal with no VM set ends the process at once.
    pub fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
    }
}

static SIGNAL_EXIT: OnceLock<Arc<Mutex<SignalTarget>>> = OnceLock::new();

pub fn route_signals() -> Result<Arc<Mutex<SignalTarget>>> {
    let mut first = false;
    let target = SIGNAL_EXIT.get_or_init(|| {
        first = true;
        Arc::new(Mutex::new(SignalTarget::default()))
    });
    if !first {
        return Ok(target.clone());
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
        .spawn(move || {
            sandbox::enter(sandbox::ThreadKind::Io);
            loop {
                let mut sig = 0;
                // SAFETY: `set` holds the blocked signals; `sig` is a valid out-pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                    let mut g = lock(&t);
                    match &g.vm {
                        Some(vm) => vm.end(ExitReason::Signal(sig)),
                        None if g.idle => {
                            eprintln!("hako: terminated by signal {sig}");
                            std::process::exit(128 + sig);
                        }
                        None => g.pending = Some(sig),
                    }
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(target.clone())
}
