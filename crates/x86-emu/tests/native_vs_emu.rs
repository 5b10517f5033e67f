//! Every checked instruction run natively on the host CPU and in the emulator from the
//! same random state: GPRs, the flags the SDM defines for it, and memory must agree.

mod native;

use iced_x86::code_asm::*;
use native::gen::Rng;
use native::{native_vs_emu, Machine, Mismatches, Snippet, RCX, RDI, RSI, RSP};

const CASES: usize = 200;

const CF: u64 = 1;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;
const ALL: u64 = CF | PF | AF | ZF | SF | OF;

type Emit = Box<dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>>;
type MaskFn = Box<dyn Fn(&Machine) -> u64>;

/// One instruction form: how to assemble it, which flags are defined for an input
/// state, and an optional fix-up of the random inputs (e.g. no divide by zero).
struct Case {
    name: String,
    emit: Emit,
    mask: MaskFn,
    prep: fn(&mut Machine, &mut Rng),
}

fn no_prep(_: &mut Machine, _: &mut Rng) {}

fn case(name: impl Into<String>, mask: u64, emit: Emit) -> Case {
    Case {
        name: name.into(),
        emit,
        mask: Box::new(move |_| mask),
        prep: no_prep,
    }
}

fn random_machine(m: &mut Machine, r: &mut Rng) {
    for i in 0..16 {
        m.gpr[i] = match r.below(4) {
            0 => r.next_u64(),
            1 => [
                0,
                1,
                u64::MAX,
                1 << 63,
                (1 << 63) - 1,
                0x8000_0000,
                0x7fff_ffff,
                0xffff_ffff,
            ][r.below(8)],
            _ => r.int_u128() as u64,
        };
    }
    m.gpr[RSP] = 0;
    m.gpr[RSI] = m.mem_addr(0);
    m.gpr[RDI] = m.mem_addr(512);
    m.rflags = r.next_u64() & native::STATUS_FLAGS;
    for k in (0..1024).step_by(16) {
        m.mem[k..k + 16].copy_from_slice(&r.int_u128().to_le_bytes());
    }
}

fn run(cases: Vec<Case>, what: &str) {
    let mut rng = Rng::new(what.len() as u64 + 17);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for c in &cases {
        let snip = Snippet::new(|a| (c.emit)(a));
        for _ in 0..CASES {
            random_machine(&mut m, &mut rng);
            (c.prep)(&mut m, &mut rng);
            let mask = (c.mask)(&m);
            if let Some(d) = native_vs_emu(&snip, &mut m, mask, false) {
                bad.add(format!("{}: {d}", c.name));
            }
        }
    }
    bad.finish(what);
}

/// reg,reg / reg,imm / mem,reg / reg,mem forms of a two-operand ALU instruction in every
/// operand size.
macro_rules! alu2 {
    ($v:ident, $op:ident, $mask:expr) => {{
        let n = stringify!($op);
        $v.push(case(
            format!("{n} r64,r64"),
            $mask,
            Box::new(|a| a.$op(rax, rbx)),
        ));
        $v.push(case(
            format!("{n} r32,r32"),
            $mask,
            Box::new(|a| a.$op(eax, ebx)),
        ));
        $v.push(case(
            format!("{n} r16,r16"),
            $mask,
            Box::new(|a| a.$op(ax, bx)),
        ));
        $v.push(case(
            format!("{n} r8,r8"),
            $mask,
            Box::new(|a| a.$op(al, bl)),
        ));
        $v.push(case(
            format!("{n} r8h,r8"),
            $mask,
            Box::new(|a| a.$op(ah, cl)),
        ));
        $v.push(case(
            format!("{n} r64,imm"),
            $mask,
            Box::new(|a| a.$op(rdx, -2i32)),
        ));
        $v.push(case(
            format!("{n} r32,imm"),
            $mask,
            Box::new(|a| a.$op(edx, 0x7fff_ffffi32)),
        ));
        $v.push(case(
            format!("{n} r16,imm8"),
            $mask,
            Box::new(|a| a.$op(dx, 0x80i32)),
        ));
        $v.push(case(
            format!("{n} m64,r64"),
            $mask,
            Box::new(|a| a.$op(qword_ptr(rsi + 8), rcx)),
        ));
        $v.push(case(
            format!("{n} r32,m32"),
            $mask,
            Box::new(|a| a.$op(ecx, dword_ptr(rsi + 20))),
        ));
        $v.push(case(
            format!("{n} m8,imm"),
            $mask,
            Box::new(|a| a.$op(byte_ptr(rsi + 3), 0x7fi32)),
        ));
    }};
}

