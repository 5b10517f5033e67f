//! The qcow2 header (cluster 0): parsing with validation, and serialisation for create.
//!
//! Layout and semantics follow QEMU's published qcow2 specification
//! (docs/interop/qcow2.txt). Every field read from the file is checked before use so
//! that a hostile header fails here with a message instead of driving an allocation or
//! an out-of-range access later.

/// "QFI\xfb".
pub const MAGIC: u32 = 0x5146_49fb;
/// Smallest cluster size the format allows (512 bytes).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster size accepted (2 MiB, QEMU's limit too).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest accepted virtual size: 2^55 bytes (32 PiB), beyond what L2 offsets can map.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 55;
/// Largest accepted L1 table, in bytes (as QEMU: 32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest accepted refcount table, in bytes (as QEMU: 8 MiB).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Length of a version 3 header as written here (with the compression type byte, padded).
pub const V3_HEADER_LEN: u32 = 112;
const V2_HEADER_LEN: usize = 72;

/// Incompatible feature bits.
pub mod incompat {
    /// Refcounts may be stale (lazy refcounts were in use).
    pub const DIRTY: u64 = 1 << 0;
    /// The image was marked corrupt.
    pub const CORRUPT: u64 = 1 << 1;
    /// Guest data lives in an external file.
    pub const EXTERNAL_DATA: u64 = 1 << 2;
    /// The header's compression type field is valid.
    pub const COMPRESSION_TYPE: u64 = 1 << 3;
    /// L2 entries are 128 bits with subcluster bitmaps.
    pub const EXTENDED_L2: u64 = 1 << 4;
}

/// Header extension types.
mod ext {
    pub const END: u32 = 0;
    pub const BACKING_FORMAT: u32 = 0xe279_2aca;
    pub const FEATURE_NAMES: u32 = 0x6803_f857;
    pub const ENCRYPTION: u32 = 0x0537_be77;
    pub const EXTERNAL_DATA_FILE: u32 = 0x4441_5441;
}

/// Compression used for compressed clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (no zlib header), window 4 KiB.
    Zlib,
    /// A zstd frame.
    Zstd,
}

/// A parsed and validated qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

/// Why a header was rejected: `Invalid` for corruption, `Unsupported` for features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    NotQcow2,
    Invalid(String),
    Unsupported(String),
}

fn be32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

