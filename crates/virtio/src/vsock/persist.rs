//! Snapshot state of the vsock device: the negotiated features and the CID.
//!
//! Connections are not saved, as in Firecracker: their other ends are host
//! processes, which a snapshot cannot carry. A restored device starts without
//! connections, drops whatever its host side holds, and owes the driver a
//! `TRANSPORT_RESET` event, on which Linux resets every connected socket (its
//! programs see `ECONNRESET`) and reads the CID again; listening sockets stay.
//! Because nothing else may run the restored device soon, it asks its host
//! thread to wake it until the driver has seen the event (see `ResetEvent`:
//! the first interrupt may be raised before the machine's interrupt
//! controllers are restored, and be lost).

use serde::{Deserialize, Serialize};
use vm_device::{Persist, StateError};

use super::{Vsock, VsockHost};
use crate::device::check_acked;
use crate::VirtioDevice;

/// Serializable state of a vsock device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    pub acked_features: u64,
    /// The CID the guest has (it keeps it).
    pub cid: u64,
}

impl Persist for Vsock {
    type State = VsockState;
    /// The host side the restored device uses.
    type Args = VsockHost;

    fn save(&self) -> VsockState {
        VsockState {
            acked_features: self.acked_features,
            cid: self.cid,
        }
    }

    fn restore(host: VsockHost, s: &VsockState) -> Result<Self, StateError> {
        let mut v =
            Vsock::new(s.cid, host).map_err(|e| StateError::new("virtio-vsock", e.to_string()))?;
        check_acked("virtio-vsock", v.features(), s.acked_features)?;
        v.acked_features = s.acked_features;
        v.drop_connections();
        if s.acked_features != 0 {
            v.reset_event = super::ResetEvent::Owed {
                wakes_left: super::RESET_EVENT_WAKES,
            };
            v.host.hub().request_wake();
        }
        Ok(v)
    }
}
