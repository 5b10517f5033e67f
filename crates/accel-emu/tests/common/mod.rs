//! What the accel-emu integration tests share: a port handler that records
//! output, and guest memory with a tiny long-mode setup around test code.
#![allow(dead_code)]

use std::sync::Mutex;

use accel::IoHandler;
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_types::{bits, CpuState, DescriptorTable, Segment};

pub const CODE: u64 = 0x10_0000;
pub const IDT: u64 = 0x6000;

#[derive(Default)]
pub struct Ports {
    pub out: Mutex<Vec<(u16, u8)>>,
}

impl IoHandler for Ports {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.out.lock().unwrap().push((port, data[0]));
    }
    fn mmio_read(&self, _addr: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _addr: u64, _data: &[u8]) {}
}

/// Guest memory with identity-mapped low RAM and the LAPIC page, a GDT, and `code`
/// at CODE; the entry state for it.
pub fn memory(code: impl FnOnce(&mut CodeAssembler)) -> (GuestMemoryMmap<()>, CpuState) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let mut a = CodeAssembler::new(64).unwrap();
    code(&mut a);
    let bytes = a.assemble(CODE).unwrap();
    mem.write_slice(&bytes, GuestAddress(CODE)).unwrap();
    mem.write_obj(0x2000u64 | 3, GuestAddress(0x1000)).unwrap();
    mem.write_obj(0x3000u64 | 3, GuestAddress(0x2000)).unwrap();
    mem.write_obj(0x4000u64 | 3, GuestAddress(0x2018)).unwrap();
    // RAM as 2 MiB pages; 0xfee00000 (3 GiB + 0x1f7 * 2 MiB) for the LAPIC page.
    for k in 0..2u64 {
        mem.write_obj((k << 21) | 0x83, GuestAddress(0x3000 + k * 8))
            .unwrap();
    }
    mem.write_obj(0xfee0_0000u64 | 0x9b, GuestAddress(0x4000 + 0x1f7 * 8))
        .unwrap();
    mem.write_obj(Segment::code64(8).to_gdt_entry(), GuestAddress(0x5008))
        .unwrap();
    mem.write_obj(Segment::data(0x10).to_gdt_entry(), GuestAddress(0x5010))
        .unwrap();
    let mut s = CpuState::default();
    s.regs.rip = CODE;
    s.regs.rsp = 0x18_0000;
    s.regs.rflags = 2;
    s.sregs.cs = Segment::code64(8);
    s.sregs.ss = Segment::data(0x10);
    s.sregs.ds = Segment::data(0x10);
    s.sregs.tr = Segment::tss(0x18, 0, 0x67);
    s.sregs.gdt = DescriptorTable {
        base: 0x5000,
        limit: 0x1f,
    };
    s.sregs.idt = DescriptorTable {
        base: IDT,
        limit: 0xfff,
    };
    s.sregs.cr0 = bits::CR0_PE | bits::CR0_PG | bits::CR0_ET;
    s.sregs.cr3 = 0x1000;
    s.sregs.cr4 = bits::CR4_PAE;
    s.sregs.efer = bits::EFER_LME | bits::EFER_LMA;
    (mem, s)
}
