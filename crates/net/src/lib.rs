//! Network backends: where the frames a virtio-net device transmits go, and where
//! the frames it receives come from.
//!
//! The seam (see `docs/net.md`): a device owns one `Box<dyn NetBackend>`. The
//! guest's transmit path calls [`NetBackend::send`] on the vCPU thread that rang
//! the doorbell; it never blocks (a frame the host side cannot take now is
//! dropped, as a NIC drops on a full wire). Each backend runs its own host thread
//! that reads from the host side into a bounded [`FrameQueue`] and then calls its
//! [`RxWaker`]; the waker (set by the VMM once the device is plugged in) makes the
//! transport call the device's `process_event`, which drains
//! [`NetBackend::recv`] into the guest's receive buffers. Frames wait in the queue
//! while the guest has posted no buffers; when the guest posts some, the device
//! drains the queue again.

pub mod dns;
pub mod queue;
mod slirp_ffi;
pub mod spec;
pub mod stream;
mod sys;

/// poll(2) retried on EINTR, for the other device threads that wait on fds
/// (virtio-vsock).
pub use sys::poll;
pub mod tap;
pub mod user;

pub use queue::{FrameQueue, RxWaker};
pub use spec::{Backend, HostFwd, NetSpec, SpecError};

/// Size of `struct virtio_net_hdr_v1` (virtio 1.2, 5.1.6): what a TAP opened with
/// `IFF_VNET_HDR` and `TUNSETVNETHDRSZ` 12 puts in front of every frame.
pub const VNET_HDR_LEN: usize = 12;

/// The largest frame a backend hands the device: 64 KiB of GSO payload plus an
/// Ethernet header and a VLAN tag, plus the vnet header.
pub const MAX_FRAME: usize = 65536 + 14 + 4 + VNET_HDR_LEN;

/// Offloads a backend can take from (and give to) the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames in both directions start with a [`VNET_HDR_LEN`]-byte
    /// `virtio_net_hdr_v1` (num_buffers excluded from its meaning: the device
    /// fills it on receive). Without it, frames are bare Ethernet and the device
    /// must neither offer checksum nor segmentation offloads.
    pub vnet_hdr: bool,
    /// Partial checksums (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) may be passed in both
    /// directions.
    pub csum: bool,
    /// TCP segmentation offload (TSO4/TSO6) in both directions; needs `csum`.
    pub tso: bool,
}

/// The host side of one virtio-net device.
pub trait NetBackend: Send {
    /// What this backend does with vnet headers and offloads. Constant for the
    /// backend's life.
    fn offloads(&self) -> Offloads;
    /// Transmits one frame (with a vnet header in front iff `offloads().vnet_hdr`).
    /// Never blocks: returns `Ok(false)` when the host side cannot take it now
    /// (the frame is dropped); `Err` only for a broken backend.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool>;
    /// The next received frame (vnet header in front iff `offloads().vnet_hdr`),
    /// if one is waiting. Never blocks.
    fn recv(&mut self) -> Option<Vec<u8>>;
    /// Puts back a frame `recv` returned that the guest had no room for: it is the
    /// next one `recv` returns.
    fn unrecv(&mut self, frame: Vec<u8>);
    /// The guest negotiated these receive offloads (`GUEST_CSUM`, `GUEST_TSO4/6`):
    /// the backend must not hand it frames needing more (a TAP sets
    /// `TUNSETOFFLOAD`). Called when the driver activates the device; default:
    /// nothing to do (a backend without offloads never produces such frames).
    fn set_guest_offloads(&mut self, _csum: bool, _tso: bool) -> std::io::Result<()> {
        Ok(())
    }
    /// A one-line description for logs and `info` (e.g. `user (10.0.2.15)`).
    fn describe(&self) -> String;
}

/// A backend as a device and its restore arguments share it.
pub type SharedBackend = std::sync::Arc<std::sync::Mutex<Box<dyn NetBackend>>>;

/// Opens the backend `spec` names. Its threads start now and call `waker` after
/// queueing received frames (frames wait in the queue until the VMM sets it).
/// The MAC in `spec` is the NIC's, not the backend's: no backend needs it.
pub fn open(spec: &NetSpec, waker: RxWaker) -> Result<Box<dyn NetBackend>, OpenError> {
    Ok(match &spec.backend {
        Backend::User { hostfwd, restrict } => Box::new(user::open(hostfwd, *restrict, waker)?),
        Backend::Tap { ifname } => Box::new(tap::open(ifname, waker)?),
        Backend::Stream { path, server } => Box::new(stream::open(path, *server, waker)?),
    })
}

/// Errors opening a backend: each names what was wrong, for a one-line message
/// before boot.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The backend cannot work as asked (the message says why and what to do).
    #[error("{0}")]
    Invalid(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the backend.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}
