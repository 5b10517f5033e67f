//! virtio-vsock (virtio 1.2, section 5.10): stream sockets between the guest
//! and programs on the host, with a Unix-socket backend in Firecracker's style.
//! See docs/vsock.md.
//!
//! Three queues: receive (0, packets for the guest), transmit (1, packets from
//! it) and event (2, only `TRANSPORT_RESET`, sent after a restore). The config
//! space holds the guest's CID. The host is CID [`HOST_CID`]. Only stream
//! sockets: `VIRTIO_VSOCK_F_SEQPACKET` is not offered.
//!
//! The pieces:
//! - [`packet`]: the 44-byte header and the operations.
//! - `conn`: one connection's state and credit (pure).
//! - `tx` / `rx`: the guest's packets, handled on the vCPU thread that rang the
//!   doorbell without blocking; and packets for the guest, made whenever the
//!   device runs and the receive queue has buffers.
//! - `hub`: the bounded buffers the device and the host thread share.
//! - `host` / `thread` / `request`: the host side: a listener on a Unix socket
//!   (`CONNECT <port>` from host programs), connections to `PATH_<port>` for
//!   the guest's, one thread polling them all, waking the device through a
//!   [`net::RxWaker`].
//!
//! A hostile driver cannot crash or stall the VMM: chains that are malformed as
//! chains break the device (DEVICE_NEEDS_RESET); packets that are malformed as
//! packets (short, lying about their length, unknown operations or types,
//! unknown connections, ignoring their credit) are dropped or answered with an
//! RST; a packet claiming another CID than the guest's is dropped.

mod conn;
mod host;
mod hub;
pub mod packet;
mod persist;
mod request;
mod rx;
mod sys;
mod thread;
mod tx;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use virtio_queue::Queue;

use crate::device::{DeviceError, QueueCtx, VirtioDevice};
use crate::{device_type, features};
use conn::Conn;
use packet::Hdr;

pub use host::VsockHost;
pub use hub::{CONN_BUF, MAX_CONNS};
pub use persist::VsockState;

/// The host's CID (`VMADDR_CID_HOST`).
pub const HOST_CID: u64 = 2;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// The largest payload of one packet either way (Linux's
/// `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// RSTs owed for packets with no connection, waiting for receive buffers; more
/// are dropped (the guest's connect times out instead of failing at once).
pub const ORPHAN_RSTS: usize = 64;
/// Bytes of config space: `guest_cid` (le64).
pub const CONFIG_LEN: usize = 8;

const RX: u16 = 0;
const TX: u16 = 1;
const EVENT: u16 = 2;
/// How many times a restored device re-raises the event queue's interrupt (one
/// per host-thread wake, 50 ms apart) until the driver shows it saw the reset.
const RESET_EVENT_WAKES: u32 = 100;
/// First port we give host-initiated connections on our side (as Firecracker:
/// high, out of the way of well-known ports a guest connects to).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Whether `cid` can be a guest's: not a reserved one (0 hypervisor, 1 local,
/// 2 host) nor `VMADDR_CID_ANY` (u32::MAX), and within 32 bits (Linux's CIDs).
pub fn cid_is_valid(cid: u64) -> bool {
    (3..u64::from(u32::MAX)).contains(&cid)
}

/// Errors setting up a vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved or out of range (3 to 4294967294)")]
    InvalidCid(u64),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(std::path::PathBuf),
    #[error("{0}: another process is listening there")]
    InUse(std::path::PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the `TRANSPORT_RESET` a restored device owes the driver stands.
///
/// A restored device runs (from its host thread's wakes) before the machine has
/// restored its interrupt controllers, so the interrupt of an event delivered
/// then is lost. Until the driver gives the event buffer back (its notification
/// on the event queue proves it handled the event), each wake raises the
/// interrupt again, at most [`RESET_EVENT_WAKES`] times; a spurious one costs
/// the driver nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResetEvent {
    /// Nothing owed.
    None,
    /// To be written when the driver has an event buffer posted.
    Owed { wakes_left: u32 },
    /// Written; the interrupt is raised again on each wake.
    Sent { wakes_left: u32 },
}

/// (our port on the host, the guest's port): a connection's address.
type Key = (u32, u32);

/// A virtio-vsock device.
pub struct Vsock {
    cid: u64,
    host: VsockHost,
    acked_features: u64,
    conns: BTreeMap<Key, Conn>,
    /// RSTs for packets that had no connection (at most [`ORPHAN_RSTS`]).
    orphan_rsts: VecDeque<Hdr>,
    next_local_port: u32,
    /// Where the round-robin over connections resumes (after this key).
    cursor: Option<Key>,
    /// The `TRANSPORT_RESET` owed to the driver after a restore.
    reset_event: ResetEvent,
    /// Packets dropped or refused for being malformed (logged once).
    bad_packets: u64,
    /// Payload of the packet being moved (at most [`MAX_PKT_PAYLOAD`]).
    scratch: Vec<u8>,
}

