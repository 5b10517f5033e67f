//! Privileged state: user mode, SYSCALL/SYSRET, interrupts with a stack switch,
//! state save/restore.

mod common;

use common::*;
use iced_x86::code_asm::*;
use vmm_types::{CpuState, Segment};
use x86_emu::{Bus, StopReason};

/// GDT with ring-3 segments at 0x18 (data) and 0x20 (code), as SYSRET expects
/// (STAR[63:48] = 0x10: SS = 0x18|3, CS = 0x20|3), and a TSS at 0x28.
fn user_gdt(bus: &mut TestBus) {
    let mut udata = Segment::data(0x1b);
    udata.dpl = 3;
    let mut ucode = Segment::code64(0x23);
    ucode.dpl = 3;
    bus.write(0x5018, 8, udata.to_gdt_entry());
    bus.write(0x5020, 8, ucode.to_gdt_entry());
    // TSS at 0x7000 with RSP0 = 0x1f_0000.
    bus.write(0x7000 + 4, 8, 0x1f_0000);
}

#[test]
fn syscall_to_kernel_and_sysret_to_user() {
    let (mut cpu, mut bus) = machine(|a| {
        // Kernel: set up STAR/LSTAR, enter user mode with SYSRET.
        a.mov(ecx, 0xc000_0081u32).unwrap();
        a.xor(eax, eax).unwrap();
        a.mov(edx, 0x0010_0008u32).unwrap();
        a.wrmsr().unwrap();
        a.mov(ecx, 0xc000_0082u32).unwrap();
        a.mov(eax, (CODE + 0x400) as u32).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        a.mov(rcx, CODE + 0x200).unwrap(); // user entry
        a.mov(r11, 0x202u64).unwrap();
        a.sysretq().unwrap();
    });
    user_gdt(&mut bus);
    // User code at CODE+0x200: mov eax, 42; syscall.
    bus.ram[(CODE + 0x200) as usize..(CODE + 0x207) as usize]
        .copy_from_slice(&[0xb8, 42, 0, 0, 0, 0x0f, 0x05]);
    // Kernel syscall entry at CODE+0x400: hlt.
    bus.ram[(CODE + 0x400) as usize] = 0xf4;
    // Pages must be user-accessible: the test page tables already set U/S.
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[0], 42);
    assert_eq!(cpu.cpl, 0);
    assert_eq!(
        cpu.gpr[1],
        CODE + 0x207,
        "RCX holds the user return address"
    );
    assert_eq!(cpu.gpr[11] & 0x200, 0x200, "R11 holds the user RFLAGS");
}

#[test]
fn interrupt_from_user_switches_to_rsp0() {
    let (mut cpu, mut bus) = machine(|a| {
        a.hlt().unwrap();
    });
    user_gdt(&mut bus);
    let mut s = cpu.state();
    let mut ucode = Segment::code64(0x23);
    ucode.dpl = 3;
    let mut udata = Segment::data(0x1b);
    udata.dpl = 3;
    s.sregs.cs = ucode;
    s.sregs.ss = udata;
    s.sregs.tr = Segment::tss(0x28, 0x7000, 0x67);
    s.regs.rip = CODE + 0x200;
    s.regs.rsp = 0x18_0000;
    cpu.set_state(&s);
    // User code: int 0x80. Handler (DPL 3 gate): hlt.
    bus.ram[(CODE + 0x200) as usize..(CODE + 0x202) as usize].copy_from_slice(&[0xcd, 0x80]);
    bus.ram[(CODE + 0x400) as usize] = 0xf4;
    set_gate(&mut bus, 0x80, CODE + 0x400);
    let lo = bus.read(0x6000 + 0x80 * 16, 8) | (3 << 45);
    bus.write(0x6000 + 0x80 * 16, 8, lo);
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.cpl, 0);
    // Frame on the RSP0 stack: RIP, CS, RFLAGS, RSP, SS.
    let top = 0x1f_0000u64;
    assert_eq!(cpu.gpr[4], top - 40);
    assert_eq!(bus.read(top - 40, 8), CODE + 0x202);
    assert_eq!(bus.read(top - 32, 8), 0x23);
    assert_eq!(bus.read(top - 16, 8), 0x18_0000);
    assert_eq!(bus.read(top - 8, 8), 0x1b);
}

