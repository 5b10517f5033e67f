//! SSE2/MMX integer, logic and shuffle functions of `x86_emu::simd` checked against the
//! host CPU on edge and fixed-seed random operands.

mod native;

use iced_x86::code_asm::*;
use native::gen::Rng;
use native::{Machine, Mismatches, Snippet};
use x86_emu::simd;

const CASES: usize = 1500;

type Emit = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// `op xmm0, xmm1` natively vs `f(xmm0, xmm1)`.
fn check_binop(name: &str, emit: Emit, f: fn(u128, u128) -> u128) {
    let snip = Snippet::new(emit);
    let mut rng = Rng::new(name.len() as u64 * 7919 + 1);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for _ in 0..CASES {
        let (a, b) = (rng.int_u128(), rng.int_u128());
        m.set_xmm(0, a);
        m.set_xmm(1, b);
        snip.run(&mut m);
        let want = m.xmm(0);
        let got = f(a, b);
        if got != want {
            bad.add(format!(
                "a={a:#034x} b={b:#034x} cpu={want:#034x} emu={got:#034x}"
            ));
        }
    }
    bad.finish(name);
}

macro_rules! binops {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_binop(stringify!($name), |a| a.$name(xmm0, xmm1), simd::$name);
            }
        )*
    };
}

binops!(
    paddb, paddw, paddd, paddq, psubb, psubw, psubd, psubq, paddsb, paddsw, psubsb, psubsw,
    paddusb, paddusw, psubusb, psubusw, pcmpeqb, pcmpeqw, pcmpeqd, pcmpgtb, pcmpgtw, pcmpgtd,
    pminub, pmaxub, pminsw, pmaxsw, pavgb, pavgw, pmullw, pmulhw, pmulhuw, pmuludq, pmaddwd,
    psadbw, pand, pandn, por, pxor, punpcklbw, punpcklwd, punpckldq, punpcklqdq, punpckhbw,
    punpckhwd, punpckhdq, punpckhqdq, packsswb, packssdw, packuswb, movhlps, movlhps,
);

#[test]
fn unpck_float_aliases() {
    check_binop("unpcklps", |a| a.unpcklps(xmm0, xmm1), simd::punpckldq);
    check_binop("unpckhps", |a| a.unpckhps(xmm0, xmm1), simd::punpckhdq);
    check_binop("unpcklpd", |a| a.unpcklpd(xmm0, xmm1), simd::punpcklqdq);
    check_binop("unpckhpd", |a| a.unpckhpd(xmm0, xmm1), simd::punpckhqdq);
    check_binop("andps", |a| a.andps(xmm0, xmm1), simd::pand);
    check_binop("andnpd", |a| a.andnpd(xmm0, xmm1), simd::pandn);
    check_binop("orps", |a| a.orps(xmm0, xmm1), simd::por);
    check_binop("xorpd", |a| a.xorpd(xmm0, xmm1), simd::pxor);
    check_binop("movss", |a| a.movss(xmm0, xmm1), simd::movss_merge);
    check_binop("movsd", |a| a.movsd_2(xmm0, xmm1), simd::movsd_merge);
    check_binop("movq", |a| a.movq(xmm0, xmm1), |_, b| simd::movq_zext(b));
}

const SHIFT_COUNTS: [u64; 14] = [0, 1, 2, 7, 8, 15, 16, 17, 31, 32, 63, 64, 65, 1 << 40];

/// Register-count and immediate-count shifts.
fn check_shift(
    name: &str,
    emit_reg: Emit,
    emit_imm: fn(&mut CodeAssembler, i32) -> Result<(), IcedError>,
    f: fn(u128, u64) -> u128,
) {
    let reg = Snippet::new(emit_reg);
    let mut rng = Rng::new(99);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for i in 0..CASES {
        let a = rng.int_u128();
        let count = if i % 3 == 0 {
            rng.next_u64() % 80
        } else {
            SHIFT_COUNTS[rng.below(SHIFT_COUNTS.len())]
        };
        // The upper quadword of the count register is ignored by the CPU.
        let hi = u128::from(rng.next_u64()) << 64;
        m.set_xmm(0, a);
        m.set_xmm(1, hi | u128::from(count));
        reg.run(&mut m);
        if f(a, count) != m.xmm(0) {
            bad.add(format!("{name} xmm a={a:#x} count={count}"));
        }
    }
    for imm in [
        0i32, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 255,
    ] {
        let s = Snippet::new(|a| emit_imm(a, imm));
        for _ in 0..40 {
            let a = rng.int_u128();
            m.set_xmm(0, a);
            s.run(&mut m);
            if f(a, imm as u64) != m.xmm(0) {
                bad.add(format!("{name} imm a={a:#x} count={imm}"));
            }
        }
    }
    bad.finish(name);
}

