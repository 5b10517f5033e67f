//! Opening images by path: format probing, backing chains, and the probing safety rule.
//!
//! # Probing safety
//! A raw image's first bytes belong to the guest. If the format were detected from them
//! on every start, a guest could write a qcow2 header naming a host file (say
//! `/etc/shadow`) as its backing file, and the next start would expose that file to the
//! guest. What a probed image may open therefore depends on who names it
//! ([`BackingPolicy`]):
//! - [`BackingPolicy::Strict`], for disks a guest can write (`hako run --disk`): **a
//!   probed image never opens a backing file**. When the format was detected rather
//!   than given, and the image names a backing file, opening fails with an error that
//!   says to give the format explicitly. Backing files named with a `backing_fmt` open
//!   with that format; a backing file without one is probed and is subject to the same
//!   rule in turn.
//! - [`BackingPolicy::QemuImg`], for images an administrator names on the command line
//!   of `hako img` (qemu-img's rule): a probed image opens its backing chain; a backing
//!   file without a recorded format is probed, with a warning.
//! - **a probed raw image cannot be turned into something else**: writes that would
//!   make a probed raw image probe as another format (a qcow2, VMDK, VDI, VHD or VHDX header) are
//!   refused.
//!
//! Opening a probed raw image for writing logs a warning, as QEMU does.

use crate::disk::{Disk, DiskError, Result};
use crate::qcow2::{Header, Qcow2Disk};
use crate::raw::RawDisk;
use crate::storage::{FileStorage, Storage};
use crate::vdi::VdiDisk;
use crate::vhdx::VhdxDisk;
use crate::vmdk::{open_vmdk, ExtentPaths};
use crate::vpc::VpcDisk;
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
    /// VirtualBox disk image (read-only).
    Vdi,
    /// Virtual PC / Hyper-V VHD (opens read-only; new images from
    /// [`VpcWriter`](crate::VpcWriter); qemu-img calls it vpc).
    Vpc,
    /// VMware monolithicSparse / streamOptimized (read-only).
    Vmdk,
    /// Hyper-V VHDX, dynamic and fixed (opens read-only, a pending log replayed in
    /// memory; new images from [`VhdxWriter`](crate::VhdxWriter)).
    Vhdx,
}

impl ImageFormat {
    /// Whether images of this format can be opened for writing (VHD and VHDX can only
    /// be written new, through their writers).
    pub fn writable(self) -> bool {
        matches!(self, ImageFormat::Raw | ImageFormat::Qcow2)
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vdi => "vdi",
            ImageFormat::Vpc => "vpc",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vhdx => "vhdx",
        })
    }
}

impl FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            "vdi" => Ok(ImageFormat::Vdi),
            "vpc" | "vhd" => Ok(ImageFormat::Vpc),
            "vmdk" => Ok(ImageFormat::Vmdk),
            "vhdx" => Ok(ImageFormat::Vhdx),
            _ => Err(format!(
                "unknown image format '{s}' (expected raw, qcow2, vdi, vpc, vhdx or vmdk)"
            )),
        }
    }
}

/// Whether images may open the backing files they name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackingPolicy {
    /// For disks a guest can write (`hako run --disk`): open backing files, except for
    /// images whose format was probed (see the module docs). The default, so a caller
    /// that does not choose gets the safe rule.
    #[default]
    Strict,
    /// qemu-img's rule, for images named by an administrator (`hako img`): probed
    /// images open their backing files with the recorded format; a backing file
    /// without one is probed, with a warning.
    QemuImg,
    /// Open backing files even for probed images, silently: the caller vouches for the
    /// image.
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
    /// Let a VMDK descriptor name extent files anywhere (absolute paths, `..`), not
    /// only inside its own directory. Never applies to a probed descriptor under
    /// [`BackingPolicy::Strict`], which may name no extent files at all.
    pub any_extent_path: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            format: None,
            read_only: false,
            backing: BackingPolicy::Strict,
            l2_cache_bytes: crate::qcow2::DEFAULT_L2_CACHE_BYTES,
            any_extent_path: false,
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

/// Detects the format of an image on any storage: qcow2 magic, VMDK `KDMV` magic or
/// text descriptor, or VHDX `vhdxfile` at offset 0, VDI signature at 0x40,
/// VHD cookie at offset 0 (dynamic) or a valid fixed-disk footer at the end; anything
/// else is raw.
pub fn probe_storage(s: &dyn Storage) -> std::io::Result<ImageFormat> {
    let mut head = [0u8; PROBE_HEAD];
    s.read_at(&mut head, 0)?;
    let len = s.len()?;
    let mut tail = [0u8; 512];
    if len >= 512 {
        s.read_at(&mut tail, len - 512)?;
    }
    Ok(probe_bytes(&head, if len >= 512 { &tail } else { &[] }))
}

/// Bytes at the start of a file that probing looks at.
pub const PROBE_HEAD: usize = 512;

/// The format of a file whose first bytes are `head` and last 512 bytes `tail` (empty
/// for files shorter than that).
pub fn probe_bytes(head: &[u8], tail: &[u8]) -> ImageFormat {
    if head.len() >= 4
        && u32::from_be_bytes([head[0], head[1], head[2], head[3]]) == crate::qcow2::header::MAGIC
    {
        ImageFormat::Qcow2
    } else if crate::vmdk::probe(head) {
        ImageFormat::Vmdk
    } else if crate::vhdx::probe(head) {
        ImageFormat::Vhdx
    } else if crate::vdi::probe(head) {
        ImageFormat::Vdi
    } else if crate::vpc::probe(head, tail) {
        ImageFormat::Vpc
    } else {
        ImageFormat::Raw
    }
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
        ImageFormat::Vdi => Ok(Box::new(VdiDisk::open(storage, &shown, opts.read_only)?)),
        ImageFormat::Vpc => Ok(Box::new(VpcDisk::open(storage, &shown, opts.read_only)?)),
        ImageFormat::Vhdx => Ok(Box::new(VhdxDisk::open(storage, &shown, opts.read_only)?)),
        ImageFormat::Vmdk => {
            if !opts.read_only {
                return Err(crate::structure::read_only_format(&shown, "vmdk"));
            }
            // A descriptor's extent files are like backing files: a probed descriptor
            // on a guest's disk must not name host files.
            let paths = match opts.backing {
                BackingPolicy::Strict if probed => ExtentPaths::Refuse,
                BackingPolicy::Trust => ExtentPaths::Any,
                _ if opts.any_extent_path => ExtentPaths::Any,
                _ => ExtentPaths::Contained,
            };
            Ok(Box::new(open_vmdk(path, storage, paths)?))
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
                BackingPolicy::Strict if probed => {
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
    if format.is_none() && opts.backing == BackingPolicy::QemuImg {
        tracing::warn!(
            "{}: the image does not record the format of its backing file '{name}'; \
             probing it (record it with `qemu-img rebase -u -F FMT` or create images with -F)",
            path.display()
        );
    }
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