#[test]
fn int_to_supervisor_gate_from_user_is_gp() {
    let (mut cpu, mut bus) = machine(|a| {
        a.hlt().unwrap();
    });
    user_gdt(&mut bus);
    let mut s = cpu.state();
    let mut ucode = Segment::code64(0x23);
    ucode.dpl = 3;
    s.sregs.cs = ucode;
    s.sregs.tr = Segment::tss(0x28, 0x7000, 0x67);
    s.regs.rip = CODE + 0x200;
    cpu.set_state(&s);
    bus.ram[(CODE + 0x200) as usize..(CODE + 0x202) as usize].copy_from_slice(&[0xcd, 0x80]);
    set_gate(&mut bus, 0x80, CODE + 0x400); // DPL 0
    set_gate(&mut bus, 13, CODE + 0x500);
    bus.ram[(CODE + 0x500) as usize] = 0xf4;
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.rip, CODE + 0x501);
    // Error code: IDT vector 0x80, IDT bit set.
    assert_eq!(bus.read(cpu.gpr[4], 8), 0x80 << 3 | 2);
}

#[test]
fn missing_idt_entry_triple_faults() {
    let (mut cpu, mut bus) = machine(|a| {
        a.ud2().unwrap();
    });
    // IDT is all zeros: #UD -> #GP (not a gate) -> #DF -> shutdown.
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Shutdown);
}

#[test]
fn state_round_trips_through_serde() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
        a.mov(ecx, 0xc000_0084u32).unwrap(); // FMASK
        a.mov(eax, 0x4700u32).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        a.stc().unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    let s = cpu.state();
    let json = serde_json::to_string(&s).unwrap();
    let back: CpuState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let mut other = x86_emu::Cpu::new(0);
    other.set_state(&back);
    assert_eq!(other.state(), s);
    assert_eq!(other.msrs.fmask, 0x4700);
    assert_eq!(other.flags.get() & 1, 1);
}

#[test]
fn lock_cmpxchg_and_xadd() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(rdi, 0x30_0000u64).unwrap();
        a.mov(qword_ptr(rdi), 5i32).unwrap();
        a.mov(eax, 5u32).unwrap();
        a.mov(ecx, 9u32).unwrap();
        a.lock().cmpxchg(qword_ptr(rdi), rcx).unwrap(); // equal: [rdi]=9, ZF=1
        a.setz(r8b).unwrap();
        a.mov(eax, 1u32).unwrap();
        a.lock().cmpxchg(qword_ptr(rdi), rcx).unwrap(); // not equal: rax=9, ZF=0
        a.setz(r9b).unwrap();
        a.mov(edx, 3u32).unwrap();
        a.lock().xadd(qword_ptr(rdi), rdx).unwrap(); // [rdi]=12, rdx=9
        a.hlt().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[8] & 0xff, 1);
    assert_eq!(cpu.gpr[9] & 0xff, 0);
    assert_eq!(cpu.gpr[0], 9);
    assert_eq!(cpu.gpr[2], 9);
    assert_eq!(bus.read(0x30_0000, 8), 12);
}

#[test]
fn write_protect_page_fault_error_code() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(byte_ptr(0x20_0000u64), 1i32).unwrap();
        a.hlt().unwrap();
    });
    // Make the second 2 MiB page read-only.
    bus.write(0x3008, 8, (1 << 21) | 0x85);
    set_gate(&mut bus, 14, CODE + 0x800);
    bus.ram[(CODE + 0x800) as usize] = 0xf4;
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.cr2, 0x20_0000);
    // Present + write, supervisor.
    assert_eq!(bus.read(cpu.gpr[4], 8), 3);
}

