//! virtio 1.x devices and their transports.
//!
//! A device ([`VirtioDevice`]) is a state machine over its virtqueues: it never
//! owns a thread, a bus or an interrupt controller. A transport
//! ([`transport::VirtioPciDevice`], [`transport::VirtioMmioDevice`]) owns the
//! device, the driver-programmed queue configuration and the interrupt path,
//! and calls the device when the driver rings a doorbell.
//!
//! Without a notify hook ([`transport::NotifyHook`]) a doorbell write is handled
//! to completion on the vCPU thread that wrote it (virtio-net transmit, rng,
//! console); with one (virtio-blk, in the VMM) the doorbell is checked and handed
//! to a worker thread, which processes the queue with `process_notified`
//! (docs/io-thread.md). Host-side events (console input, frames received for
//! [`net`]) go through
//! [`transport::VirtioPciDevice::process_event`] /
//! [`transport::VirtioMmioDevice::process_event`] from the thread that has them.
//!
//! A driver that hands the device a malformed chain or misprograms the
//! transport breaks only that device: the error is logged once, the device sets
//! DEVICE_NEEDS_RESET and raises a configuration interrupt, and ignores its
//! queues until the driver resets it.

pub mod balloon;
pub mod blk;
pub mod console;
pub mod device;
pub mod net;
pub mod queue;
pub mod rng;
pub mod transport;
pub mod vsock;

#[cfg(test)]
pub(crate) mod testing;

pub use device::{DeviceError, QueueCtx, VirtioDevice, VirtioInterrupt};

/// Guest memory as every accelerator shares it (same type as `accel::GuestMemory`).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Device type IDs (virtio 1.2, section 5).
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const CONSOLE: u32 = 3;
    pub const RNG: u32 = 4;
    pub const BALLOON: u32 = 5;
    pub const VSOCK: u32 = 19;
}

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// Transport-independent feature bits (virtio 1.2, section 6).
pub mod features {
    pub const INDIRECT_DESC: u64 = 1 << 28;
    pub const EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
    /// Ring features every device here offers.
    pub const RING: u64 = INDIRECT_DESC | EVENT_IDX;
}