#[test]
fn alu_binary() {
    let mut v = Vec::new();
    alu2!(v, add, ALL);
    alu2!(v, adc, ALL);
    alu2!(v, sub, ALL);
    alu2!(v, sbb, ALL);
    alu2!(v, cmp, ALL);
    alu2!(v, and, ALL & !AF);
    alu2!(v, or, ALL & !AF);
    alu2!(v, xor, ALL & !AF);
    v.push(case(
        "test r64,r64",
        ALL & !AF,
        Box::new(|a| a.test(rax, rbx)),
    ));
    v.push(case(
        "test r8,imm",
        ALL & !AF,
        Box::new(|a| a.test(al, 0x81)),
    ));
    v.push(case(
        "test m32,r32",
        ALL & !AF,
        Box::new(|a| a.test(dword_ptr(rsi), ecx)),
    ));
    run(v, "alu binary");
}

#[test]
fn alu_unary() {
    let mut v = Vec::new();
    for (n, e) in [
        (
            "inc r64",
            Box::new(|a: &mut CodeAssembler| a.inc(rax)) as Emit,
        ),
        ("inc r8", Box::new(|a| a.inc(bl))),
        ("dec r32", Box::new(|a| a.dec(ecx))),
        ("dec m16", Box::new(|a| a.dec(word_ptr(rsi + 6)))),
        ("neg r64", Box::new(|a| a.neg(rdx))),
        ("neg r16", Box::new(|a| a.neg(dx))),
        ("neg m8", Box::new(|a| a.neg(byte_ptr(rsi)))),
        ("not r32", Box::new(|a| a.not(eax))),
        ("not m64", Box::new(|a| a.not(qword_ptr(rsi)))),
    ] {
        v.push(case(n, ALL, e));
    }
    run(v, "alu unary");
}

/// Flags defined after a shift of `width` bits by the count in CL (or `imm`).
fn shift_mask(width: u32, count: u64, rotate: bool) -> u64 {
    let c = count & if width == 64 { 63 } else { 31 };
    if c == 0 {
        return ALL;
    }
    let of = if c == 1 { OF } else { 0 };
    if rotate {
        ALL & !OF | of
    } else {
        let cf = if c < u64::from(width) { CF } else { 0 };
        SF | ZF | PF | cf | of
    }
}

macro_rules! shifts {
    ($v:ident, $op:ident, $rot:expr) => {{
        let n = stringify!($op);
        for (w, e) in [
            (
                64u32,
                Box::new(|a: &mut CodeAssembler| a.$op(rax, cl)) as Emit,
            ),
            (32, Box::new(|a| a.$op(ebx, cl))),
            (16, Box::new(|a| a.$op(dx, cl))),
            (8, Box::new(|a| a.$op(ah, cl))),
            (64, Box::new(|a| a.$op(qword_ptr(rsi + 8), cl))),
        ] {
            $v.push(Case {
                name: format!("{n} r{w},cl"),
                emit: e,
                mask: Box::new(move |m| shift_mask(w, m.gpr[RCX] & 0xff, $rot)),
                prep: |m, r| {
                    // Small counts (1, width-ish) are the interesting ones.
                    if r.below(2) == 0 {
                        m.gpr[RCX] = (m.gpr[RCX] & !0xff) | (r.next_u64() % 20);
                    }
                    // A masked count of 0 is checked in `shift32_count0_zero_extends`.
                    if m.gpr[RCX] & 0x1f == 0 {
                        m.gpr[RCX] |= 1;
                    }
                },
            });
        }
        for imm in [1u32, 7, 31] {
            $v.push(Case {
                name: format!("{n} r32,{imm}"),
                emit: Box::new(move |a| a.$op(edx, imm)),
                mask: Box::new(move |_| shift_mask(32, u64::from(imm), $rot)),
                prep: no_prep,
            });
        }
    }};
}

#[test]
fn shifts_rotates() {
    let mut v = Vec::new();
    shifts!(v, shl, false);
    shifts!(v, shr, false);
    shifts!(v, sar, false);
    shifts!(v, rol, true);
    shifts!(v, ror, true);
    shifts!(v, rcl, true);
    shifts!(v, rcr, true);
    run(v, "shifts");
}

