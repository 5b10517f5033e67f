//! Loading a Linux kernel (bzImage or ELF vmlinux) and its initrd by the x86
//! boot protocol (Documentation/arch/x86/boot.rst), for entry in 64-bit mode.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_types::CpuState;

use crate::e820::guest_map;
use crate::layout::*;
use crate::long_mode;
use crate::GuestMemory;

/// What to boot.
#[derive(Debug, Clone)]
pub struct LinuxBootConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Guest address of the ACPI RSDP, if the platform has ACPI tables.
    pub acpi_rsdp: Option<u64>,
    /// Extra (address, size) ranges to mark reserved in the e820 map (e.g. PCI ECAM).
    pub reserved: Vec<(u64, u64)>,
}

/// The kernel formats `load_linux` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    BzImage,
    Elf,
}

/// The result of loading: the boot CPU's entry state and where things went.
#[derive(Debug, Clone)]
pub struct BootInfo {
    pub cpu: CpuState,
    pub format: KernelFormat,
    pub entry: u64,
    pub kernel_end: u64,
    /// (address, size) of the initrd in guest memory.
    pub initrd: Option<(u64, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: unsupported kernel format (expected a bzImage or an ELF vmlinux)", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("{}: this bzImage has no 64-bit entry point (boot protocol {version:#x}, xloadflags {xloadflags:#x})", path.display())]
    No64BitEntry {
        path: PathBuf,
        version: u16,
        xloadflags: u16,
    },
    #[error("{}: malformed kernel: {source}", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("{}: initrd of {size} bytes does not fit in guest memory below {limit:#x} after the kernel (ends at {kernel_end:#x}); give the guest more memory", path.display())]
    InitrdTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        kernel_end: u64,
    },
    #[error("guest memory of {0} bytes is too small to boot (need at least 2 MiB)")]
    MemoryTooSmall(u64),
    #[error("writing the boot data into guest memory failed: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// boot_params as a byte-valued object.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct BootParams(boot_params);

// SAFETY: boot_params is a bindgen-generated `repr(C, packed)` struct of integers
// and arrays of integers only; every bit pattern is a valid value and it has no padding.
unsafe impl ByteValued for BootParams {}

const XLF_KERNEL_64: u16 = 1 << 0;
const HDRS_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

fn sniff(path: &Path) -> Result<KernelFormat, BootError> {
    let rd = |source| BootError::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(rd)?;
    let mut head = [0u8; 0x210];
    let n = f.read(&mut head).map_err(rd)?;
    if n >= 4 && head[..4] == *b"\x7fELF" {
        return Ok(KernelFormat::Elf);
    }
    if n >= 0x206 && u32::from_le_bytes(head[0x202..0x206].try_into().unwrap()) == HDRS_MAGIC {
        return Ok(KernelFormat::BzImage);
    }
    Err(BootError::UnknownFormat {
        path: path.to_owned(),
    })
}

/// Whether `path` is a Linux kernel this module boots, and which kind.
pub fn linux_format(path: &Path) -> Option<KernelFormat> {
    sniff(path).ok()
}

/// Loads kernel, initrd and command line into `mem`, writes boot_params, page
/// tables and GDT, and returns the boot CPU's entry state.
pub fn load_linux(mem: &GuestMemory, cfg: &LinuxBootConfig) -> Result<BootInfo, BootError> {
    let mem_end = mem.last_addr().0 + 1;
    let (map, low_end) = guest_map(mem, &cfg.reserved);
    if low_end < 2 << 20 {
        return Err(BootError::MemoryTooSmall(mem_end));
    }
    let kpath = &cfg.kernel;
    let format = sniff(kpath)?;
    let rd = |source| BootError::Read {
        path: kpath.clone(),
        source,
    };
    let mut kfile = File::open(kpath).map_err(rd)?;
    kfile.seek(SeekFrom::Start(0)).map_err(rd)?;
    let malformed = |source| BootError::Malformed {
        path: kpath.clone(),
        source,
    };

    let mut params = BootParams::default();
    let (entry, kernel_end) = match format {
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut kfile, Some(GuestAddress(HIGH_MEMORY_START)))
                .map_err(malformed)?;
            let hdr = r
                .setup_header
                .expect("bzImage loader returns the setup header");
            if hdr.version < 0x20c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry {
                    path: kpath.clone(),
                    version: hdr.version,
                    xloadflags: hdr.xloadflags,
                });
            }
            params.0.hdr = hdr;
            // The 64-bit entry point is 0x200 past the protected-mode kernel's start.
            (r.kernel_load.0 + 0x200, r.kernel_end)
        }
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut kfile, Some(GuestAddress(HIGH_MEMORY_START)))
                .map_err(malformed)?;
            params.0.hdr.boot_flag = 0xaa55;
            params.0.hdr.header = HDRS_MAGIC;
            params.0.hdr.version = 0x20f;
            params.0.hdr.cmdline_size = (CMDLINE_MAX - 1) as u32;
            params.0.hdr.kernel_alignment = 0x20_0000;
            (r.kernel_load.0, r.kernel_end)
        }
    };
    let hdr = &mut params.0.hdr;
    hdr.type_of_loader = KERNEL_LOADER_OTHER;

    // Command line.
    let max = if hdr.cmdline_size == 0 {
        255
    } else {
        hdr.cmdline_size as usize
    };
    if cfg.cmdline.len() > max.min(CMDLINE_MAX - 1) {
        return Err(BootError::CmdlineTooLong {
            len: cfg.cmdline.len(),
            max: max.min(CMDLINE_MAX - 1),
        });
    }
    if cfg.cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    let mut cl = cfg.cmdline.as_bytes().to_vec();
    cl.push(0);
    mem.write_slice(&cl, GuestAddress(CMDLINE_ADDR))?;
    hdr.cmd_line_ptr = CMDLINE_ADDR as u32;

    // Initrd: as high as allowed, page aligned, above the kernel.
    let mut initrd = None;
    if let Some(ipath) = &cfg.initrd {
        let data = std::fs::read(ipath).map_err(|source| BootError::Read {
            path: ipath.clone(),
            source,
        })?;
        let size = data.len() as u64;
        let addr_max = if hdr.initrd_addr_max == 0 {
            DEFAULT_INITRD_ADDR_MAX
        } else {
            hdr.initrd_addr_max as u64
        };
        let limit = low_end.min(addr_max + 1).min(MMIO_HOLE_START);
        let too_large = || BootError::InitrdTooLarge {
            path: ipath.clone(),
            size,
            limit,
            kernel_end,
        };
        let addr = limit.checked_sub(size).ok_or_else(too_large)? & !0xfff;
        if addr < kernel_end.max(HIGH_MEMORY_START) {
            return Err(too_large());
        }
        mem.write_slice(&data, GuestAddress(addr))?;
        hdr.ramdisk_image = addr as u32;
        hdr.ramdisk_size = size as u32;
        initrd = Some((addr, size));
    }

    // Memory map.
    for (i, e) in map.iter().enumerate() {
        params.0.e820_table[i] = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.0.e820_entries = map.len() as u8;
    if let Some(rsdp) = cfg.acpi_rsdp {
        params.0.acpi_rsdp_addr = rsdp;
    }
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))?;

    long_mode::write_tables(mem)?;
    Ok(BootInfo {
        cpu: long_mode::entry_state(entry, ZERO_PAGE_ADDR),
        format,
        entry,
        kernel_end,
        initrd,
    })
}
