//! The x87 subset of `x86_emu::x87` checked against the host FPU: random register stacks
//! (values, tags, TOP, precision and rounding control) go in through the FXRSTOR image
//! built by `fxsave_image` and come back through FXSAVE parsed by `fxrstor_parse`.

mod native;

use iced_x86::code_asm::*;
use native::gen::Rng;
use native::{Machine, Mismatches, Snippet};
use vmm_types::FpuState;
use x86_emu::simd::compare::COMI_WRITTEN;
use x86_emu::x87::fxsave::{fxrstor_parse, fxsave_image};
use x86_emu::x87::ops::{CmpKind, Src, X87Op};
use x86_emu::x87::X87State;

const CASES: usize = 600;

/// An 80-bit value biased to edge encodings.
fn f80(r: &mut Rng) -> u128 {
    if r.below(3) == 0 {
        // Exact widenings of edge doubles.
        let d = f64::from_bits(r.float_bits(64));
        return widen(d);
    }
    let sign = (r.next_u64() & 1) as u128;
    let exp: u128 = match r.below(8) {
        0 => 0,
        1 => 0x7fff,
        2 => 1,
        3 => 0x7ffe,
        4 | 5 => 0x3fff + (r.next_u64() % 16) as u128 - 8,
        _ => (r.next_u64() & 0x7fff) as u128,
    };
    let frac: u64 = match r.below(5) {
        0 => 0,
        1 => 1,
        2 => u64::MAX >> 1,
        3 => 1 << 62,
        _ => r.next_u64() >> 1,
    };
    let int = u64::from(exp != 0 || r.below(16) == 0);
    // Rarely an unnormal (integer bit clear with a nonzero exponent).
    let int = if exp != 0 && r.below(40) == 0 { 0 } else { int };
    (sign << 79) | (exp << 64) | u128::from((int << 63) | frac)
}

fn widen(d: f64) -> u128 {
    let mut s = X87State::default();
    s.fld_m64(d.to_bits());
    s.st(0)
}

/// A random FPU state: some registers in use, random TOP, PC and RC, all exceptions
/// masked, no flags pending.
fn random_state(r: &mut Rng) -> X87State {
    random_state_masks(r, 0x3f)
}

/// As [`random_state`] with the exception masks `masks` (bits 0..5) in FCW.
fn random_state_masks(r: &mut Rng, masks: u16) -> X87State {
    let mut s = X87State::default();
    let pc = [0u16, 2, 3, 3][r.below(4)];
    let rc = r.below(4) as u16;
    // TOP random: push a few values so tags and TOP are consistent.
    for _ in 0..r.below(8) {
        s.fdecstp();
    }
    let used = r.below(9);
    for _ in 0..used {
        s.fld_m80(f80(r));
    }
    s.fsw &= !0xff; // the widening above may have raised flags
    s.fsw |= (r.next_u64() as u16) & 0x4700; // random C3 C2 C1 C0
    s.fldcw(0x40 | masks | (pc << 8) | (rc << 10));
    s
}

type EmuFn = Box<dyn Fn(&mut X87State, &mut [u8]) -> Option<u64>>;

struct Case {
    name: &'static str,
    snip: Snippet,
    emu: EmuFn,
    mem: fn(&mut Rng) -> [u8; 16],
}

fn mem_f32(r: &mut Rng) -> [u8; 16] {
    u128::from(r.float_bits(32)).to_le_bytes()
}
fn mem_f64(r: &mut Rng) -> [u8; 16] {
    u128::from(r.float_bits(64)).to_le_bytes()
}
fn mem_int(r: &mut Rng) -> [u8; 16] {
    r.int_u128().to_le_bytes()
}

fn rd32(m: &[u8]) -> u32 {
    u32::from_le_bytes(m[..4].try_into().unwrap())
}
fn rd64(m: &[u8]) -> u64 {
    u64::from_le_bytes(m[..8].try_into().unwrap())
}

fn case(
    name: &'static str,
    emit: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    mem: fn(&mut Rng) -> [u8; 16],
    emu: impl Fn(&mut X87State, &mut [u8]) -> Option<u64> + 'static,
) -> Case {
    Case {
        name,
        snip: Snippet::new(emit),
        emu: Box::new(emu),
        mem,
    }
}

