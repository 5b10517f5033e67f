//! Used-ring publication for the receive queue, written here rather than with
//! `virtio-queue`'s `add_used`: a frame merged over several chains
//! (`MRG_RXBUF`) must become visible to the driver all at once. `add_used`
//! advances the used index per chain, and a driver polling concurrently (Linux's
//! NAPI on another vCPU) that sees the first chain of a frame before the rest
//! drops it ("rx error: N buffers out of M missing"). `virtio-queue` 0.18 has no
//! batched variant, so the entries are written first and the index once, and
//! the notification decision (which `add_used`'s own counting would otherwise
//! make) is taken here for the whole batch.

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::device::DeviceError;
use crate::GuestMemory;

/// `VRING_AVAIL_F_NO_INTERRUPT`: without `EVENT_IDX`, the driver wants no
/// used-buffer notifications for now.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

fn at(base: u64, off: u64) -> Result<GuestAddress, DeviceError> {
    base.checked_add(off)
        .map(GuestAddress)
        .ok_or(DeviceError::Queue(virtio_queue::Error::AddressOverflow))
}

/// Appends `entries` (head, bytes written) to the used ring and publishes them
/// with a single store of the used index.
pub fn publish(
    queue: &mut Queue,
    mem: &GuestMemory,
    entries: &[(u16, u32)],
) -> Result<(), DeviceError> {
    let size = queue.size();
    let base = queue.used_ring();
    let mut next = Wrapping(queue.next_used());
    for &(head, len) in entries {
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&e, at(base, 4 + 8 * u64::from(next.0 % size))?)?;
        next += Wrapping(1);
    }
    // The release store orders the entries above before the index that shows them.
    mem.store(next.0.to_le(), at(base, 2)?, Ordering::Release)?;
    queue.set_next_used(next.0);
    Ok(())
}

/// Whether the driver wants a used-buffer notification for the entries
/// published since the used index was `since` (virtio 1.2, 2.7.10): with
/// `EVENT_IDX`, when `used_event` lies in `[since, next_used)`; without it,
/// unless the driver set `VRING_AVAIL_F_NO_INTERRUPT`.
pub fn needs_notification(
    queue: &Queue,
    mem: &GuestMemory,
    since: u16,
) -> Result<bool, DeviceError> {
    let new = Wrapping(queue.next_used());
    let old = Wrapping(since);
    if new == old {
        return Ok(false);
    }
    // Our index store must be visible before we read the driver's
    // suppression field, as the driver orders the mirror image.
    fence(Ordering::SeqCst);
    let avail = queue.avail_ring();
    if queue.event_idx_enabled() {
        let off = 4 + 2 * u64::from(queue.size());
        let event: u16 = mem.load(at(avail, off)?, Ordering::Acquire)?;
        let event = Wrapping(u16::from_le(event));
        Ok(new - event - Wrapping(1) < new - old)
    } else {
        let flags: u16 = mem.load(at(avail, 0)?, Ordering::Acquire)?;
        Ok(u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0)
    }
}

/// Stops for want of receive buffers: asks the driver to notify the device when
/// it makes *any* new chain available. The chains already available are not
/// enough (they were put back), so `avail_event` must be the driver's current
/// available index, not `next_avail` as `enable_notification` writes it.
/// Returns whether new chains arrived meanwhile (then try again).
pub fn wait_for_buffers(queue: &mut Queue, mem: &GuestMemory) -> Result<bool, DeviceError> {
    let resume = queue.next_avail();
    let avail = queue.avail_idx(mem, Ordering::Acquire)?;
    queue.set_next_avail(avail.0);
    let more = queue.enable_notification(mem);
    queue.set_next_avail(resume);
    Ok(more?)
}
