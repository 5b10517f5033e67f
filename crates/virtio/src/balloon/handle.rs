//! What the VMM holds to drive the balloon: the target, and what the device saw.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::stats::GuestStats;
use super::PAGE;

#[derive(Default)]
struct Shared {
    target_pages: u32,
    actual_pages: u32,
    stats: Option<(GuestStats, SystemTime)>,
    stats_wanted: bool,
    inflated_pages: u64,
    reported_bytes: u64,
}

/// Shared between the device and the VMM (cloned handles share it). Setting the
/// target or asking for statistics takes effect when the transport next runs the
/// device's `process_event` (the VMM kicks it right after).
#[derive(Clone, Default)]
pub struct BalloonHandle(Arc<Mutex<Shared>>);

/// What `info` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonInfo {
    /// Memory the host asked the guest to give back, in bytes.
    pub target_bytes: u64,
    /// Memory the guest says it has given back, in bytes.
    pub actual_bytes: u64,
    /// Pages discarded through inflation since start (4 KiB each).
    pub inflated_pages: u64,
    /// Bytes discarded through free page reporting since start.
    pub reported_bytes: u64,
    /// The guest's figures and when they came (seconds since the epoch).
    pub stats: Option<GuestStats>,
    pub stats_time: Option<u64>,
}

impl BalloonHandle {
    /// A handle whose initial target is `target_bytes` (rounded down to pages).
    pub fn new(target_bytes: u64) -> Self {
        let h = Self::default();
        h.set_target_bytes(target_bytes);
        h
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the target (saturating at what 32-bit page counts hold: 16 TiB).
    pub fn set_target_bytes(&self, bytes: u64) {
        self.set_target_pages((bytes / PAGE).min(u64::from(u32::MAX)) as u32);
    }

    pub fn target_pages(&self) -> u32 {
        self.lock().target_pages
    }

    pub(super) fn set_target_pages(&self, p: u32) {
        self.lock().target_pages = p;
    }

    pub(super) fn set_actual_pages(&self, p: u32) {
        self.lock().actual_pages = p;
    }

    /// Asks for fresh statistics at the next `process_event`.
    pub fn request_stats(&self) {
        self.lock().stats_wanted = true;
    }

    pub(super) fn take_stats_request(&self) -> bool {
        std::mem::take(&mut self.lock().stats_wanted)
    }

    pub(super) fn set_stats(&self, s: GuestStats) {
        self.lock().stats = Some((s, SystemTime::now()));
    }

    pub(super) fn count_inflated(&self, pages: u64) {
        self.lock().inflated_pages += pages;
    }

    pub(super) fn count_reported(&self, bytes: u64) {
        self.lock().reported_bytes += bytes;
    }

    pub fn info(&self) -> BalloonInfo {
        let g = self.lock();
        BalloonInfo {
            target_bytes: u64::from(g.target_pages) * PAGE,
            actual_bytes: u64::from(g.actual_pages) * PAGE,
            inflated_pages: g.inflated_pages,
            reported_bytes: g.reported_bytes,
            stats: g.stats.as_ref().map(|s| s.0.clone()),
            stats_time: g.stats.as_ref().and_then(|s| {
                s.1.duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
        }
    }
}
