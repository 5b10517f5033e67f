//! Starting and stopping VMs, and what happens when a VM process ends.
//!
//! Every operation takes the VM's `op` lock first and holds it to the end, the
//! exit handling included, so a VM is never started twice or stopped while it
//! starts. A process's end is seen by its watcher (a task waiting for our child,
//! or polling /proc for an adopted one), which publishes it on the run's `exited`
//! channel at once and then takes the lock to record it: an operation that waits
//! for the end (destroy, shutdown with a wait) records it itself, and the watcher
//! then finds a newer state and leaves it alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::api::types::{ExitInfo, VmStatus};
use crate::daemon::Daemon;
use crate::definition::RestartPolicy;
use crate::error::{Error, Result};
use crate::process::Boot;
use crate::store::write_atomic;
use crate::vm::{Phase, Slot};
use crate::{process, procfs};

/// How long a new VM has to answer on its API socket.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `destroy` waits after asking the VM to stop, and again after SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reboot waits for the guest to power off before destroying it.
pub const REBOOT_WAIT: Duration = Duration::from_secs(30);
/// At most this many restarts by the restart policy per minute.
pub const MAX_RESTARTS_PER_MINUTE: usize = 3;

/// How a run ended, as the one who records it sees it.
pub(crate) enum End {
    /// Asked for (destroy, reboot): never a crash.
    Expected,
    /// The guest or the VMM ended it: a crash unless it exited with status 0.
    Unexpected,
    /// It ended (or was killed) before it answered on its API socket.
    StartFailed(String),
}

/// Waits (at most `limit`) for the run's end; whether it came.
pub(crate) async fn wait_exit(
    exited: &mut watch::Receiver<Option<ExitInfo>>,
    limit: Duration,
) -> bool {
    let _ = tokio::time::timeout(limit, exited.wait_for(|e| e.is_some())).await;
    exited.borrow().is_some()
}

/// A VM API answer that is not a success, as an error of the daemon's.
pub(crate) fn api_refusal(name: &str, r: &control_api::client::Response) -> Error {
    let msg = format!("{name}: {}", r.error_message());
    if r.status == 409 {
        Error::Conflict(msg)
    } else {
        Error::Failed(msg)
    }
}

/// What an operation needs of the running process (copied out of the VM's lock).
pub(crate) struct RunView {
    pub pid: u32,
    pub generation: u64,
    pub adopted: bool,
    pub exited: watch::Receiver<Option<ExitInfo>>,
    pub paused: bool,
}

fn not_running(name: &str) -> Error {
    Error::Conflict(format!("'{name}' is not running"))
}

