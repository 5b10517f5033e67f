//! Opening images by path: format probing, backing chains, and the probing safety rule.
//!
//! # Probing safety
//! A raw image's first bytes belong to the guest. If the format were detected from them
//! on every start, a guest could write a qcow2 header naming a host file (say
//! `/etc/shadow`) as its backing file, and the next start would expose that file to the
//! guest. Two rules close this:
//! - **a probed image never opens a backing file**: when the format was detected rather
//!   than given, and the image names a backing file, opening fails with an error that
//!   says to give the format explicitly. Backing files named with a `backing_fmt` open
//!   with that format; a backing file without one is probed and is subject to the same
//!   rule in turn. [`BackingPolicy::Trust`] lifts the rule for callers that vouch for
//!   the image.
//! - **a probed raw image cannot be turned into something else**: writes that would put
//!   a qcow2 magic at offset 0 of a probed raw image are refused.
//!
//! Opening a probed raw image for writing logs a warning, as QEMU does.

use crate::disk::{Disk, DiskError, Result};
use crate::qcow2::{Header, Qcow2Disk};
use crate::raw::RawDisk;
use crate::storage::{FileStorage, Storage};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Longest backing chain followed.
pub const MAX_CHAIN_DEPTH: usize = 32;

/// An image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// The disk is the file.
    Raw,
    /// QEMU copy-on-write version 2.
    Qcow2,
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        })
    }
}

impl FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            _ => Err(format!(
                "unknown image format '{s}' (expected raw or qcow2)"
            )),
        }
    }
}

/// Whether images may open the backing files they name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackingPolicy {
    /// Open backing files, except for images whose format was probed (see module docs).
    #[default]
    Default,
    /// Open backing files even for probed images: the caller vouches for the image.
    Trust,
    /// Never open backing files. Read-only, clusters an image does not hold read as
    /// zeroes; writable, reading them fails. For tools that work on metadata only.
    Ignore,
}

/// How to open an image.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The format; `None` probes it from the header (see the safety rule).
    pub format: Option<ImageFormat>,
    /// Open without write access.
    pub read_only: bool,
    /// Backing file policy.
    pub backing: BackingPolicy,
    /// Memory for cached L2 tables per qcow2 image, in bytes.
    pub l2_cache_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            format: None,
            read_only: false,
            backing: BackingPolicy::Default,
            l2_cache_bytes: crate::qcow2::DEFAULT_L2_CACHE_BYTES,
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> DiskError {
    DiskError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Detects the format of an image from its first bytes.
pub fn probe(path: &Path) -> Result<ImageFormat> {
    let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    probe_storage(&FileStorage::new(f)).map_err(|e| io_err(path, e))
}

/// Detects the format of an image on any storage.
pub fn probe_storage(s: &dyn Storage) -> std::io::Result<ImageFormat> {
    let mut magic = [0u8; 4];
    s.read_at(&mut magic, 0)?;
    Ok(
        if u32::from_be_bytes(magic) == crate::qcow2::header::MAGIC {
            ImageFormat::Qcow2
        } else {
            ImageFormat::Raw
        },
    )
}

/// Opens the image at `path` (and its backing chain, subject to the safety rule).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn Disk>> {
    open_layer(path, opts, &mut HashSet::new(), 0)
}

fn open_storage(path: &Path, read_only: bool) -> Result<Box<dyn Storage>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    Ok(Box::new(FileStorage::new(f)))
}

/// A file's identity (device, inode): two names of one file, hard links included,
/// compare equal.
pub type FileId = (u64, u64);

/// The identity of the file at `path`.
pub fn file_id(path: &Path) -> Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    Ok((m.dev(), m.ino()))
}

/// Where a backing file named `name` by the image at `image` is (relative names are
/// relative to the image's directory).
pub fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        image.parent().unwrap_or(Path::new(".")).join(p)
    }
}

fn open_layer(
    path: &Path,
    opts: &OpenOptions,
    seen: &mut HashSet<FileId>,
    depth: usize,
) -> Result<Box<dyn Disk>> {
    let shown = path.display().to_string();
    if depth > MAX_CHAIN_DEPTH {
        return Err(DiskError::Invalid {
            path: shown,
            reason: format!("backing chain is longer than {MAX_CHAIN_DEPTH} images"),
        });
    }
    if !seen.insert(file_id(path)?) {
        return Err(DiskError::Invalid {
            path: shown,
            reason: "backing chain loops back to this image".into(),
        });
    }
    let storage = open_storage(path, opts.read_only)?;
    let probed = opts.format.is_none();
    let format = match opts.format {
        Some(f) => f,
        None => probe_storage(storage.as_ref()).map_err(|e| io_err(path, e))?,
    };
    match format {
        ImageFormat::Raw => {
            if probed && !opts.read_only {
                tracing::warn!(
                    "{shown}: image format was not specified and was probed as raw; \
                     writes to its first sector are restricted. Specify format=raw to \
                     remove the restrictions."
                );
            }
            let mut d = RawDisk::new(storage, &shown, opts.read_only)?;
            if probed {
                d = d.guard_header();
            }
            Ok(Box::new(d))
        }
        ImageFormat::Qcow2 => {
            let d =
                Qcow2Disk::open_with_cache(storage, &shown, opts.read_only, opts.l2_cache_bytes)?;
            let h = d.header();
            let Some(name) = h.backing_file.clone() else {
                return Ok(Box::new(d));
            };
            match opts.backing {
                // Read-only: unallocated clusters read as zeroes. Writable: reads (and
                // copy-on-write) of clusters the image lacks fail instead of silently
                // using zeroes in place of backing data.
                BackingPolicy::Ignore if opts.read_only => {
                    return Ok(Box::new(d.without_backing()))
                }
                BackingPolicy::Ignore => return Ok(Box::new(d)),
                BackingPolicy::Default if probed => {
                    return Err(DiskError::Invalid {
                        path: shown,
                        reason: format!(
                            "the image format was probed, not given, and the image names \
                             backing file '{name}'; refusing to open it (give the format \
                             explicitly, e.g. format=qcow2 or -f qcow2, to allow backing files)"
                        ),
                    })
                }
                _ => {}
            }
            let backing = open_backing(path, &h, opts, seen, depth)?;
            Ok(Box::new(d.with_backing(backing)))
        }
    }
}

fn open_backing(
    path: &Path,
    h: &Header,
    opts: &OpenOptions,
    seen: &mut HashSet<FileId>,
    depth: usize,
) -> Result<Box<dyn Disk>> {
    let name = h.backing_file.as_deref().unwrap_or_default();
    let bpath = resolve_backing(path, name);
    let format = match h.backing_format.as_deref() {
        None | Some("") => None,
        Some(f) => Some(
            f.parse::<ImageFormat>()
                .map_err(|m| DiskError::UnsupportedImage {
                    path: path.display().to_string(),
                    reason: format!("backing file format: {m}"),
                })?,
        ),
    };
    let bopts = OpenOptions {
        format,
        read_only: true,
        ..opts.clone()
    };
    open_layer(&bpath, &bopts, seen, depth + 1).map_err(|e| match e {
        DiskError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            DiskError::Invalid {
                path: path.display().to_string(),
                reason: format!("backing file '{}' not found", bpath.display()),
            }
        }
        e => e,
    })
}