impl Vsock {
    /// A device for the guest with CID `cid`, its host side `host`.
    pub fn new(cid: u64, host: VsockHost) -> Result<Self, VsockError> {
        if !cid_is_valid(cid) {
            return Err(VsockError::InvalidCid(cid));
        }
        Ok(Vsock {
            cid,
            host,
            acked_features: 0,
            conns: BTreeMap::new(),
            orphan_rsts: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            cursor: None,
            reset_event: ResetEvent::None,
            bad_packets: 0,
            scratch: vec![0; MAX_PKT_PAYLOAD],
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Open connections (any state).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Packets dropped or refused for being malformed so far.
    pub fn bad_packets(&self) -> u64 {
        self.bad_packets
    }

    /// Counts (and logs the first of) the guest's malformed packets.
    fn bad_packet(&mut self, why: &str, h: Option<&Hdr>) {
        if self.bad_packets == 0 {
            tracing::warn!("virtio-vsock: dropping a bad packet from the guest: {why} ({h:?}); later ones are logged at debug level");
        } else {
            tracing::debug!("virtio-vsock: bad packet: {why} ({h:?})");
        }
        self.bad_packets += 1;
    }

    /// Owes the guest an RST for `h`, which has no connection (never for an RST).
    fn refuse(&mut self, h: &Hdr) {
        if h.op == packet::op::RST {
            return;
        }
        if self.orphan_rsts.len() < ORPHAN_RSTS {
            self.orphan_rsts.push_back(h.reply(packet::op::RST));
        }
    }

    /// A port on our side for a connection to guest port `peer`, unused with it.
    fn allocate_local_port(&mut self, peer: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            // At most MAX_CONNS keys are taken, so this ends.
            if !self.conns.contains_key(&(p, peer)) {
                return p;
            }
        }
    }

    /// Host programs waiting for a guest port become connections whose
    /// REQUEST is to be sent.
    fn take_host_requests(&mut self) {
        for (id, port) in self.host.hub().take_requests() {
            let local = self.allocate_local_port(port);
            let c = Conn::new(id, conn::State::Requesting { sent: false });
            self.conns.insert((local, port), c);
        }
    }

    /// Follows what the host thread did: connections made or failed, host
    /// sides gone.
    fn sync_with_host(&mut self) {
        let hub = self.host.hub();
        for c in self.conns.values_mut() {
            if c.state == conn::State::Reset {
                continue;
            }
            let Some(st) = hub.status(c.id) else {
                c.state = conn::State::Reset;
                continue;
            };
            match st.phase {
                hub::Phase::Failed => {
                    c.state = conn::State::Reset;
                    hub.release(c.id, hub::Release::Abort);
                }
                hub::Phase::Open if c.state == conn::State::Connecting => {
                    c.state = conn::State::Established;
                    c.need_response = true;
                }
                _ => {}
            }
            if c.peer_shutdown & packet::shutdown::RCV != 0 && st.rx_len > 0 {
                hub.discard(c.id);
            }
        }
    }

    /// Everything the device does when it runs, besides the guest's packets:
    /// the reset event, the host's news, packets for the guest.
    fn pump(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        rx::deliver_reset_event(self, ctx)?;
        self.take_host_requests();
        self.sync_with_host();
        rx::deliver(self, ctx)
    }

    /// Drops every connection (and its host side).
    fn drop_connections(&mut self) {
        self.conns.clear();
        self.orphan_rsts.clear();
        self.cursor = None;
        self.host.hub().reset_all();
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 3]
    }
    fn features(&self) -> u64 {
        features::RING
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.cid.to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *d = at.and_then(|a| c.get(a)).copied().unwrap_or(0);
        }
    }
    fn activate(&mut self, acked_features: u64, _queues: &[Queue]) -> Result<(), DeviceError> {
        self.acked_features = acked_features;
        Ok(())
    }
    fn process_queue(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        match index {
            RX => self.pump(ctx),
            EVENT => {
                if matches!(self.reset_event, ResetEvent::Sent { .. }) {
                    // The driver gave the event buffer back: it has seen the reset.
                    self.reset_event = ResetEvent::None;
                    self.host.hub().clear_wake_request();
                }
                self.pump(ctx)
            }
            TX => {
                tx::transmit(self, ctx)?;
                self.pump(ctx)
            }
            _ => Err(DeviceError::QueueNotReady(index)),
        }
    }
    fn process_event(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        let was = self.reset_event;
        self.pump(ctx)?;
        // A wake: follow the reset event up (see `ResetEvent`).
        self.reset_event = match self.reset_event {
            ResetEvent::None | ResetEvent::Sent { wakes_left: 0 } => ResetEvent::None,
            // Out of wakes, an owed event still goes out when the driver posts a buffer.
            ResetEvent::Owed { wakes_left } => ResetEvent::Owed {
                wakes_left: wakes_left.saturating_sub(1),
            },
            ResetEvent::Sent { wakes_left } => {
                if matches!(was, ResetEvent::Sent { .. }) {
                    // Sent on an earlier wake, its interrupt maybe lost: again.
                    ctx.interrupt.signal_queue(EVENT);
                }
                ResetEvent::Sent {
                    wakes_left: wakes_left - 1,
                }
            }
        };
        if matches!(
            self.reset_event,
            ResetEvent::None | ResetEvent::Owed { wakes_left: 0 }
        ) {
            self.host.hub().clear_wake_request();
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.acked_features = 0;
        self.reset_event = ResetEvent::None;
        self.drop_connections();
    }
}
