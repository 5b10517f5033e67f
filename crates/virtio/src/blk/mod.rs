//! virtio-blk (virtio 1.2, section 5.2) over a [`block::Disk`].
//!
//! One request queue. The VMM gives the transport a notify hook, so the queue is
//! processed by its own worker thread (`vmm::io_thread`), in order; without one
//! (unit tests) it is processed on the thread that rang the doorbell. Either
//! way a request's used entry is written only once it completed.
//! Data moves through a bounded bounce buffer (guest memory may change under
//! us, so it is never handed to the disk as a Rust slice). FLUSH calls
//! [`block::Disk::flush`], which is `fdatasync` for file-backed disks.

mod request;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_worker;

use std::sync::Arc;

use block::Disk;
use serde::{Deserialize, Serialize};
use virtio_queue::Queue;

use crate::device::{check_acked, DeviceError, QueueCtx, VirtioDevice};
use crate::{device_type, features, queue};
use vm_device::{Persist, StateError};

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
/// Maximum data segments per request (`seg_max`).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Maximum sectors of one discard or write-zeroes segment.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Maximum segments of one discard or write-zeroes request.
pub const MAX_DISCARD_SEG: u32 = 32;
/// Discard granularity in sectors (4 KiB).
pub const DISCARD_ALIGNMENT: u32 = 8;
/// Length of the device ID returned by GET_ID.
pub const ID_BYTES: usize = 20;

/// Feature bits (virtio 1.2, section 5.2.3).
pub mod feature {
    pub const SEG_MAX: u64 = 1 << 2;
    pub const RO: u64 = 1 << 5;
    pub const BLK_SIZE: u64 = 1 << 6;
    pub const FLUSH: u64 = 1 << 9;
    pub const DISCARD: u64 = 1 << 13;
    pub const WRITE_ZEROES: u64 = 1 << 14;
}

/// Serializable state of a block device (the disk itself is not part of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkState {
    pub acked_features: u64,
    /// The disk's size in sectors when saved: the guest has it cached.
    pub capacity: u64,
}

/// What a restored block device serves (as for [`Blk::new`]).
pub struct BlkArgs {
    pub disk: Arc<dyn Disk>,
    pub serial: String,
}

impl Persist for Blk {
    type State = BlkState;
    type Args = BlkArgs;

    fn save(&self) -> BlkState {
        BlkState {
            acked_features: self.acked_features,
            capacity: self.capacity(),
        }
    }

    fn restore(args: BlkArgs, s: &BlkState) -> Result<Self, StateError> {
        let mut b = Blk::new(args.disk, &args.serial);
        if b.capacity() != s.capacity {
            return Err(StateError::new(
                "virtio-blk",
                format!(
                    "the disk has {} sectors, the guest saw {}",
                    b.capacity(),
                    s.capacity
                ),
            ));
        }
        check_acked("virtio-blk", b.features(), s.acked_features)?;
        b.acked_features = s.acked_features;
        Ok(b)
    }
}

/// A virtio block device.
pub struct Blk {
    disk: Arc<dyn Disk>,
    id: [u8; ID_BYTES],
    read_only: bool,
    acked_features: u64,
}

impl Blk {
    /// A device over `disk`; `serial` (at most 20 bytes used) is what GET_ID
    /// returns (`/sys/block/vda/serial`). Read-only disks offer `VIRTIO_BLK_F_RO`.
    pub fn new(disk: Arc<dyn Disk>, serial: &str) -> Self {
        let mut id = [0u8; ID_BYTES];
        let b = serial.as_bytes();
        let n = b.len().min(ID_BYTES);
        id[..n].copy_from_slice(&b[..n]);
        let read_only = disk.read_only();
        Self {
            disk,
            id,
            read_only,
            acked_features: 0,
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.size() / SECTOR_SIZE
    }

    fn config_bytes(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        let mut put = |o: usize, b: &[u8]| c[o..o + b.len()].copy_from_slice(b);
        put(0, &self.capacity().to_le_bytes());
        put(12, &SEG_MAX.to_le_bytes());
        put(20, &(SECTOR_SIZE as u32).to_le_bytes());
        put(34, &1u16.to_le_bytes()); // num_queues
        put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(40, &MAX_DISCARD_SEG.to_le_bytes());
        put(44, &DISCARD_ALIGNMENT.to_le_bytes());
        put(48, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(52, &MAX_DISCARD_SEG.to_le_bytes());
        c
    }
}

impl VirtioDevice for Blk {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        let mut f = features::RING | feature::SEG_MAX | feature::BLK_SIZE | feature::FLUSH;
        if self.read_only {
            f |= feature::RO;
        } else {
            f |= feature::DISCARD | feature::WRITE_ZEROES;
        }
        f
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = c.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn activate(&mut self, acked_features: u64, _queues: &[Queue]) -> Result<(), DeviceError> {
        self.acked_features = acked_features;
        Ok(())
    }
    fn process_queue(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        let this = &*self;
        queue::drain_queue(ctx, index, |chain, mem| {
            request::execute(this, chain, mem).map(Some)
        })
    }
    fn reset(&mut self) {
        self.acked_features = 0;
    }
}
