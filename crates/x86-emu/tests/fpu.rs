//! x87 and SSE floating point through the executor.

mod common;

use common::*;
use iced_x86::code_asm::*;
use x86_emu::{Bus, StopReason};

#[test]
fn x87_add_and_store_integer() {
    let (mut cpu, mut bus) = machine(|a| {
        a.fninit().unwrap();
        a.fld1().unwrap();
        a.fld1().unwrap();
        a.faddp(st1, st0).unwrap(); // 2
        a.fild(dword_ptr(0x30_0000u64)).unwrap(); // 40
        a.fmulp(st1, st0).unwrap(); // 80
        a.fistp(dword_ptr(0x30_0010u64)).unwrap();
        a.fld(qword_ptr(0x30_0020u64)).unwrap(); // 2.5
        a.fstp(dword_ptr(0x30_0030u64)).unwrap();
        a.fnstsw(ax).unwrap();
        a.hlt().unwrap();
    });
    bus.write(0x30_0000, 4, 40);
    bus.write(0x30_0020, 8, 2.5f64.to_bits());
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(bus.read(0x30_0010, 4), 80);
    assert_eq!(bus.read(0x30_0030, 4) as u32, 2.5f32.to_bits());
    // Stack empty again: TOP = 0.
    assert_eq!((cpu.gpr[0] >> 11) & 7, 0);
}

#[test]
fn sse2_scalar_double_arithmetic_and_compare() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(eax, 7u32).unwrap();
        a.cvtsi2sd(xmm0, eax).unwrap();
        a.mov(eax, 2u32).unwrap();
        a.cvtsi2sd(xmm1, eax).unwrap();
        a.divsd(xmm0, xmm1).unwrap(); // 3.5
        a.addsd(xmm0, xmm0).unwrap(); // 7.0
        a.cvttsd2si(rbx, xmm0).unwrap();
        a.comisd(xmm0, xmm1).unwrap(); // 7 > 2: CF=0, ZF=0
        a.seta(cl).unwrap();
        a.movq(rdx, xmm0).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[3], 7);
    assert_eq!(cpu.gpr[1] & 0xff, 1);
    assert_eq!(cpu.gpr[2], 7.0f64.to_bits());
}

#[test]
fn fxsave_fxrstor_round_trip() {
    let (mut cpu, mut bus) = machine(|a| {
        a.mov(rax, 0x1234_5678_9abc_def0u64).unwrap();
        a.movq(xmm5, rax).unwrap();
        a.fld1().unwrap();
        a.fxsave(ptr(0x30_0000u64)).unwrap();
        a.pxor(xmm5, xmm5).unwrap();
        a.fninit().unwrap();
        a.fxrstor(ptr(0x30_0000u64)).unwrap();
        a.movq(rbx, xmm5).unwrap();
        a.fistp(dword_ptr(0x30_1000u64)).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(run(&mut cpu, &mut bus), StopReason::Halted);
    assert_eq!(cpu.gpr[3], 0x1234_5678_9abc_def0);
    assert_eq!(bus.read(0x30_1000, 4), 1);
    assert_eq!(bus.read(0x30_0000 + 160 + 5 * 16, 8), 0x1234_5678_9abc_def0);
}