fn run_cases(cases: Vec<Case>, what: &str) {
    run_cases_masked(cases, what, false);
}

/// Runs the cases; with `unmasked`, exceptions are randomly unmasked (a single
/// instruction then only sets ES: FXSAVE does not wait, so nothing traps).
fn run_cases_masked(cases: Vec<Case>, what: &str, unmasked: bool) {
    let mut rng = Rng::new(what.len() as u64 * 1009);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for c in &cases {
        for _ in 0..CASES {
            let masks = if unmasked {
                0x3f & !(rng.next_u64() as u16 & 0x3f)
            } else {
                0x3f
            };
            let s0 = random_state_masks(&mut rng, masks);
            let mem = (c.mem)(&mut rng);
            let fl_in = rng.next_u64() & native::STATUS_FLAGS;
            let fpu = s0.to_fpu_state(&FpuState::default());
            m.fx = fxsave_image(&fpu, true);
            m.mem[..16].copy_from_slice(&mem);
            m.rflags = fl_in;
            c.snip.run(&mut m);
            let cpu = X87State::from_fpu_state(&fxrstor_parse(&m.fx, true).unwrap());
            let mut emu = s0;
            let mut emu_mem = mem;
            let rfl = (c.emu)(&mut emu, &mut emu_mem);
            let emu_rflags = match rfl {
                Some(bits) => (fl_in & !COMI_WRITTEN) | bits,
                None => fl_in,
            };
            let cpu_cmp = X87State {
                fop: 0,
                fip: 0,
                fdp: 0,
                ..cpu
            };
            if cpu_cmp != emu
                || m.mem[..16] != emu_mem
                || m.rflags & native::STATUS_FLAGS != emu_rflags
            {
                bad.add(format!(
                    "{}: in {:x?}\n mem={:x?}\n cpu {:x?} mem={:x?} rfl={:#x}\n emu {:x?} mem={:x?} rfl={:#x}",
                    c.name,
                    (s0.fcw, s0.fsw, s0.ftw, s0.st_order().map(|b| hex(&b))),
                    hex(&mem),
                    (cpu_cmp.fcw, cpu_cmp.fsw, cpu_cmp.ftw, cpu_cmp.st_order().map(|b| hex(&b))),
                    hex(&m.mem[..16]),
                    m.rflags & native::STATUS_FLAGS,
                    (emu.fcw, emu.fsw, emu.ftw, emu.st_order().map(|b| hex(&b))),
                    hex(&emu_mem),
                    emu_rflags,
                ));
            }
        }
    }
    bad.finish(what);
}

fn hex(b: &[u8]) -> String {
    b.iter().rev().map(|x| format!("{x:02x}")).collect()
}

macro_rules! arith_cases {
    ($v:ident, $op:expr, $st0_sti:ident, $sti_st0:ident, $p:ident, $mem:ident, $int:ident) => {
        $v.push(case(
            concat!(stringify!($st0_sti), " st0,st3"),
            |a| a.$st0_sti(st0, st3),
            mem_f32,
            |s, _| {
                s.arith($op, 0, Src::St(3), false);
                None
            },
        ));
        $v.push(case(
            concat!(stringify!($sti_st0), " st5,st0"),
            |a| a.$sti_st0(st5, st0),
            mem_f32,
            |s, _| {
                s.arith($op, 5, Src::St(0), false);
                None
            },
        ));
        $v.push(case(
            stringify!($p),
            |a| a.$p(st1, st0),
            mem_f32,
            |s, _| {
                s.arith($op, 1, Src::St(0), true);
                None
            },
        ));
        $v.push(case(
            concat!(stringify!($mem), " m32"),
            |a| a.$mem(dword_ptr(rsi)),
            mem_f32,
            |s, m| {
                s.arith($op, 0, Src::M32(rd32(m)), false);
                None
            },
        ));
        $v.push(case(
            concat!(stringify!($mem), " m64"),
            |a| a.$mem(qword_ptr(rsi)),
            mem_f64,
            |s, m| {
                s.arith($op, 0, Src::M64(rd64(m)), false);
                None
            },
        ));
        $v.push(case(
            concat!(stringify!($int), " m32"),
            |a| a.$int(dword_ptr(rsi)),
            mem_int,
            |s, m| {
                s.arith($op, 0, Src::Int(i64::from(rd32(m) as i32)), false);
                None
            },
        ));
        $v.push(case(
            concat!(stringify!($int), " m16"),
            |a| a.$int(word_ptr(rsi)),
            mem_int,
            |s, m| {
                s.arith($op, 0, Src::Int(i64::from(rd32(m) as i16)), false);
                None
            },
        ));
    };
}

