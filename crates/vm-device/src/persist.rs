//! The one state pattern every device follows, for snapshots and migration.
//!
//! A device saves what the guest can observe as a serde `State`, and is rebuilt from
//! it with the host-side pieces the VMM hands over again (`Args`: IRQ lines, output
//! sinks, disks). `restore` builds a new device rather than patching a live one, so a
//! state it refuses leaves the running device untouched. See docs/snapshot.md.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a saved state cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{device}: {reason}")]
pub struct StateError {
    /// The kind of device, e.g. "serial", "virtio-blk".
    pub device: &'static str,
    pub reason: String,
}

impl StateError {
    pub fn new(device: &'static str, reason: impl Into<String>) -> Self {
        StateError {
            device,
            reason: reason.into(),
        }
    }
}

/// Save and restore of a device (or of a part of one, such as a PCI config space).
pub trait Persist: Sized {
    /// Everything the guest can observe, nothing the host chose.
    type State: Serialize + DeserializeOwned;
    /// What restoring needs besides the state.
    type Args;

    fn save(&self) -> Self::State;
    /// Builds the device in `state`, or says why the state is not one it could be in.
    fn restore(args: Self::Args, state: &Self::State) -> Result<Self, StateError>;
}

/// Save → restore → save, returning both serialized states (for the round-trip tests
/// every device keeps: they must be equal).
pub fn round_trip<T: Persist>(dev: &T, args: T::Args) -> Result<(String, String), StateError> {
    let first = serde_json::to_string(&dev.save()).expect("a device state serializes");
    let state: T::State = serde_json::from_str(&first).expect("a saved state deserializes");
    let second = serde_json::to_string(&T::restore(args, &state)?.save())
        .expect("a device state serializes");
    Ok((first, second))
}
