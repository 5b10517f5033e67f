//! The state the 64-bit boot protocol expects at the kernel's entry: long mode,
//! paging with the low 4 GiB identity-mapped, a flat GDT with `__BOOT_CS` = 0x10
//! and `__BOOT_DS` = 0x18, interrupts off, RSI pointing at boot_params.

use vm_memory::{Bytes, GuestAddress};
use vmm_types::bits::*;
use vmm_types::{msr, CpuState, DescriptorTable, Regs, Segment, SpecialRegs};

use crate::layout::*;
use crate::GuestMemory;

const PTE_PRESENT: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_PS: u64 = 1 << 7;

pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
pub const BOOT_TSS: u16 = 0x20;

/// Writes the GDT, the (empty) IDT and the identity-mapping page tables.
pub fn write_tables(mem: &GuestMemory) -> Result<(), vm_memory::GuestMemoryError> {
    let gdt = gdt_entries();
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    // PML4[0] -> PDPT; PDPT[0..4] -> PD pages; each PD maps 1 GiB with 2 MiB pages.
    mem.write_obj(PDPT_ADDR | PTE_PRESENT | PTE_RW, GuestAddress(PML4_ADDR))?;
    let pds = IDENTITY_MAP_SIZE >> 30;
    for i in 0..pds {
        let pd = PD_ADDR + i * 0x1000;
        mem.write_obj(pd | PTE_PRESENT | PTE_RW, GuestAddress(PDPT_ADDR + i * 8))?;
        for j in 0..512u64 {
            let phys = (i << 30) | (j << 21);
            mem.write_obj(
                phys | PTE_PRESENT | PTE_RW | PTE_PS,
                GuestAddress(pd + j * 8),
            )?;
        }
    }
    Ok(())
}

fn tss() -> Segment {
    Segment::tss(BOOT_TSS, 0, 0x67)
}

/// GDT: null, null, code64 (0x10), data (0x18), 64-bit TSS (0x20, 16 bytes).
pub fn gdt_entries() -> [u64; 6] {
    [
        0,
        0,
        Segment::code64(BOOT_CS).to_gdt_entry(),
        Segment::data(BOOT_DS).to_gdt_entry(),
        tss().to_gdt_entry(),
        0, // upper half of the TSS descriptor (base bits 32..63)
    ]
}

/// The boot CPU's state at the kernel's 64-bit entry point.
pub fn entry_state(entry: u64, boot_params: u64) -> CpuState {
    let data = Segment::data(BOOT_DS);
    let sregs = SpecialRegs {
        cs: Segment::code64(BOOT_CS),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: tss(),
        ldt: Segment {
            unusable: true,
            type_: 2,
            ..Default::default()
        },
        gdt: DescriptorTable {
            base: GDT_ADDR,
            limit: (gdt_entries().len() * 8 - 1) as u16,
        },
        idt: DescriptorTable {
            base: IDT_ADDR,
            limit: 0,
        },
        cr0: CR0_PE | CR0_PG | CR0_ET | CR0_NE,
        cr2: 0,
        cr3: PML4_ADDR,
        cr4: CR4_PAE,
        cr8: 0,
        efer: EFER_LME | EFER_LMA,
        apic_base: 0xfee0_0000 | (1 << 11) | (1 << 8),
    };
    let regs = Regs {
        rip: entry,
        rsi: boot_params,
        rsp: BOOT_STACK_TOP,
        rflags: RFLAGS_FIXED,
        ..Default::default()
    };
    CpuState {
        regs,
        sregs,
        fpu: Default::default(),
        msrs: vec![(msr::IA32_PAT, msr::PAT_RESET), (msr::IA32_MISC_ENABLE, 1)],
        ..Default::default()
    }
}
