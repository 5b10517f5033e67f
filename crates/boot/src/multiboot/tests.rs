//! Loading synthetic Multiboot images into guest memory.

use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::guest_ram_ranges;

const MIB: u64 = 1 << 20;

fn memory(size: u64) -> GuestMemory {
    GuestMemory::from_ranges(&guest_ram_ranges(size)).unwrap()
}

/// A Multiboot header with `flags`, a correct checksum plus `fix`, and `extra` words.
fn mb_header(flags: u32, fix: u32, extra: &[u32]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(header::HEADER_MAGIC.to_le_bytes());
    v.extend(flags.to_le_bytes());
    let sum = 0u32
        .wrapping_sub(header::HEADER_MAGIC)
        .wrapping_sub(flags)
        .wrapping_add(fix);
    v.extend(sum.to_le_bytes());
    for w in extra {
        v.extend(w.to_le_bytes());
    }
    v
}

struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Files(tempfile::tempdir().unwrap())
    }
    fn put(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

fn read_u32(mem: &GuestMemory, addr: u64) -> u32 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

fn read_cstr(mem: &GuestMemory, addr: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0.. {
        let b: u8 = mem.read_obj(GuestAddress(addr + i)).unwrap();
        if b == 0 {
            break;
        }
        v.push(b);
    }
    v
}

/// An ELF32 kernel at 1 MiB: header, then code bytes, then 0x3000 bytes of bss.
fn elf32_kernel() -> Vec<u8> {
    let mut seg = mb_header(3, 0, &[]);
    seg.extend(b"CODE");
    elf::build(
        false,
        0x10_000c,
        &[(0x10_0000, 0x10_0000, &seg, seg.len() as u64 + 0x3000)],
    )
}

fn load(
    mem: &GuestMemory,
    kernel: &Path,
    modules: Vec<PathBuf>,
) -> Result<MultibootBoot, MultibootError> {
    let mut cfg = MultibootConfig::new(kernel.to_owned(), "a=1 b");
    cfg.modules = modules;
    cfg.reserved = vec![(0xb000_0000, MIB)];
    load_multiboot(mem, &cfg)
}

#[test]
fn elf32_kernel_with_modules_and_information() {
    let f = Files::new();
    let kernel = f.put("k.elf", &elf32_kernel());
    assert!(probe(&kernel).unwrap().is_some());
    let m1 = f.put("one.txt", b"first module");
    let m2 = f.put("two.txt", b"");
    let mem = memory(128 * MIB);
    // Garbage where the bss goes: the loader must zero it.
    mem.write_slice(&[0xaa; 16], GuestAddress(0x10_0010))
        .unwrap();
    let b = load(&mem, &kernel, vec![m1.clone(), m2.clone()]).unwrap();
    assert_eq!(b.elf_class, Some(32));
    assert_eq!(b.entry, 0x10_000c);
    let mut code = [0u8; 4];
    mem.read_slice(&mut code, GuestAddress(0x10_000c)).unwrap();
    assert_eq!(&code, b"CODE");
    let bss: [u8; 16] = mem.read_obj(GuestAddress(0x10_0010)).unwrap();
    assert_eq!(bss, [0; 16]);

    let s = &b.cpu;
    assert_eq!(s.regs.rax, 0x2bad_b002);
    assert_eq!(s.regs.rbx, b.info_addr as u64);
    assert_eq!(s.regs.rip, 0x10_000c);
    assert_eq!(s.sregs.cr0 & 0x8000_0001, 1, "PE on, PG off");
    // The GDT in memory matches the segment registers.
    let gdt = s.sregs.gdt.base;
    let cs: u64 = mem
        .read_obj(GuestAddress(gdt + s.sregs.cs.selector as u64))
        .unwrap();
    assert_eq!(cs, s.sregs.cs.to_gdt_entry());

    let mbi = b.info_addr as u64;
    assert!(mbi >= b.kernel_end);
    assert_eq!(read_u32(&mem, mbi), 0x24d, "mem, cmdline, mods, mmap, name");
    assert_eq!(read_u32(&mem, mbi + 4), 639);
    assert_eq!(read_u32(&mem, mbi + 8), 127 * 1024);
    let mut want = kernel.to_str().unwrap().as_bytes().to_vec();
    want.extend(b" a=1 b");
    assert_eq!(read_cstr(&mem, read_u32(&mem, mbi + 16) as u64), want);
    assert_eq!(
        read_cstr(&mem, read_u32(&mem, mbi + 64) as u64),
        b"hakobune"
    );

    assert_eq!(read_u32(&mem, mbi + 20), 2);
    let mods = read_u32(&mem, mbi + 24) as u64;
    let (s1, e1) = (read_u32(&mem, mods) as u64, read_u32(&mem, mods + 4) as u64);
    assert_eq!(s1 % 0x1000, 0);
    assert!(s1 >= b.kernel_end);
    assert_eq!(e1 - s1, 12);
    let mut data = [0u8; 12];
    mem.read_slice(&mut data, GuestAddress(s1)).unwrap();
    assert_eq!(&data, b"first module");
    assert_eq!(
        read_cstr(&mem, read_u32(&mem, mods + 8) as u64),
        m1.to_str().unwrap().as_bytes()
    );
    let (s2, e2) = (
        read_u32(&mem, mods + 16) as u64,
        read_u32(&mem, mods + 20) as u64,
    );
    assert_eq!((s2 % 0x1000, e2 - s2), (0, 0));
    assert!(s2 > s1);
    assert_eq!(b.modules, vec![(s1, e1), (s2, e2)]);

    // The memory map: the e820 map with the ECAM reservation.
    let len = read_u32(&mem, mbi + 44) as u64;
    let at = read_u32(&mem, mbi + 48) as u64;
    let mut entries = Vec::new();
    let mut p = at;
    while p < at + len {
        let size = read_u32(&mem, p) as u64;
        let base: u64 = mem.read_obj(GuestAddress(p + 4)).unwrap();
        let length: u64 = mem.read_obj(GuestAddress(p + 12)).unwrap();
        entries.push((base, length, read_u32(&mem, p + 20)));
        p += size + 4;
    }
    assert_eq!(
        entries,
        vec![
            (0, 0x9fc00, 1),
            (0x9fc00, 0x60400, 2),
            (MIB, 127 * MIB, 1),
            (0xb000_0000, MIB, 2),
        ]
    );
}

#[test]
fn elf64_higher_half_kernel_enters_at_the_physical_address() {
    let f = Files::new();
    let mut seg = mb_header(0, 0, &[]);
    seg.extend([0x90; 8]);
    let img = elf::build(
        true,
        0xffff_ffff_8020_0004,
        &[(0x20_0000, 0xffff_ffff_8020_0000, &seg, 0x1000)],
    );
    let kernel = f.put("k64.elf", &img);
    let mem = memory(64 * MIB);
    let b = load(&mem, &kernel, vec![]).unwrap();
    assert_eq!(b.elf_class, Some(64));
    assert_eq!(b.entry, 0x20_0004);
    assert_eq!(b.kernel_end, 0x20_1000);
    assert_eq!(read_u32(&mem, b.info_addr as u64 + 20), 0, "no modules");
}

#[test]
fn address_fields_place_a_flat_binary() {
    let f = Files::new();
    // A flat image loaded at 2 MiB: 16 bytes of code, the header at offset 16,
    // data to offset 0x100, bss to 0x2000.
    let mut file = vec![0xf4u8; 16];
    let base = 0x20_0000u32;
    file.extend(mb_header(
        1 << 16,
        0,
        &[base + 16, base, base + 0x100, base + 0x2000, base + 4],
    ));
    file.resize(0x180, 0x55);
    let kernel = f.put("flat.bin", &file);
    let mem = memory(64 * MIB);
    mem.write_slice(&[0xaa; 4], GuestAddress(base as u64 + 0x100))
        .unwrap();
    let b = load(&mem, &kernel, vec![]).unwrap();
    assert_eq!(b.elf_class, None);
    assert_eq!(b.entry, base + 4);
    assert_eq!(b.kernel_end, base as u64 + 0x2000);
    let mut got = [0u8; 4];
    mem.read_slice(&mut got, GuestAddress(base as u64 + 0xfc))
        .unwrap();
    assert_eq!(got, [0x55; 4], "loaded to load_end_addr");
    mem.read_slice(&mut got, GuestAddress(base as u64 + 0x100))
        .unwrap();
    assert_eq!(got, [0; 4], "file bytes past load_end_addr are bss, zeroed");

    // load_end_addr past the end of the file.
    let mut short = file[..0x40].to_vec();
    short[0] = 0xf4;
    let kernel = f.put("short.bin", &short);
    let e = load(&mem, &kernel, vec![]).unwrap_err();
    assert!(e.to_string().contains("but the file has 0x40 bytes"), "{e}");
    // header_addr below load_addr.
    let mut bad = vec![0u8; 16];
    bad.extend(mb_header(1 << 16, 0, &[base, base + 16, 0, 0, base + 16]));
    let kernel = f.put("bad.bin", &bad);
    let e = load(&mem, &kernel, vec![]).unwrap_err();
    assert!(e.to_string().contains("is below load_addr"), "{e}");
}

#[test]
fn bad_checksum_is_a_clear_error() {
    let f = Files::new();
    let mut seg = mb_header(3, 1, &[]);
    seg.extend(b"CODE");
    let img = elf::build(false, 0x10_0000, &[(0x10_0000, 0x10_0000, &seg, 0x100)]);
    let kernel = f.put("bad.elf", &img);
    let e = probe(&kernel).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad.elf") && msg.contains("bad checksum"),
        "{msg}"
    );
    let mem = memory(64 * MIB);
    assert!(matches!(
        load(&mem, &kernel, vec![]),
        Err(MultibootError::Header {
            source: HeaderError::BadChecksum { .. },
            ..
        })
    ));
}

