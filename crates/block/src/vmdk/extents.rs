//! A VMDK image as its descriptor describes it: a monolithic sparse file (one extent,
//! itself), or a descriptor file whose extents are other files (`monolithicFlat`,
//! `twoGbMaxExtentSparse`, `twoGbMaxExtentFlat`, ...), laid end to end.
//!
//! Extent file names come from a text file, so which ones may be opened is a policy
//! ([`ExtentPaths`]): by default only names inside the descriptor's directory (no
//! absolute path, no `..`), as an exported appliance has them; none at all for a
//! descriptor whose format was probed on a guest-writable disk (a guest could write a
//! descriptor naming `/etc/shadow` into its raw disk).

use super::descriptor::{parse_descriptor, ExtentKind};
use super::{VmdkDisk, DESCRIPTOR_FILE};
use crate::disk::{check_range, BlockStatus, Disk, DiskError, Extent, Result};
use crate::storage::{FileStorage, Storage};
use crate::structure::{invalid, io, narrow_to_host, StructureReport};
use std::path::{Component, Path};

const SECTOR: u64 = 512;
/// Largest descriptor file read.
const MAX_DESCRIPTOR_FILE: u64 = 1 << 20;

/// Which extent files a descriptor may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtentPaths {
    /// Relative names inside the descriptor's directory only (no absolute path, no
    /// `..` component).
    #[default]
    Contained,
    /// Any name: the caller vouches for the descriptor.
    Any,
    /// None: the descriptor's format was probed on a disk a guest can write.
    Refuse,
}

enum Part {
    Sparse(Box<VmdkDisk>),
    Flat {
        storage: Box<dyn Storage>,
        offset: u64,
        file: String,
    },
    Zero,
}

struct Piece {
    start: u64,
    len: u64,
    part: Part,
}

/// An open VMDK image (read-only).
pub struct VmdkFile {
    size: u64,
    pieces: Vec<Piece>,
    create_type: String,
}

fn refuse(path: &str, name: &str, why: &str) -> DiskError {
    DiskError::Invalid {
        path: path.into(),
        reason: format!(
            "the VMDK descriptor names extent file '{name}' {why}; refusing to open it"
        ),
    }
}

/// Opens the VMDK image at `path` (its bytes in `storage`): a sparse file, or a
/// descriptor file and the extent files it names, under `paths`.
pub fn open_vmdk(path: &Path, storage: Box<dyn Storage>, paths: ExtentPaths) -> Result<VmdkFile> {
    let shown = path.display().to_string();
    let mut head = [0u8; 32];
    storage.read_at(&mut head, 0).map_err(|e| io(&shown, e))?;
    if !head.starts_with(DESCRIPTOR_FILE) {
        let d = VmdkDisk::open(storage, &shown, true)?;
        return Ok(VmdkFile {
            size: d.size(),
            create_type: d.create_type().to_string(),
            pieces: vec![Piece {
                start: 0,
                len: d.size(),
                part: Part::Sparse(Box::new(d)),
            }],
        });
    }
    let len = storage.len().map_err(|e| io(&shown, e))?;
    if len > MAX_DESCRIPTOR_FILE {
        return Err(invalid(
            &shown,
            format!("a {len}-byte VMDK descriptor file is absurd"),
        ));
    }
    let mut text = vec![0u8; len as usize];
    storage.read_at(&mut text, 0).map_err(|e| io(&shown, e))?;
    let desc = parse_descriptor(&text, &shown)?;
    if desc.extents.is_empty() {
        return Err(invalid(&shown, "the VMDK descriptor lists no extents"));
    }
    let mut pieces = Vec::with_capacity(desc.extents.len());
    let mut start = 0u64;
    for x in &desc.extents {
        let bytes = x.sectors * SECTOR;
        let part = match (&x.file, x.kind) {
            (_, ExtentKind::Zero) => Part::Zero,
            (None, _) => return Err(invalid(&shown, "an extent without a file name")),
            (Some(name), kind) => {
                let p = Path::new(name);
                match paths {
                    ExtentPaths::Refuse => {
                        return Err(refuse(
                            &shown,
                            name,
                            "and its format was probed, not given (give format=vmdk or \
                             -f vmdk to allow extent files)",
                        ))
                    }
                    ExtentPaths::Contained
                        if p.components()
                            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) =>
                    {
                        return Err(refuse(
                            &shown,
                            name,
                            "outside the descriptor's directory (absolute or with ..)",
                        ))
                    }
                    _ => {}
                }
                let file = crate::open::resolve_backing(path, name);
                let fshown = file.display().to_string();
                let f = std::fs::File::open(&file).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        invalid(&shown, format!("extent file '{fshown}' not found"))
                    }
                    _ => io(&fshown, e),
                })?;
                let st: Box<dyn Storage> = Box::new(FileStorage::new(f));
                match kind {
                    ExtentKind::Sparse => {
                        let d = VmdkDisk::open(st, &fshown, true)?;
                        if d.size() != bytes {
                            return Err(invalid(
                                &shown,
                                format!(
                                    "extent '{fshown}' holds {} bytes, the descriptor says {bytes}",
                                    d.size()
                                ),
                            ));
                        }
                        Part::Sparse(Box::new(d))
                    }
                    _ => {
                        let flen = st.len().map_err(|e| io(&fshown, e))?;
                        let need = x.offset * SECTOR + bytes;
                        if flen < need {
                            return Err(invalid(
                                &shown,
                                format!(
                                    "flat extent '{fshown}' holds {flen} bytes, the descriptor \
                                     needs {need}"
                                ),
                            ));
                        }
                        Part::Flat {
                            storage: st,
                            offset: x.offset * SECTOR,
                            file: fshown,
                        }
                    }
                }
            }
        };
        pieces.push(Piece {
            start,
            len: bytes,
            part,
        });
        start = start
            .checked_add(bytes)
            .filter(|&s| s <= 1 << 60)
            .ok_or_else(|| invalid(&shown, "the extents add up to an absurd size"))?;
    }
    Ok(VmdkFile {
        size: start,
        pieces,
        create_type: desc.create_type,
    })
}

