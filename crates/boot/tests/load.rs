//! Loading kernels into guest memory: formats, boot_params, errors.

use std::io::Write;
use std::path::PathBuf;

use boot::layout::*;
use boot::linux::KernelFormat;
use boot::{guest_ram_ranges, load_linux, BootError, GuestMemory, LinuxBootConfig};
use vm_memory::{Bytes, GuestAddress};

fn mem(size: u64) -> GuestMemory {
    GuestMemory::from_ranges(&guest_ram_ranges(size)).unwrap()
}

/// A minimal ELF64 executable: one PT_LOAD segment of `code` at `paddr`, entry at it.
fn tiny_elf(paddr: u64, code: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x78];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&0x40u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&0x38u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = 0x40;
    f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    f[ph + 8..ph + 16].copy_from_slice(&0x78u64.to_le_bytes()); // p_offset
    f[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr
    f[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
    f[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    f[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    f[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    f.extend_from_slice(code);
    f
}

fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn cfg(kernel: PathBuf, initrd: Option<PathBuf>, cmdline: &str) -> LinuxBootConfig {
    LinuxBootConfig {
        kernel,
        initrd,
        cmdline: cmdline.into(),
        acpi_rsdp: None,
        reserved: vec![],
    }
}

#[test]
fn elf_kernel_is_loaded_by_program_headers_with_boot_params() {
    let code = [0xf4u8, 0xeb, 0xfd]; // hlt; jmp $-1
    let k = file(&tiny_elf(0x20_0000, &code));
    let rd = file(&[0x5a; 5000]);
    let m = mem(64 << 20);
    let info = load_linux(
        &m,
        &cfg(k.path().into(), Some(rd.path().into()), "console=ttyS0 x=1"),
    )
    .unwrap();
    assert_eq!(info.format, KernelFormat::Elf);
    assert_eq!(info.entry, 0x20_0000);
    assert_eq!(info.cpu.regs.rip, 0x20_0000);
    assert_eq!(info.cpu.regs.rsi, ZERO_PAGE_ADDR);
    let mut got = [0u8; 3];
    m.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
    assert_eq!(got, code);
    // boot_params: cmdline pointer (0x228), loader type (0x210), initrd (0x218/0x21c), e820 (0x1e8).
    let zp = ZERO_PAGE_ADDR;
    let cmd_ptr: u32 = m.read_obj(GuestAddress(zp + 0x228)).unwrap();
    assert_eq!(cmd_ptr as u64, CMDLINE_ADDR);
    let mut cl = [0u8; 18];
    m.read_slice(&mut cl, GuestAddress(CMDLINE_ADDR)).unwrap();
    assert_eq!(&cl, b"console=ttyS0 x=1\0");
    assert_eq!(m.read_obj::<u8>(GuestAddress(zp + 0x210)).unwrap(), 0xff);
    let (ia, is) = info.initrd.unwrap();
    assert_eq!(
        m.read_obj::<u32>(GuestAddress(zp + 0x218)).unwrap() as u64,
        ia
    );
    assert_eq!(
        m.read_obj::<u32>(GuestAddress(zp + 0x21c)).unwrap() as u64,
        is
    );
    assert_eq!(ia % 4096, 0);
    assert!(ia + is <= 64 << 20);
    assert_eq!(m.read_obj::<u8>(GuestAddress(ia + 4999)).unwrap(), 0x5a);
    assert_eq!(m.read_obj::<u8>(GuestAddress(zp + 0x1e8)).unwrap(), 3);
    // The identity map translates the entry point: PML4[0] -> PDPT -> PD[1] maps 2 MiB.
    let pd1: u64 = m.read_obj(GuestAddress(PD_ADDR + 8)).unwrap();
    assert_eq!(pd1 & !0xfff, 0x20_0000);
    assert_eq!(pd1 & 0x81, 0x81);
}

#[test]
fn bad_kernels_get_clear_errors() {
    let m = mem(32 << 20);
    let junk = file(b"this is not a kernel at all, just some text");
    let e = load_linux(&m, &cfg(junk.path().into(), None, "")).unwrap_err();
    assert!(matches!(e, BootError::UnknownFormat { .. }), "{e}");
    assert!(e.to_string().contains("unsupported kernel format"));

    let missing = load_linux(&m, &cfg("/nonexistent/vmlinuz".into(), None, "")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/vmlinuz"),
        "{missing}"
    );

    // Truncated ELF: header promises a program header table that is not there.
    let mut elf = tiny_elf(0x20_0000, &[0x90; 16]);
    elf.truncate(0x50);
    let t = file(&elf);
    let e = load_linux(&m, &cfg(t.path().into(), None, "")).unwrap_err();
    assert!(matches!(e, BootError::Malformed { .. }), "{e}");

    let k = file(&tiny_elf(0x20_0000, &[0xf4]));
    let long = "x".repeat(CMDLINE_MAX + 1);
    let e = load_linux(&m, &cfg(k.path().into(), None, &long)).unwrap_err();
    assert!(matches!(e, BootError::CmdlineTooLong { .. }), "{e}");

    let big = file(&vec![0u8; 40 << 20]);
    let e = load_linux(&m, &cfg(k.path().into(), Some(big.path().into()), "")).unwrap_err();
    assert!(matches!(e, BootError::InitrdTooLarge { .. }), "{e}");
}

/// Debian's cloud kernel, when the default guest has been fetched (scripts/default-guest.sh).
fn debian_kernel() -> Option<PathBuf> {
    let dir = std::env::var_os("HAKO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hako")
        })
        .join("debian");
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let boot = e.path().join("boot");
        if let Ok(files) = std::fs::read_dir(&boot) {
            for f in files.flatten() {
                if f.file_name().to_string_lossy().starts_with("vmlinuz-") {
                    return Some(f.path());
                }
            }
        }
    }
    None
}

#[test]
fn debian_bzimage_gets_its_64bit_entry_and_setup_header() {
    let Some(k) = debian_kernel() else {
        eprintln!("skipped: Debian kernel not cached (run scripts/default-guest.sh)");
        return;
    };
    let m = mem(256 << 20);
    let info = load_linux(&m, &cfg(k, None, "console=ttyS0")).unwrap();
    assert_eq!(info.format, KernelFormat::BzImage);
    assert_eq!(info.entry, HIGH_MEMORY_START + 0x200);
    let zp = ZERO_PAGE_ADDR;
    assert_eq!(
        m.read_obj::<u32>(GuestAddress(zp + 0x202)).unwrap(),
        0x5372_6448,
        "HdrS copied"
    );
    assert_eq!(m.read_obj::<u8>(GuestAddress(zp + 0x210)).unwrap(), 0xff);
    // The protected-mode kernel starts where its setup header says it was linked to run.
    let startup: [u8; 2] = m.read_obj(GuestAddress(info.entry)).unwrap();
    assert_ne!(startup, [0, 0]);
}
