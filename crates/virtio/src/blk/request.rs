//! Parsing and executing one virtio-blk request.
//!
//! Structural errors (no status byte, short header, data in the wrong
//! direction) break the device; I/O errors and out-of-range sectors are
//! reported to the driver in the status byte.

use block::DiskError;

use super::{Blk, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, SECTOR_SIZE};
use crate::device::DeviceError;
use crate::queue::Chain;
use crate::GuestMemory;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

const HEADER: u64 = 16;
const CHUNK: usize = 128 * 1024;

fn chain_err(chain: &Chain, reason: &'static str) -> DeviceError {
    DeviceError::Chain {
        head: chain.head,
        reason,
    }
}

/// Executes the request in `chain`; returns the used length (bytes written
/// to the chain, status byte included).
pub(super) fn execute(blk: &Blk, chain: &Chain, mem: &GuestMemory) -> Result<u32, DeviceError> {
    let wlen = chain.writable_len();
    if wlen == 0 {
        return Err(chain_err(chain, "no device-writable status byte"));
    }
    if chain.readable_len() < HEADER {
        return Err(chain_err(chain, "request header shorter than 16 bytes"));
    }
    let mut hdr = [0u8; HEADER as usize];
    chain.read_at(mem, 0, &mut hdr)?;
    let ty = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    let status_off = wlen - 1;
    let (status, written) = match ty {
        T_IN => {
            if chain.readable_len() != HEADER {
                return Err(chain_err(
                    chain,
                    "read request with device-readable data buffers",
                ));
            }
            read(blk, chain, mem, sector, status_off)?
        }
        T_OUT => {
            if wlen != 1 {
                return Err(chain_err(
                    chain,
                    "write request with device-writable data buffers",
                ));
            }
            (write(blk, chain, mem, sector)?, 0)
        }
        T_FLUSH => (disk_status(blk.disk.flush()), 0),
        T_GET_ID => {
            let n = (status_off as usize).min(blk.id.len());
            chain.write_at(mem, 0, &blk.id[..n])?;
            (S_OK, n as u64)
        }
        T_DISCARD | T_WRITE_ZEROES => (ranges(blk, chain, mem, ty)?, 0),
        _ => (S_UNSUPP, 0),
    };
    chain.write_at(mem, status_off, &[status])?;
    Ok((written + 1).min(u64::from(u32::MAX)) as u32)
}

fn disk_status(r: Result<(), DiskError>) -> u8 {
    match r {
        Ok(()) => S_OK,
        Err(DiskError::Unsupported(_)) => S_UNSUPP,
        Err(e) => {
            tracing::warn!("virtio-blk: {e}");
            S_IOERR
        }
    }
}

/// Byte offset of `len` bytes at `sector`, if they fit on the disk.
fn in_range(blk: &Blk, sector: u64, len: u64) -> Option<u64> {
    let off = sector.checked_mul(SECTOR_SIZE)?;
    let end = off.checked_add(len)?;
    (end <= blk.capacity() * SECTOR_SIZE).then_some(off)
}

fn read(
    blk: &Blk,
    chain: &Chain,
    mem: &GuestMemory,
    sector: u64,
    len: u64,
) -> Result<(u8, u64), DeviceError> {
    let Some(off) = in_range(blk, sector, len).filter(|_| len % SECTOR_SIZE == 0) else {
        return Ok((S_IOERR, 0));
    };
    let mut buf = vec![0u8; (len as usize).min(CHUNK)];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        if let Err(e) = blk.disk.read_at(&mut buf[..n], off + done) {
            tracing::warn!("virtio-blk: read failed: {e}");
            return Ok((S_IOERR, done));
        }
        chain.write_at(mem, done, &buf[..n])?;
        done += n as u64;
    }
    Ok((S_OK, done))
}

fn write(blk: &Blk, chain: &Chain, mem: &GuestMemory, sector: u64) -> Result<u8, DeviceError> {
    let len = chain.readable_len() - HEADER;
    if blk.read_only {
        return Ok(S_IOERR);
    }
    let Some(off) = in_range(blk, sector, len).filter(|_| len % SECTOR_SIZE == 0) else {
        return Ok(S_IOERR);
    };
    let mut buf = vec![0u8; (len as usize).min(CHUNK)];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        chain.read_at(mem, HEADER + done, &mut buf[..n])?;
        if let Err(e) = blk.disk.write_at(&buf[..n], off + done) {
            tracing::warn!("virtio-blk: write failed: {e}");
            return Ok(S_IOERR);
        }
        done += n as u64;
    }
    Ok(S_OK)
}

/// DISCARD and WRITE_ZEROES: a list of (sector, num_sectors, flags) segments.
fn ranges(blk: &Blk, chain: &Chain, mem: &GuestMemory, ty: u32) -> Result<u8, DeviceError> {
    let len = chain.readable_len() - HEADER;
    if blk.read_only {
        return Ok(S_IOERR);
    }
    if len == 0 || len % 16 != 0 || len / 16 > u64::from(MAX_DISCARD_SEG) {
        return Ok(S_UNSUPP);
    }
    let mut segs = Vec::new();
    for i in 0..len / 16 {
        let mut s = [0u8; 16];
        chain.read_at(mem, HEADER + 16 * i, &mut s)?;
        let sector = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
        let num = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
        let flags = u32::from_le_bytes([s[12], s[13], s[14], s[15]]);
        // Only WRITE_ZEROES has a flag (UNMAP, bit 0).
        let allowed = if ty == T_WRITE_ZEROES { 1 } else { 0 };
        if flags & !allowed != 0 {
            return Ok(S_UNSUPP);
        }
        let bytes = u64::from(num) * SECTOR_SIZE;
        let Some(off) = in_range(blk, sector, bytes).filter(|_| num <= MAX_DISCARD_SECTORS) else {
            return Ok(S_IOERR);
        };
        segs.push((off, bytes));
    }
    for (off, bytes) in segs {
        let r = if ty == T_DISCARD {
            blk.disk.discard(off, bytes)
        } else {
            blk.disk.write_zeroes(off, bytes)
        };
        let s = disk_status(r);
        if s != S_OK {
            return Ok(s);
        }
    }
    Ok(S_OK)
}
