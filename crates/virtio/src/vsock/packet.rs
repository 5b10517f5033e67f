//! The packet header every vsock packet starts with (`struct virtio_vsock_hdr`,
//! virtio 1.2, section 5.10.6), its operations, and its encoding: 44 bytes, all
//! fields little-endian, packed.

/// Bytes of the header in front of every packet's payload.
pub const HDR_LEN: usize = 44;

/// `type`: a connection-oriented byte stream (the only type offered here;
/// `VIRTIO_VSOCK_F_SEQPACKET` is not).
pub const TYPE_STREAM: u16 = 1;

/// `op` values.
pub mod op {
    /// Open a connection.
    pub const REQUEST: u16 = 1;
    /// Accept a connection.
    pub const RESPONSE: u16 = 2;
    /// Abort a connection, or refuse one.
    pub const RST: u16 = 3;
    /// No more data in one or both directions (`flags`: [`super::shutdown`]).
    pub const SHUTDOWN: u16 = 4;
    /// Payload bytes.
    pub const RW: u16 = 5;
    /// The sender's buffer space (`buf_alloc`, `fwd_cnt`) changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Asks the peer for a `CREDIT_UPDATE`.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `flags` of a `SHUTDOWN`.
pub mod shutdown {
    /// The sender will receive no more data.
    pub const RCV: u32 = 1;
    /// The sender will send no more data.
    pub const SEND: u32 = 2;
    /// Both directions.
    pub const BOTH: u32 = RCV | SEND;
}

/// A decoded header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hdr {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    /// Payload bytes after the header.
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    /// The sender's receive buffer for this connection, in bytes.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from that buffer so far (wrapping).
    pub fwd_cnt: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Hdr {
    /// Decodes the wire layout.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        Hdr {
            src_cid: le64(b, 0),
            dst_cid: le64(b, 8),
            src_port: le32(b, 16),
            dst_port: le32(b, 20),
            len: le32(b, 24),
            type_: le16(b, 28),
            op: le16(b, 30),
            flags: le32(b, 32),
            buf_alloc: le32(b, 36),
            fwd_cnt: le32(b, 40),
        }
    }

    /// Encodes the wire layout.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The header of a reply to `self`: addresses swapped, stream type, no
    /// payload, everything else zero.
    pub fn reply(&self, op: u16) -> Hdr {
        Hdr {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_field_offsets() {
        let h = Hdr {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234_5678,
            dst_port: 6000,
            len: 9,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: shutdown::BOTH,
            buf_alloc: 65536,
            fwd_cnt: 0xdead_beef,
        };
        let b = h.to_bytes();
        assert_eq!(Hdr::from_bytes(&b), h);
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[16..20], &0x1234_5678u32.to_le_bytes());
        assert_eq!(&b[28..32], &[1, 0, 5, 0]);
        assert_eq!(&b[40..44], &0xdead_beefu32.to_le_bytes());
        let r = h.reply(op::RST);
        assert_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (2, 3, 6000, 0x1234_5678)
        );
        assert_eq!((r.len, r.flags, r.op), (0, 0, op::RST));
    }
}
