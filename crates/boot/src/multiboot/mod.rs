//! Multiboot v1 (Multiboot Specification 0.6.96): loading a kernel that carries a
//! Multiboot header in its first 8 KiB, with its modules and the Multiboot
//! information structure, for entry in 32-bit protected mode with paging off.
//!
//! Placement: the kernel where its ELF program headers (physical addresses) or
//! its header's address fields say; the modules after it, each page aligned, from
//! 1 MiB at the lowest; then the information structure, the memory map, the module
//! list, the strings and a flat GDT. Everything must lie in RAM below 4 GiB that
//! the memory map reports usable.
//!
//! ```no_run
//! # fn f(mem: &boot::GuestMemory) -> Result<(), boot::multiboot::MultibootError> {
//! use boot::multiboot::{load_multiboot, probe, MultibootConfig};
//! let kernel = std::path::PathBuf::from("kernel.elf");
//! if probe(&kernel)?.is_some() {
//!     let cfg = MultibootConfig::new(kernel, "debug=1");
//!     let booted = load_multiboot(mem, &cfg)?;
//!     assert_eq!(booted.cpu.regs.rax, 0x2bad_b002);
//! }
//! # Ok(()) }
//! ```

pub mod elf;
pub mod header;
pub mod info;

use std::io::Read;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress};
use vmm_types::CpuState;

use crate::e820::{guest_map, E820Entry, E820_RAM};
use crate::layout::{FOUR_GIB, HIGH_MEMORY_START};
use crate::protected_mode;
use crate::GuestMemory;
pub use header::{Header, HeaderError};
use info::{BootInformation, Module, BOOTLOADER_MAGIC};

/// What the information structure's `boot_loader_name` says.
pub const LOADER_NAME: &str = "hakobune";
const PAGE: u64 = 0x1000;

/// What to boot.
#[derive(Debug, Clone)]
pub struct MultibootConfig {
    pub kernel: PathBuf,
    /// The arguments (`--cmdline`); the kernel gets its own path, a space and these,
    /// as QEMU passes them.
    pub cmdline: String,
    /// Each file a module; its string is its path.
    pub modules: Vec<PathBuf>,
    /// Extra (address, size) ranges to mark reserved in the memory map (e.g. PCI ECAM).
    pub reserved: Vec<(u64, u64)>,
}

impl MultibootConfig {
    pub fn new(kernel: PathBuf, cmdline: &str) -> Self {
        MultibootConfig {
            kernel,
            cmdline: cmdline.into(),
            modules: Vec::new(),
            reserved: Vec::new(),
        }
    }
}

/// Where things went, and the boot CPU's entry state.
#[derive(Debug, Clone)]
pub struct MultibootBoot {
    pub cpu: CpuState,
    pub entry: u32,
    /// Whether the kernel was placed by ELF program headers (else by the header's
    /// address fields).
    pub elf_class: Option<u8>,
    /// End of the highest kernel segment (bss included).
    pub kernel_end: u64,
    /// (start, end) of each module.
    pub modules: Vec<(u64, u64)>,
    /// Physical address of the information structure (EBX at entry).
    pub info_addr: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum MultibootError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Header {
        path: PathBuf,
        #[source]
        source: HeaderError,
    },
    #[error("{}: no Multiboot header in the first 8 KiB", path.display())]
    NotMultiboot { path: PathBuf },
    #[error("{}: cannot load this Multiboot kernel by ELF program headers (its header's flag bit 16, address fields, is clear): {source}", path.display())]
    Elf {
        path: PathBuf,
        #[source]
        source: elf::ElfError,
    },
    #[error("{}: bad Multiboot address fields: {reason}", path.display())]
    AddressFields { path: PathBuf, reason: String },
    #[error("{}: nothing to load (no segment with a non-zero size)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: segment {start:#x}..{end:#x} is outside guest RAM (usable RAM below 4 GiB: {usable})", path.display())]
    OutsideRam {
        path: PathBuf,
        start: u64,
        end: u64,
        usable: String,
    },
    #[error("{}: entry point {entry:#x} is not inside the loaded image", path.display())]
    EntryOutsideImage { path: PathBuf, entry: u64 },
    #[error("the command line contains a NUL byte")]
    CmdlineNul,
    #[error("the modules and the Multiboot information ({need:#x} bytes from {start:#x}) do not fit in guest RAM below {end:#x}; give the guest more memory")]
    NoRoom { start: u64, need: u64, end: u64 },
    #[error("writing the kernel into guest memory failed: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Whether `path` is a Multiboot image: its header, `None` if it has no magic in
/// its first 8 KiB. A magic with a bad checksum (and no good one) is an error.
pub fn probe(path: &Path) -> Result<Option<Header>, MultibootError> {
    let rd = |source| MultibootError::Read {
        path: path.to_owned(),
        source,
    };
    let mut head = Vec::with_capacity(header::SEARCH_LIMIT);
    std::fs::File::open(path)
        .map_err(rd)?
        .take(header::SEARCH_LIMIT as u64)
        .read_to_end(&mut head)
        .map_err(rd)?;
    header::find(&head).map_err(|source| MultibootError::Header {
        path: path.to_owned(),
        source,
    })
}

/// A piece of the kernel to place: `data` at `paddr`, zero-filled to `memsz`.
struct Piece<'a> {
    paddr: u64,
    data: &'a [u8],
    memsz: u64,
}

