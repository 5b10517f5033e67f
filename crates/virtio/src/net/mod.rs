//! virtio-net (virtio 1.2, section 5.1) over a [`::net::NetBackend`]: one
//! receive queue (0) and one transmit queue (1), no control queue, no
//! multiqueue.
//!
//! Transmit runs on the vCPU thread that rang the doorbell (`tx.rs`): each
//! chain is one frame for [`NetBackend::send`](::net::NetBackend::send), which
//! never blocks. Receive (`rx.rs`) runs when the backend's waker makes the
//! transport call `process_event`, and again when the driver posts receive
//! buffers: waiting frames go into them until either runs out.
//!
//! Checksum and segmentation offloads are offered only when the backend
//! carries vnet headers and can do them ([`::net::Offloads`]); the receive
//! offloads the driver accepts are passed to the backend at activation so it
//! never hands the guest a frame needing more.

mod header;
mod persist;
mod rx;
mod stats;
mod tx;
mod used;

#[cfg(test)]
mod tests;

use ::net::{Offloads, SharedBackend};
use virtio_queue::Queue;
use vm_device::bus::lock;

use crate::device::{DeviceError, QueueCtx, VirtioDevice};
use crate::{device_type, features};

pub use header::{NetHdr, HDR_LEN};
pub use persist::NetState;
pub use stats::NetStats;

/// Size of both queues.
pub const QUEUE_SIZE: u16 = 256;
const RX: u16 = 0;
const TX: u16 = 1;

/// Feature bits (virtio 1.2, section 5.1.3).
pub mod feature {
    /// The driver may hand over frames with partial checksums.
    pub const CSUM: u64 = 1 << 0;
    /// The driver takes frames with partial checksums.
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// The config space has a MAC address.
    pub const MAC: u64 = 1 << 5;
    /// The driver takes TSO frames over IPv4 / IPv6.
    pub const GUEST_TSO4: u64 = 1 << 7;
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// The driver may hand over TSO frames over IPv4 / IPv6.
    pub const HOST_TSO4: u64 = 1 << 11;
    pub const HOST_TSO6: u64 = 1 << 12;
    /// A received frame may span several receive chains.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// The config space has a link status.
    pub const STATUS: u64 = 1 << 16;
}

/// `status` in the config space: the link is up.
pub const S_LINK_UP: u16 = 1;
/// Bytes of config space: mac, status, max_virtqueue_pairs.
pub const CONFIG_LEN: usize = 10;

/// Whether `mac` can be a NIC's own address: not all zeros, not multicast
/// (nor broadcast).
pub fn mac_is_valid(mac: &[u8; 6]) -> bool {
    mac.iter().any(|&b| b != 0) && mac[0] & 1 == 0
}

/// A virtio network device.
pub struct Net {
    backend: SharedBackend,
    /// The backend's offloads (constant for its life).
    offloads: Offloads,
    mac: [u8; 6],
    acked_features: u64,
    counters: stats::Counters,
    /// Reused for each transmitted frame (at most [`::net::MAX_FRAME`] bytes).
    tx_buf: Vec<u8>,
}

impl Net {
    /// A device over `backend` whose address is `mac` (a unicast address, see
    /// [`mac_is_valid`]; the guest uses whatever it is given).
    pub fn new(backend: SharedBackend, mac: [u8; 6]) -> Self {
        if !mac_is_valid(&mac) {
            // Linux replaces such an address with a random one; a snapshot
            // holding it is refused on restore.
            tracing::warn!("virtio-net: {mac:02x?} is not a unicast MAC address");
        }
        let offloads = lock(&backend).offloads();
        Self {
            backend,
            offloads,
            mac,
            acked_features: 0,
            counters: stats::Counters::default(),
            tx_buf: Vec::new(),
        }
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The backend (shared with the thread that feeds it).
    pub fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    /// Frames passed and dropped so far.
    pub fn stats(&self) -> NetStats {
        self.counters.stats
    }

    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        // max_virtqueue_pairs: only meaningful with MQ (not offered); one pair.
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c
    }

    /// Tells the backend which receive offloads the driver accepted.
    fn apply_guest_offloads(&self) {
        let csum = self.acked_features & feature::GUEST_CSUM != 0;
        let tso = self.acked_features & (feature::GUEST_TSO4 | feature::GUEST_TSO6) != 0;
        if let Err(e) = lock(&self.backend).set_guest_offloads(csum, tso) {
            // Frames needing offloads the guest refused are still dropped on receive.
            tracing::warn!("virtio-net: backend cannot limit its offloads: {e}");
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        let mut f = features::RING | feature::MAC | feature::STATUS | feature::MRG_RXBUF;
        let o = self.offloads;
        if o.vnet_hdr && o.csum {
            f |= feature::CSUM | feature::GUEST_CSUM;
            if o.tso {
                f |= feature::HOST_TSO4
                    | feature::HOST_TSO6
                    | feature::GUEST_TSO4
                    | feature::GUEST_TSO6;
            }
        }
        f
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *d = at.and_then(|a| c.get(a)).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Read-only: the MAC can be changed only through the control queue
        // (CTRL_MAC_ADDR), which is not offered.
    }
    fn activate(&mut self, acked_features: u64, _queues: &[Queue]) -> Result<(), DeviceError> {
        self.acked_features = acked_features;
        self.apply_guest_offloads();
        Ok(())
    }
    fn process_queue(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        match index {
            RX => rx::receive(self, ctx),
            TX => tx::transmit(self, ctx),
            _ => Err(DeviceError::QueueNotReady(index)),
        }
    }
    fn process_event(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        rx::receive(self, ctx)
    }
    fn reset(&mut self) {
        self.acked_features = 0;
    }
}