macro_rules! shifts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_shift(
                    stringify!($name),
                    |a| a.$name(xmm0, xmm1),
                    |a, imm| a.$name(xmm0, imm),
                    simd::$name,
                );
            }
        )*
    };
}

shifts!(psllw, pslld, psllq, psrlw, psrld, psrlq, psraw, psrad);

#[test]
fn byte_shifts() {
    let mut rng = Rng::new(5);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for imm in 0..=255u8 {
        let l = Snippet::new(|a| a.pslldq(xmm0, i32::from(imm)));
        let r = Snippet::new(|a| a.psrldq(xmm1, i32::from(imm)));
        let v = rng.int_u128();
        m.set_xmm(0, v);
        m.set_xmm(1, v);
        l.run(&mut m);
        r.run(&mut m);
        if m.xmm(0) != simd::pslldq(v, imm) || m.xmm(1) != simd::psrldq(v, imm) {
            bad.add(format!("imm={imm} v={v:#x}"));
        }
    }
    bad.finish("pslldq/psrldq");
}

/// Every imm8 of the shuffles with an immediate.
#[test]
fn imm_shuffles() {
    let mut rng = Rng::new(17);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for imm in 0..=255u8 {
        let i = i32::from(imm);
        let s = Snippet::new(|a| {
            a.pshufd(xmm2, xmm0, i)?;
            a.pshuflw(xmm3, xmm0, i)?;
            a.pshufhw(xmm4, xmm0, i)?;
            a.movdqa(xmm5, xmm0)?;
            a.shufps(xmm5, xmm1, i)?;
            a.movdqa(xmm6, xmm0)?;
            a.shufpd(xmm6, xmm1, i)?;
            a.pshufw(mm1, mm0, i)?;
            a.movdqa(xmm7, xmm0)?;
            a.pinsrw(xmm7, ecx, i)?;
            a.pextrw(eax, xmm0, i)
        });
        for _ in 0..8 {
            let (x, y) = (rng.int_u128(), rng.int_u128());
            let w = rng.next_u64();
            m.set_xmm(0, x);
            m.set_xmm(1, y);
            m.set_mm(0, w);
            m.gpr[native::RCX] = w;
            s.run(&mut m);
            let checks = [
                ("pshufd", m.xmm(2), simd::pshufd(x, imm)),
                ("pshuflw", m.xmm(3), simd::pshuflw(x, imm)),
                ("pshufhw", m.xmm(4), simd::pshufhw(x, imm)),
                ("shufps", m.xmm(5), simd::shufps(x, y, imm)),
                ("shufpd", m.xmm(6), simd::shufpd(x, y, imm)),
                (
                    "pshufw",
                    u128::from(m.mm(1)),
                    u128::from(simd::mmx_pshufw(w, imm)),
                ),
                ("pinsrw", m.xmm(7), simd::pinsrw(x, w as u16, imm)),
                (
                    "pextrw",
                    u128::from(m.gpr[0]),
                    u128::from(simd::pextrw(x, imm)),
                ),
            ];
            for (n, cpu, emu) in checks {
                if cpu != emu {
                    bad.add(format!(
                        "{n} imm={imm} x={x:#x} y={y:#x} cpu={cpu:#x} emu={emu:#x}"
                    ));
                }
            }
        }
    }
    bad.finish("imm shuffles");
}

#[test]
fn sign_masks() {
    let s = Snippet::new(|a| {
        a.pmovmskb(eax, xmm0)?;
        a.movmskps(ecx, xmm0)?;
        a.movmskpd(edx, xmm0)?;
        a.pmovmskb(ebx, mm0)
    });
    let mut rng = Rng::new(3);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for _ in 0..CASES {
        let x = rng.int_u128();
        m.set_xmm(0, x);
        m.set_mm(0, x as u64);
        m.gpr[..4].copy_from_slice(&[u64::MAX; 4]);
        s.run(&mut m);
        let want = [
            simd::pmovmskb(x),
            simd::movmskps(x),
            simd::movmskpd(x),
            simd::mmx_pmovmskb(x as u64),
        ];
        if m.gpr[..4] != want.map(u64::from) {
            bad.add(format!("x={x:#x} cpu={:x?} emu={want:x?}", &m.gpr[..4]));
        }
    }
    bad.finish("pmovmskb/movmskps/movmskpd");
}

