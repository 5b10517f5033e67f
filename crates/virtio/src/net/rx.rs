//! Receive: frames the backend has waiting, into the driver's receive buffers.
//!
//! Each frame gets a header ([`NetHdr`]) in front: the backend's own with a
//! vnet header, else a zeroed one (no offloads). Without `MRG_RXBUF` a frame
//! must fit in the next chain; one that does not is dropped and the chain kept
//! for the next frame, as QEMU does. With `MRG_RXBUF` a frame takes as many
//! chains as it needs (`num_buffers`), all or none: when the ring holds too few
//! right now, the frame goes back to the backend and waits until the driver
//! posts more; only a frame larger than a full ring of its buffers is dropped.
//! A hostile driver whose chains are few but long can therefore stall its own
//! receive path, never the VMM.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_device::bus::lock;
use vmm_types::dirty::DirtyLog;

use super::header::{self, Allowed, NetHdr, ETH_HLEN, HDR_LEN};
use super::stats::{Counters, Dir, DropReason};
use super::{feature, used, Net, RX};
use crate::device::{DeviceError, QueueCtx};
use crate::queue::{pop_chain, Chain};
use crate::GuestMemory;

/// How frames are placed, from the negotiated features.
#[derive(Clone, Copy)]
struct RxMode {
    vnet_hdr: bool,
    mergeable: bool,
    allowed: Allowed,
}

/// What became of one frame.
enum Outcome {
    Delivered,
    Dropped(DropReason),
    /// Not enough buffers now: the frame must wait.
    NoRoom,
}

/// Chains for one frame.
enum Take {
    Got(Vec<Chain>),
    NoRoom,
    NeverFits,
}

/// Delivers waiting frames while the receive queue has buffers for them, then
/// notifies the driver once for the batch if it asked for it.
pub(super) fn receive(net: &mut Net, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
    let mem = ctx.mem;
    let dirty = ctx.dirty;
    let Some(queue) = ctx.queues.get_mut(usize::from(RX)).filter(|q| q.ready()) else {
        // The driver has not enabled receive: frames wait in the backend.
        return Ok(());
    };
    let mode = RxMode {
        vnet_hdr: net.offloads.vnet_hdr,
        mergeable: net.acked_features & feature::MRG_RXBUF != 0,
        allowed: Allowed::rx(net.acked_features),
    };
    if let Some(log) = dirty {
        // Used entries and avail_event are written below: log the used ring.
        log.mark(queue.used_ring(), 6 + 8 * u64::from(queue.size()));
    }
    let backend = net.backend.clone();
    let mut backend = lock(&backend);
    let since = queue.next_used();
    loop {
        queue.disable_notification(mem)?;
        let mut starved = false;
        while let Some(frame) = backend.recv() {
            match deliver(&frame, queue, mem, dirty, mode)? {
                Outcome::Delivered => net.counters.passed(Dir::Rx),
                Outcome::Dropped(why) => drop_frame(&mut net.counters, why, frame.len()),
                Outcome::NoRoom => {
                    backend.unrecv(frame);
                    starved = true;
                    break;
                }
            }
        }
        if !starved {
            queue.enable_notification(mem)?;
            break;
        }
        if !used::wait_for_buffers(queue, mem)? {
            break;
        }
    }
    if used::needs_notification(queue, mem, since)? {
        ctx.interrupt.signal_queue(RX);
    }
    Ok(())
}

fn drop_frame(counters: &mut Counters, why: DropReason, len: usize) {
    counters.dropped(
        Dir::Rx,
        why,
        Some(&format_args!("{len} bytes from the backend")),
    );
}