fn inv(msg: String) -> HeaderError {
    HeaderError::Invalid(msg)
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// L1 entries needed to map `size` bytes with this cluster size.
    pub fn l1_entries_for(cluster_bits: u32, size: u64) -> u64 {
        let l2_span = 1u64 << (cluster_bits + cluster_bits - 3);
        size.div_ceil(l2_span)
    }

    /// Parses the first cluster of an image. `first` must hold at least the header's
    /// cluster (or the whole file if shorter); `file_len` is the image file's length.
    pub fn parse(first: &[u8], file_len: u64) -> Result<Header, HeaderError> {
        if first.len() < V2_HEADER_LEN || be32(first, 0) != MAGIC {
            return Err(HeaderError::NotQcow2);
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(HeaderError::Unsupported(format!("qcow2 version {version}")));
        }
        let backing_file_offset = be64(first, 8);
        let backing_file_size = be32(first, 16);
        let cluster_bits = be32(first, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(inv(format!(
                "cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
            )));
        }
        let cs = 1u64 << cluster_bits;
        let size = be64(first, 24);
        if size > MAX_VIRTUAL_SIZE {
            return Err(inv(format!(
                "virtual size {size} bytes is absurd (limit {MAX_VIRTUAL_SIZE})"
            )));
        }
        let crypt = be32(first, 32);
        if crypt != 0 {
            return Err(HeaderError::Unsupported(format!(
                "encrypted images (crypt_method {crypt})"
            )));
        }
        let l1_size = be32(first, 36);
        let l1_table_offset = be64(first, 40);
        let refcount_table_offset = be64(first, 48);
        let refcount_table_clusters = be32(first, 56);
        let nb_snapshots = be32(first, 60);
        let snapshots_offset = be64(first, 64);

        let (mut incompat, compat, autoclear, refcount_order, header_length) = if version == 3 {
            if first.len() < 104 {
                return Err(inv("truncated version 3 header".into()));
            }
            (
                be64(first, 72),
                be64(first, 80),
                be64(first, 88),
                be32(first, 96),
                be32(first, 100),
            )
        } else {
            (0, 0, 0, 4, V2_HEADER_LEN as u32)
        };
        if version == 3 && (header_length < 104 || header_length % 8 != 0) {
            return Err(inv(format!("header_length {header_length} is invalid")));
        }
        if header_length as u64 > cs || header_length as usize > first.len() {
            return Err(inv(format!(
                "header_length {header_length} exceeds the first cluster"
            )));
        }
        if refcount_order > 6 {
            return Err(inv(format!(
                "refcount_order {refcount_order} is larger than 6"
            )));
        }
        let mut compression = Compression::Zlib;
        if incompat & incompat::COMPRESSION_TYPE != 0 {
            if header_length < 105 {
                return Err(inv(
                    "compression type bit set but header too short for the field".into(),
                ));
            }
            compression = match first[104] {
                0 => Compression::Zlib,
                1 => Compression::Zstd,
                t => return Err(HeaderError::Unsupported(format!("compression type {t}"))),
            };
        }
        if incompat & incompat::EXTERNAL_DATA != 0 {
            return Err(HeaderError::Unsupported("external data files".into()));
        }
        if incompat & incompat::EXTENDED_L2 != 0 {
            return Err(HeaderError::Unsupported(
                "extended L2 entries (subclusters)".into(),
            ));
        }
        let incompat_raw = incompat;
        incompat &= !(incompat::DIRTY | incompat::CORRUPT | incompat::COMPRESSION_TYPE);
        if incompat != 0 {
            return Err(HeaderError::Unsupported(format!(
                "unknown incompatible feature bits {incompat:#x}"
            )));
        }

        // L1 table: bounded, aligned, inside the file, not over the header.
        let l1_bytes = l1_size as u64 * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(inv(format!("L1 table of {l1_size} entries is too large")));
        }
        if l1_size as u64 > 0 || size > 0 {
            let needed = Self::l1_entries_for(cluster_bits, size);
            if (l1_size as u64) < needed {
                return Err(inv(format!(
                    "L1 table has {l1_size} entries but {needed} are needed for the virtual size"
                )));
            }
            check_region("L1 table", l1_table_offset, l1_bytes, cs, file_len)?;
        }
        // Refcount table likewise.
        let rt_bytes = refcount_table_clusters as u64 * cs;
        if refcount_table_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES {
            return Err(inv(format!(
                "refcount table of {refcount_table_clusters} clusters is invalid"
            )));
        }
        check_region(
            "refcount table",
            refcount_table_offset,
            rt_bytes,
            cs,
            file_len,
        )?;
        if l1_size > 0 && overlaps(l1_table_offset, l1_bytes, refcount_table_offset, rt_bytes) {
            return Err(inv("L1 table overlaps the refcount table".into()));
        }
        if nb_snapshots > 65536 {
            return Err(inv(format!("{nb_snapshots} snapshots is absurd")));
        }

        let mut h = Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            snapshots_offset,
            incompatible_features: incompat_raw,
            compatible_features: compat,
            autoclear_features: autoclear,
            refcount_order,
            header_length,
            compression,
            backing_file: None,
            backing_format: None,
        };
        h.parse_extensions(first, cs)?;
        if backing_file_offset != 0 {
            if backing_file_size == 0 || backing_file_size > 1023 {
                return Err(inv(format!(
                    "backing file name length {backing_file_size} is invalid"
                )));
            }
            let end = backing_file_offset.checked_add(backing_file_size as u64);
            match end {
                Some(end) if end <= cs.min(first.len() as u64) => {}
                _ => {
                    return Err(inv(
                        "backing file name lies outside the first cluster".into()
                    ))
                }
            }
            let name = &first[backing_file_offset as usize..end.unwrap_or(0) as usize];
            let name = std::str::from_utf8(name)
                .map_err(|_| inv("backing file name is not UTF-8".into()))?;
            if name.contains('\0') {
                return Err(inv("backing file name contains a NUL byte".into()));
            }
            h.backing_file = Some(name.to_string());
        }
        Ok(h)
    }

    fn parse_extensions(&mut self, first: &[u8], cs: u64) -> Result<(), HeaderError> {
        let limit = (cs as usize).min(first.len());
        let mut off = self.header_length as usize;
        loop {
            if off + 8 > limit {
                // v2 images may simply have nothing after the header.
                if self.version == 2 {
                    return Ok(());
                }
                return Err(inv("header extensions run past the first cluster".into()));
            }
            let ty = be32(first, off);
            let len = be32(first, off + 4) as usize;
            off += 8;
            if ty == ext::END {
                return Ok(());
            }
            if len > limit - off {
                return Err(inv(format!(
                    "header extension {ty:#x} of {len} bytes runs past the first cluster"
                )));
            }
            let data = &first[off..off + len];
            match ty {
                ext::BACKING_FORMAT => {
                    let s = std::str::from_utf8(data)
                        .map_err(|_| inv("backing format name is not UTF-8".into()))?;
                    self.backing_format = Some(s.trim_end_matches('\0').to_string());
                }
                ext::ENCRYPTION => {
                    return Err(HeaderError::Unsupported("encryption header".into()))
                }
                ext::EXTERNAL_DATA_FILE => {
                    return Err(HeaderError::Unsupported("external data file".into()))
                }
                ext::FEATURE_NAMES => {}
                _ => {}
            }
            off += len.div_ceil(8) * 8;
        }
    }

    /// Serialises a fresh header with extensions and backing name into `cluster`
    /// (which must be one zeroed cluster). Fails if it does not fit.
    pub fn write_new(&self, cluster: &mut [u8]) -> Result<(), String> {
        let put32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
        let put64 = |b: &mut [u8], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_be_bytes());
        put32(cluster, 0, MAGIC);
        put32(cluster, 4, self.version);
        put32(cluster, 20, self.cluster_bits);
        put64(cluster, 24, self.size);
        put32(cluster, 36, self.l1_size);
        put64(cluster, 40, self.l1_table_offset);
        put64(cluster, 48, self.refcount_table_offset);
        put32(cluster, 56, self.refcount_table_clusters);
        let mut off = V2_HEADER_LEN;
        if self.version == 3 {
            put64(cluster, 72, self.incompatible_features);
            put64(cluster, 80, self.compatible_features);
            put64(cluster, 88, self.autoclear_features);
            put32(cluster, 96, self.refcount_order);
            put32(cluster, 100, V3_HEADER_LEN);
            cluster[104] = match self.compression {
                Compression::Zlib => 0,
                Compression::Zstd => 1,
            };
            off = V3_HEADER_LEN as usize;
        }
        let fmt = self.backing_format.as_deref().unwrap_or("");
        let name = self.backing_file.as_deref().unwrap_or("");
        let need = off + 8 + fmt.len().div_ceil(8) * 8 + 8 + 8 + name.len();
        if need > cluster.len() {
            return Err(format!(
                "header with backing file name does not fit in a {}-byte cluster",
                cluster.len()
            ));
        }
        if !fmt.is_empty() {
            put32(cluster, off, ext::BACKING_FORMAT);
            put32(cluster, off + 4, fmt.len() as u32);
            cluster[off + 8..off + 8 + fmt.len()].copy_from_slice(fmt.as_bytes());
            off += 8 + fmt.len().div_ceil(8) * 8;
        }
        // End-of-extensions marker (8 zero bytes, already zero).
        off += 8;
        if !name.is_empty() {
            put64(cluster, 8, off as u64);
            put32(cluster, 16, name.len() as u32);
            cluster[off..off + name.len()].copy_from_slice(name.as_bytes());
        }
        Ok(())
    }
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Checks a metadata region: cluster aligned, after the header, inside the file.
pub fn check_region(
    what: &str,
    offset: u64,
    len: u64,
    cluster_size: u64,
    file_len: u64,
) -> Result<(), HeaderError> {
    if offset % cluster_size != 0 {
        return Err(inv(format!(
            "{what} offset {offset:#x} is not cluster aligned"
        )));
    }
    if offset == 0 {
        return Err(inv(format!("{what} overlaps the header")));
    }
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(inv(format!(
            "{what} at {offset:#x} (+{len:#x}) lies past the end of the file ({file_len:#x} bytes)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 3,
            cluster_bits: 16,
            size: 1 << 30,
            l1_size: 2,
            l1_table_offset: 3 << 16,
            refcount_table_offset: 1 << 16,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V3_HEADER_LEN,
            compression: Compression::Zlib,
            backing_file: Some("base.img".into()),
            backing_format: Some("raw".into()),
        }
    }

    #[test]
    fn header_round_trip() {
        let h = sample();
        let mut c = vec![0u8; 1 << 16];
        h.write_new(&mut c).unwrap();
        let p = Header::parse(&c, 4 << 16).unwrap();
        assert_eq!(p, h);
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let h = sample();
        let mut c = vec![0u8; 1 << 16];
        h.write_new(&mut c).unwrap();
        // L1 past the end of the file.
        assert!(matches!(
            Header::parse(&c, 2 << 16),
            Err(HeaderError::Invalid(_))
        ));
        // Refcount table over the header.
        let mut bad = c.clone();
        bad[48..56].copy_from_slice(&0u64.to_be_bytes());
        let e = Header::parse(&bad, 4 << 16).unwrap_err();
        assert!(
            matches!(e, HeaderError::Invalid(ref m) if m.contains("header")),
            "{e:?}"
        );
        // Absurd size.
        let mut bad = c.clone();
        bad[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            Header::parse(&bad, 4 << 16),
            Err(HeaderError::Invalid(_))
        ));
        // Unknown incompatible bit.
        let mut bad = c.clone();
        bad[72..80].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(matches!(
            Header::parse(&bad, 4 << 16),
            Err(HeaderError::Unsupported(_))
        ));
        // Not qcow2.
        assert_eq!(Header::parse(&[0u8; 100], 100), Err(HeaderError::NotQcow2));
        // Truncated at every length never panics.
        for n in 0..200 {
            let _ = Header::parse(&c[..n], n as u64);
        }
    }
}
