//! `struct virtio_net_hdr_v1` (virtio 1.2, section 5.1.6), the 12 bytes in
//! front of every frame in both directions once `VIRTIO_F_VERSION_1` is
//! negotiated, and the checks of its offload requests against what was
//! negotiated.

use super::feature;
use super::stats::DropReason;

/// Length of the header.
pub const HDR_LEN: usize = ::net::VNET_HDR_LEN;
/// Length of an Ethernet header: the shortest frame the device passes on.
pub const ETH_HLEN: usize = 14;

/// `flags`: the checksum from `csum_start` on is partial and must be completed
/// at `csum_start + csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags` (receive only): the checksum was validated.
pub const F_DATA_VALID: u8 = 2;
/// `flags` (receive only, `GUEST_RSC4/6`, never offered): coalescing info in
/// the checksum fields.
pub const F_RSC_INFO: u8 = 4;

/// `gso_type`: no segmentation.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;

/// The header, fields in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// Receive with `MRG_RXBUF`: the number of chains the frame spans (1
    /// without it). Meaningless on transmit.
    pub num_buffers: u16,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl NetHdr {
    /// Decodes the little-endian wire format.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le16(b, 2),
            gso_size: le16(b, 4),
            csum_start: le16(b, 6),
            csum_offset: le16(b, 8),
            num_buffers: le16(b, 10),
        }
    }

    /// Encodes the little-endian wire format.
    pub fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        let fields = [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes the first [`HDR_LEN`] bytes of `frame` (which must have them).
    pub fn from_frame(frame: &[u8]) -> Self {
        let mut b = [0u8; HDR_LEN];
        b.copy_from_slice(&frame[..HDR_LEN]);
        Self::from_bytes(&b)
    }
}

/// The offloads one direction of the device may carry, as negotiated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
}

impl Allowed {
    /// What the driver may ask of the device on transmit (`CSUM`, `HOST_TSO4/6`).
    pub fn tx(acked: u64) -> Self {
        Self {
            csum: acked & feature::CSUM != 0,
            tso4: acked & feature::HOST_TSO4 != 0,
            tso6: acked & feature::HOST_TSO6 != 0,
        }
    }

    /// What the device may hand the driver on receive (`GUEST_CSUM`, `GUEST_TSO4/6`).
    pub fn rx(acked: u64) -> Self {
        Self {
            csum: acked & feature::GUEST_CSUM != 0,
            tso4: acked & feature::GUEST_TSO4 != 0,
            tso6: acked & feature::GUEST_TSO6 != 0,
        }
    }
}

/// The checks both directions share: segmentation and partial checksums only
/// as negotiated, and a partial checksum that lies inside the `payload_len`
/// bytes of frame after the header.
fn check_offloads(h: &NetHdr, allowed: Allowed, payload_len: usize) -> Result<(), DropReason> {
    match h.gso_type {
        GSO_NONE => {}
        GSO_TCPV4 if allowed.tso4 => {}
        GSO_TCPV6 if allowed.tso6 => {}
        // UDP, USO, ECN and unknown types: never offered.
        _ => return Err(DropReason::Offload),
    }
    if h.flags & F_NEEDS_CSUM != 0 {
        if !allowed.csum {
            return Err(DropReason::Offload);
        }
        let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if end > payload_len {
            return Err(DropReason::BadHeader);
        }
    }
    // "If gso_type differs from GSO_NONE, the driver MUST also set NEEDS_CSUM
    // and MUST set gso_size" (5.1.6.2.1); a TAP sends GSO frames the same way.
    if h.gso_type != GSO_NONE && (h.flags & F_NEEDS_CSUM == 0 || h.gso_size == 0) {
        return Err(DropReason::BadHeader);
    }
    Ok(())
}

/// Checks the header of a frame the driver transmits, `payload_len` bytes
/// after the header.
pub fn check_tx(h: &NetHdr, allowed: Allowed, payload_len: usize) -> Result<(), DropReason> {
    // DATA_VALID and RSC_INFO are receive-only: the driver MUST NOT set them.
    if h.flags & !F_NEEDS_CSUM != 0 {
        return Err(DropReason::BadHeader);
    }
    check_offloads(h, allowed, payload_len)
}

/// Checks the header of a frame the backend received and makes it one the
/// driver may see: without `GUEST_CSUM` the flags must be zero (5.1.6.4), so
/// `DATA_VALID` is cleared (the driver then verifies the checksum itself); a
/// partial checksum or segmentation that was not negotiated drops the frame.
pub fn sanitize_rx(h: &mut NetHdr, allowed: Allowed, payload_len: usize) -> Result<(), DropReason> {
    if h.flags & F_RSC_INFO != 0 {
        return Err(DropReason::Offload);
    }
    h.flags &= F_NEEDS_CSUM | F_DATA_VALID;
    if !allowed.csum {
        h.flags &= !F_DATA_VALID;
    }
    check_offloads(h, allowed, payload_len)
}