#[test]
fn mul_div() {
    let muls = CF | OF;
    let mut v = vec![
        case("mul r64", muls, Box::new(|a| a.mul(rbx))),
        case("mul r32", muls, Box::new(|a| a.mul(ebx))),
        case("mul r8", muls, Box::new(|a| a.mul(bl))),
        case("imul r64", muls, Box::new(|a| a.imul(rbx))),
        case("imul r16", muls, Box::new(|a| a.imul(bx))),
        case("imul r64,r64", muls, Box::new(|a| a.imul_2(rax, rbx))),
        case(
            "imul r32,m32,imm",
            muls,
            Box::new(|a| a.imul_3(ecx, dword_ptr(rsi), -77)),
        ),
        case(
            "imul r16,r16,imm",
            muls,
            Box::new(|a| a.imul_3(cx, dx, 0x1234)),
        ),
    ];
    // Division must not fault natively: force a nonzero divisor and a small dividend.
    for (n, e) in [
        (
            "div r64",
            Box::new(|a: &mut CodeAssembler| {
                a.or(rbx, 1)?;
                a.xor(edx, edx)?;
                a.div(rbx)
            }) as Emit,
        ),
        (
            "div r32",
            Box::new(|a| {
                a.or(ebx, 1)?;
                a.xor(edx, edx)?;
                a.div(ebx)
            }),
        ),
        (
            "div r8",
            Box::new(|a| {
                a.or(bl, 0x80)?;
                a.and(eax, 0x7fff)?;
                a.div(bl)
            }),
        ),
        (
            "idiv r64",
            Box::new(|a| {
                a.or(rbx, 3)?;
                a.cqo()?;
                a.idiv(rbx)
            }),
        ),
        (
            "idiv r32",
            Box::new(|a| {
                a.or(ebx, 3)?;
                a.cdq()?;
                a.idiv(ebx)
            }),
        ),
    ] {
        v.push(case(n, 0, e));
    }
    run(v, "mul/div");
}

#[test]
fn bit_ops() {
    let v = vec![
        case("bt r64,r64", CF | ZF, Box::new(|a| a.bt(rax, rbx))),
        case("bts r32,imm", CF | ZF, Box::new(|a| a.bts(eax, 17))),
        case(
            "btr m64,imm",
            CF | ZF,
            Box::new(|a| a.btr(qword_ptr(rsi), 63)),
        ),
        case("btc r16,r16", CF | ZF, Box::new(|a| a.btc(ax, bx))),
        case(
            "bsf r64 (nonzero)",
            ZF,
            Box::new(|a| {
                a.or(rbx, 0x100)?;
                a.bsf(rax, rbx)
            }),
        ),
        case(
            "bsr r32 (nonzero)",
            ZF,
            Box::new(|a| {
                a.or(ebx, 1)?;
                a.bsr(eax, ebx)
            }),
        ),
        case("bswap r64", ALL, Box::new(|a| a.bswap(rdx))),
        case("bswap r32", ALL, Box::new(|a| a.bswap(edx))),
        case("popcnt r64", ALL, Box::new(|a| a.popcnt(rax, rbx))),
        case("shld r64,r64,cl", 0, Box::new(|a| a.shld(rax, rbx, cl))),
        case(
            "shld r32,r32,5",
            SF | ZF | PF | CF,
            Box::new(|a| a.shld(eax, ebx, 5)),
        ),
        case(
            "shrd r64,r64,1",
            SF | ZF | PF | CF | OF,
            Box::new(|a| a.shrd(rax, rdx, 1)),
        ),
    ];
    run(v, "bit ops");
}