/// The pieces of the image at the header's address fields (flag bit 16).
fn by_address_fields<'a>(
    path: &Path,
    file: &'a [u8],
    h: &Header,
    a: &header::AddressFields,
) -> Result<(Vec<Piece<'a>>, u64), MultibootError> {
    let bad = |reason: String| MultibootError::AddressFields {
        path: path.to_owned(),
        reason,
    };
    let (header_addr, load_addr) = (a.header_addr as u64, a.load_addr as u64);
    if header_addr < load_addr {
        return Err(bad(format!(
            "header_addr {header_addr:#x} is below load_addr {load_addr:#x}"
        )));
    }
    // The header's file offset corresponds to header_addr: the file's bytes from
    // `offset - (header_addr - load_addr)` load at load_addr.
    let start = (h.offset as u64)
        .checked_sub(header_addr - load_addr)
        .ok_or_else(|| {
            bad(format!(
                "load_addr {load_addr:#x} is {:#x} bytes before header_addr {header_addr:#x}, but the header is at file offset {:#x}",
                header_addr - load_addr,
                h.offset
            ))
        })?;
    let file_len = file.len() as u64;
    let size = if a.load_end_addr == 0 {
        file_len - start
    } else {
        (a.load_end_addr as u64)
            .checked_sub(load_addr)
            .ok_or_else(|| {
                bad(format!(
                    "load_end_addr {:#x} is below load_addr {load_addr:#x}",
                    a.load_end_addr
                ))
            })?
    };
    if start + size > file_len {
        return Err(bad(format!(
            "they ask for {size:#x} bytes from file offset {start:#x}, but the file has {file_len:#x} bytes"
        )));
    }
    let memsz = if a.bss_end_addr == 0 {
        size
    } else {
        (a.bss_end_addr as u64)
            .checked_sub(load_addr)
            .filter(|&m| m >= size)
            .ok_or_else(|| {
                bad(format!(
                    "bss_end_addr {:#x} is below the end of the loaded data {:#x}",
                    a.bss_end_addr,
                    load_addr + size
                ))
            })?
    };
    let data = &file[start as usize..(start + size) as usize];
    Ok((
        vec![Piece {
            paddr: load_addr,
            data,
            memsz,
        }],
        a.entry_addr as u64,
    ))
}

/// The pieces of an ELF image by its program headers' physical addresses; the
/// entry point translated from virtual to physical through the segment holding it
/// (a higher-half kernel's `e_entry` is virtual; paging is off at entry).
fn by_elf<'a>(path: &Path, file: &'a [u8]) -> Result<(Vec<Piece<'a>>, u64, u8), MultibootError> {
    let img = elf::parse(file).map_err(|source| MultibootError::Elf {
        path: path.to_owned(),
        source,
    })?;
    let entry = img
        .loads
        .iter()
        .find(|l| img.entry >= l.vaddr && img.entry - l.vaddr < l.memsz)
        .map_or(img.entry, |l| l.paddr + (img.entry - l.vaddr));
    // parse() checked every segment's file range.
    let pieces = img
        .loads
        .iter()
        .map(|l| Piece {
            paddr: l.paddr,
            data: &file[l.offset as usize..(l.offset + l.filesz) as usize],
            memsz: l.memsz,
        })
        .collect();
    Ok((pieces, entry, img.class))
}

/// The usable RAM entry below 4 GiB that holds `start..end`, if any.
fn ram_holding(map: &[E820Entry], start: u64, end: u64) -> Option<&E820Entry> {
    map.iter().find(|e| {
        e.kind == E820_RAM && e.addr <= start && end <= e.addr + e.size && end <= FOUR_GIB
    })
}

