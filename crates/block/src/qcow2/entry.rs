//! L1 and L2 table entries: decoding with validation, and encoding.

/// Entry flag: the cluster's refcount is exactly one, so it may be written in place.
pub const COPIED: u64 = 1 << 63;
/// L2 flag: the cluster is compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// L2 flag (version 3): the cluster reads as zeroes.
pub const ZERO: u64 = 1;
/// Host offset bits of a standard entry.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// Where one guest cluster's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated here: read from the backing file, or zeroes.
    Unallocated,
    /// Reads as zeroes; `alloc` is a preallocated host cluster still owned by the entry.
    Zero { alloc: Option<u64> },
    /// Plain data at a host cluster offset.
    Data { host: u64, copied: bool },
    /// Compressed data starting at byte `offset`, spanning `sectors` 512-byte sectors
    /// (counted from the sector holding `offset`).
    Compressed { offset: u64, sectors: u64 },
}

impl Mapping {
    /// Host clusters this mapping holds a reference on (for freeing and checking).
    pub fn host_clusters(&self, cluster_bits: u32) -> Vec<u64> {
        let cs = 1u64 << cluster_bits;
        match *self {
            Mapping::Unallocated | Mapping::Zero { alloc: None } => vec![],
            Mapping::Zero { alloc: Some(h) } | Mapping::Data { host: h, .. } => vec![h],
            Mapping::Compressed { offset, sectors } => {
                let first = offset & !(cs - 1);
                let last_byte = ((offset >> 9) + sectors) * 512 + 511;
                let last = last_byte & !(cs - 1);
                (0..=(last - first) / cs).map(|i| first + i * cs).collect()
            }
        }
    }
}

/// Decodes an L2 entry. `v3` enables the zero flag.
pub fn decode_l2(entry: u64, cluster_bits: u32, v3: bool) -> Result<Mapping, String> {
    if entry & COMPRESSED != 0 {
        let x = 62 - (cluster_bits - 8);
        let offset = entry & ((1u64 << x) - 1);
        let sectors = (entry >> x) & ((1u64 << (cluster_bits - 8)) - 1);
        return Ok(Mapping::Compressed { offset, sectors });
    }
    let host = entry & OFFSET_MASK;
    let cs = 1u64 << cluster_bits;
    if host % cs != 0 {
        return Err(format!(
            "L2 entry {entry:#x} points to unaligned cluster offset {host:#x}"
        ));
    }
    if v3 && entry & ZERO != 0 {
        return Ok(Mapping::Zero {
            alloc: (host != 0).then_some(host),
        });
    }
    if host == 0 {
        return Ok(Mapping::Unallocated);
    }
    Ok(Mapping::Data {
        host,
        copied: entry & COPIED != 0,
    })
}

/// Encodes a compressed-cluster descriptor for `len` bytes of data at byte `offset`.
pub fn encode_compressed(offset: u64, len: u64, cluster_bits: u32) -> u64 {
    let x = 62 - (cluster_bits - 8);
    let sectors = ((offset + len - 1) >> 9) - (offset >> 9);
    COMPRESSED | (sectors << x) | offset
}

/// Decodes an L1 entry: the L2 table's host offset, or `None` if unallocated.
pub fn decode_l1(entry: u64, cluster_bits: u32) -> Result<Option<(u64, bool)>, String> {
    let off = entry & OFFSET_MASK;
    if off == 0 {
        return Ok(None);
    }
    if off % (1u64 << cluster_bits) != 0 {
        return Err(format!(
            "L1 entry {entry:#x} points to unaligned L2 table offset {off:#x}"
        ));
    }
    Ok(Some((off, entry & COPIED != 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_entries() {
        assert_eq!(decode_l2(0, 16, true), Ok(Mapping::Unallocated));
        assert_eq!(
            decode_l2(COPIED | 0x30000, 16, true),
            Ok(Mapping::Data {
                host: 0x30000,
                copied: true
            })
        );
        assert_eq!(decode_l2(ZERO, 16, true), Ok(Mapping::Zero { alloc: None }));
        // In version 2 bit 0 is reserved, not the zero flag.
        assert_eq!(decode_l2(ZERO, 16, false), Ok(Mapping::Unallocated));
        assert!(decode_l2(0x30200, 16, true).is_err());
        let e = encode_compressed(0x12345, 3000, 16);
        let m = decode_l2(e, 16, true).unwrap();
        assert_eq!(
            m,
            Mapping::Compressed {
                offset: 0x12345,
                sectors: ((0x12345 + 2999) >> 9) - (0x12345 >> 9)
            }
        );
        assert_eq!(m.host_clusters(16), vec![0x10000]);
        let m = decode_l2(encode_compressed(0x1ff00, 0x200, 16), 16, true).unwrap();
        assert_eq!(m.host_clusters(16), vec![0x10000, 0x20000]);
        assert_eq!(decode_l1(0x50000 | COPIED, 16), Ok(Some((0x50000, true))));
        assert!(decode_l1(0x50200, 16).is_err());
    }
}
