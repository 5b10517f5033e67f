//! Image metadata for `hako img info`: format, sizes, backing chain. Reads headers only,
//! never guest data, and follows backing files under a [`BackingPolicy`] as
//! [`open`](crate::open::open) does.

use crate::disk::{Disk, DiskError, Result};
use crate::open::{
    file_id, probe_storage, resolve_backing, BackingPolicy, FileId, ImageFormat, MAX_CHAIN_DEPTH,
};
use crate::qcow2::{Compression, Qcow2Disk};
use crate::storage::{FileStorage, Storage};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// qcow2-specific facts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Qcow2Info {
    /// "1.1" for version 3, "0.10" for version 2 (QEMU's names).
    pub compat: &'static str,
    /// "zlib" or "zstd".
    pub compression_type: &'static str,
    /// Width of a refcount in bits.
    pub refcount_bits: u32,
    /// Lazy refcounts feature bit.
    pub lazy_refcounts: bool,
    /// The image is marked corrupt.
    pub corrupt: bool,
    /// The image is marked dirty.
    pub dirty: bool,
    /// Number of internal snapshots.
    pub snapshots: u32,
}

/// Facts about one image of a chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageInfo {
    /// The path as given.
    pub filename: String,
    /// Its format.
    pub format: ImageFormat,
    /// Whether the format was probed rather than given.
    pub probed: bool,
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
    /// Bytes the file occupies on the host.
    pub actual_size: u64,
    /// Cluster size (qcow2).
    pub cluster_size: Option<u64>,
    /// Backing file name as stored in the image.
    pub backing_filename: Option<String>,
    /// Where that name resolves.
    pub full_backing_filename: Option<String>,
    /// The backing format stored in the image.
    pub backing_format: Option<String>,
    /// qcow2 details.
    pub qcow2: Option<Qcow2Info>,
    /// Subformat: "dynamic" or "fixed" (VDI, VPC, VHDX), "monolithicSparse" or
    /// "streamOptimized" (VMDK).
    pub subformat: Option<&'static str>,
    /// VHDX: log entries not yet applied to the file (replayed in memory to read it).
    pub pending_log_entries: u32,
}

