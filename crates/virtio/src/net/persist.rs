//! Snapshot state of the network device.
//!
//! Frames in flight are not saved: those the backend holds for the guest and
//! those it has not sent yet stay with the old backend. A network drops
//! packets and the guest's protocols retransmit, so losing the frames of the
//! instant of a snapshot is what a cable pulled and replugged does. The queue
//! positions are the transport's state.

use ::net::SharedBackend;
use serde::{Deserialize, Serialize};
use vm_device::{Persist, StateError};

use super::{mac_is_valid, Net};
use crate::device::check_acked;
use crate::VirtioDevice;

/// Serializable state of a network device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    pub acked_features: u64,
    /// The address the guest saw (it keeps using it).
    pub mac: [u8; 6],
}

impl Persist for Net {
    type State = NetState;
    /// The backend the restored device uses: it must offer at least the
    /// offloads the driver negotiated.
    type Args = SharedBackend;

    fn save(&self) -> NetState {
        NetState {
            acked_features: self.acked_features,
            mac: self.mac,
        }
    }

    fn restore(backend: SharedBackend, s: &NetState) -> Result<Self, StateError> {
        if !mac_is_valid(&s.mac) {
            return Err(StateError::new(
                "virtio-net",
                format!("{:02x?} is not a unicast MAC address", s.mac),
            ));
        }
        let mut n = Net::new(backend, s.mac);
        check_acked("virtio-net", n.features(), s.acked_features)?;
        n.acked_features = s.acked_features;
        if s.acked_features != 0 {
            // The transport does not activate a restored device: the new
            // backend learns the guest's receive offloads here.
            n.apply_guest_offloads();
        }
        Ok(n)
    }
}
