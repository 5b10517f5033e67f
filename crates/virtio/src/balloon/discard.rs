//! Returning guest pages to the host.

use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion};
use vmm_types::dirty::DirtyLog;

use crate::device::DeviceError;
use crate::GuestMemory;

/// A range the driver handed over must be whole pages inside one RAM region.
pub(super) fn check(mem: &GuestMemory, addr: GuestAddress, len: u64) -> Result<(), DeviceError> {
    let bad = || DeviceError::BufferOutsideMemory {
        addr: addr.0,
        len: len.min(u64::from(u32::MAX)) as u32,
    };
    if addr.0 % super::PAGE != 0 || len % super::PAGE != 0 {
        return Err(DeviceError::Chain {
            head: 0,
            reason: "balloon range is not page aligned",
        });
    }
    let region = mem.find_region(addr).ok_or_else(bad)?;
    let end = addr.0.checked_add(len).ok_or_else(bad)?;
    if end > region.start_addr().0 + region.len() {
        return Err(bad());
    }
    Ok(())
}

/// Consecutive PFNs as (first, count) runs, so one madvise covers each run.
pub(super) fn runs(pfns: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted = pfns.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in sorted {
        match out.last_mut() {
            Some((first, n)) if *first + *n == p => *n += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

/// Discards a checked range: its host pages are freed and read as zero (or as
/// the snapshot file's bytes, for a VM restored with a private file mapping) the
/// next time the guest touches them. Logged dirty so a migration sends the new
/// contents. A failure (e.g. hugetlbfs-backed memory) only keeps the memory.
pub(super) fn discard(mem: &GuestMemory, dirty: Option<&DirtyLog>, addr: GuestAddress, len: u64) {
    let Ok(host) = mem.get_host_address(addr) else {
        return;
    };
    // SAFETY: `check` proved `addr..addr+len` lies in one region, so
    // `host..host+len` is inside the mapping vm-memory made for it (alive as long
    // as `mem`). MADV_DONTNEED changes no mapping, only drops the pages: every
    // later access by the guest or a device sees zero-filled (or file) pages, which
    // is what the driver agreed to by handing them over.
    let r = unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_DONTNEED) };
    if r != 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        let e = std::io::Error::last_os_error();
        WARNED.call_once(|| tracing::warn!("virtio-balloon: cannot discard guest pages: {e}"));
    }
    if let Some(log) = dirty {
        log.mark(addr.0, len);
    }
}