#[test]
fn moves_and_conditions() {
    let v = vec![
        case("movzx r32,r8", ALL, Box::new(|a| a.movzx(eax, bh))),
        case(
            "movzx r64,m16",
            ALL,
            Box::new(|a| a.movzx(rax, word_ptr(rsi + 2))),
        ),
        case("movsx r64,r8", ALL, Box::new(|a| a.movsx(rax, bl))),
        case("movsx r32,r16", ALL, Box::new(|a| a.movsx(eax, bx))),
        case("movsxd r64,r32", ALL, Box::new(|a| a.movsxd(rax, ebx))),
        case("mov r32,r32", ALL, Box::new(|a| a.mov(eax, ebx))),
        case(
            "mov r8h,m8",
            ALL,
            Box::new(|a| a.mov(ah, byte_ptr(rsi + 5))),
        ),
        case(
            "mov m16,imm",
            ALL,
            Box::new(|a| a.mov(word_ptr(rdi + 6), 0x1234)),
        ),
        case("cmovb r64", ALL, Box::new(|a| a.cmovb(rax, rbx))),
        case("cmovle r32", ALL, Box::new(|a| a.cmovle(eax, ebx))),
        case(
            "cmovp r16,m16",
            ALL,
            Box::new(|a| a.cmovp(ax, word_ptr(rsi))),
        ),
        case("seto r8", ALL, Box::new(|a| a.seto(al))),
        case("setg m8", ALL, Box::new(|a| a.setg(byte_ptr(rsi)))),
        case("setbe r8h", ALL, Box::new(|a| a.setbe(bh))),
        case(
            "xchg r64,m64",
            ALL,
            Box::new(|a| a.xchg(qword_ptr(rsi), rax)),
        ),
        case("xadd r32,r32", ALL, Box::new(|a| a.xadd(eax, ebx))),
        case(
            "cmpxchg m64,r64",
            ALL,
            Box::new(|a| a.cmpxchg(qword_ptr(rsi), rbx)),
        ),
        case("cmpxchg r8,r8", ALL, Box::new(|a| a.cmpxchg(cl, bl))),
        case(
            "lea r64",
            ALL,
            Box::new(|a| a.lea(rax, qword_ptr(rbx + rcx * 4 - 8))),
        ),
        case(
            "lea r32",
            ALL,
            Box::new(|a| a.lea(eax, dword_ptr(rbx + rdx + 0x7f))),
        ),
        case(
            "cbw/cwde/cdqe",
            ALL,
            Box::new(|a| {
                a.cbw()?;
                a.mov(rbx, rax)?;
                a.cwde()?;
                a.mov(rcx, rax)?;
                a.cdqe()
            }),
        ),
        case(
            "cwd/cdq/cqo",
            ALL,
            Box::new(|a| {
                a.cwd()?;
                a.mov(rbx, rdx)?;
                a.cdq()?;
                a.mov(rcx, rdx)?;
                a.cqo()
            }),
        ),
        case(
            "lahf/sahf",
            ALL,
            Box::new(|a| {
                a.lahf()?;
                a.xor(ah, bl)?;
                a.sahf()
            }),
        ),
        case(
            "rep movsb",
            ALL,
            Box::new(|a| {
                a.and(ecx, 63)?;
                a.rep().movsb()
            }),
        ),
        case(
            "rep stosq",
            ALL,
            Box::new(|a| {
                a.and(ecx, 7)?;
                a.rep().stosq()
            }),
        ),
        case(
            "repe cmpsb",
            ALL,
            Box::new(|a| {
                a.and(ecx, 15)?;
                a.repe().cmpsb()
            }),
        ),
        case("lodsd", ALL, Box::new(|a| a.lodsd())),
    ];
    run(v, "moves/conditions");
}

/// A 32-bit shift/rotate whose masked count is 0 still writes (zero-extends) the
/// destination in 64-bit mode (an emulator bug this test found, now fixed).
#[test]
fn shift32_count0_zero_extends() {
    let mut v = Vec::new();
    for (n, e) in [
        (
            "shl r32,cl=0",
            Box::new(|a: &mut CodeAssembler| a.shl(ebx, cl)) as Emit,
        ),
        ("sar r32,cl=0", Box::new(|a| a.sar(ebx, cl))),
        ("rol r32,cl=0", Box::new(|a| a.rol(ebx, cl))),
        ("rcr r32,cl=0", Box::new(|a| a.rcr(ebx, cl))),
        ("shld r32,cl=0", Box::new(|a| a.shld(ebx, edx, cl))),
    ] {
        v.push(Case {
            name: n.into(),
            emit: e,
            mask: Box::new(|_| ALL),
            prep: |m, _| m.gpr[RCX] &= !0x1f,
        });
    }
    run(v, "32-bit shifts by 0");
}

/// `jcc` over a `mov`: EAX tells whether the branch was taken.
macro_rules! jcc_cases {
    ($v:ident: $($j:ident),*) => {
        $(
            $v.push(case(stringify!($j), ALL, Box::new(|a| {
                let mut skip = a.create_label();
                a.mov(eax, 0)?;
                a.$j(skip)?;
                a.mov(eax, 1)?;
                a.set_label(&mut skip)?;
                a.nop()
            })));
        )*
    };
}

/// `cmovcc` and `setcc` for every condition.
macro_rules! cc_cases {
    ($v:ident: $($c:ident / $s:ident),*) => {
        $(
            $v.push(case(stringify!($c), ALL, Box::new(|a| a.$c(rax, qword_ptr(rsi + 8)))));
            $v.push(case(stringify!($s), ALL, Box::new(|a| a.$s(dl))));
        )*
    };
}

