//! A flat-RAM test machine: long mode, identity-mapped 2 MiB pages.
#![allow(dead_code)]

use iced_x86::code_asm::CodeAssembler;
use vmm_types::{bits, CpuState, DescriptorTable, Segment};
use x86_emu::{Bus, Cpu, StopReason};

pub const RAM: usize = 4 << 20;
pub const CODE: u64 = 0x10_0000;
pub const STACK: u64 = 0x20_0000;
pub const PML4: u64 = 0x1000;

pub struct TestBus {
    pub ram: Vec<u8>,
    pub io_log: Vec<(u16, u32)>,
}

impl Bus for TestBus {
    fn read(&mut self, addr: u64, size: usize) -> u64 {
        let a = addr as usize;
        if a + size > self.ram.len() {
            return u64::MAX;
        }
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&self.ram[a..a + size]);
        u64::from_le_bytes(b)
    }
    fn write(&mut self, addr: u64, size: usize, val: u64) {
        let a = addr as usize;
        if a + size <= self.ram.len() {
            self.ram[a..a + size].copy_from_slice(&val.to_le_bytes()[..size]);
        }
    }
    fn atomic_rmw(&mut self, addr: u64, size: usize, f: &mut dyn FnMut(u64) -> u64) -> u64 {
        let old = self.read(addr, size);
        let new = f(old);
        self.write(addr, size, new);
        old
    }
    fn is_ram(&mut self, addr: u64) -> bool {
        (addr as usize) < self.ram.len()
    }
    fn io_in(&mut self, _port: u16, _size: usize) -> u32 {
        0xffff_ffff
    }
    fn io_out(&mut self, port: u16, _size: usize, val: u32) {
        self.io_log.push((port, val));
    }
    fn tsc(&mut self) -> u64 {
        12345
    }
    fn rdmsr(&mut self, _msr: u32) -> Option<u64> {
        None
    }
    fn wrmsr(&mut self, _msr: u32, _val: u64) -> bool {
        false
    }
    fn cr8(&mut self) -> u64 {
        0
    }
    fn set_cr8(&mut self, _val: u64) {}
    fn host_addr(&mut self, addr: u64) -> Option<usize> {
        ((addr as usize) < self.ram.len()).then(|| self.ram.as_mut_ptr() as usize + addr as usize)
    }
}

/// Builds a machine with `code` at CODE, long mode, RSP = STACK.
pub fn machine(f: impl FnOnce(&mut CodeAssembler)) -> (Cpu, TestBus) {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a);
    let code = a.assemble(CODE).unwrap();
    let mut bus = TestBus {
        ram: vec![0; RAM],
        io_log: Vec::new(),
    };
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    // PML4 -> PDPT -> PD with 2 MiB pages covering RAM.
    bus.write(PML4, 8, 0x2000 | 7);
    bus.write(0x2000, 8, 0x3000 | 7);
    for k in 0..(RAM as u64 >> 21) {
        bus.write(0x3000 + k * 8, 8, (k << 21) | 0x87);
    }
    let mut cpu = Cpu::new(0);
    let mut s = CpuState::default();
    s.regs.rip = CODE;
    s.regs.rsp = STACK;
    s.regs.rflags = 2;
    s.sregs.cs = Segment::code64(8);
    s.sregs.ds = Segment::data(0x10);
    s.sregs.es = Segment::data(0x10);
    s.sregs.ss = Segment::data(0x10);
    s.sregs.fs = Segment::data(0x10);
    s.sregs.gs = Segment::data(0x10);
    s.sregs.tr = Segment::tss(0x18, 0, 0x67);
    s.sregs.gdt = DescriptorTable {
        base: 0x5000,
        limit: 0x1f,
    };
    s.sregs.idt = DescriptorTable {
        base: 0x6000,
        limit: 0xfff,
    };
    s.sregs.cr0 = bits::CR0_PE | bits::CR0_PG | bits::CR0_ET | bits::CR0_WP;
    s.sregs.cr3 = PML4;
    s.sregs.cr4 = bits::CR4_PAE | bits::CR4_OSFXSR;
    s.sregs.efer = bits::EFER_LME | bits::EFER_LMA | bits::EFER_NXE | bits::EFER_SCE;
    bus.write(0x5008, 8, Segment::code64(8).to_gdt_entry());
    bus.write(0x5010, 8, Segment::data(0x10).to_gdt_entry());
    cpu.set_state(&s);
    (cpu, bus)
}

/// Runs until HLT (or a budget is used up).
pub fn run(cpu: &mut Cpu, bus: &mut TestBus) -> StopReason {
    for _ in 0..1000 {
        let r = cpu.run(bus, 100_000);
        if r != StopReason::Yield {
            return r;
        }
    }
    StopReason::Yield
}

/// Sets IDT vector `v` to an interrupt gate at `handler`.
pub fn set_gate(bus: &mut TestBus, v: u64, handler: u64) {
    let lo = (handler & 0xffff) | (8 << 16) | (0x8e << 40) | ((handler >> 16) & 0xffff) << 48;
    bus.write(0x6000 + v * 16, 8, lo);
    bus.write(0x6000 + v * 16 + 8, 8, handler >> 32);
}
