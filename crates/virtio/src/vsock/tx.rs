//! The guest's packets (transmit queue), on the vCPU thread that rang the
//! doorbell. Nothing here blocks: payload goes into the hub's bounded buffer
//! (which the guest's credit keeps from overflowing) and the host thread
//! writes it; answers are flagged on the connection and sent by `rx`.
//!
//! Each chain is one packet: a header and `len` payload bytes, split over its
//! device-readable buffers however the driver likes. A device-writable buffer
//! breaks the device (a malformed chain); a malformed packet is dropped (when
//! it cannot be addressed) or answered with an RST.

use super::conn::{Conn, State};
use super::hub::{Hub, Release};
use super::packet::{op, shutdown, Hdr, HDR_LEN, TYPE_STREAM};
use super::{Key, Vsock, HOST_CID, MAX_CONNS, MAX_PKT_PAYLOAD, TX};
use crate::device::{DeviceError, QueueCtx};
use crate::queue::{self, Chain};
use crate::GuestMemory;

/// Handles every chain the driver made available on the transmit queue.
pub(super) fn transmit(dev: &mut Vsock, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
    queue::drain_queue(ctx, TX, |chain, mem| {
        if !chain.writable.is_empty() {
            return Err(DeviceError::Chain {
                head: chain.head,
                reason: "device-writable buffer in the transmit queue",
            });
        }
        dev.handle_chain(chain, mem)?;
        Ok(Some(0))
    })
}

impl Vsock {
    /// Reads and checks one packet, then acts on it.
    fn handle_chain(&mut self, chain: &Chain, mem: &GuestMemory) -> Result<(), DeviceError> {
        let total = chain.readable_len();
        if total < HDR_LEN as u64 {
            self.bad_packet("shorter than a header", None);
            return Ok(());
        }
        let mut b = [0u8; HDR_LEN];
        chain.read_at(mem, 0, &mut b)?;
        let h = Hdr::from_bytes(&b);
        if h.src_cid != self.cid {
            // Someone else's address: answering would only help a spoof.
            self.bad_packet("source CID is not the guest's", Some(&h));
            return Ok(());
        }
        if h.dst_cid != HOST_CID || h.type_ != TYPE_STREAM {
            // Nothing listens there (no other VM is reachable), or a socket
            // type not offered: refused, as the spec asks.
            self.refuse(&h);
            return Ok(());
        }
        let mut len = 0;
        if h.op == op::RW {
            len = h.len as usize;
            if u64::from(h.len) > total - HDR_LEN as u64 || len > MAX_PKT_PAYLOAD {
                self.bad_packet("payload length beyond the chain or the limit", Some(&h));
                self.abort((h.dst_port, h.src_port), &h);
                return Ok(());
            }
            chain.read_at(mem, HDR_LEN as u64, &mut self.scratch[..len])?;
        }
        self.on_packet(&h, len);
        Ok(())
    }

    /// Resets the connection `key` (or refuses `h` if there is none).
    fn abort(&mut self, key: Key, h: &Hdr) {
        match self.conns.get_mut(&key) {
            Some(c) => reset(self.host.hub(), c),
            None => self.refuse(h),
        }
    }

    /// Acts on a well-formed packet whose payload (`len` bytes) is in `scratch`.
    fn on_packet(&mut self, h: &Hdr, len: usize) {
        let key = (h.dst_port, h.src_port);
        let hub = self.host.hub().clone();
        let Some(c) = self.conns.get_mut(&key) else {
            match h.op {
                op::REQUEST => self.open_from_guest(key, h),
                op::RST => {}
                _ => self.refuse(h),
            }
            return;
        };
        if h.op == op::RST {
            // The guest aborts (or refuses our REQUEST): nothing to answer.
            hub.release(c.id, Release::Abort);
            self.conns.remove(&key);
            return;
        }
        if c.state == State::Reset {
            // Our RST is on its way.
            return;
        }
        c.update_peer_credit(h);
        match (h.op, c.state) {
            (op::RESPONSE, State::Requesting { sent: true }) => {
                c.state = State::Established;
                hub.accept(c.id, key.0);
            }
            (op::RW, State::Established) if c.peer_shutdown & shutdown::SEND == 0 => {
                let fwd = hub
                    .status(c.id)
                    .map(|s| s.forwarded)
                    .unwrap_or(c.fwd_cnt_sent);
                if len as u64 > u64::from(c.our_credit(fwd)) {
                    tracing::debug!("virtio-vsock: the guest sent {len} bytes beyond its credit");
                    reset(&hub, c);
                } else if !hub.write(c.id, &self.scratch[..len]) {
                    reset(&hub, c);
                } else {
                    c.rx_cnt += std::num::Wrapping(len as u32);
                }
            }
            (op::CREDIT_UPDATE, _) => {}
            (op::CREDIT_REQUEST, _) => c.need_credit_update = true,
            (op::SHUTDOWN, State::Established) => {
                c.peer_shutdown |= h.flags & shutdown::BOTH;
                if h.flags & shutdown::SEND != 0 {
                    hub.shut_write(c.id);
                }
                if h.flags & shutdown::RCV != 0 {
                    hub.discard(c.id);
                }
                if c.peer_shutdown == shutdown::BOTH {
                    // A clean close: the guest waits for our RST; what it
                    // sent still reaches the host.
                    c.state = State::Reset;
                    hub.release(c.id, Release::Flush);
                }
            }
            // A REQUEST on an open connection, a RESPONSE we did not ask for,
            // data or shutdown before the connection is up or after the guest
            // said it sends no more, an unknown operation.
            _ => {
                tracing::debug!("virtio-vsock: op {} in state {:?}: reset", h.op, c.state);
                reset(&hub, c);
            }
        }
    }

    /// The guest asks for host port `key.0`: the thread connects to it.
    fn open_from_guest(&mut self, key: Key, h: &Hdr) {
        if self.conns.len() >= MAX_CONNS {
            self.refuse(h);
            return;
        }
        let Some(id) = self.host.hub().connect(key.0) else {
            self.refuse(h);
            return;
        };
        let mut c = Conn::new(id, State::Connecting);
        c.update_peer_credit(h);
        self.conns.insert(key, c);
    }
}

/// Resets `c`: its host side closes now, an RST goes to the guest.
fn reset(hub: &Hub, c: &mut Conn) {
    c.state = State::Reset;
    hub.release(c.id, Release::Abort);
}
