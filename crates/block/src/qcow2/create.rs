//! Creating an empty qcow2 image.
//!
//! Layout: cluster 0 header (with extensions and backing name), then the refcount
//! table, the refcount blocks covering all of this metadata, then the L1 table.

use super::header::{Compression, Header, MAX_L1_BYTES, MAX_VIRTUAL_SIZE, V3_HEADER_LEN};
use super::refcount::rc_set;
use crate::disk::{DiskError, Result};
use crate::storage::Storage;

/// Parameters of a new image.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Virtual size in bytes.
    pub size: u64,
    /// log2 of the cluster size (9..=21); 16 (64 KiB) by default.
    pub cluster_bits: u32,
    /// 3 (default) or 2 (`compat=0.10`).
    pub version: u32,
    /// log2 of the refcount width in bits (0..=6); 4 (16-bit) by default.
    pub refcount_order: u32,
    /// Backing file name as stored in the image.
    pub backing_file: Option<String>,
    /// Backing file format (`raw`, `qcow2`).
    pub backing_format: Option<String>,
    /// Codec for compressed clusters.
    pub compression: Compression,
    /// Path used in error messages.
    pub path: String,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            size: 0,
            cluster_bits: 16,
            version: 3,
            refcount_order: 4,
            backing_file: None,
            backing_format: None,
            compression: Compression::Zlib,
            path: String::new(),
        }
    }
}

pub(super) fn create(storage: &dyn Storage, o: &CreateOptions) -> Result<()> {
    let invalid = |reason: String| DiskError::Invalid {
        path: o.path.clone(),
        reason,
    };
    if !(9..=21).contains(&o.cluster_bits) {
        return Err(invalid(format!(
            "cluster size must be a power of two between 512 and 2M, not 2^{}",
            o.cluster_bits
        )));
    }
    if o.version != 2 && o.version != 3 {
        return Err(invalid(format!("unsupported qcow2 version {}", o.version)));
    }
    if o.refcount_order > 6 || (o.version == 2 && o.refcount_order != 4) {
        return Err(invalid("unsupported refcount width".into()));
    }
    if o.size > MAX_VIRTUAL_SIZE {
        return Err(invalid(format!("size {} is too large", o.size)));
    }
    if o.version == 2 && o.compression != Compression::Zlib {
        return Err(invalid("zstd compression needs qcow2 version 3".into()));
    }
    let cs = 1u64 << o.cluster_bits;
    // QEMU addresses qcow2 disks in 512-byte sectors and ignores a partial last
    // sector, so sizes are rounded up (as `qemu-img create` does).
    let size = o.size.div_ceil(512) * 512;
    let l1_entries = Header::l1_entries_for(o.cluster_bits, size);
    if l1_entries * 8 > MAX_L1_BYTES {
        return Err(invalid(format!("size {size} needs too large an L1 table")));
    }
    let l1_clusters = (l1_entries * 8).div_ceil(cs);
    let per_block = (cs * 8) >> o.refcount_order;
    // Fixed point: refcount blocks must cover every metadata cluster including
    // themselves and the table.
    let (mut rb, mut rt) = (1u64, 1u64);
    loop {
        let total = 1 + rt + rb + l1_clusters;
        let rb2 = total.div_ceil(per_block);
        let rt2 = (rb2 * 8).div_ceil(cs);
        if rb2 == rb && rt2 == rt {
            break;
        }
        (rb, rt) = (rb2, rt2);
    }
    let total = 1 + rt + rb + l1_clusters;
    let rt_off = cs;
    let rb_off = rt_off + rt * cs;
    let l1_off = rb_off + rb * cs;
    let h = Header {
        version: o.version,
        cluster_bits: o.cluster_bits,
        size,
        l1_size: l1_entries as u32,
        l1_table_offset: l1_off,
        refcount_table_offset: rt_off,
        refcount_table_clusters: rt as u32,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: if o.compression == Compression::Zstd {
            super::header::incompat::COMPRESSION_TYPE
        } else {
            0
        },
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: o.refcount_order,
        header_length: V3_HEADER_LEN,
        compression: o.compression,
        backing_file: o.backing_file.clone(),
        backing_format: o.backing_format.clone(),
    };
    let mut buf = vec![0u8; (total * cs) as usize];
    h.write_new(&mut buf[..cs as usize]).map_err(invalid)?;
    for b in 0..rb {
        let at = (rt_off + b * 8) as usize;
        buf[at..at + 8].copy_from_slice(&(rb_off + b * cs).to_be_bytes());
    }
    for c in 0..total {
        let block = (rb_off + (c / per_block) * cs) as usize;
        rc_set(
            &mut buf[block..block + cs as usize],
            (c % per_block) as usize,
            o.refcount_order,
            1,
        );
    }
    let io = |source| DiskError::Io {
        path: o.path.clone(),
        source,
    };
    storage.set_len(0).map_err(io)?;
    storage.write_at(&buf, 0).map_err(io)?;
    storage.sync().map_err(io)
}