#[test]
fn x87_arithmetic() {
    let mut v = Vec::new();
    arith_cases!(v, X87Op::Add, fadd_2, fadd_2, faddp, fadd, fiadd);
    arith_cases!(v, X87Op::Mul, fmul_2, fmul_2, fmulp, fmul, fimul);
    run_cases(v, "x87 add/mul");
}

#[test]
fn x87_sub_div() {
    let mut v = Vec::new();
    arith_cases!(v, X87Op::Sub, fsub_2, fsub_2, fsubp, fsub, fisub);
    arith_cases!(v, X87Op::SubR, fsubr_2, fsubr_2, fsubrp, fsubr, fisubr);
    arith_cases!(v, X87Op::Div, fdiv_2, fdiv_2, fdivp, fdiv, fidiv);
    arith_cases!(v, X87Op::DivR, fdivr_2, fdivr_2, fdivrp, fdivr, fidivr);
    run_cases(v, "x87 sub/div");
}

fn mem_f80(r: &mut Rng) -> [u8; 16] {
    f80(r).to_le_bytes()
}

fn wr(m: &mut [u8], v: Option<u64>, n: usize) {
    if let Some(v) = v {
        m[..n].copy_from_slice(&v.to_le_bytes()[..n]);
    }
}

#[test]
fn x87_loads_stores() {
    let v = vec![
        case(
            "fld m32",
            |a| a.fld(dword_ptr(rsi)),
            mem_f32,
            |s, m| {
                s.fld_m32(rd32(m));
                None
            },
        ),
        case(
            "fld m64",
            |a| a.fld(qword_ptr(rsi)),
            mem_f64,
            |s, m| {
                s.fld_m64(rd64(m));
                None
            },
        ),
        case(
            "fld m80",
            |a| a.fld(tword_ptr(rsi)),
            mem_f80,
            |s, m| {
                s.fld_m80(u128::from_le_bytes(m[..16].try_into().unwrap()));
                None
            },
        ),
        case(
            "fld st2",
            |a| a.fld(st2),
            mem_f32,
            |s, _| {
                s.fld_st(2);
                None
            },
        ),
        case(
            "fild m16",
            |a| a.fild(word_ptr(rsi)),
            mem_int,
            |s, m| {
                s.fild(i64::from(rd32(m) as i16));
                None
            },
        ),
        case(
            "fild m32",
            |a| a.fild(dword_ptr(rsi)),
            mem_int,
            |s, m| {
                s.fild(i64::from(rd32(m) as i32));
                None
            },
        ),
        case(
            "fild m64",
            |a| a.fild(qword_ptr(rsi)),
            mem_int,
            |s, m| {
                s.fild(rd64(m) as i64);
                None
            },
        ),
        case(
            "fst m32",
            |a| a.fst(dword_ptr(rsi)),
            mem_int,
            |s, m| {
                wr(m, s.fst_m32(false).map(u64::from), 4);
                None
            },
        ),
        case(
            "fstp m32",
            |a| a.fstp(dword_ptr(rsi)),
            mem_int,
            |s, m| {
                wr(m, s.fst_m32(true).map(u64::from), 4);
                None
            },
        ),
        case(
            "fst m64",
            |a| a.fst(qword_ptr(rsi)),
            mem_int,
            |s, m| {
                wr(m, s.fst_m64(false), 8);
                None
            },
        ),
        case(
            "fstp m64",
            |a| a.fstp(qword_ptr(rsi)),
            mem_int,
            |s, m| {
                wr(m, s.fst_m64(true), 8);
                None
            },
        ),
        case(
            "fstp m80",
            |a| a.fstp(tword_ptr(rsi)),
            mem_int,
            |s, m| {
                if let Some(v) = s.fstp_m80() {
                    m[..10].copy_from_slice(&v.to_le_bytes()[..10]);
                }
                None
            },
        ),
        case(
            "fist m16",
            |a| a.fist(word_ptr(rsi)),
            mem_int,
            |s, m| {
                wr(m, s.fist(16, false), 2);
                None
            },
        ),
        case(
            "fistp m32",
            |a| a.fistp(dword_ptr(rsi)),
            mem_int,
            |s, m| {
                wr(m, s.fist(32, true), 4);
                None
            },
        ),
        case(
            "fistp m64",
            |a| a.fistp(qword_ptr(rsi)),
            mem_int,
            |s, m| {
                wr(m, s.fist(64, true), 8);
                None
            },
        ),
        case(
            "fst st3",
            |a| a.fst(st3),
            mem_int,
            |s, _| {
                s.fst_st(3, false);
                None
            },
        ),
        case(
            "fstp st1",
            |a| a.fstp(st1),
            mem_int,
            |s, _| {
                s.fst_st(1, true);
                None
            },
        ),
        case(
            "fldz",
            |a| a.fldz(),
            mem_int,
            |s, _| {
                s.fldz();
                None
            },
        ),
        case(
            "fld1",
            |a| a.fld1(),
            mem_int,
            |s, _| {
                s.fld1();
                None
            },
        ),
    ];
    run_cases(v, "x87 loads/stores");
}

