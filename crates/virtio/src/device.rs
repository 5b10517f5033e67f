//! The interface between a transport and a device.

use serde::{de::DeserializeOwned, Serialize};
use virtio_queue::Queue;

use crate::GuestMemory;

/// Errors that break a device (the driver or guest did something the device
/// cannot recover from without a reset).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("virtqueue access failed")]
    Queue(#[source] virtio_queue::Error),
    #[error("guest memory access failed")]
    Memory(#[source] vm_memory::GuestMemoryError),
    #[error("malformed descriptor chain (head {head}): {reason}")]
    Chain { head: u16, reason: &'static str },
    #[error("descriptor buffer {addr:#x}+{len:#x} is not in guest memory")]
    BufferOutsideMemory { addr: u64, len: u32 },
    #[error("queue {0} does not exist or is not enabled")]
    QueueNotReady(u16),
    #[error("driver misprogrammed the transport: {0}")]
    Transport(String),
    #[error("saved state does not fit this device: {0}")]
    BadState(&'static str),
}

impl From<virtio_queue::Error> for DeviceError {
    fn from(e: virtio_queue::Error) -> Self {
        DeviceError::Queue(e)
    }
}

impl From<vm_memory::GuestMemoryError> for DeviceError {
    fn from(e: vm_memory::GuestMemoryError) -> Self {
        DeviceError::Memory(e)
    }
}

/// How a device tells the driver about used buffers and configuration changes.
/// Implemented by each transport (MSI-X or INTx+ISR for PCI, the interrupt
/// status register for MMIO).
pub trait VirtioInterrupt {
    /// Used-buffer notification for queue `queue`.
    fn signal_queue(&mut self, queue: u16);
    /// Configuration-change notification.
    fn signal_config(&mut self);
}

/// What a device works on while it processes queues.
pub struct QueueCtx<'a> {
    pub mem: &'a GuestMemory,
    /// All queues of the device, in order; queues the driver did not enable
    /// have `ready() == false`.
    pub queues: &'a mut [Queue],
    pub interrupt: &'a mut dyn VirtioInterrupt,
}

/// A virtio device model, independent of transport.
pub trait VirtioDevice: Send {
    /// Device-specific state saved in snapshots.
    type State: Serialize + DeserializeOwned + Clone + std::fmt::Debug + PartialEq;

    /// The virtio device type ([`crate::device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue (the number of queues is the length).
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits offered (the transport adds `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// Reads the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK: start with the negotiated features.
    fn activate(&mut self, acked_features: u64, queues: &[Queue]) -> Result<(), DeviceError>;
    /// The driver notified queue `index` (only called for enabled queues of an active device).
    fn process_queue(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError>;
    /// Host-side work became available (e.g. console input); default: nothing.
    fn process_event(&mut self, _ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The driver reset the device.
    fn reset(&mut self);
    /// Device-specific snapshot.
    fn state(&self) -> Self::State;
    /// Restores a snapshot taken by [`state`](Self::state).
    fn restore(&mut self, state: &Self::State) -> Result<(), DeviceError>;
}