#[test]
fn branches_and_conditions() {
    let mut v = Vec::new();
    jcc_cases!(v: jo, jno, jb, jae, je, jne, jbe, ja, js, jns, jp, jnp, jl, jge, jle, jg);
    cc_cases!(v: cmovo / seto, cmovno / setno, cmovb / setb, cmovae / setae, cmove / sete,
        cmovne / setne, cmovbe / setbe, cmova / seta, cmovs / sets, cmovns / setns,
        cmovp / setp, cmovnp / setnp, cmovl / setl, cmovge / setge, cmovle / setle,
        cmovg / setg);
    v.push(case(
        "loop",
        ALL,
        Box::new(|a| {
            let mut top = a.create_label();
            a.and(ecx, 31)?;
            a.inc(ecx)?;
            a.xor(eax, eax)?;
            a.set_label(&mut top)?;
            a.add(eax, edx)?;
            a.loop_(top)
        }),
    ));
    v.push(case(
        "loopne/jrcxz",
        ALL,
        Box::new(|a| {
            let mut top = a.create_label();
            let mut out = a.create_label();
            a.and(ecx, 15)?;
            a.set_label(&mut top)?;
            a.jrcxz(out)?;
            a.cmp(byte_ptr(rsi + rcx), 0x80)?;
            a.loopne(top)?;
            a.set_label(&mut out)?;
            a.nop()
        }),
    ));
    v.push(case(
        "call/ret",
        ALL,
        Box::new(|a| {
            let mut f = a.create_label();
            let mut end = a.create_label();
            a.call(f)?;
            a.jmp(end)?;
            a.set_label(&mut f)?;
            a.lea(rax, qword_ptr(rax + rbx * 2))?;
            a.ret()?;
            a.set_label(&mut end)?;
            a.nop()
        }),
    ));
    run(v, "branches");
}

