//! The Multiboot test kernels build with the host's gcc into ELF32 (and, converted, ELF64) files with a
//! valid Multiboot header in their first 8 KiB.

use test_guests::multiboot::{build, Placement, KERNELS};

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

#[test]
fn multiboot_kernels_are_elf_files_with_a_valid_header() {
    for name in KERNELS {
        for (placement, flags) in [
            (Placement::ProgramHeaders, 0x3),
            (Placement::AddressFields, 0x1_0003),
            (Placement::Elf64, 0x3),
        ] {
            let path = build(name, placement).unwrap_or_else(|e| panic!("{name}: {e}"));
            let b = std::fs::read(&path).unwrap();
            if placement == Placement::Elf64 {
                // ELFCLASS64, little-endian, EM_X86_64.
                assert_eq!(&b[..6], b"\x7fELF\x02\x01", "{name}");
                assert_eq!(u16::from_le_bytes([b[18], b[19]]), 62, "{name}: EM_X86_64");
            } else {
                // ELFCLASS32, little-endian, EM_386: what QEMU's -kernel requires.
                assert_eq!(&b[..6], b"\x7fELF\x01\x01", "{name}");
                assert_eq!(u16::from_le_bytes([b[18], b[19]]), 3, "{name}: EM_386");
            }
            let at = (0..8192 - 12)
                .step_by(4)
                .find(|&i| u32_at(&b, i) == 0x1bad_b002)
                .unwrap_or_else(|| panic!("{name}: no Multiboot header in the first 8 KiB"));
            assert_eq!(u32_at(&b, at + 4), flags, "{name} {placement:?}");
            let sum = 0x1bad_b002u32
                .wrapping_add(u32_at(&b, at + 4))
                .wrapping_add(u32_at(&b, at + 8));
            assert_eq!(sum, 0, "{name}: checksum");
            if placement == Placement::AddressFields {
                let (header_addr, load_addr, load_end, bss_end, entry) = (
                    u32_at(&b, at + 12),
                    u32_at(&b, at + 16),
                    u32_at(&b, at + 20),
                    u32_at(&b, at + 24),
                    u32_at(&b, at + 28),
                );
                assert_eq!(load_addr, 0x10_0000, "{name}");
                assert!(header_addr >= load_addr && load_end > header_addr, "{name}");
                assert!(
                    bss_end >= load_end && entry > header_addr && entry < load_end,
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn unknown_multiboot_kernels_are_errors() {
    let e = build("no-such-kernel", Placement::ProgramHeaders).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}
