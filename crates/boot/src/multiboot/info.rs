//! The Multiboot information structure (Multiboot Specification 0.6.96,
//! section 3.3) and what it points to, encoded for a given guest address.

use crate::e820::{E820Entry, E820_RAM};

/// The value in EAX at entry: "loaded by a Multiboot-compliant boot loader".
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;

/// `flags` bits of the information structure this loader sets.
pub const INFO_MEMORY: u32 = 1 << 0;
pub const INFO_CMDLINE: u32 = 1 << 2;
pub const INFO_MODS: u32 = 1 << 3;
pub const INFO_MMAP: u32 = 1 << 6;
pub const INFO_LOADER_NAME: u32 = 1 << 9;

/// Size of the information structure (up to and including the framebuffer fields).
pub const INFO_SIZE: usize = 116;
/// Size of one memory-map entry, not counting its leading `size` field.
pub const MMAP_ENTRY_SIZE: u32 = 20;
/// Size of one module-list entry.
pub const MODULE_ENTRY_SIZE: usize = 16;

// Field offsets in the information structure.
const FLAGS: usize = 0;
const MEM_LOWER: usize = 4;
const MEM_UPPER: usize = 8;
const CMDLINE: usize = 16;
const MODS_COUNT: usize = 20;
const MODS_ADDR: usize = 24;
const MMAP_LENGTH: usize = 44;
const MMAP_ADDR: usize = 48;
const BOOT_LOADER_NAME: usize = 64;

/// A module as the kernel sees it: bytes `start..end` and a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub start: u32,
    pub end: u32,
    pub string: Vec<u8>,
}

/// What goes into the information structure.
#[derive(Debug, Clone)]
pub struct BootInformation<'a> {
    /// KiB of RAM from address 0 (at most 640).
    pub mem_lower: u32,
    /// KiB of RAM from 1 MiB up to the first hole.
    pub mem_upper: u32,
    /// Without the terminating NUL.
    pub cmdline: &'a [u8],
    pub modules: &'a [Module],
    pub mmap: &'a [E820Entry],
    pub loader_name: &'a str,
}

impl BootInformation<'_> {
    /// `mem_lower`/`mem_upper` from a memory map, as a BIOS would report them: the
    /// RAM entry starting at 0 (capped at 640 KiB) and the one starting at 1 MiB.
    pub fn memory_sizes(map: &[E820Entry]) -> (u32, u32) {
        let kib_at = |addr: u64| {
            map.iter()
                .find(|e| e.kind == E820_RAM && e.addr == addr)
                .map_or(0, |e| (e.size >> 10).min(u32::MAX as u64) as u32)
        };
        (kib_at(0).min(640), kib_at(0x10_0000))
    }

    /// The structure followed by the memory map, the module list and the strings,
    /// as bytes to place at guest-physical `base` (the structure's address).
    pub fn encode(&self, base: u32) -> Vec<u8> {
        let mut out = vec![0u8; INFO_SIZE];
        let put = |out: &mut Vec<u8>, at: usize, v: u32| {
            out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        let here = |out: &Vec<u8>| base + out.len() as u32;

        put(
            &mut out,
            FLAGS,
            INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MMAP | INFO_LOADER_NAME,
        );
        put(&mut out, MEM_LOWER, self.mem_lower);
        put(&mut out, MEM_UPPER, self.mem_upper);

        // Memory map: each entry is `size` (20) then base, length, type.
        let mmap_addr = here(&out);
        for e in self.mmap {
            out.extend(MMAP_ENTRY_SIZE.to_le_bytes());
            out.extend(e.addr.to_le_bytes());
            out.extend(e.size.to_le_bytes());
            out.extend(e.kind.to_le_bytes());
        }
        let mmap_length = here(&out) - mmap_addr;
        put(&mut out, MMAP_ADDR, mmap_addr);
        put(&mut out, MMAP_LENGTH, mmap_length);

        // Module list; the strings follow, so their addresses are known once the
        // list's size is.
        let mods_addr = here(&out);
        let list_at = out.len();
        out.resize(list_at + MODULE_ENTRY_SIZE * self.modules.len(), 0);
        for (i, m) in self.modules.iter().enumerate() {
            let string = here(&out);
            out.extend_from_slice(&m.string);
            out.push(0);
            let e = list_at + MODULE_ENTRY_SIZE * i;
            put(&mut out, e, m.start);
            put(&mut out, e + 4, m.end);
            put(&mut out, e + 8, string);
        }
        put(&mut out, MODS_COUNT, self.modules.len() as u32);
        put(&mut out, MODS_ADDR, mods_addr);

        let cmdline = here(&out);
        out.extend_from_slice(self.cmdline);
        out.push(0);
        put(&mut out, CMDLINE, cmdline);

        let name = here(&out);
        out.extend_from_slice(self.loader_name.as_bytes());
        out.push(0);
        put(&mut out, BOOT_LOADER_NAME, name);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e820::E820_RESERVED;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn cstr(b: &[u8], base: u32, addr: u32) -> &[u8] {
        let s = &b[(addr - base) as usize..];
        &s[..s.iter().position(|&c| c == 0).unwrap()]
    }

    #[test]
    fn encodes_every_field_it_flags() {
        let map = [
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM,
            },
            E820Entry {
                addr: 0x9fc00,
                size: 0x60400,
                kind: E820_RESERVED,
            },
            E820Entry {
                addr: 0x10_0000,
                size: 0x7f0_0000,
                kind: E820_RAM,
            },
        ];
        let (lower, upper) = BootInformation::memory_sizes(&map);
        assert_eq!((lower, upper), (639, 130048));
        let mods = [
            Module {
                start: 0x20_0000,
                end: 0x20_0005,
                string: b"a.bin".to_vec(),
            },
            Module {
                start: 0x20_1000,
                end: 0x20_1000,
                string: b"empty".to_vec(),
            },
        ];
        let base = 0x30_0000;
        let b = BootInformation {
            mem_lower: lower,
            mem_upper: upper,
            cmdline: b"/k.elf x=1",
            modules: &mods,
            mmap: &map,
            loader_name: "hakobune",
        }
        .encode(base);
        assert_eq!(u32_at(&b, 0), 0x24d);
        assert_eq!((u32_at(&b, 4), u32_at(&b, 8)), (639, 130048));
        assert_eq!(cstr(&b, base, u32_at(&b, 16)), b"/k.elf x=1");
        assert_eq!(cstr(&b, base, u32_at(&b, 64)), b"hakobune");
        assert_eq!(u32_at(&b, 20), 2);
        let list = (u32_at(&b, 24) - base) as usize;
        assert_eq!(u32_at(&b, list), 0x20_0000);
        assert_eq!(u32_at(&b, list + 4), 0x20_0005);
        assert_eq!(cstr(&b, base, u32_at(&b, list + 8)), b"a.bin");
        assert_eq!(cstr(&b, base, u32_at(&b, list + 24)), b"empty");
        assert_eq!(u32_at(&b, 44), 3 * 24);
        let mm = (u32_at(&b, 48) - base) as usize;
        assert_eq!(u32_at(&b, mm), 20);
        assert_eq!(u32_at(&b, mm + 24 + 4), 0x9fc00);
        assert_eq!(u32_at(&b, mm + 48 + 12), 0x7f0_0000);
        assert_eq!(u32_at(&b, mm + 48 + 20), E820_RAM);
    }
}
