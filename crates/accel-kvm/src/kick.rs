//! Kicking a vCPU out of `KVM_RUN`.
//!
//! A kick sets a pending flag, sets `immediate_exit` in the vCPU's `kvm_run` page and
//! sends the vCPU thread a real-time signal whose handler does nothing. Without
//! `SA_RESTART` the signal makes a running `KVM_RUN` return `EINTR`; a kick that lands
//! just before `KVM_RUN` is not lost because `immediate_exit` makes the next entry
//! return `EINTR` at once, and a kick while the thread is outside [`crate::KvmVcpu::run`]
//! is seen through the pending flag when `run` starts.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// The signal used to kick vCPU threads: the first real-time signal.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op kick handler once per process.
pub(crate) fn install_handler() -> std::io::Result<()> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    RESULT
        .get_or_init(|| register_signal_handler(kick_signal(), noop_handler).map_err(|e| e.errno()))
        .map_err(std::io::Error::from_raw_os_error)
}

/// Where a running vCPU can be reached.
struct Target {
    thread: libc::pthread_t,
    /// `kvm_run.immediate_exit` of the vCPU.
    immediate_exit: *const AtomicU8,
}

// SAFETY: `Target` is only read while the owning vCPU is inside `run` (it is removed
// under the same mutex before `run` returns), so the pointer refers to the live
// `kvm_run` mapping and the thread id to a live thread; both may be used from any thread.
unsafe impl Send for Target {}

/// The kick state shared between a vCPU and its kickers.
#[derive(Default)]
pub struct Kicker {
    pending: AtomicBool,
    target: Mutex<Option<Target>>,
}

impl Kicker {
    /// Called by the vCPU thread on entering `run`: makes it reachable by signal.
    ///
    /// # Safety
    /// `immediate_exit` must point at the vCPU's mapped `kvm_run.immediate_exit` and stay
    /// valid until [`Kicker::leave`] is called, which must happen on the same thread
    /// before it exits.
    pub(crate) unsafe fn enter(&self, immediate_exit: *const AtomicU8) {
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(Target {
            thread,
            immediate_exit,
        });
    }

    /// Called by the vCPU thread before `run` returns.
    pub(crate) fn leave(&self) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Consumes a pending kick.
    pub(crate) fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }
}

impl accel::VcpuKick for Kicker {
    fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        let guard = self.target.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = guard.as_ref() {
            // SAFETY: the target is registered only while its vCPU is inside `run`, and
            // `leave` needs this lock, so the kvm_run mapping is alive (see `enter`).
            unsafe { (*t.immediate_exit).store(1, Ordering::SeqCst) };
            // SAFETY: the thread is alive for the same reason; pthread_kill only queues
            // a signal whose handler does nothing.
            unsafe { libc::pthread_kill(t.thread, kick_signal()) };
        }
    }
}