#[test]
fn segments_outside_ram_are_clear_errors() {
    let f = Files::new();
    let mem = memory(64 * MIB);
    let mut seg = mb_header(3, 0, &[]);
    seg.extend(b"CODE");
    for (paddr, memsz) in [
        (63 * MIB, 2 * MIB),   // runs past the end of RAM
        (0xa0000, 0x1000),     // the legacy BIOS area, reserved
        (0xfec0_0000, 0x1000), // the IOAPIC, no RAM
        (0xffff_ff00, 0x1000), // wraps past 4 GiB
    ] {
        let img = elf::build(false, paddr, &[(paddr, paddr, &seg, memsz)]);
        let kernel = f.put("out.elf", &img);
        let e = load(&mem, &kernel, vec![]).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, MultibootError::OutsideRam { .. }) && msg.contains("outside guest RAM"),
            "{paddr:#x}: {msg}"
        );
        assert!(msg.contains("0x0..0x9fc00, 0x100000..0x4000000"), "{msg}");
    }
    // ELF64 segments above 4 GiB cannot be entered in 32-bit mode.
    let big = memory(5 << 30);
    let img = elf::build(true, 1 << 32, &[(1 << 32, 1 << 32, &seg, 0x1000)]);
    let kernel = f.put("high.elf", &img);
    assert!(matches!(
        load(&big, &kernel, vec![]),
        Err(MultibootError::OutsideRam { .. })
    ));
}