#[test]
fn user_code_rewritten_behind_the_cpu_is_redecoded_after_cr3_switch() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(ecx, 0xc000_0081u32).unwrap();
        a.xor(eax, eax).unwrap();
        a.mov(edx, 0x0010_0008u32).unwrap();
        a.wrmsr().unwrap();
        a.mov(ecx, 0xc000_0082u32).unwrap();
        a.mov(eax, (CODE + 0x400) as u32).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        a.mov(rax, cr3).unwrap();
        a.mov(cr3, rax).unwrap();
        a.mov(rcx, CODE + 0x1000).unwrap();
        a.mov(r11, 0x202u64).unwrap();
        a.sysretq().unwrap();
    });
    user_gdt(&mut bus);
    let start = cpu.state();
    let user = (CODE + 0x1000) as usize;
    bus.ram[user..user + 7].copy_from_slice(&[0xb8, 1, 0, 0, 0, 0x0f, 0x05]); // mov eax,1; syscall
    bus.ram[(CODE + 0x400) as usize] = 0xf4;
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[0], 1);
    // A "device" rewrites the user page directly in memory (no CPU write).
    bus.ram[user + 1] = 2;
    cpu.rip = start.regs.rip;
    cpu.cpl = 0;
    cpu.seg[x86_emu::cpu::CS] = start.sregs.cs;
    cpu.seg[x86_emu::cpu::SS] = start.sregs.ss;
    cpu.halted = false;
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[0], 2);
}

/// PUSHAD/POPAD and PUSHA/POPA in 32-bit protected mode (paging off), as
/// Multiboot kernels use them: the register order on the stack, the SP pushed
/// being the one from before, and POPAD skipping the saved ESP.
#[test]
fn pushad_popad_in_protected_mode() {
    let mut a = CodeAssembler::new(32).unwrap();
    for (k, r) in [eax, ecx, edx, ebx, ebp, esi, edi].into_iter().enumerate() {
        a.mov(r, 0x1111_1111u32 * (k as u32 + 1)).unwrap();
    }
    // The 16-bit forms first (their frame is overwritten below).
    // (POPA writes the low halves only: the upper half of EBX stays.)
    a.pusha().unwrap();
    a.xor(bx, bx).unwrap();
    a.popa().unwrap();
    a.pushad().unwrap();
    for r in [eax, ecx, edx, ebx, ebp, esi, edi] {
        a.xor(r, r).unwrap();
    }
    a.popad().unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut bus = TestBus {
        ram: vec![0; RAM],
        io_log: Vec::new(),
    };
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    let mut cpu = x86_emu::Cpu::new(0);
    let mut s = CpuState::default();
    s.regs.rip = CODE;
    s.regs.rsp = STACK;
    s.regs.rflags = 2;
    let mut code_seg = Segment::code64(8);
    code_seg.l = false;
    code_seg.db = true;
    s.sregs.cs = code_seg;
    for d in [
        &mut s.sregs.ds,
        &mut s.sregs.es,
        &mut s.sregs.ss,
        &mut s.sregs.fs,
        &mut s.sregs.gs,
    ] {
        *d = Segment::data(0x10);
    }
    s.sregs.tr = Segment::tss(0x18, 0, 0x67);
    s.sregs.cr0 = vmm_types::bits::CR0_PE | vmm_types::bits::CR0_ET;
    cpu.set_state(&s);
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    for k in [0usize, 1, 2, 3, 5, 6, 7] {
        let idx = [0, 1, 2, 3, 0, 4, 5, 6][k];
        assert_eq!(cpu.gpr[k], 0x1111_1111 * (idx + 1), "register {k}");
    }
    assert_eq!(cpu.gpr[4], STACK, "ESP back where it was");
    // The PUSHAD frame, from the top: EAX ECX EDX EBX ESP(before) EBP ESI EDI.
    let frame: Vec<u64> = (0..8).map(|k| bus.read(STACK - 4 - 4 * k, 4)).collect();
    assert_eq!(
        frame,
        vec![
            0x1111_1111,
            0x2222_2222,
            0x3333_3333,
            0x4444_4444,
            STACK,
            0x5555_5555,
            0x6666_6666,
            0x7777_7777
        ]
    );
}
