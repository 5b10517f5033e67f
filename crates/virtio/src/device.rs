//! The interface between a transport and a device.

use virtio_queue::Queue;
use vm_device::Persist;
use vmm_types::dirty::DirtyLog;

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
    /// Where the pages the device writes are logged during a live migration.
    pub dirty: Option<&'a DirtyLog>,
}

/// A virtio device model, independent of transport. Its snapshot state is its
/// [`Persist`] state; the transport saves and restores it with its own.
pub trait VirtioDevice: Persist + Send {
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
}

/// The acked features a restored device may hold: a subset of what it offers.
pub(crate) fn check_acked(
    device: &'static str,
    offered: u64,
    acked: u64,
) -> Result<(), vm_device::StateError> {
    let offered = offered | crate::features::VERSION_1;
    if acked & !offered != 0 {
        return Err(vm_device::StateError::new(
            device,
            format!("acked features {acked:#x} include ones it does not offer ({offered:#x})"),
        ));
    }
    Ok(())
}