fn describe_ram(map: &[E820Entry]) -> String {
    let v: Vec<String> = map
        .iter()
        .filter(|e| e.kind == E820_RAM && e.addr < FOUR_GIB)
        .map(|e| format!("{:#x}..{:#x}", e.addr, (e.addr + e.size).min(FOUR_GIB)))
        .collect();
    v.join(", ")
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

fn write_zeros(mem: &GuestMemory, mut addr: u64, mut len: u64) -> Result<(), MultibootError> {
    let zeros = vec![0u8; 64 << 10];
    while len > 0 {
        let n = len.min(zeros.len() as u64);
        mem.write_slice(&zeros[..n as usize], GuestAddress(addr))?;
        addr += n;
        len -= n;
    }
    Ok(())
}

/// Loads the kernel, its modules and the information structure into `mem` and
/// returns the boot CPU's 32-bit entry state.
pub fn load_multiboot(
    mem: &GuestMemory,
    cfg: &MultibootConfig,
) -> Result<MultibootBoot, MultibootError> {
    let path = &cfg.kernel;
    let file = std::fs::read(path).map_err(|source| MultibootError::Read {
        path: path.clone(),
        source,
    })?;
    let hdr = header::find(&file)
        .map_err(|source| MultibootError::Header {
            path: path.clone(),
            source,
        })?
        .ok_or_else(|| MultibootError::NotMultiboot { path: path.clone() })?;
    if hdr.flags & header::FLAG_VIDEO_MODE != 0 {
        tracing::warn!(
            "{}: the kernel asks for video mode information; this VMM has no display and gives none",
            path.display()
        );
    }
    let (pieces, entry, elf_class) = match &hdr.address {
        Some(a) => {
            let (p, e) = by_address_fields(path, &file, &hdr, a)?;
            (p, e, None)
        }
        None => {
            let (p, e, c) = by_elf(path, &file)?;
            (p, e, Some(c))
        }
    };
    if pieces.is_empty() {
        return Err(MultibootError::Empty { path: path.clone() });
    }
    let (map, _low_end) = guest_map(mem, &cfg.reserved);
    for p in &pieces {
        let end = p.paddr.saturating_add(p.memsz);
        if ram_holding(&map, p.paddr, end).is_none() {
            return Err(MultibootError::OutsideRam {
                path: path.clone(),
                start: p.paddr,
                end,
                usable: describe_ram(&map),
            });
        }
    }
    if !pieces
        .iter()
        .any(|p| entry >= p.paddr && entry - p.paddr < p.memsz)
    {
        return Err(MultibootError::EntryOutsideImage {
            path: path.clone(),
            entry,
        });
    }
    if cfg.cmdline.contains('\0') {
        return Err(MultibootError::CmdlineNul);
    }

    for p in &pieces {
        mem.write_slice(p.data, GuestAddress(p.paddr))?;
        write_zeros(
            mem,
            p.paddr + p.data.len() as u64,
            p.memsz - p.data.len() as u64,
        )?;
    }
    let kernel_end = pieces.iter().map(|p| p.paddr + p.memsz).max().unwrap_or(0);

    // Modules, then the information, from the first page above the kernel and 1 MiB.
    let start = align_up(kernel_end.max(HIGH_MEMORY_START));
    let room_end =
        ram_holding(&map, start, start).map_or(start, |e| (e.addr + e.size).min(FOUR_GIB));
    let no_room = |need: u64| MultibootError::NoRoom {
        start,
        need,
        end: room_end,
    };
    let mut next = start;
    let mut modules = Vec::new();
    for m in &cfg.modules {
        let data = std::fs::read(m).map_err(|source| MultibootError::Read {
            path: m.clone(),
            source,
        })?;
        let end = next + data.len() as u64;
        if end > room_end {
            return Err(no_room(end - start));
        }
        mem.write_slice(&data, GuestAddress(next))?;
        modules.push(Module {
            start: next as u32,
            end: end as u32,
            string: path_bytes(m),
        });
        next = align_up(end);
    }
    let mut cmdline = path_bytes(path);
    cmdline.push(b' ');
    cmdline.extend_from_slice(cfg.cmdline.as_bytes());
    let (mem_lower, mem_upper) = BootInformation::memory_sizes(&map);
    let info_addr = next;
    let mut blob = BootInformation {
        mem_lower,
        mem_upper,
        cmdline: &cmdline,
        modules: &modules,
        mmap: &map,
        loader_name: LOADER_NAME,
    }
    .encode(info_addr as u32);
    blob.resize(blob.len().next_multiple_of(8), 0);
    let gdt_addr = info_addr + blob.len() as u64;
    for e in protected_mode::gdt_entries() {
        blob.extend(e.to_le_bytes());
    }
    if info_addr + blob.len() as u64 > room_end {
        return Err(no_room(info_addr + blob.len() as u64 - start));
    }
    mem.write_slice(&blob, GuestAddress(info_addr))?;

    Ok(MultibootBoot {
        cpu: protected_mode::entry_state(
            entry as u32,
            gdt_addr,
            BOOTLOADER_MAGIC,
            info_addr as u32,
        ),
        entry: entry as u32,
        elf_class,
        kernel_end,
        modules: modules
            .iter()
            .map(|m| (m.start as u64, m.end as u64))
            .collect(),
        info_addr: info_addr as u32,
    })
}

fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(test)]
mod tests;
