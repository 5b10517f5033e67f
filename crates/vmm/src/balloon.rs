//! The `--balloon` device from the VMM's side: plugging it in, and the handle the
//! control API sets the target through. Like a NIC's receive path, host-side
//! balloon work (a new target, a statistics request) runs through
//! `Control::device_work`: deferred while the VM is paused, redone on resume.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use virtio::balloon::{Balloon, BalloonHandle, BalloonInfo};

use crate::control::Control;
use crate::error::Error;
use crate::platform::Attacher;

/// What the VMM keeps of a balloon.
#[derive(Clone)]
pub struct BalloonCtl {
    handle: BalloonHandle,
    kick: Arc<dyn Fn() + Send + Sync>,
}

/// Plugs the balloon in as `virtio-balloon` with `target` bytes as its first target.
pub(crate) fn attach(
    a: &mut Attacher<'_>,
    target: u64,
    control: &Arc<Control>,
) -> Result<BalloonCtl> {
    let handle = BalloonHandle::new(target);
    let h = handle.clone();
    let kick = a.attach("virtio-balloon", Balloon::new(handle.clone()), move || {
        h.clone()
    })?;
    let ctl = control.clone();
    let kick: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctl.device_work(|| kick()));
    control.add_on_resume(kick.clone());
    Ok(BalloonCtl { handle, kick })
}

impl BalloonCtl {
    /// Sets the target (memory the guest should give back) if `target` is given,
    /// asks the guest for fresh statistics, and reports. Waits up to half a second
    /// for the statistics of a running guest.
    pub fn update(&self, target: Option<u64>, memory: u64) -> crate::Result<BalloonInfo> {
        if let Some(t) = target {
            if t > memory {
                return Err(Error::BadRequest(format!(
                    "a balloon of {} MiB is larger than the guest's {} MiB",
                    t >> 20,
                    memory >> 20
                )));
            }
            self.handle.set_target_bytes(t);
        }
        let before = self.handle.info().stats_time;
        let asked = std::time::SystemTime::now();
        self.handle.request_stats();
        (self.kick)();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let t = self.handle.info().stats_time;
            if t.is_some() && t != before {
                break;
            }
            // A report already newer than the request needs no wait either.
            if before.is_some_and(|b| {
                b >= asked
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            }) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(self.handle.info())
    }
}
