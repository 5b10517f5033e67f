//! EmuVm/EmuVcpu end to end: a tiny long-mode guest, port I/O to the VMM,
//! a LAPIC timer interrupt that wakes HLT, and HLT with IF=0.

use std::sync::Mutex;

use accel::{IoHandler, Vcpu, VcpuExit, Vm};
use accel_emu::EmuVm;
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_types::{bits, CpuState, DescriptorTable, Segment};

const CODE: u64 = 0x10_0000;

#[derive(Default)]
struct Ports {
    out: Mutex<Vec<(u16, u8)>>,
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

fn boot(code: impl FnOnce(&mut CodeAssembler)) -> (EmuVm, Box<dyn Vcpu>) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let mut a = CodeAssembler::new(64).unwrap();
    code(&mut a);
    let bytes = a.assemble(CODE).unwrap();
    mem.write_slice(&bytes, GuestAddress(CODE)).unwrap();
    // Identity map the first 4 GiB with 1 GiB pages... only 2 MiB pages for RAM and one
    // for the LAPIC page.
    mem.write_obj(0x2000u64 | 3, GuestAddress(0x1000)).unwrap();
    mem.write_obj(0x3000u64 | 3, GuestAddress(0x2000)).unwrap();
    mem.write_obj(0x4000u64 | 3, GuestAddress(0x2018)).unwrap();
    for k in 0..2u64 {
        mem.write_obj((k << 21) | 0x83, GuestAddress(0x3000 + k * 8))
            .unwrap();
    }
    // 0xfee00000 = 3 GiB + 0x1f7 * 2 MiB.
    mem.write_obj(0xfee0_0000u64 | 0x9b, GuestAddress(0x4000 + 0x1f7 * 8))
        .unwrap();
    mem.write_obj(Segment::code64(8).to_gdt_entry(), GuestAddress(0x5008))
        .unwrap();
    mem.write_obj(Segment::data(0x10).to_gdt_entry(), GuestAddress(0x5010))
        .unwrap();
    let vm = EmuVm::new(mem, 1).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
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
        base: 0x6000,
        limit: 0xfff,
    };
    s.sregs.cr0 = bits::CR0_PE | bits::CR0_PG | bits::CR0_ET;
    s.sregs.cr3 = 0x1000;
    s.sregs.cr4 = bits::CR4_PAE;
    s.sregs.efer = bits::EFER_LME | bits::EFER_LMA;
    vcpu.set_state(&s).unwrap();
    (vm, vcpu)
}

#[test]
fn port_output_then_halt_forever() {
    let (_vm, mut vcpu) = boot(|a| {
        a.mov(dx, 0x3f8u32).unwrap();
        a.mov(al, b'h' as u32).unwrap();
        a.out(dx, al).unwrap();
        a.mov(al, b'i' as u32).unwrap();
        a.out(dx, al).unwrap();
        a.cli().unwrap();
        a.hlt().unwrap();
    });
    let io = Ports::default();
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::HaltedForever);
    assert_eq!(*io.out.lock().unwrap(), vec![(0x3f8, b'h'), (0x3f8, b'i')]);
}

#[test]
fn lapic_timer_wakes_hlt() {
    let (vm, mut vcpu) = boot(|a| {
        let mut handler = a.create_label();
        let mut idle = a.create_label();
        // IDT entry 0x40 -> handler (built at run time from the label address in rax).
        a.lea(rax, ptr(handler)).unwrap();
        a.mov(word_ptr(0x6000 + 0x40 * 16), ax).unwrap();
        a.mov(word_ptr(0x6000 + 0x40 * 16 + 2), 8u32).unwrap();
        a.mov(word_ptr(0x6000 + 0x40 * 16 + 4), 0x8e00u32).unwrap();
        a.shr(rax, 16).unwrap();
        a.mov(word_ptr(0x6000 + 0x40 * 16 + 6), ax).unwrap();
        a.mov(rdi, 0xfee0_0000u64).unwrap();
        a.mov(dword_ptr(rdi + 0xf0), 0x1ffu32).unwrap(); // SVR: enable
        a.mov(dword_ptr(rdi + 0x3e0), 0xbu32).unwrap(); // divide by 1
        a.mov(dword_ptr(rdi + 0x320), 0x40u32).unwrap(); // LVT timer: one-shot, vector 0x40
        a.mov(dword_ptr(rdi + 0x380), 2_000_000u32).unwrap(); // 2 ms
        a.set_label(&mut idle).unwrap();
        a.sti().unwrap();
        a.hlt().unwrap();
        a.jmp(idle).unwrap();
        a.set_label(&mut handler).unwrap();
        a.mov(dx, 0x3f8u32).unwrap();
        a.mov(al, b'T' as u32).unwrap();
        a.out(dx, al).unwrap();
        a.mov(dword_ptr(rdi + 0xb0), 0u32).unwrap(); // EOI
        a.cli().unwrap();
        a.hlt().unwrap();
    });
    let _ = &vm;
    let io = Ports::default();
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::HaltedForever);
    assert_eq!(*io.out.lock().unwrap(), vec![(0x3f8, b'T')]);
}

#[test]
fn kick_interrupts_a_sleeping_vcpu() {
    let (_vm, mut vcpu) = boot(|a| {
        let mut idle = a.create_label();
        a.set_label(&mut idle).unwrap();
        a.sti().unwrap();
        a.hlt().unwrap();
        a.jmp(idle).unwrap();
    });
    let kicker = vcpu.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        kicker.kick();
    });
    let io = Ports::default();
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::Interrupted);
    t.join().unwrap();
}