#[test]
fn x87_compares() {
    let v = vec![
        case(
            "fcom st2",
            |a| a.fcom_2(st0, st2),
            mem_f32,
            |s, _| {
                s.fcom(Src::St(2), CmpKind::Ordered, 0);
                None
            },
        ),
        case(
            "fcomp st1",
            |a| a.fcomp_2(st0, st1),
            mem_f32,
            |s, _| {
                s.fcom(Src::St(1), CmpKind::Ordered, 1);
                None
            },
        ),
        case(
            "fcompp",
            |a| a.fcompp(),
            mem_f32,
            |s, _| {
                s.fcom(Src::St(1), CmpKind::Ordered, 2);
                None
            },
        ),
        case(
            "fucom st1",
            |a| a.fucom(st0, st1),
            mem_f32,
            |s, _| {
                s.fcom(Src::St(1), CmpKind::Unordered, 0);
                None
            },
        ),
        case(
            "fucompp",
            |a| a.fucompp(),
            mem_f32,
            |s, _| {
                s.fcom(Src::St(1), CmpKind::Unordered, 2);
                None
            },
        ),
        case(
            "fcom m32",
            |a| a.fcom(dword_ptr(rsi)),
            mem_f32,
            |s, m| {
                s.fcom(Src::M32(rd32(m)), CmpKind::Ordered, 0);
                None
            },
        ),
        case(
            "fcomp m64",
            |a| a.fcomp(qword_ptr(rsi)),
            mem_f64,
            |s, m| {
                s.fcom(Src::M64(rd64(m)), CmpKind::Ordered, 1);
                None
            },
        ),
        case(
            "ficom m32",
            |a| a.ficom(dword_ptr(rsi)),
            mem_int,
            |s, m| {
                s.fcom(Src::Int(i64::from(rd32(m) as i32)), CmpKind::Ordered, 0);
                None
            },
        ),
        case(
            "ftst",
            |a| a.ftst(),
            mem_int,
            |s, _| {
                s.ftst();
                None
            },
        ),
        case(
            "fcomi st1",
            |a| a.fcomi(st0, st1),
            mem_int,
            |s, _| s.fcomi(1, CmpKind::Ordered, false),
        ),
        case(
            "fcomip st3",
            |a| a.fcomip(st0, st3),
            mem_int,
            |s, _| s.fcomi(3, CmpKind::Ordered, true),
        ),
        case(
            "fucomi st1",
            |a| a.fucomi(st0, st1),
            mem_int,
            |s, _| s.fcomi(1, CmpKind::Unordered, false),
        ),
        case(
            "fucomip st7",
            |a| a.fucomip(st0, st7),
            mem_int,
            |s, _| s.fcomi(7, CmpKind::Unordered, true),
        ),
        case(
            "fxam",
            |a| a.fxam(),
            mem_int,
            |s, _| {
                s.fxam();
                None
            },
        ),
    ];
    run_cases(v, "x87 compares");
}

