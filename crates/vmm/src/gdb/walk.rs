//! Guest-virtual to guest-physical translation through a vCPU's page tables, for
//! the debugger: every x86 paging mode (none, 32-bit, PAE, 4- and 5-level), read
//! from guest memory without touching accessed or dirty bits.

use vm_memory::{Bytes, GuestAddress};
use vmm_types::SpecialRegs;

use accel::GuestMemory;

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1;
const PS: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// One table entry read on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// 5 (PML5) down to 1 (PT), or 3..1 for PAE, 2..1 for 32-bit paging.
    pub level: u32,
    pub entry_addr: u64,
    pub entry: u64,
}

/// A walk: the entries read and where it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub steps: Vec<Step>,
    /// The physical address, or why there is none.
    pub phys: Result<u64, String>,
}

fn read(mem: &GuestMemory, addr: u64, wide: bool) -> Result<u64, String> {
    if wide {
        mem.read_obj::<u64>(GuestAddress(addr))
    } else {
        mem.read_obj::<u32>(GuestAddress(addr)).map(u64::from)
    }
    .map_err(|_| format!("page table entry at {addr:#x} is outside guest RAM"))
}

/// Translates `lin` as the vCPU with special registers `s` would.
pub fn walk(mem: &GuestMemory, s: &SpecialRegs, lin: u64) -> Walk {
    let mut steps = Vec::new();
    let phys = walk_into(mem, s, lin, &mut steps);
    Walk { steps, phys }
}

fn walk_into(
    mem: &GuestMemory,
    s: &SpecialRegs,
    lin: u64,
    steps: &mut Vec<Step>,
) -> Result<u64, String> {
    if s.cr0 & CR0_PG == 0 {
        return Ok(lin & 0xffff_ffff);
    }
    let unmapped = |level| format!("{lin:#x} is not mapped (level {level} entry not present)");
    if s.cr4 & CR4_PAE == 0 {
        // 32-bit paging: two levels of 1024 4-byte entries.
        let lin = lin & 0xffff_ffff;
        let pde_addr = (s.cr3 & 0xffff_f000) + ((lin >> 22) & 0x3ff) * 4;
        let pde = read(mem, pde_addr, false)?;
        steps.push(Step {
            level: 2,
            entry_addr: pde_addr,
            entry: pde,
        });
        if pde & PRESENT == 0 {
            return Err(unmapped(2));
        }
        if pde & PS != 0 && s.cr4 & CR4_PSE != 0 {
            // 4 MiB page: bits 31:22 from the PDE, 39:32 from bits 20:13.
            let hi = ((pde >> 13) & 0xff) << 32;
            return Ok(hi | (pde & 0xffc0_0000) | (lin & 0x3f_ffff));
        }
        let pte_addr = (pde & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4;
        let pte = read(mem, pte_addr, false)?;
        steps.push(Step {
            level: 1,
            entry_addr: pte_addr,
            entry: pte,
        });
        if pte & PRESENT == 0 {
            return Err(unmapped(1));
        }
        return Ok((pte & 0xffff_f000) | (lin & 0xfff));
    }
    let (mut table, top) = if s.efer & EFER_LMA != 0 {
        let levels = if s.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        (s.cr3 & ADDR_MASK, levels)
    } else {
        // PAE: the 4 PDPTEs at CR3 (32-byte aligned).
        let lin = lin & 0xffff_ffff;
        let pdpte_addr = (s.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
        let pdpte = read(mem, pdpte_addr, true)?;
        steps.push(Step {
            level: 3,
            entry_addr: pdpte_addr,
            entry: pdpte,
        });
        if pdpte & PRESENT == 0 {
            return Err(unmapped(3));
        }
        (pdpte & ADDR_MASK, 2)
    };
    for level in (1..=top).rev() {
        let shift = 12 + 9 * (level - 1);
        let entry_addr = table + ((lin >> shift) & 0x1ff) * 8;
        let entry = read(mem, entry_addr, true)?;
        steps.push(Step {
            level,
            entry_addr,
            entry,
        });
        if entry & PRESENT == 0 {
            return Err(unmapped(level));
        }
        if level == 1 || (level <= 3 && entry & PS != 0) {
            let size = 1u64 << shift;
            return Ok((entry & ADDR_MASK & !(size - 1)) | (lin & (size - 1)));
        }
        table = entry & ADDR_MASK;
    }
    unreachable!("the loop returns at level 1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 24)]).unwrap()
    }

    #[test]
    fn four_level_with_4k_and_2m_pages() {
        let m = mem();
        // PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
        let lin: u64 = 0xffff_8000_0040_1234;
        let i4 = (lin >> 39) & 0x1ff;
        let i3 = (lin >> 30) & 0x1ff;
        let i2 = (lin >> 21) & 0x1ff;
        let i1 = (lin >> 12) & 0x1ff;
        m.write_obj(0x2003u64, GuestAddress(0x1000 + i4 * 8))
            .unwrap();
        m.write_obj(0x3003u64, GuestAddress(0x2000 + i3 * 8))
            .unwrap();
        m.write_obj(0x4003u64, GuestAddress(0x3000 + i2 * 8))
            .unwrap();
        m.write_obj(0x7_7003u64, GuestAddress(0x4000 + i1 * 8))
            .unwrap();
        // A 2 MiB page for the next 2 MiB region.
        m.write_obj(0x60_0083u64, GuestAddress(0x3000 + (i2 + 1) * 8))
            .unwrap();
        let s = SpecialRegs {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8),
            ..Default::default()
        };
        let w = walk(&m, &s, lin);
        assert_eq!(w.phys, Ok(0x7_7234));
        assert_eq!(w.steps.len(), 4);
        assert_eq!(walk(&m, &s, lin + (1 << 21)).phys, Ok(0x60_1234));
        let miss = walk(&m, &s, lin + (2 << 21)).phys.unwrap_err();
        assert!(miss.contains("not mapped (level 2"), "{miss}");
    }

    #[test]
    fn paging_off_and_32_bit_paging() {
        let m = mem();
        let off = SpecialRegs::default();
        assert_eq!(walk(&m, &off, 0x1234_5678).phys, Ok(0x1234_5678));
        // 32-bit: PD at 0x1000; a 4 MiB page and a 4 KiB one.
        m.write_obj(0x0040_0083u32, GuestAddress(0x1000 + 4))
            .unwrap();
        m.write_obj(0x0000_2003u32, GuestAddress(0x1000 + 2 * 4))
            .unwrap();
        m.write_obj(0x0005_0003u32, GuestAddress(0x2000 + 3 * 4))
            .unwrap();
        let s = SpecialRegs {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: CR4_PSE,
            ..Default::default()
        };
        assert_eq!(walk(&m, &s, 0x0040_0010).phys, Ok(0x0040_0010));
        assert_eq!(walk(&m, &s, 0x0080_3abc).phys, Ok(0x5_0abc));
        assert!(walk(&m, &s, 0x00c0_0000).phys.is_err());
    }
}