/// Places one frame (with the backend's header in front iff `mode.vnet_hdr`).
fn deliver(
    frame: &[u8],
    queue: &mut Queue,
    mem: &GuestMemory,
    dirty: Option<&DirtyLog>,
    mode: RxMode,
) -> Result<Outcome, DeviceError> {
    let (mut hdr, payload) = if mode.vnet_hdr {
        if frame.len() < HDR_LEN {
            return Ok(Outcome::Dropped(DropReason::TooShort));
        }
        (NetHdr::from_frame(frame), &frame[HDR_LEN..])
    } else {
        (NetHdr::default(), frame)
    };
    if payload.len() < ETH_HLEN {
        return Ok(Outcome::Dropped(DropReason::TooShort));
    }
    if HDR_LEN + payload.len() > ::net::MAX_FRAME {
        return Ok(Outcome::Dropped(DropReason::TooLong));
    }
    if let Err(why) = header::sanitize_rx(&mut hdr, mode.allowed, payload.len()) {
        return Ok(Outcome::Dropped(why));
    }
    let total = HDR_LEN + payload.len();
    let chains = match take_chains(queue, mem, total as u64, mode.mergeable)? {
        Take::Got(c) => c,
        Take::NoRoom => return Ok(Outcome::NoRoom),
        Take::NeverFits => return Ok(Outcome::Dropped(DropReason::NoFit)),
    };
    // At most queue-size chains, so this fits.
    hdr.num_buffers = chains.len() as u16;
    let hdr = hdr.to_bytes();
    let mut entries = Vec::with_capacity(chains.len());
    let mut off = 0;
    for c in &chains {
        let n = (c.writable_len() as usize).min(total - off);
        write_part(c, mem, &hdr, payload, off, n)?;
        if let Some(log) = dirty {
            mark_written(log, c, n);
        }
        // n <= MAX_FRAME.
        entries.push((c.head, n as u32));
        off += n;
    }
    used::publish(queue, mem, &entries)?;
    Ok(Outcome::Delivered)
}

/// Pops the chains a frame of `total` bytes (header included) needs: one
/// without `mergeable`, as many as it takes with it. Takes none unless all fit.
fn take_chains(
    queue: &mut Queue,
    mem: &GuestMemory,
    total: u64,
    mergeable: bool,
) -> Result<Take, DeviceError> {
    let mut chains = Vec::new();
    let mut room = 0u64;
    while room < total {
        let Some(c) = pop_chain(queue, mem)? else {
            break;
        };
        check_chain(&c)?;
        room += c.writable_len();
        chains.push(c);
        if !mergeable {
            break;
        }
    }
    if room >= total {
        return Ok(Take::Got(chains));
    }
    for _ in &chains {
        queue.go_to_previous_position();
    }
    let never = if mergeable {
        // Every slot of the ring was available and still too little.
        chains.len() >= usize::from(queue.size())
    } else {
        !chains.is_empty()
    };
    Ok(if never { Take::NeverFits } else { Take::NoRoom })
}

/// A receive chain is device-writable only and holds at least a header (the
/// driver MUST make each buffer at least that large with `MRG_RXBUF`; without
/// it, a smaller chain could never hold a frame).
fn check_chain(c: &Chain) -> Result<(), DeviceError> {
    let reason = if !c.readable.is_empty() {
        "device-readable buffer in the receive queue"
    } else if c.writable_len() < HDR_LEN as u64 {
        "receive buffer smaller than the virtio-net header"
    } else {
        return Ok(());
    };
    Err(DeviceError::Chain {
        head: c.head,
        reason,
    })
}

/// Writes bytes `[from, from + n)` of the stream `hdr ++ payload` at the start
/// of `chain` (which has room for them).
fn write_part(
    chain: &Chain,
    mem: &GuestMemory,
    hdr: &[u8; HDR_LEN],
    payload: &[u8],
    from: usize,
    n: usize,
) -> Result<(), DeviceError> {
    let end = from + n;
    let mut at = 0u64;
    if from < HDR_LEN {
        let h = &hdr[from..end.min(HDR_LEN)];
        chain.write_at(mem, 0, h)?;
        at = h.len() as u64;
    }
    if end > HDR_LEN {
        let p = &payload[from.max(HDR_LEN) - HDR_LEN..end - HDR_LEN];
        chain.write_at(mem, at, p)?;
    }
    Ok(())
}

/// Logs the pages of the first `n` bytes of `chain`'s writable buffers.
fn mark_written(log: &DirtyLog, chain: &Chain, mut n: usize) {
    for &(addr, len) in &chain.writable {
        if n == 0 {
            break;
        }
        let k = (len as usize).min(n);
        log.mark(addr.0, k as u64);
        n -= k;
    }
}