impl VmdkFile {
    /// The descriptor's `createType`.
    pub fn create_type(&self) -> &str {
        &self.create_type
    }

    /// The grain size of the first sparse extent (qemu-img's cluster size), if any.
    pub fn grain_size(&self) -> Option<u64> {
        self.pieces.iter().find_map(|p| match &p.part {
            Part::Sparse(d) => Some(d.grain_size()),
            _ => None,
        })
    }

    /// Structural check of every sparse extent.
    pub fn check(&self) -> StructureReport {
        let mut r = StructureReport::default();
        for p in &self.pieces {
            if let Part::Sparse(d) = &p.part {
                let x = d.check();
                r.total_blocks += x.total_blocks;
                r.allocated_blocks += x.allocated_blocks;
                r.image_end_offset = r.image_end_offset.max(x.image_end_offset);
                let kept = x.errors.len() as u64;
                for m in x.errors {
                    r.error(|| m);
                }
                r.corruptions += x.corruptions.saturating_sub(kept);
            }
        }
        r
    }

    /// The piece holding byte `pos` (< size).
    fn piece(&self, pos: u64) -> &Piece {
        let i = self.pieces.partition_point(|p| p.start + p.len <= pos);
        &self.pieces[i.min(self.pieces.len() - 1)]
    }
}

impl Disk for VmdkFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let p = self.piece(pos);
            let within = pos - p.start;
            let n = ((p.len - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match &p.part {
                Part::Sparse(d) => d.read_at(out, within)?,
                Part::Flat {
                    storage,
                    offset,
                    file,
                } => storage
                    .read_at(out, offset + within)
                    .map_err(|e| io(file, e))?,
                Part::Zero => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    crate::disk::read_only_disk!();

    fn format(&self) -> &'static str {
        "vmdk"
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<(BlockStatus, u64)> {
        let e = self.map_extent(offset, len)?;
        let s = if e.zero {
            BlockStatus::Zero
        } else {
            BlockStatus::Data
        };
        Ok((s, e.len))
    }

    fn map_extent(&self, offset: u64, len: u64) -> Result<Extent> {
        check_range(offset, len, self.size)?;
        let mut e = Extent {
            len,
            data: false,
            zero: true,
            present: true,
            depth: 0,
            offset: None,
            file: String::new(),
        };
        if len == 0 {
            return Ok(e);
        }
        let p = self.piece(offset);
        let within = offset - p.start;
        let n = (p.len - within).min(len);
        match &p.part {
            Part::Sparse(d) => return d.map_extent(within, n),
            Part::Flat {
                storage,
                offset: base,
                file,
            } => {
                e = Extent {
                    len: n,
                    data: true,
                    zero: false,
                    present: true,
                    depth: 0,
                    offset: Some(base + within),
                    file: file.clone(),
                };
                narrow_to_host(storage.as_ref(), &mut e)?;
            }
            Part::Zero => e.len = n,
        }
        Ok(e)
    }
}