/// Describes the image at `path` (format given or probed).
pub fn inspect(path: &Path, format: Option<ImageFormat>) -> Result<ImageInfo> {
    let shown = path.display().to_string();
    let io = |source| DiskError::Io {
        path: shown.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let storage = FileStorage::new(f);
    let actual_size = storage.allocated_bytes().map_err(io)?;
    let probed = format.is_none();
    let format = match format {
        Some(f) => f,
        None => probe_storage(&storage).map_err(io)?,
    };
    let mut info = ImageInfo {
        filename: shown.clone(),
        format,
        probed,
        virtual_size: storage.len().map_err(io)?,
        actual_size,
        cluster_size: None,
        backing_filename: None,
        full_backing_filename: None,
        backing_format: None,
        qcow2: None,
        subformat: None,
        pending_log_entries: 0,
    };
    match format {
        ImageFormat::Vdi => {
            let d = crate::vdi::VdiDisk::open(Box::new(storage), &shown, true)?;
            info.virtual_size = d.size();
            info.cluster_size = Some(d.block_size());
            info.subformat = Some(match d.kind() {
                crate::vdi::VdiKind::Dynamic => "dynamic",
                crate::vdi::VdiKind::Fixed => "fixed",
            });
            return Ok(info);
        }
        ImageFormat::Vpc => {
            let d = crate::vpc::VpcDisk::open(Box::new(storage), &shown, true)?;
            info.virtual_size = d.size();
            info.cluster_size = d.block_size();
            info.subformat = Some(match d.kind() {
                crate::vpc::VpcKind::Dynamic => "dynamic",
                crate::vpc::VpcKind::Fixed => "fixed",
            });
            return Ok(info);
        }
        ImageFormat::Vhdx => {
            let d = crate::vhdx::VhdxDisk::open(Box::new(storage), &shown, true)?;
            info.virtual_size = d.size();
            info.cluster_size = Some(d.block_size());
            info.subformat = Some(match d.kind() {
                crate::vhdx::VhdxKind::Dynamic => "dynamic",
                crate::vhdx::VhdxKind::Fixed => "fixed",
            });
            info.pending_log_entries = d.replayed_log_entries();
            return Ok(info);
        }
        ImageFormat::Vmdk => {
            let d = crate::vmdk::open_vmdk(
                path,
                Box::new(storage),
                crate::vmdk::ExtentPaths::Contained,
            )?;
            info.virtual_size = d.size();
            info.cluster_size = d.grain_size();
            info.subformat = Some(match d.create_type() {
                "streamOptimized" => "streamOptimized",
                "monolithicFlat" => "monolithicFlat",
                "twoGbMaxExtentSparse" => "twoGbMaxExtentSparse",
                "twoGbMaxExtentFlat" => "twoGbMaxExtentFlat",
                "vmfs" => "vmfs",
                _ => "monolithicSparse",
            });
            return Ok(info);
        }
        ImageFormat::Raw | ImageFormat::Qcow2 => {}
    }
    if format == ImageFormat::Qcow2 {
        let d = Qcow2Disk::open(Box::new(storage), &shown, true)?.without_backing();
        let h = d.header();
        info.virtual_size = d.size();
        info.cluster_size = Some(h.cluster_size());
        info.full_backing_filename = h
            .backing_file
            .as_deref()
            .map(|b| resolve_backing(path, b).display().to_string());
        info.backing_filename = h.backing_file.clone();
        info.backing_format = h.backing_format.clone().filter(|f| !f.is_empty());
        use crate::qcow2::header::incompat;
        info.qcow2 = Some(Qcow2Info {
            compat: if h.version >= 3 { "1.1" } else { "0.10" },
            compression_type: match h.compression {
                Compression::Zlib => "zlib",
                Compression::Zstd => "zstd",
            },
            refcount_bits: 1 << h.refcount_order,
            lazy_refcounts: h.compatible_features & 1 != 0,
            corrupt: h.incompatible_features & incompat::CORRUPT != 0,
            dirty: h.incompatible_features & incompat::DIRTY != 0,
            snapshots: h.nb_snapshots,
        });
    }
    Ok(info)
}

/// The chain from `path` down through its backing files, under the strict rule: stops
/// (returning the layers found and a note) at a probed image's backing file.
pub fn inspect_chain(
    path: &Path,
    format: Option<ImageFormat>,
) -> Result<(Vec<ImageInfo>, Option<String>)> {
    inspect_chain_with(path, format, BackingPolicy::Strict)
}

/// The chain from `path` down through its backing files. Under
/// [`BackingPolicy::Strict`] it stops (returning the layers found and a note) at a
/// probed image's backing file; [`BackingPolicy::Ignore`] stops at the first image.
pub fn inspect_chain_with(
    path: &Path,
    format: Option<ImageFormat>,
    policy: BackingPolicy,
) -> Result<(Vec<ImageInfo>, Option<String>)> {
    let mut chain = Vec::new();
    let mut seen: HashSet<FileId> = HashSet::new();
    let mut cur = path.to_path_buf();
    let mut fmt = format;
    loop {
        if chain.len() > MAX_CHAIN_DEPTH {
            return Err(DiskError::Invalid {
                path: path.display().to_string(),
                reason: format!("backing chain is longer than {MAX_CHAIN_DEPTH} images"),
            });
        }
        if !seen.insert(file_id(&cur)?) {
            return Err(DiskError::Invalid {
                path: cur.display().to_string(),
                reason: "backing chain loops back to this image".into(),
            });
        }
        let info = inspect(&cur, fmt)?;
        let next = info.full_backing_filename.clone();
        let next_fmt = info.backing_format.clone();
        let probed = info.probed;
        chain.push(info);
        let Some(next) = next else {
            return Ok((chain, None));
        };
        if policy == BackingPolicy::Ignore {
            return Ok((chain, None));
        }
        if probed && policy == BackingPolicy::Strict {
            return Ok((
                chain,
                Some(format!(
                    "backing file of {} not opened: its format was probed, not given \
                     (pass -f to follow the chain)",
                    cur.display()
                )),
            ));
        }
        fmt = match next_fmt {
            Some(f) => Some(f.parse().map_err(|m| DiskError::UnsupportedImage {
                path: cur.display().to_string(),
                reason: m,
            })?),
            None => None,
        };
        cur = PathBuf::from(next);
    }
}
