//! Transmit: each chain of the transmit queue is one header and one frame,
//! split across its device-readable buffers however the driver likes.
//!
//! A chain that is malformed as a chain (device-writable buffers, a loop,
//! buffers outside guest memory) breaks the device; a frame that is malformed
//! as a frame (too long, too short, offloads not negotiated) is dropped and
//! counted, as a NIC drops what it cannot put on the wire. Either way every
//! chain that was read goes back to the driver with length 0.

use ::net::{NetBackend, MAX_FRAME};
use vm_device::bus::lock;

use super::header::{self, Allowed, NetHdr, ETH_HLEN, HDR_LEN};
use super::stats::{Counters, Dir, DropReason};
use super::{Net, TX};
use crate::device::{DeviceError, QueueCtx};
use crate::queue::{self, Chain};
use crate::GuestMemory;

/// Sends every chain the driver made available.
pub(super) fn transmit(net: &mut Net, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
    let allowed = Allowed::tx(net.acked_features);
    let vnet_hdr = net.offloads.vnet_hdr;
    let backend = net.backend.clone();
    let mut backend = lock(&backend);
    let (counters, buf) = (&mut net.counters, &mut net.tx_buf);
    queue::drain_queue(ctx, TX, |chain, mem| {
        if !chain.writable.is_empty() {
            return Err(DeviceError::Chain {
                head: chain.head,
                reason: "device-writable buffer in the transmit queue",
            });
        }
        match read_frame(chain, mem, buf, allowed)? {
            Ok(()) => {
                let frame = if vnet_hdr { &buf[..] } else { &buf[HDR_LEN..] };
                send(&mut **backend, frame, counters);
            }
            Err(why) => {
                let len = chain.readable_len();
                counters.dropped(Dir::Tx, why, Some(&format_args!("{len} bytes")));
            }
        }
        Ok(Some(0))
    })
}

/// Reads header and frame into `buf` and checks them. The length is checked
/// before anything is allocated, so a chain claiming gigabytes costs nothing.
fn read_frame(
    chain: &Chain,
    mem: &GuestMemory,
    buf: &mut Vec<u8>,
    allowed: Allowed,
) -> Result<Result<(), DropReason>, DeviceError> {
    let len = chain.readable_len();
    if len > MAX_FRAME as u64 {
        return Ok(Err(DropReason::TooLong));
    }
    let len = len as usize;
    if len < HDR_LEN + ETH_HLEN {
        return Ok(Err(DropReason::TooShort));
    }
    buf.clear();
    buf.resize(len, 0);
    chain.read_at(mem, 0, buf)?;
    let mut hdr = NetHdr::from_frame(buf);
    if let Err(why) = header::check_tx(&hdr, allowed, len - HDR_LEN) {
        return Ok(Err(why));
    }
    // num_buffers means nothing on transmit; a backend sees it zeroed.
    hdr.num_buffers = 0;
    buf[..HDR_LEN].copy_from_slice(&hdr.to_bytes());
    Ok(Ok(()))
}

fn send(backend: &mut dyn NetBackend, frame: &[u8], counters: &mut Counters) {
    match backend.send(frame) {
        Ok(true) => counters.passed(Dir::Tx),
        Ok(false) => counters.dropped(Dir::Tx, DropReason::BackendFull, None),
        Err(e) => counters.dropped(Dir::Tx, DropReason::BackendError, Some(&e)),
    }
}
