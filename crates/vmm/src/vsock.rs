//! The `--vsock` device from the VMM's side: its spec, and plugging it in. Like a
//! NIC's receive path, the host thread's work reaches the device through
//! `Control::device_work` (deferred while the VM is paused, redone on resume).
//! See docs/vsock.md.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use virtio::vsock::{cid_is_valid, Vsock, VsockHost};

use crate::control::Control;
use crate::platform::Attacher;

/// One `--vsock cid=N,path=PATH`: the guest's CID and the Unix socket host
/// programs connect to (guest connections to host port P go to `PATH_P`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockSpec {
    pub cid: u64,
    pub path: PathBuf,
}

impl std::str::FromStr for VsockSpec {
    type Err = String;

    /// `cid=N,path=PATH` (in any order).
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut cid, mut path) = (None, None);
        for opt in s.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("--vsock option '{opt}' is not key=value"))?;
            match k {
                "cid" => {
                    let n: u64 = v
                        .parse()
                        .map_err(|_| format!("cid={v}: expected a number"))?;
                    if !cid_is_valid(n) {
                        return Err(format!(
                            "cid={v}: 0, 1 and 2 are reserved (2 is the host); use 3 to 4294967294"
                        ));
                    }
                    cid = Some(n);
                }
                "path" if !v.is_empty() => path = Some(PathBuf::from(v)),
                "path" => return Err("path= needs a socket path".into()),
                _ => return Err(format!("unknown --vsock option '{k}' (known: cid, path)")),
            }
        }
        Ok(VsockSpec {
            cid: cid.ok_or("--vsock needs cid=N (3 or more)")?,
            path: path.ok_or("--vsock needs path=SOCKET")?,
        })
    }
}

impl fmt::Display for VsockSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cid={},path={}", self.cid, self.path.display())
    }
}

/// What the device tree keeps for restoring the device: its host side, and the
/// one strong handle of the device's kick. The host thread holds only a weak one,
/// so it never keeps the machine alive; when the machine goes, so does this, then
/// the device, then (with the last handle) the thread and its socket.
struct Restore {
    host: VsockHost,
    _kick: Arc<OnceLock<Arc<dyn Fn() + Send + Sync>>>,
}

impl Restore {
    /// The restore arguments (a method, so a closure calling it owns all of `self`).
    fn args(&self) -> VsockHost {
        self.host.clone()
    }
}

/// Listens on `spec.path` (before the guest starts, so a path in use is an error
/// now) and plugs the device in as `virtio-vsock`.
pub(crate) fn attach(a: &mut Attacher<'_>, spec: &VsockSpec, control: &Arc<Control>) -> Result<()> {
    let waker = net::RxWaker::new();
    let host =
        VsockHost::listen(&spec.path, waker.clone()).with_context(|| format!("--vsock {spec}"))?;
    tracing::info!("vsock: guest CID {}, {}", spec.cid, host.describe());
    let dev = Vsock::new(spec.cid, host.clone()).with_context(|| format!("--vsock {spec}"))?;
    let slot: Arc<OnceLock<Arc<dyn Fn() + Send + Sync>>> = Arc::default();
    let restore = Restore {
        host,
        _kick: slot.clone(),
    };
    let kick = a.attach("virtio-vsock", dev, move || restore.args())?;
    let weak = Arc::downgrade(&kick);
    let _ = slot.set(kick);
    let ctl = control.clone();
    let deliver: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        if let Some(kick) = weak.upgrade() {
            ctl.device_work(|| kick());
        }
    });
    control.add_on_resume(deliver.clone());
    waker.set(deliver);
    // Host programs that connected while the device was being built.
    waker.wake();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::VsockSpec;

    #[test]
    fn specs() {
        let s: VsockSpec = "cid=3,path=/tmp/v.sock".parse().unwrap();
        assert_eq!((s.cid, s.path.to_str().unwrap()), (3, "/tmp/v.sock"));
        assert_eq!(s.to_string(), "cid=3,path=/tmp/v.sock");
        let s: VsockSpec = "path=v,cid=4294967294".parse().unwrap();
        assert_eq!(s.cid, u64::from(u32::MAX) - 1);
        for bad in [
            "cid=2,path=/x",
            "cid=4294967295,path=/x",
            "cid=x,path=/x",
            "cid=3",
            "path=/x",
            "cid=3,path=",
            "cid=3,path=/x,mode=1",
            "cid",
        ] {
            assert!(bad.parse::<VsockSpec>().is_err(), "{bad}");
        }
    }
}
