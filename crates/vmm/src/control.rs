//! What the vCPU threads, the devices and the lifecycle commands share: why the VM
//! ends, whether its vCPUs should be parked (paused), and the requests a parked vCPU
//! thread serves on its own vCPU (save or load its state). One mutex and one condvar
//! cover all of it, so a parked or halted vCPU wakes for any of them.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use accel::{DebugStop, GuestDebug, Vcpu, VcpuKick};
use vm_device::bus::lock;
use vmm_types::CpuState;

use crate::run::ExitReason;

/// What a parked vCPU thread is asked to do with its vCPU.
pub(crate) enum VcpuRequest {
    Save,
    Load(Box<CpuState>),
    Debug(GuestDebug),
}

/// What it answers.
pub(crate) enum VcpuReply {
    Saved(Result<Box<CpuState>, String>),
    Done(Result<(), String>),
}

struct Inner {
    reason: Option<ExitReason>,
    /// vCPUs should park at their next exit from `run`.
    pause: bool,
    /// vCPU threads parked now.
    parked: Vec<bool>,
    /// vCPUs halted with interrupts off: when all are, nothing can wake the guest.
    halted_forever: Vec<bool>,
    requests: Vec<Option<VcpuRequest>>,
    replies: Vec<Option<VcpuReply>>,
    /// The first debugger stop since the debugger last resumed the VM.
    debug_stop: Option<(usize, DebugStop)>,
    /// vCPUs the debugger keeps parked while the others run.
    held: Vec<bool>,
}

/// Ends a VM (for signals and the console's quit sequence): available from the
/// machine before it starts, so nothing that arrives while it starts is lost.
#[derive(Clone)]
pub struct Ender(pub(crate) Arc<Control>);

impl Ender {
    /// Ends the VM for `reason`, in any state (the first reason wins).
    pub fn end(&self, reason: ExitReason) {
        self.0.request(reason);
    }
}

/// Shared between the vCPU threads, the devices and the VM's handle.
pub struct Control {
    inner: Mutex<Inner>,
    cv: Condvar,
    kickers: Mutex<Vec<Arc<dyn VcpuKick>>>,
    /// Held (shared) by host-side device work that writes guest memory (a NIC's
    /// receive); a pause takes it exclusively once, so when a pause returns no such
    /// work is in flight and none starts until the VM resumes.
    device_io: RwLock<()>,
    /// Run after every resume: host-side work that waited (frames queued while
    /// the VM was paused) is delivered.
    on_resume: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
}