#[test]
fn stack_flags_misc() {
    let v = vec![
        case(
            "push/pop",
            ALL,
            Box::new(|a| {
                a.push(rax)?;
                a.push(qword_ptr(rsi + 8))?;
                a.pop(rbx)?;
                a.pop(qword_ptr(rsi + 16))?;
                a.push(0x1234_5678)?;
                a.pop(rdx)
            }),
        ),
        case(
            "push16/pop16",
            ALL,
            Box::new(|a| {
                a.push(cx)?;
                a.pop(dx)
            }),
        ),
        case(
            "pushfq (status flags)",
            ALL,
            Box::new(|a| {
                a.pushfq()?;
                a.pop(rax)?;
                a.and(eax, 0x8d5)
            }),
        ),
        case(
            "popfq (status flags)",
            ALL,
            Box::new(|a| {
                a.pushfq()?;
                a.and(rbx, 0x8d5)?;
                a.and(qword_ptr(rsp), !0x8d5i32)?;
                a.or(qword_ptr(rsp), rbx)?;
                a.popfq()
            }),
        ),
        case(
            "push rsp, mov [mem],rsp and mov rsp,[mem]",
            ALL,
            Box::new(|a| {
                a.push(rsp)?;
                a.pop(rax)?;
                a.sub(rax, rsp)?;
                a.lea(rdx, qword_ptr(rsp - 64))?;
                a.mov(qword_ptr(rdx), rsp)?;
                a.mov(rcx, qword_ptr(rdx))?;
                a.sub(rcx, rsp)?;
                a.lea(rbx, qword_ptr(rsp - 8))?;
                a.mov(qword_ptr(rdx + 8), rbx)?;
                a.mov(r8, rsp)?;
                a.mov(rsp, qword_ptr(rdx + 8))?;
                a.mov(r9, rsp)?;
                a.mov(rsp, r8)?;
                a.sub(r9, rsp)?;
                // Stack addresses differ between the host and the emulator.
                a.xor(edx, edx)?;
                a.xor(ebx, ebx)?;
                a.xor(r8d, r8d)
            }),
        ),
        case(
            "flags across call and ret (through memory accesses)",
            ALL,
            Box::new(|a| {
                let mut f = a.create_label();
                let mut g = a.create_label();
                let mut top = a.create_label();
                let mut done = a.create_label();
                // Three rounds: the later ones go through the translator's jump table.
                a.mov(r11d, 3)?;
                a.set_label(&mut top)?;
                a.call(f)?;
                a.setb(al)?;
                a.sete(ah)?;
                a.seto(r8b)?;
                a.sub(r12, r13)?;
                a.call(g)?;
                a.setb(bl)?;
                a.sets(bh)?;
                a.dec(r11)?;
                a.jnz(top)?;
                a.jmp(done)?;
                // A flag writer, then memory accesses, then RET.
                a.set_label(&mut f)?;
                a.cmp(rcx, rdx)?;
                a.mov(qword_ptr(rsp - 16), rcx)?;
                a.mov(r9, qword_ptr(rsp - 16))?;
                a.ret()?;
                // No flag writer: the caller's SUB's flags go through.
                a.set_label(&mut g)?;
                a.mov(qword_ptr(rsp - 16), r12)?;
                a.mov(r10, qword_ptr(rsp - 16))?;
                a.ret()?;
                a.set_label(&mut done)?;
                a.nop()
            }),
        ),
        case(
            "enter/leave",
            ALL,
            Box::new(|a| {
                a.mov(r9, rbp)?;
                a.enter(32, 0)?;
                a.mov(qword_ptr(rbp - 8), rax)?;
                a.mov(rcx, qword_ptr(rbp - 8))?;
                a.leave()?;
                a.sub(r9, rbp)
            }),
        ),
        case(
            "clc/stc/cmc",
            ALL,
            Box::new(|a| {
                a.clc()?;
                a.adc(eax, 0)?;
                a.stc()?;
                a.adc(ebx, 0)?;
                a.cmc()
            }),
        ),
        case(
            "cld/std",
            ALL,
            Box::new(|a| {
                a.std()?;
                a.lodsb()?;
                a.cld()?;
                a.lodsb()
            }),
        ),
        case(
            "cmpxchg8b",
            ALL,
            Box::new(|a| a.cmpxchg8b(qword_ptr(rsi + 8))),
        ),
        case(
            "cmpxchg16b",
            ALL,
            Box::new(|a| a.cmpxchg16b(xmmword_ptr(rsi + 16))),
        ),
        case(
            "cmpxchg8b equal",
            ALL,
            Box::new(|a| {
                a.mov(eax, dword_ptr(rsi + 8))?;
                a.mov(edx, dword_ptr(rsi + 12))?;
                a.cmpxchg8b(qword_ptr(rsi + 8))
            }),
        ),
        // LZCNT/TZCNT are not compared: the emulated CPUID has no ABM/BMI1, so they run
        // as BSR/BSF there (architecturally right for such a CPU) but not on the host.
        case(
            "movbe r64,m64",
            ALL,
            Box::new(|a| a.movbe(rax, qword_ptr(rsi + 8))),
        ),
        case(
            "movbe m32,r32",
            ALL,
            Box::new(|a| a.movbe(dword_ptr(rsi + 8), ebx)),
        ),
        case(
            "xlatb",
            ALL,
            Box::new(|a| {
                a.mov(rbx, rsi)?;
                a.xlatb()?;
                a.sub(rbx, rsi) // no pointer left in RBX
            }),
        ),
        case(
            "rep stosb",
            ALL,
            Box::new(|a| {
                a.and(ecx, 127)?;
                a.rep().stosb()
            }),
        ),
        case(
            "rep movsq",
            ALL,
            Box::new(|a| {
                a.and(ecx, 31)?;
                a.rep().movsq()
            }),
        ),
        case(
            "repne scasw",
            ALL,
            Box::new(|a| {
                a.and(ecx, 63)?;
                a.repne().scasw()
            }),
        ),
        case(
            "movsw/stosd/lodsq/scasd",
            ALL,
            Box::new(|a| {
                a.movsw()?;
                a.stosd()?;
                a.lodsq()?;
                a.scasd()
            }),
        ),
        case("xchg r8,r8", ALL, Box::new(|a| a.xchg(al, ch))),
        // Zero source: ZF=1 and (on Intel and AMD alike) the destination is unchanged.
        case(
            "bsf r64 zero",
            ZF,
            Box::new(|a| {
                a.xor(ebx, ebx)?;
                a.bsf(rax, rbx)
            }),
        ),
        case(
            "bsr r32 zero",
            ZF,
            Box::new(|a| {
                a.xor(ebx, ebx)?;
                a.bsr(eax, ebx)
            }),
        ),
        case(
            "nop/pause/fences",
            ALL,
            Box::new(|a| {
                a.nop()?;
                a.pause()?;
                a.lfence()?;
                a.mfence()?;
                a.sfence()
            }),
        ),
    ];
    run(v, "stack/flags/misc");
}
