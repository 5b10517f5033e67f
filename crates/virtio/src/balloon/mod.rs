//! virtio-balloon (virtio 1.2, section 5.5): the host asks the guest to give back
//! memory (the target), the guest hands pages over (inflate) and takes them back
//! (deflate); free page reporting hands over ranges the guest's allocator has free;
//! the statistics queue reports the guest's memory figures. Pages handed over are
//! discarded on the host (`MADV_DONTNEED`), which is what returns them to it.
//!
//! Queues (transport order): inflateq 0, deflateq 1, then statsq if STATS_VQ was
//! negotiated, then reporting_vq if PAGE_REPORTING was: a driver numbers only the
//! queues of the features it acked, so the role of queue 2 depends on them.

mod discard;
mod handle;
mod stats;

pub use handle::{BalloonHandle, BalloonInfo};
pub use stats::GuestStats;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use crate::device::{check_acked, DeviceError, QueueCtx, VirtioDevice};
use crate::{device_type, features, queue};
use vm_device::{Persist, StateError};

/// Queue size of every queue.
pub const QUEUE_SIZE: u16 = 128;
/// The balloon's page size: PFNs count 4 KiB pages whatever the guest's page size.
pub const PAGE: u64 = 4096;

/// Feature bits (virtio 1.2, 5.5.3).
pub mod feature {
    pub const STATS_VQ: u64 = 1 << 1;
    pub const DEFLATE_ON_OOM: u64 = 1 << 2;
    pub const PAGE_REPORTING: u64 = 1 << 5;
}

/// A PFN buffer longer than this breaks the device (Linux sends at most 256 PFNs).
const MAX_PFN_BYTES: u64 = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Inflate,
    Deflate,
    Stats,
    Reporting,
}

/// Serializable state of the balloon (the target lives in the handle and is
/// saved here too, so a restored VM keeps its balloon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonState {
    pub acked_features: u64,
    pub target_pages: u32,
    pub actual_pages: u32,
    /// The statistics buffer the device holds until it wants fresh figures.
    pub stats_head: Option<u16>,
}

/// The balloon device.
pub struct Balloon {
    handle: BalloonHandle,
    acked_features: u64,
    actual_pages: u32,
    /// The target the driver was last told about (a config interrupt when it changes).
    announced_target: u32,
    stats_head: Option<u16>,
}

impl Balloon {
    /// A balloon driven through `handle` (which the VMM keeps to set the target).
    pub fn new(handle: BalloonHandle) -> Self {
        let announced_target = handle.target_pages();
        Balloon {
            handle,
            acked_features: 0,
            actual_pages: 0,
            announced_target,
            stats_head: None,
        }
    }

    fn role(&self, index: u16) -> Option<Role> {
        let mut roles = vec![Role::Inflate, Role::Deflate];
        if self.acked_features & feature::STATS_VQ != 0 {
            roles.push(Role::Stats);
        }
        if self.acked_features & feature::PAGE_REPORTING != 0 {
            roles.push(Role::Reporting);
        }
        roles.get(usize::from(index)).copied()
    }

    fn index_of(&self, role: Role) -> Option<u16> {
        (0..4).find(|&i| self.role(i) == Some(role))
    }