impl Control {
    pub(crate) fn new(ncpus: usize) -> Control {
        Control {
            inner: Mutex::new(Inner {
                reason: None,
                pause: false,
                parked: vec![false; ncpus],
                halted_forever: vec![false; ncpus],
                requests: (0..ncpus).map(|_| None).collect(),
                replies: (0..ncpus).map(|_| None).collect(),
                debug_stop: None,
                held: vec![false; ncpus],
            }),
            cv: Condvar::new(),
            kickers: Mutex::new(Vec::new()),
            device_io: RwLock::new(()),
            on_resume: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn wait<'a>(&self, g: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_kicker(&self, k: Arc<dyn VcpuKick>) {
        lock(&self.kickers).push(k);
    }

    fn kick_all(&self) {
        for k in lock(&self.kickers).iter() {
            k.kick();
        }
    }

    /// Records why the VM ends (the first reason wins) and stops every vCPU.
    pub fn request(&self, r: ExitReason) {
        {
            let mut g = self.lock();
            if g.reason.is_none() {
                g.reason = Some(r);
            }
        }
        self.cv.notify_all();
        self.kick_all();
    }

    pub fn reason(&self) -> Option<ExitReason> {
        self.lock().reason.clone()
    }

    /// Blocks until the VM ends.
    pub fn wait_exit(&self) -> ExitReason {
        let mut g = self.lock();
        loop {
            if let Some(r) = g.reason.clone() {
                return r;
            }
            g = self.wait(g);
        }
    }

    /// Whether the vCPUs are (being) paused.
    pub fn pausing(&self) -> bool {
        self.lock().pause
    }

    /// Runs host-side device work `f` unless the VM is paused (then it is skipped:
    /// the functions given to [`Control::add_on_resume`] redo it on resume).
    pub fn device_work(&self, f: impl FnOnce()) {
        let _g = self.device_io.read().unwrap_or_else(|e| e.into_inner());
        if !self.pausing() {
            f();
        }
    }

    /// Registers `f` to run after each resume.
    pub fn add_on_resume(&self, f: Arc<dyn Fn() + Send + Sync>) {
        lock(&self.on_resume).push(f);
    }

    /// Waits for device work in flight (after `pause` was set).
    fn quiesce_devices(&self) {
        drop(self.device_io.write().unwrap_or_else(|e| e.into_inner()));
    }

    fn run_on_resume(&self) {
        let hooks: Vec<_> = lock(&self.on_resume).clone();
        for f in hooks {
            f();
        }
    }

    /// Asks every vCPU to park and waits until all have (or the VM ended, or
    /// `timeout` passed). Returns whether they are all parked.
    pub(crate) fn pause(&self, timeout: Duration) -> bool {
        self.lock().pause = true;
        self.quiesce_devices();
        self.cv.notify_all();
        self.kick_all();
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if g.reason.is_some() {
                return false;
            }
            if g.parked.iter().all(|&p| p) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Kick again: a vCPU may have entered `run` after the first kick.
            drop(g);
            self.kick_all();
            g = self.lock();
            let wait = left.min(Duration::from_millis(5));
            g = self
                .cv
                .wait_timeout(g, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Makes vCPUs park at their next checkpoint, without waiting for them.
    pub(crate) fn set_paused(&self) {
        self.lock().pause = true;
        self.quiesce_devices();
    }

    /// Lets the parked vCPUs run again (all of them: debugger holds end too).
    pub(crate) fn resume(&self) {
        {
            let mut g = self.lock();
            g.pause = false;
            g.held.fill(false);
        }
        self.cv.notify_all();
        self.run_on_resume();
    }

    /// Runs `req` on parked vCPU `idx`'s own thread and returns its answer (`None`
    /// if the VM ended first).
    pub(crate) fn on_vcpu(&self, idx: usize, req: VcpuRequest) -> Option<VcpuReply> {
        let mut g = self.lock();
        g.requests[idx] = Some(req);
        self.cv.notify_all();
        loop {
            if let Some(r) = g.replies[idx].take() {
                return Some(r);
            }
            if g.reason.is_some() {
                g.requests[idx] = None;
                return None;
            }
            g = self.wait(g);
        }
    }

    /// Called by vCPU thread `idx` between runs: parks it while the VM is paused,
    /// serving requests on `vcpu`. Returns false when the VM has ended.
    pub(crate) fn checkpoint(&self, idx: usize, vcpu: &mut dyn Vcpu) -> bool {
        let mut g = self.lock();
        if g.reason.is_some() {
            return false;
        }
        if !g.pause {
            return true;
        }
        g.parked[idx] = true;
        self.cv.notify_all();
        loop {
            if g.reason.is_some() {
                g.parked[idx] = false;
                return false;
            }
            if let Some(req) = g.requests[idx].take() {
                drop(g);
                let reply = match req {
                    VcpuRequest::Save => {
                        VcpuReply::Saved(vcpu.state().map(Box::new).map_err(|e| e.to_string()))
                    }
                    VcpuRequest::Load(s) => {
                        VcpuReply::Done(vcpu.set_state(&s).map_err(|e| e.to_string()))
                    }
                    VcpuRequest::Debug(d) => {
                        VcpuReply::Done(vcpu.set_guest_debug(&d).map_err(|e| e.to_string()))
                    }
                };
                g = self.lock();
                g.replies[idx] = Some(reply);
                self.cv.notify_all();
                continue;
            }
            if !g.pause && !g.held[idx] {
                g.parked[idx] = false;
                return true;
            }
            g = self.wait(g);
        }
    }

    /// vCPU `idx` stopped for the debugger: stop them all (all-stop), keeping the
    /// first such stop for the debugger to report.
    pub(crate) fn debug_stop(&self, idx: usize, stop: DebugStop) {
        {
            let mut g = self.lock();
            g.pause = true;
            if g.debug_stop.is_none() {
                g.debug_stop = Some((idx, stop));
            }
        }
        self.cv.notify_all();
        self.kick_all();
    }

    /// The debugger stop since the last call, once every vCPU is parked.
    pub(crate) fn take_debug_stop(&self) -> Option<(usize, DebugStop)> {
        let mut g = self.lock();
        if g.debug_stop.is_some() && g.parked.iter().all(|&p| p) {
            return g.debug_stop.take();
        }
        None
    }

    /// Lets the VM run with the vCPUs in `held` kept parked (the debugger resumes
    /// some threads only).
    pub(crate) fn resume_holding(&self, held: &[bool]) {
        {
            let mut g = self.lock();
            for (h, &v) in g.held.iter_mut().zip(held) {
                *h = v;
            }
            g.pause = false;
        }
        self.cv.notify_all();
        self.run_on_resume();
    }

    /// Forgets a debugger stop that is no longer to be reported.
    pub(crate) fn clear_debug_stop(&self) {
        self.lock().debug_stop = None;
    }

    /// vCPU `idx` halted with interrupts off. Waits until the VM ends or is paused
    /// (returning true for the latter); ends the VM if every vCPU is in this state.
    pub(crate) fn halted_forever(&self, idx: usize) -> bool {
        let mut g = self.lock();
        g.halted_forever[idx] = true;
        if g.halted_forever.iter().all(|&h| h) && g.reason.is_none() {
            g.reason = Some(ExitReason::AllHalted);
            self.cv.notify_all();
            drop(g);
            self.kick_all();
            return false;
        }
        loop {
            if g.reason.is_some() {
                return false;
            }
            if g.pause {
                return true;
            }
            g = self.wait(g);
        }
    }
}