#[test]
fn truncated_and_broken_elf_files_are_clear_errors() {
    let f = Files::new();
    let mem = memory(64 * MIB);
    let full = elf32_kernel();
    // Cut inside the program headers and inside the segment data (the header,
    // at offset 84, survives both cuts... or not, for the first).
    for cut in [60, 90, full.len() - 2] {
        let kernel = f.put("cut.elf", &full[..cut]);
        match load(&mem, &kernel, vec![]) {
            Err(MultibootError::Elf { source, .. }) => {
                assert!(
                    source.to_string().contains("past the end of the file"),
                    "{cut}: {source}"
                )
            }
            Err(MultibootError::NotMultiboot { .. }) => assert!(cut < 96, "{cut}"),
            other => panic!("{cut}: {other:?}"),
        }
    }
    // Not an ELF file at all, though the header says it is one (bit 16 clear).
    let mut raw = mb_header(3, 0, &[]);
    raw.extend([0u8; 64]);
    let kernel = f.put("raw.bin", &raw);
    let e = load(&mem, &kernel, vec![]).unwrap_err();
    assert!(
        e.to_string()
            .contains("bit 16, address fields, is clear): not an ELF file"),
        "{e}"
    );
    // An entry point outside every segment.
    let mut seg = mb_header(3, 0, &[]);
    seg.extend(b"CODE");
    let img = elf::build(false, 0x50_0000, &[(0x10_0000, 0x10_0000, &seg, 0x100)]);
    let kernel = f.put("entry.elf", &img);
    assert!(matches!(
        load(&mem, &kernel, vec![]),
        Err(MultibootError::EntryOutsideImage {
            entry: 0x50_0000,
            ..
        })
    ));
}

#[test]
fn modules_that_do_not_fit_are_a_clear_error() {
    let f = Files::new();
    let kernel = f.put("k.elf", &elf32_kernel());
    let big = f.put("big.bin", &vec![1u8; 20 << 20]);
    let mem = memory(16 * MIB);
    let e = load(&mem, &kernel, vec![big]).unwrap_err();
    assert!(matches!(e, MultibootError::NoRoom { .. }), "{e}");
    assert!(e.to_string().contains("give the guest more memory"), "{e}");
}

#[test]
fn plain_elf_files_are_not_multiboot() {
    let f = Files::new();
    let img = elf::build(true, 0x10_0000, &[(0x10_0000, 0x10_0000, b"\x90\x90", 2)]);
    assert_eq!(probe(&f.put("linux.elf", &img)).unwrap(), None);
    let e = probe(Path::new("/no/such/kernel")).unwrap_err();
    assert!(e.to_string().contains("/no/such/kernel"), "{e}");
}