#[test]
fn x87_misc() {
    let v = vec![
        case(
            "fxch st3",
            |a| a.fxch(st0, st3),
            mem_int,
            |s, _| {
                s.fxch(3);
                None
            },
        ),
        case(
            "fchs",
            |a| a.fchs(),
            mem_int,
            |s, _| {
                s.fchs();
                None
            },
        ),
        case(
            "fabs",
            |a| a.fabs(),
            mem_int,
            |s, _| {
                s.fabs();
                None
            },
        ),
        case(
            "fsqrt",
            |a| a.fsqrt(),
            mem_int,
            |s, _| {
                s.fsqrt();
                None
            },
        ),
        case(
            "fninit",
            |a| a.fninit(),
            mem_int,
            |s, _| {
                s.fninit();
                None
            },
        ),
        case(
            "fnclex",
            |a| a.fnclex(),
            mem_int,
            |s, _| {
                s.fnclex();
                None
            },
        ),
        case(
            "fincstp",
            |a| a.fincstp(),
            mem_int,
            |s, _| {
                s.fincstp();
                None
            },
        ),
        case(
            "fdecstp",
            |a| a.fdecstp(),
            mem_int,
            |s, _| {
                s.fdecstp();
                None
            },
        ),
        case(
            "ffree st2",
            |a| a.ffree(st2),
            mem_int,
            |s, _| {
                s.ffree(2);
                None
            },
        ),
        case(
            "fnstsw m16",
            |a| a.fnstsw(word_ptr(rsi)),
            mem_int,
            |s, m| {
                m[..2].copy_from_slice(&s.fnstsw().to_le_bytes());
                None
            },
        ),
        case(
            "fnstcw m16",
            |a| a.fnstcw(word_ptr(rsi)),
            mem_int,
            |s, m| {
                m[..2].copy_from_slice(&s.fnstcw().to_le_bytes());
                None
            },
        ),
        case(
            "fldcw m16",
            |a| a.fldcw(word_ptr(rsi)),
            |r| {
                // Keep exceptions masked so the host does not trap.
                ((r.next_u64() as u16 & 0xff80) | 0x3f)
                    .to_le_bytes()
                    .iter()
                    .chain([0u8; 14].iter())
                    .copied()
                    .collect::<Vec<_>>()
                    .try_into()
                    .unwrap()
            },
            |s, m| {
                s.fldcw(u16::from_le_bytes([m[0], m[1]]));
                None
            },
        ),
    ];
    run_cases(v, "x87 misc");
}

#[test]
fn x87_state_serde_round_trip() {
    let mut rng = Rng::new(1);
    let s = random_state(&mut rng);
    let json = serde_json::to_string(&s).unwrap();
    let back: X87State = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let fpu = s.to_fpu_state(&FpuState::default());
    assert_eq!(X87State::from_fpu_state(&fpu), s);
}

/// Arithmetic, loads and stores with exceptions randomly unmasked: flags, ES/B, which
/// results are (not) written, and the rebiased results of unmasked OE/UE.
#[test]
fn x87_unmasked_exceptions() {
    let mut v = Vec::new();
    arith_cases!(v, X87Op::Div, fdiv_2, fdiv_2, fdivp, fdiv, fidiv);
    arith_cases!(v, X87Op::Sub, fsub_2, fsub_2, fsubp, fsub, fisub);
    v.push(case(
        "fld m32",
        |a| a.fld(dword_ptr(rsi)),
        mem_f32,
        |s, m| {
            s.fld_m32(rd32(m));
            None
        },
    ));
    v.push(case(
        "fstp m32",
        |a| a.fstp(dword_ptr(rsi)),
        mem_int,
        |s, m| {
            wr(m, s.fst_m32(true).map(u64::from), 4);
            None
        },
    ));
    v.push(case(
        "fistp m16",
        |a| a.fistp(word_ptr(rsi)),
        mem_int,
        |s, m| {
            wr(m, s.fist(16, true), 2);
            None
        },
    ));
    v.push(case(
        "fsqrt",
        |a| a.fsqrt(),
        mem_int,
        |s, _| {
            s.fsqrt();
            None
        },
    ));
    v.push(case(
        "fcomi st1",
        |a| a.fcomi(st0, st1),
        mem_int,
        |s, _| s.fcomi(1, CmpKind::Ordered, false),
    ));
    run_cases_masked(v, "x87 unmasked", true);
}