impl Daemon {
    /// `PUT /v1/vms/{name}/start`: answers once the VM runs (its API answers).
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<VmStatus> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        if slot.inner().running().is_some() {
            return Err(Error::Conflict(format!("'{name}' is running already")));
        }
        self.start_locked(&slot).await?;
        let status = slot.inner().status();
        Ok(status)
    }

    /// Starts the VM's process and waits for its API; the caller holds `op`.
    pub(crate) async fn start_locked(self: &Arc<Self>, slot: &Arc<Slot>) -> Result<()> {
        self.start_from(slot, &Boot::Config, START_TIMEOUT).await
    }

    /// Starts the VM's process booting from `boot` and waits up to `limit` for its
    /// API; the caller holds `op`.
    pub(crate) async fn start_from(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        boot: &Boot,
        limit: Duration,
    ) -> Result<()> {
        let (def, generation, last_tail) = {
            let mut g = slot.inner();
            if g.running().is_some() {
                return Err(Error::Conflict(format!(
                    "'{}' is running already",
                    slot.name
                )));
            }
            (g.def.clone(), g.take_generation(), g.last_tail.take())
        };
        if let Some(t) = last_tail {
            t.wait_done(Duration::from_secs(1)).await;
        }
        let sp = process::spawn(&self.sd, &self.exe, &def, boot, generation, &slot.log)?;
        let mut exited = sp.proc.exited.clone();
        let pid = sp.proc.pid;
        {
            let mut g = slot.inner();
            g.phase = Phase::Running(sp.proc);
            g.note = None;
        }
        self.watch_child(slot.clone(), generation, sp.child, sp.exit_tx);
        if let Err(why) = self.wait_ready(slot, &mut exited, limit).await {
            if !wait_exit(&mut exited, Duration::ZERO).await {
                process::kill9(pid);
                wait_exit(&mut exited, STOP_TIMEOUT).await;
            }
            let info = exited.borrow().unwrap_or_default();
            self.finalize(slot, generation, info, End::StartFailed(why.clone()));
            return Err(Error::Failed(why));
        }
        Ok(())
    }

    /// Waits until the new VM's API answers `GET /v1/vm` (the machine is built and
    /// runs), or says why it will not.
    async fn wait_ready(
        &self,
        slot: &Slot,
        exited: &mut watch::Receiver<Option<ExitInfo>>,
        limit: Duration,
    ) -> std::result::Result<(), String> {
        let api = self.sd.api_socket(&slot.name);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(info) = *exited.borrow() {
                let log = std::fs::read_to_string(self.sd.log(&slot.name)).unwrap_or_default();
                let line = process::last_line(&log);
                return Err(format!(
                    "'{}' did not start ({}){}",
                    slot.name,
                    info.describe(),
                    if line.is_empty() {
                        String::new()
                    } else {
                        format!(": {line}")
                    }
                ));
            }
            if api.exists() {
                let r = process::vm_api_async(api.clone(), "GET", "/v1/vm", Duration::from_secs(2))
                    .await;
                if r.is_ok_and(|r| r.status == 200) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "'{}' did not answer on {} within {} s",
                    slot.name,
                    api.display(),
                    limit.as_secs()
                ));
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(20), exited.wait_for(|e| e.is_some()))
                    .await;
        }
    }

    /// Waits for our child on a task; then records its end.
    fn watch_child(
        self: &Arc<Self>,
        slot: Arc<Slot>,
        generation: u64,
        mut child: tokio::process::Child,
        tx: watch::Sender<Option<ExitInfo>>,
    ) {
        let d = self.clone();
        tokio::spawn(async move {
            let info = process::exit_info(child.wait().await);
            let _ = tx.send(Some(info));
            d.on_exit(slot, generation, info).await;
        });
    }

    /// Polls /proc for an adopted process (not our child: it cannot be waited
    /// for); its exit status is not known.
    pub(crate) fn watch_adopted(
        self: &Arc<Self>,
        slot: Arc<Slot>,
        generation: u64,
        pid: u32,
        tx: watch::Sender<Option<ExitInfo>>,
    ) {
        let d = self.clone();
        let api = self.sd.api_socket(&slot.name);
        tokio::spawn(async move {
            while procfs::is_vm_process(pid, &api) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let info = ExitInfo::default();
            let _ = tx.send(Some(info));
            d.on_exit(slot, generation, info).await;
        });
    }

    /// A run ended by itself (as far as its watcher knows): record it, and start
    /// the VM again if its restart policy says so.
    async fn on_exit(self: &Arc<Self>, slot: Arc<Slot>, generation: u64, info: ExitInfo) {
        let _g = slot.op.lock().await;
        if !self.finalize(&slot, generation, info, End::Unexpected) {
            return;
        }
        // A restart that fails (the VM ends again before it answers) is tried
        // again: every try counts against the bound.
        loop {
            let go = {
                let mut g = slot.inner();
                if g.removed
                    || !matches!(g.phase, Phase::Crashed)
                    || g.def.restart_policy != RestartPolicy::OnFailure
                {
                    false
                } else if g.recent_restarts() >= MAX_RESTARTS_PER_MINUTE {
                    g.note = Some(format!(
                        "not restarted: restarted {MAX_RESTARTS_PER_MINUTE} times in the last minute"
                    ));
                    false
                } else {
                    g.restarts.push_back(Instant::now());
                    true
                }
            };
            if !go {
                return;
            }
            tracing::info!("{}: {}: restarting it", slot.name, info.describe());
            slot.note_in_log("restarting (restart policy on-failure)");
            match self.start_locked(&slot).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("{}: restart failed: {e}", slot.name);
                    slot.inner().note = Some(format!("restart failed: {e}"));
                }
            }
        }
    }

    /// Records the end of run `generation`, unless a newer state was recorded
    /// already; whether it did.
    pub(crate) fn finalize(&self, slot: &Slot, generation: u64, info: ExitInfo, end: End) -> bool {
        let name = &slot.name;
        let mut g = slot.inner();
        if g.running().is_none_or(|p| p.generation != generation) {
            return false;
        }
        let Phase::Running(p) = std::mem::replace(&mut g.phase, Phase::Defined) else {
            return false;
        };
        let _ = std::fs::remove_file(self.sd.pid(name));
        let crashed = match &end {
            End::Expected => false,
            End::Unexpected => !info.is_clean(),
            End::StartFailed(_) => true,
        };
        p.tail_end
            .finish(format!("{name} ended ({})", info.describe()));
        g.last_tail = Some(p.tail_end.clone());
        g.last_exit = Some(info);
        let exit_path = self.sd.exit(name);
        if crashed {
            g.phase = Phase::Crashed;
            // Said in the same lock as the crash, so nobody sees a crashed VM
            // that will not be restarted without the reason (on_exit says it too).
            if matches!(end, End::Unexpected)
                && g.def.restart_policy == RestartPolicy::OnFailure
                && g.recent_restarts() >= MAX_RESTARTS_PER_MINUTE
            {
                g.note = Some(format!(
                    "not restarted: restarted {MAX_RESTARTS_PER_MINUTE} times in the last minute"
                ));
            }
            if let Ok(json) = serde_json::to_vec(&info) {
                let _ = write_atomic(&exit_path, &json);
            }
        } else {
            let _ = std::fs::remove_file(&exit_path);
        }
        if let End::StartFailed(why) = end {
            g.note = Some(why);
        }
        true
    }

    /// The running VM's process, or a 409.
    pub(crate) fn running(slot: &Slot) -> Result<RunView> {
        let g = slot.inner();
        let p = g.running().ok_or_else(|| not_running(&slot.name))?;
        Ok(RunView {
            pid: p.pid,
            generation: p.generation,
            adopted: p.adopted,
            exited: p.exited.clone(),
            paused: p.paused,
        })
    }

    /// `PUT /v1/vms/{name}/destroy`: asks the VM to stop at once, then kills it.
    pub async fn destroy(self: &Arc<Self>, name: &str) -> Result<VmStatus> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        self.destroy_locked(&slot).await?;
        let status = slot.inner().status();
        Ok(status)
    }

    pub(crate) async fn destroy_locked(&self, slot: &Slot) -> Result<()> {
        let RunView {
            pid,
            generation,
            adopted,
            mut exited,
            ..
        } = Self::running(slot)?;
        let api = self.sd.api_socket(&slot.name);
        let _ =
            process::vm_api_async(api.clone(), "PUT", "/v1/vm/stop", Duration::from_secs(3)).await;
        if !wait_exit(&mut exited, STOP_TIMEOUT).await {
            if !adopted || procfs::is_vm_process(pid, &api) {
                process::kill9(pid);
            }
            if !wait_exit(&mut exited, STOP_TIMEOUT).await {
                return Err(Error::Failed(format!(
                    "'{}' (pid {pid}) did not end after SIGKILL",
                    slot.name
                )));
            }
        }
        let info = exited.borrow().unwrap_or_default();
        self.finalize(slot, generation, info, End::Expected);
        Ok(())
    }

    /// `PUT /v1/vms/{name}/shutdown`: presses the ACPI power button; with `wait`,
    /// waits that long for the guest to power off.
    pub async fn shutdown(self: &Arc<Self>, name: &str, wait: Duration) -> Result<VmStatus> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let RunView {
            generation,
            mut exited,
            paused,
            ..
        } = Self::running(&slot)?;
        if paused {
            return Err(Error::Conflict(format!(
                "'{name}' is paused: resume it to shut it down, or destroy it"
            )));
        }
        self.press_power_button(&slot).await?;
        if !wait.is_zero() && wait_exit(&mut exited, wait).await {
            let info = exited.borrow().unwrap_or_default();
            self.finalize(&slot, generation, info, End::Unexpected);
        }
        let status = slot.inner().status();
        Ok(status)
    }

    async fn press_power_button(&self, slot: &Slot) -> Result<()> {
        let api = self.sd.api_socket(&slot.name);
        let r = process::vm_api_async(api, "PUT", "/v1/vm/power-button", Duration::from_secs(5))
            .await?;
        if r.status != 200 {
            return Err(api_refusal(&slot.name, &r));
        }
        Ok(())
    }

    /// `PUT /v1/vms/{name}/reboot`: the power button and up to `wait` for the
    /// guest to power off (or, with `force`, nothing), destroy if it is still
    /// running, then start.
    pub async fn reboot(
        self: &Arc<Self>,
        name: &str,
        force: bool,
        wait: Duration,
    ) -> Result<VmStatus> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let RunView {
            generation,
            mut exited,
            paused,
            ..
        } = Self::running(&slot)?;
        if !force && !paused {
            self.press_power_button(&slot).await?;
            if wait_exit(&mut exited, wait).await {
                let info = exited.borrow().unwrap_or_default();
                self.finalize(&slot, generation, info, End::Expected);
            }
        }
        if slot.inner().running().is_some() {
            self.destroy_locked(&slot).await?;
        }
        slot.note_in_log("rebooting");
        self.start_locked(&slot).await?;
        let status = slot.inner().status();
        Ok(status)
    }

    /// `PUT /v1/vms/{name}/suspend` (`resume: false`) and `/resume`: the VM API's
    /// pause and resume.
    pub async fn set_paused(self: &Arc<Self>, name: &str, pause: bool) -> Result<VmStatus> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let paused = Self::running(&slot)?.paused;
        if paused == pause {
            let what = if pause {
                "paused already"
            } else {
                "not paused"
            };
            return Err(Error::Conflict(format!("'{name}' is {what}")));
        }
        let path = if pause {
            "/v1/vm/pause"
        } else {
            "/v1/vm/resume"
        };
        let api = self.sd.api_socket(name);
        let r = process::vm_api_async(api, "PUT", path, Duration::from_secs(10)).await?;
        if r.status != 200 {
            return Err(api_refusal(name, &r));
        }
        let mut g = slot.inner();
        if let Some(p) = g.running_mut() {
            p.paused = pause;
        }
        Ok(g.status())
    }
}