/// MMX forms: `op mm0, mm1`.
#[test]
fn mmx_ops() {
    type F = fn(u64, u64) -> u64;
    let lanewise = |f: fn(u128, u128) -> u128| move |a: u64, b: u64| f(a.into(), b.into()) as u64;
    type MmxFn = Box<dyn Fn(u64, u64) -> u64>;
    let cases: Vec<(&str, Snippet, MmxFn)> = vec![
        (
            "paddw",
            Snippet::new(|a| a.paddw(mm0, mm1)),
            Box::new(lanewise(simd::paddw)),
        ),
        (
            "psubusb",
            Snippet::new(|a| a.psubusb(mm0, mm1)),
            Box::new(lanewise(simd::psubusb)),
        ),
        (
            "pmaddwd",
            Snippet::new(|a| a.pmaddwd(mm0, mm1)),
            Box::new(lanewise(simd::pmaddwd)),
        ),
        (
            "pcmpgtd",
            Snippet::new(|a| a.pcmpgtd(mm0, mm1)),
            Box::new(lanewise(simd::pcmpgtd)),
        ),
        (
            "psadbw",
            Snippet::new(|a| a.psadbw(mm0, mm1)),
            Box::new(simd::mmx_psadbw as F),
        ),
        (
            "punpcklbw",
            Snippet::new(|a| a.punpcklbw(mm0, mm1)),
            Box::new(|a, b| simd::mmx_punpckl(a, b, 8)),
        ),
        (
            "punpckhwd",
            Snippet::new(|a| a.punpckhwd(mm0, mm1)),
            Box::new(|a, b| simd::mmx_punpckh(a, b, 16)),
        ),
        (
            "punpckhdq",
            Snippet::new(|a| a.punpckhdq(mm0, mm1)),
            Box::new(|a, b| simd::mmx_punpckh(a, b, 32)),
        ),
        (
            "packsswb",
            Snippet::new(|a| a.packsswb(mm0, mm1)),
            Box::new(simd::mmx_packsswb as F),
        ),
        (
            "packuswb",
            Snippet::new(|a| a.packuswb(mm0, mm1)),
            Box::new(simd::mmx_packuswb as F),
        ),
        (
            "packssdw",
            Snippet::new(|a| a.packssdw(mm0, mm1)),
            Box::new(simd::mmx_packssdw as F),
        ),
        (
            "psrlq",
            Snippet::new(|a| a.psrlq(mm0, mm1)),
            Box::new(|a, b| simd::psrlq(a.into(), b) as u64),
        ),
    ];
    let mut rng = Rng::new(11);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for (name, s, f) in &cases {
        for _ in 0..500 {
            let (a, b) = (rng.int_u128() as u64, rng.int_u128() as u64);
            let b = if *name == "psrlq" { b % 70 } else { b };
            m.set_mm(0, a);
            m.set_mm(1, b);
            s.run(&mut m);
            if m.mm(0) != f(a, b) {
                bad.add(format!(
                    "{name} a={a:#x} b={b:#x} cpu={:#x} emu={:#x}",
                    m.mm(0),
                    f(a, b)
                ));
            }
        }
    }
    bad.finish("mmx");
}

/// The harness really executes the snippet and moves GPRs, flags and XMM both ways.
#[test]
fn harness_round_trips_state() {
    let s = Snippet::new(|a| {
        a.paddd(xmm0, xmm1)?;
        a.add(rax, rbx)?;
        a.mov(qword_ptr(rsi), rax)?;
        a.add(r15, 1)
    });
    let mut m = Machine::new();
    m.set_xmm(0, 5);
    m.set_xmm(1, 7);
    m.gpr[native::RAX] = u64::MAX;
    m.gpr[native::RBX] = 1;
    m.gpr[15] = 41;
    s.run(&mut m);
    assert_eq!(m.xmm(0), 12);
    assert_eq!(m.gpr[native::RAX], 0);
    assert_eq!(m.gpr[15], 42);
    assert_eq!(m.rflags & 0x8d5, 0); // 41 + 1: no CF, ZF, SF...
    assert_eq!(m.mem[..8], [0; 8]);
    assert!(!s.body.is_empty());
}
