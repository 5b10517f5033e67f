//! Descriptor chains, validated before a device touches them, and the
//! notification-suppressing processing loop (`EVENT_IDX` aware, through
//! `virtio-queue`).

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory as _, Permissions};

use crate::device::{DeviceError, QueueCtx};
use crate::GuestMemory;

/// One buffer of a chain: guest address and length.
pub type Segment = (GuestAddress, u32);

/// A validated descriptor chain: every buffer lies in guest memory, device-
/// readable buffers come before device-writable ones, and the chain ended
/// properly (no loop, no dangling `next`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
}

fn total(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.1)).sum()
}

/// Calls `f(addr, start, len)` for the part of the byte stream `segs`
/// covering `[offset, offset + len)`, where `start` is the position in that range.
fn walk(
    segs: &[Segment],
    mut offset: u64,
    len: usize,
    mut f: impl FnMut(GuestAddress, usize, usize) -> Result<(), DeviceError>,
) -> Result<usize, DeviceError> {
    let mut done = 0usize;
    for &(addr, slen) in segs {
        if done == len {
            break;
        }
        let slen = u64::from(slen);
        if offset >= slen {
            offset -= slen;
            continue;
        }
        let n = ((slen - offset) as usize).min(len - done);
        f(GuestAddress(addr.0 + offset), done, n)?;
        done += n;
        offset = 0;
    }
    Ok(done)
}

impl Chain {
    /// Bytes the driver provided for the device to read.
    pub fn readable_len(&self) -> u64 {
        total(&self.readable)
    }

    /// Bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        total(&self.writable)
    }

    /// Reads the readable stream at `offset` into `buf`; returns the bytes read.
    pub fn read_at(
        &self,
        mem: &GuestMemory,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, DeviceError> {
        let len = buf.len();
        walk(&self.readable, offset, len, |a, s, n| {
            Ok(mem.read_slice(&mut buf[s..s + n], a)?)
        })
    }

    /// Writes `buf` into the writable stream at `offset`; returns the bytes written.
    pub fn write_at(
        &self,
        mem: &GuestMemory,
        offset: u64,
        buf: &[u8],
    ) -> Result<usize, DeviceError> {
        walk(&self.writable, offset, buf.len(), |a, s, n| {
            Ok(mem.write_slice(&buf[s..s + n], a)?)
        })
    }
}

/// Pops the next available chain and validates it. `Ok(None)` when the ring is empty.
pub fn pop_chain(queue: &mut Queue, mem: &GuestMemory) -> Result<Option<Chain>, DeviceError> {
    let Some(desc_chain) = queue.iter(mem)?.next() else {
        return Ok(None);
    };
    let head = desc_chain.head_index();
    let mut chain = Chain {
        head,
        ..Default::default()
    };
    let mut ended = false;
    let mut count = 0usize;
    for d in desc_chain {
        count += 1;
        let (addr, len) = (d.addr(), d.len());
        let perm = if d.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if len > 0 && !mem.check_range(addr, len as usize, perm) {
            return Err(DeviceError::BufferOutsideMemory { addr: addr.0, len });
        }
        if d.is_write_only() {
            chain.writable.push((addr, len));
        } else if !chain.writable.is_empty() {
            return Err(DeviceError::Chain {
                head,
                reason: "device-readable buffer after a writable one",
            });
        } else {
            chain.readable.push((addr, len));
        }
        ended = !d.has_next();
    }
    // virtio-queue stops iterating silently at a loop (after queue-size
    // descriptors), at an out-of-range `next`, at an unreadable descriptor or a
    // bad indirect table; a chain whose last descriptor still says NEXT was cut.
    if count == 0 {
        return Err(DeviceError::Chain {
            head,
            reason: "head descriptor out of range or unreadable",
        });
    }
    if !ended {
        return Err(DeviceError::Chain {
            head,
            reason: "loop, out-of-range next or bad indirect table",
        });
    }
    Ok(Some(chain))
}

/// Processes every available chain of queue `index` with `handle`, which
/// returns the number of bytes written to the chain (`None`: leave this chain
/// for later and stop). Suppresses notifications while working and notifies
/// the driver once at the end if it asked for it.
pub fn drain_queue(
    ctx: &mut QueueCtx<'_>,
    index: u16,
    mut handle: impl FnMut(&Chain, &GuestMemory) -> Result<Option<u32>, DeviceError>,
) -> Result<(), DeviceError> {
    let mem = ctx.mem;
    let queue = ctx
        .queues
        .get_mut(usize::from(index))
        .filter(|q| q.ready())
        .ok_or(DeviceError::QueueNotReady(index))?;
    let mut used_any = false;
    let dirty = ctx.dirty;
    if let Some(log) = dirty {
        // The used ring (with avail_event) is written below: log all of it.
        let used = queue.used_ring();
        log.mark(used, 6 + 8 * u64::from(queue.size()));
    }
    'outer: loop {
        queue.disable_notification(mem)?;
        while let Some(chain) = pop_chain(queue, mem)? {
            match handle(&chain, mem)? {
                Some(len) => {
                    if let Some(log) = dirty {
                        for &(a, l) in &chain.writable {
                            log.mark(a.0, u64::from(l));
                        }
                    }
                    queue.add_used(mem, chain.head, len)?;
                    used_any = true;
                }
                None => {
                    queue.go_to_previous_position();
                    queue.enable_notification(mem)?;
                    break 'outer;
                }
            }
        }
        if !queue.enable_notification(mem)? {
            break;
        }
    }
    if used_any && queue.needs_notification(mem)? {
        ctx.interrupt.signal_queue(index);
    }
    Ok(())
}
