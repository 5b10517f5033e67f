//! EmuVm/EmuVcpu end to end: a tiny long-mode guest, port I/O to the VMM,
//! a LAPIC timer interrupt that wakes HLT, and HLT with IF=0.

mod common;

use accel::{Vcpu, VcpuExit, Vm};
use accel_emu::EmuVm;
use common::{memory, Ports};
use iced_x86::code_asm::*;

/// `code` in a fresh long-mode guest, on a VM's vCPU 0 ready to run it.
fn boot(code: impl FnOnce(&mut CodeAssembler)) -> (EmuVm, Box<dyn Vcpu>) {
    let (mem, s) = memory(code);
    let vm = EmuVm::new(mem, 1).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
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
