//! Integer instructions in 64-bit mode with paging.

mod common;

use common::*;
use iced_x86::code_asm::*;
use x86_emu::StopReason;

#[test]
fn arithmetic_loop_and_flags() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(rcx, 10u64).unwrap();
        a.xor(eax, eax).unwrap();
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        a.add(rax, rcx).unwrap();
        a.dec(rcx).unwrap();
        a.jnz(top).unwrap();
        a.mov(rbx, -1i64).unwrap();
        a.add(ebx, 1).unwrap(); // ZF=1, CF=1, upper zeroed
        a.setc(dl).unwrap();
        a.sete(dh).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[0], 55);
    assert_eq!(cpu.gpr[3], 0);
    assert_eq!(cpu.gpr[2] & 0xffff, 0x0101);
}

#[test]
fn memory_stack_call_ret() {
    let (mut cpu, mut bus) = machine(|a| {
        let mut func = a.create_label();
        a.mov(qword_ptr(0x30_0000u64), 0x1234_5678i32).unwrap();
        a.call(func).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut func).unwrap();
        a.mov(rax, qword_ptr(0x30_0000u64)).unwrap();
        a.push(rax).unwrap();
        a.pop(rdx).unwrap();
        a.ret().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[2], 0x1234_5678);
    assert_eq!(cpu.gpr[4], STACK);
}

#[test]
fn mul_div_and_divide_error() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(rax, 0x1_0000_0000u64).unwrap();
        a.mov(rcx, 0x10u64).unwrap();
        a.mul(rcx).unwrap(); // rdx:rax = 0x10_0000_0000
        a.mov(r8, rax).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rcx, 7u64).unwrap();
        a.div(rcx).unwrap();
        a.mov(r9, rax).unwrap();
        a.mov(r10, rdx).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.div(rcx).unwrap(); // #DE
        a.hlt().unwrap();
    });
    // #DE handler at CODE+0x800: mov r11d, 0xde; hlt.
    bus.ram[(CODE + 0x800) as usize..(CODE + 0x807) as usize]
        .copy_from_slice(&[0x41, 0xbb, 0xde, 0, 0, 0, 0xf4]);
    set_gate(&mut bus, 0, CODE + 0x800);
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[8], 0x10_0000_0000);
    assert_eq!(cpu.gpr[9], 0x10_0000_0000 / 7);
    assert_eq!(cpu.gpr[10], 0x10_0000_0000 % 7);
    assert_eq!(cpu.gpr[11], 0xde);
}

#[test]
fn rep_movs_and_page_fault() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(rsi, 0x30_0000u64).unwrap();
        a.mov(rdi, 0x30_1000u64).unwrap();
        a.mov(rcx, 100u64).unwrap();
        a.cld().unwrap();
        a.rep().movsb().unwrap();
        a.mov(rax, qword_ptr(0x7000_0000u64)).unwrap(); // unmapped: #PF
        a.hlt().unwrap();
    });
    for k in 0..100 {
        bus.ram[0x30_0000 + k] = k as u8;
    }
    let code_len = 64;
    // #PF handler: hlt placed at CODE+0x800.
    bus.ram[(CODE + 0x800) as usize] = 0xf4;
    let _ = code_len;
    set_gate(&mut bus, 14, CODE + 0x800);
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(
        &bus.ram[0x30_1000..0x30_1000 + 100],
        &bus.ram[0x30_0000..0x30_0000 + 100].to_vec()[..]
    );
    assert_eq!(cpu.gpr[1], 0);
    assert_eq!(cpu.cr2, 0x7000_0000);
    // Error code 0 (not present, read, supervisor) on the stack, RIP at the faulting mov.
    let stk = cpu.gpr[4] as usize;
    assert_eq!(
        u64::from_le_bytes(bus.ram[stk..stk + 8].try_into().unwrap()),
        0
    );
}

#[test]
fn shifts_and_rotates() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(eax, 0x8000_0001u32).unwrap();
        a.shl(eax, 1).unwrap(); // CF=1, eax=2
        a.setc(bl).unwrap();
        a.mov(ecx, 0x81u32).unwrap();
        a.ror(cl, 1).unwrap(); // cl = 0xc0, CF=1
        a.setc(bh).unwrap();
        a.mov(rdx, 0xffu64).unwrap();
        a.mov(r8, 0x1234u64).unwrap();
        a.shld(r8, rdx, 8).unwrap(); // r8 = 0x123400 | 0 (top 8 bits of rdx are 0)
        a.sar(rdx, 4).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[0], 2);
    assert_eq!(cpu.gpr[3] & 0xffff, 0x0101);
    assert_eq!(cpu.gpr[1] & 0xff, 0xc0);
    assert_eq!(cpu.gpr[8], 0x12_3400);
    assert_eq!(cpu.gpr[2], 0xf);
}

#[test]
fn self_modifying_code_is_seen() {
    let (mut cpu, mut bus) = machine(|a| {
        let mut target = a.create_label();
        a.mov(byte_ptr(target), 0xf4i32).unwrap(); // overwrite the nop below with hlt
        a.set_label(&mut target).unwrap();
        a.nop().unwrap();
        a.mov(rax, 1u64).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[0], 0);
}

#[test]
fn syscall_sysret_roundtrip() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(ecx, 0xc000_0081u32).unwrap();
        a.xor(eax, eax).unwrap();
        a.mov(edx, 0x0013_0008u32).unwrap(); // sysret base 0x10 (CS=0x23), syscall CS=8
        a.wrmsr().unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.msrs.star >> 32, 0x0013_0008);
}