    /// Inflate: discard every page the buffer names; deflate: the guest uses them again.
    fn pfns(
        &mut self,
        index: u16,
        inflate: bool,
        ctx: &mut QueueCtx<'_>,
    ) -> Result<(), DeviceError> {
        let mut pages = 0u64;
        let dirty = ctx.dirty;
        queue::drain_queue(ctx, index, |chain, mem| {
            let len = chain.readable_len();
            if len > MAX_PFN_BYTES || len % 4 != 0 {
                return Err(DeviceError::Chain {
                    head: chain.head,
                    reason: "balloon PFN buffer is not a whole number of PFNs or too long",
                });
            }
            let mut buf = vec![0u8; len as usize];
            chain.read_at(mem, 0, &mut buf)?;
            let pfns: Vec<u64> = buf
                .chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes(c.try_into().unwrap())))
                .collect();
            for &pfn in &pfns {
                discard::check(mem, GuestAddress(pfn * PAGE), PAGE)?;
            }
            if inflate {
                for run in discard::runs(&pfns) {
                    discard::discard(mem, dirty, GuestAddress(run.0 * PAGE), run.1 * PAGE);
                }
            }
            pages += pfns.len() as u64;
            Ok(Some(0))
        })?;
        if inflate {
            self.handle.count_inflated(pages);
        }
        Ok(())
    }

    /// Free page reporting: each writable buffer is a free range; discard it.
    fn reporting(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        let mut bytes = 0u64;
        let dirty = ctx.dirty;
        queue::drain_queue(ctx, index, |chain, mem| {
            for &(addr, len) in &chain.writable {
                discard::check(mem, addr, u64::from(len))?;
            }
            for &(addr, len) in &chain.writable {
                discard::discard(mem, dirty, addr, u64::from(len));
                bytes += u64::from(len);
            }
            Ok(Some(0))
        })?;
        self.handle.count_reported(bytes);
        Ok(())
    }

    /// The driver filled the statistics buffer: read it and keep the buffer.
    fn stats(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        let mem = ctx.mem;
        let q = ctx
            .queues
            .get_mut(usize::from(index))
            .filter(|q| q.ready())
            .ok_or(DeviceError::QueueNotReady(index))?;
        while let Some(chain) = queue::pop_chain(q, mem)? {
            let s = stats::parse(&chain, mem)?;
            self.handle.set_stats(s);
            // A driver adds one buffer at a time; an older one goes back at once.
            if let Some(old) = self.stats_head.replace(chain.head) {
                q.add_used(mem, old, 0)?;
            }
        }
        Ok(())
    }

    /// Hands the statistics buffer back so the driver refreshes it. Linux posts its
    /// first buffer before DRIVER_OK (a notification the transport ignores), so a
    /// buffer waiting in the ring is taken first.
    fn request_stats(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        let Some(index) = self.index_of(Role::Stats) else {
            return Ok(());
        };
        if self.stats_head.is_none() {
            self.stats(index, ctx)?;
        }
        let Some(head) = self.stats_head else {
            return Ok(());
        };
        let mem = ctx.mem;
        let q = ctx
            .queues
            .get_mut(usize::from(index))
            .filter(|q| q.ready())
            .ok_or(DeviceError::QueueNotReady(index))?;
        self.stats_head = None;
        q.add_used(mem, head, 0)?;
        if let Some(log) = ctx.dirty {
            log.mark(q.used_ring(), 6 + 8 * u64::from(q.size()));
        }
        ctx.interrupt.signal_queue(index);
        Ok(())
    }
}

impl Persist for Balloon {
    type State = BalloonState;
    type Args = BalloonHandle;

    fn save(&self) -> BalloonState {
        BalloonState {
            acked_features: self.acked_features,
            target_pages: self.handle.target_pages(),
            actual_pages: self.actual_pages,
            stats_head: self.stats_head,
        }
    }

    fn restore(handle: BalloonHandle, s: &BalloonState) -> Result<Self, StateError> {
        let mut b = Balloon::new(handle);
        check_acked("virtio-balloon", b.features(), s.acked_features)?;
        if s.stats_head.is_some_and(|h| h >= QUEUE_SIZE) {
            return Err(StateError::new(
                "virtio-balloon",
                "statistics buffer head out of range",
            ));
        }
        b.handle.set_target_pages(s.target_pages);
        b.handle.set_actual_pages(s.actual_pages);
        b.acked_features = s.acked_features;
        b.actual_pages = s.actual_pages;
        b.announced_target = s.target_pages;
        b.stats_head = s.stats_head;
        Ok(b)
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 4]
    }
    fn features(&self) -> u64 {
        features::RING | feature::STATS_VQ | feature::DEFLATE_ON_OOM | feature::PAGE_REPORTING
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; 16];
        cfg[0..4].copy_from_slice(&self.handle.target_pages().to_le_bytes());
        cfg[4..8].copy_from_slice(&self.actual_pages.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| cfg.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (offset 4) is the driver's to write.
        let mut cfg = self.actual_pages.to_le_bytes();
        for (i, &b) in data.iter().enumerate() {
            if let Some(slot) = (offset + i as u64)
                .checked_sub(4)
                .and_then(|o| cfg.get_mut(o as usize))
            {
                *slot = b;
            }
        }
        self.actual_pages = u32::from_le_bytes(cfg);
        self.handle.set_actual_pages(self.actual_pages);
    }
    fn activate(&mut self, acked_features: u64, _queues: &[Queue]) -> Result<(), DeviceError> {
        self.acked_features = acked_features;
        Ok(())
    }
    fn process_queue(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        match self.role(index) {
            Some(Role::Inflate) => self.pfns(index, true, ctx),
            Some(Role::Deflate) => self.pfns(index, false, ctx),
            Some(Role::Stats) => self.stats(index, ctx),
            Some(Role::Reporting) => self.reporting(index, ctx),
            None => Err(DeviceError::QueueNotReady(index)),
        }
    }
    /// The host changed the target or wants statistics.
    fn process_event(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        let target = self.handle.target_pages();
        if target != self.announced_target {
            self.announced_target = target;
            ctx.interrupt.signal_config();
        }
        if self.handle.take_stats_request() {
            self.request_stats(ctx)?;
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.acked_features = 0;
        self.actual_pages = 0;
        self.stats_head = None;
        self.handle.set_actual_pages(0);
    }
}

#[cfg(test)]
mod tests;
