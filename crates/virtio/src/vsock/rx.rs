//! Packets for the guest (receive queue) and the event queue.
//!
//! Each receive chain takes one packet: the header, then as much payload as
//! fits, the guest's credit allows and the host has sent. Control packets
//! (RSTs first, then per connection REQUEST, RESPONSE, SHUTDOWN, credit) go
//! out before data of the same connection; connections take turns
//! (round-robin), so one busy connection cannot starve the others. A packet
//! waits in the device's state until a chain is there for it, never in a
//! queue of its own: the device holds at most one pending control packet of
//! each kind per connection.

use std::num::Wrapping;
use std::ops::Bound;

use virtio_queue::QueueT;

use super::conn::State;
use super::packet::{op, shutdown, Hdr, HDR_LEN, TYPE_STREAM};
use super::{Key, ResetEvent, Vsock, EVENT, HOST_CID, MAX_PKT_PAYLOAD, RX};
use crate::device::{DeviceError, QueueCtx};
use crate::queue::{self, Chain};

/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`: the driver must drop its connections
/// (and read the CID again).
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// Fills receive chains while there are packets for them.
pub(super) fn deliver(dev: &mut Vsock, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
    if !ctx.queues.get(usize::from(RX)).is_some_and(|q| q.ready()) {
        return Ok(());
    }
    queue::drain_queue(ctx, RX, |chain, mem| {
        check_rx_chain(chain)?;
        let room = (chain.writable_len() - HDR_LEN as u64).min(MAX_PKT_PAYLOAD as u64) as usize;
        let Some(h) = dev.next_packet(room) else {
            return Ok(None);
        };
        chain.write_at(mem, 0, &h.to_bytes())?;
        let len = h.len as usize;
        if len > 0 {
            chain.write_at(mem, HDR_LEN as u64, &dev.scratch[..len])?;
        }
        // At most HDR_LEN + MAX_PKT_PAYLOAD.
        Ok(Some((HDR_LEN + len) as u32))
    })
}

/// A receive chain is device-writable only and holds at least a header.
fn check_rx_chain(c: &Chain) -> Result<(), DeviceError> {
    let reason = if !c.readable.is_empty() {
        "device-readable buffer in the receive queue"
    } else if c.writable_len() < HDR_LEN as u64 {
        "receive buffer smaller than the packet header"
    } else {
        return Ok(());
    };
    Err(DeviceError::Chain {
        head: c.head,
        reason,
    })
}

/// Sends the owed `TRANSPORT_RESET` if the driver has posted an event buffer.
pub(super) fn deliver_reset_event(
    dev: &mut Vsock,
    ctx: &mut QueueCtx<'_>,
) -> Result<(), DeviceError> {
    let ResetEvent::Owed { wakes_left } = dev.reset_event else {
        return Ok(());
    };
    if !ctx
        .queues
        .get(usize::from(EVENT))
        .is_some_and(|q| q.ready())
    {
        return Ok(());
    }
    queue::drain_queue(ctx, EVENT, |chain, mem| {
        if !matches!(dev.reset_event, ResetEvent::Owed { .. }) {
            return Ok(None);
        }
        if !chain.readable.is_empty() || chain.writable_len() < 4 {
            return Err(DeviceError::Chain {
                head: chain.head,
                reason: "event buffer not device-writable or shorter than an event",
            });
        }
        chain.write_at(mem, 0, &EVENT_TRANSPORT_RESET.to_le_bytes())?;
        dev.reset_event = ResetEvent::Sent { wakes_left };
        Ok(Some(4))
    })
}

impl Vsock {
    /// The next packet for the guest, its payload (at most `room` bytes) in
    /// `scratch`; `None` when nothing is owed.
    fn next_packet(&mut self, room: usize) -> Option<Hdr> {
        if let Some(h) = self.orphan_rsts.pop_front() {
            return Some(h);
        }
        let after = match self.cursor {
            Some(k) => (Bound::Excluded(k), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut order: Vec<Key> = self.conns.range(after).map(|(k, _)| *k).collect();
        if let Some(k) = self.cursor {
            order.extend(self.conns.range(..=k).map(|(k, _)| *k));
        }
        for key in order {
            if let Some(h) = self.packet_for(key, room) {
                self.cursor = Some(key);
                return Some(h);
            }
        }
        None
    }

    /// The next packet connection `key` owes the guest, if any.
    fn packet_for(&mut self, key: Key, room: usize) -> Option<Hdr> {
        let hub = self.host.hub().clone();
        let c = self.conns.get_mut(&key)?;
        let mut h = Hdr {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: key.0,
            dst_port: key.1,
            type_: TYPE_STREAM,
            ..Default::default()
        };
        let st = hub.status(c.id);
        let fwd = st.map_or(c.fwd_cnt_sent, |s| s.forwarded);
        let op = match c.state {
            State::Reset => {
                self.conns.remove(&key);
                h.op = op::RST;
                return Some(h);
            }
            State::Requesting { sent: false } => {
                c.state = State::Requesting { sent: true };
                op::REQUEST
            }
            State::Requesting { sent: true } | State::Connecting => return None,
            State::Established if c.need_response => {
                c.need_response = false;
                op::RESPONSE
            }
            State::Established => {
                // Established connections have a host side (`sync_with_host`
                // resets those that lost it).
                let st = st?;
                let receiving = c.peer_shutdown & shutdown::RCV == 0 && !c.shutdown_sent;
                if receiving && st.rx_len > 0 {
                    let credit = c.peer_credit() as usize;
                    let n = room.min(credit).min(st.rx_len);
                    if n > 0 {
                        let n = hub.read(c.id, &mut self.scratch[..n]);
                        c.tx_cnt += Wrapping(n as u32);
                        h.len = n as u32;
                        h.op = op::RW;
                        c.stamp(&mut h, fwd);
                        return Some(h);
                    }
                    if credit == 0 && !c.credit_requested {
                        c.credit_requested = true;
                        h.op = op::CREDIT_REQUEST;
                        c.stamp(&mut h, fwd);
                        return Some(h);
                    }
                }
                if st.host_eof && st.rx_len == 0 && !c.shutdown_sent {
                    c.shutdown_sent = true;
                    h.flags = shutdown::SEND;
                    op::SHUTDOWN
                } else if c.wants_credit_update(fwd) {
                    op::CREDIT_UPDATE
                } else {
                    return None;
                }
            }
        };
        h.op = op;
        c.stamp(&mut h, fwd);
        Some(h)
    }
}
