//! Frame counters and why frames are dropped (each reason warned about once
//! per direction, so a misbehaving driver or backend cannot flood the log).

/// Frames the device passed on or dropped since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames handed to the backend.
    pub tx_frames: u64,
    /// Transmitted frames dropped (malformed, offload not negotiated, backend full).
    pub tx_dropped: u64,
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Received frames dropped (no buffer they could fit in, offload not negotiated).
    pub rx_dropped: u64,
}

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Header and frame together exceed [`::net::MAX_FRAME`].
    TooLong,
    /// Shorter than a header and an Ethernet header.
    TooShort,
    /// Asks for a checksum or segmentation offload that was not negotiated.
    Offload,
    /// A header whose offload fields are inconsistent.
    BadHeader,
    /// The backend could not take the frame now (`send` returned `Ok(false)`).
    BackendFull,
    /// The backend failed.
    BackendError,
    /// Without `MRG_RXBUF`, the frame is larger than the receive buffer it is due in;
    /// with it, larger than all the buffers the ring can hold.
    NoFit,
}

impl DropReason {
    fn describe(self) -> &'static str {
        match self {
            DropReason::TooLong => "frame longer than the largest the backend takes",
            DropReason::TooShort => "frame shorter than an Ethernet header",
            DropReason::Offload => "offload that was not negotiated",
            DropReason::BadHeader => "inconsistent virtio-net header",
            DropReason::BackendFull => "backend cannot take it now",
            DropReason::BackendError => "backend failed",
            DropReason::NoFit => "frame larger than the receive buffers",
        }
    }
}

/// Transmit or receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Tx,
    Rx,
}

/// The counters and the reasons already warned about.
#[derive(Debug, Default)]
pub struct Counters {
    pub stats: NetStats,
    warned: u32,
}

impl Counters {
    /// A frame went through.
    pub fn passed(&mut self, dir: Dir) {
        match dir {
            Dir::Tx => self.stats.tx_frames += 1,
            Dir::Rx => self.stats.rx_frames += 1,
        }
    }

    /// A frame was dropped; the first drop of each reason and direction is
    /// warned about (`detail`, if any, is added to that warning).
    pub fn dropped(&mut self, dir: Dir, why: DropReason, detail: Option<&dyn std::fmt::Display>) {
        let bit = 1u32 << (why as u32 + if dir == Dir::Rx { 16 } else { 0 });
        match dir {
            Dir::Tx => self.stats.tx_dropped += 1,
            Dir::Rx => self.stats.rx_dropped += 1,
        }
        if why == DropReason::BackendFull {
            // Congestion, not a fault: a NIC drops on a full wire too.
            tracing::debug!("virtio-net: transmitted frame dropped: {}", why.describe());
            return;
        }
        if self.warned & bit != 0 {
            return;
        }
        self.warned |= bit;
        let what = match dir {
            Dir::Tx => "transmitted",
            Dir::Rx => "received",
        };
        match detail {
            Some(d) => tracing::warn!(
                "virtio-net: {what} frame dropped: {}: {d} (warned once)",
                why.describe()
            ),
            None => tracing::warn!(
                "virtio-net: {what} frame dropped: {} (warned once)",
                why.describe()
            ),
        }
    }
}
