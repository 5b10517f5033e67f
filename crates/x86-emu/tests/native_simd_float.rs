//! SSE/SSE2 floating-point functions of `x86_emu::simd` (values and MXCSR flags) checked
//! against the host CPU in all rounding modes with DAZ/FTZ on and off.

mod native;

use iced_x86::code_asm::*;
use native::gen::{Gen, Rng};
use native::{Machine, Mismatches, Snippet};
use x86_emu::simd::{self, FpOut};

const CASES: usize = 400;

type Emit = fn(&mut CodeAssembler) -> Result<(), IcedError>;
type FpFn = fn(u128, u128, u32) -> FpOut<u128>;
type CmpFn = Box<dyn Fn(u128, u128, u32) -> FpOut<u128>>;

/// Every rounding mode with each DAZ/FTZ combination; all exceptions masked.
fn configs() -> impl Iterator<Item = u32> {
    (0..4u32).flat_map(|rc| {
        [0, 0x40, 0x8000, 0x8040]
            .into_iter()
            .map(move |x| 0x1f80 | (rc << 13) | x)
    })
}

/// Runs `op xmm0, xmm1` natively and compares xmm0 and MXCSR with `f`.
fn check_fp(name: &str, emit: Emit, f: FpFn, gen: fn(&mut Rng) -> u128) {
    let snip = Snippet::new(emit);
    let mut rng = Rng::new(name.bytes().map(u64::from).sum::<u64>() * 31 + 7);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for mx in configs() {
        for _ in 0..CASES {
            let (a, b) = (gen(&mut rng), gen(&mut rng));
            m.set_xmm(0, a);
            m.set_xmm(1, b);
            m.set_mxcsr(mx);
            snip.run(&mut m);
            let out = f(a, b, mx);
            let mut emu_mx = mx;
            let emu = out.commit(&mut emu_mx).unwrap_or(a);
            if emu != m.xmm(0) || emu_mx != m.mxcsr() {
                bad.add(format!(
                    "mxcsr={mx:#06x} a={a:#034x} b={b:#034x}\n   cpu={:#034x} mxcsr={:#06x}\n   emu={emu:#034x} mxcsr={emu_mx:#06x}",
                    m.xmm(0),
                    m.mxcsr()
                ));
            }
        }
    }
    bad.finish(name);
}

fn ps(r: &mut Rng) -> u128 {
    r.ps()
}
fn pd(r: &mut Rng) -> u128 {
    r.pd()
}

macro_rules! fp_binops {
    ($gen:ident: $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_fp(stringify!($name), |a| a.$name(xmm0, xmm1), simd::$name, $gen);
            }
        )*
    };
}

fp_binops!(ps: addps, addss, subps, subss, mulps, mulss, divps, divss, minps, minss, maxps, maxss);
fp_binops!(pd: addpd, addsd, subpd, subsd, mulpd, mulsd, divpd, divsd, minpd, minsd, maxpd, maxsd);

#[test]
fn sqrt_all() {
    check_fp(
        "sqrtps",
        |a| a.sqrtps(xmm0, xmm1),
        |_, b, mx| simd::sqrtps(b, mx),
        ps,
    );
    check_fp("sqrtss", |a| a.sqrtss(xmm0, xmm1), simd::sqrtss, ps);
    check_fp(
        "sqrtpd",
        |a| a.sqrtpd(xmm0, xmm1),
        |_, b, mx| simd::sqrtpd(b, mx),
        pd,
    );
    check_fp("sqrtsd", |a| a.sqrtsd(xmm0, xmm1), simd::sqrtsd, pd);
}

#[test]
fn compares_every_predicate() {
    for imm in 0..8u8 {
        let i = i32::from(imm);
        // The closures can't capture `imm` as fn pointers; build snippets directly.
        let cases: [(&str, Snippet, CmpFn, Gen); 4] = [
            (
                "cmpps",
                Snippet::new(|a| a.cmpps(xmm0, xmm1, i)),
                Box::new(move |a, b, m| simd::cmpps(a, b, imm, m)),
                ps,
            ),
            (
                "cmpss",
                Snippet::new(|a| a.cmpss(xmm0, xmm1, i)),
                Box::new(move |a, b, m| simd::cmpss(a, b, imm, m)),
                ps,
            ),
            (
                "cmppd",
                Snippet::new(|a| a.cmppd(xmm0, xmm1, i)),
                Box::new(move |a, b, m| simd::cmppd(a, b, imm, m)),
                pd,
            ),
            (
                "cmpsd",
                Snippet::new(|a| a.cmpsd_3(xmm0, xmm1, i)),
                Box::new(move |a, b, m| simd::cmpsd(a, b, imm, m)),
                pd,
            ),
        ];
        let mut rng = Rng::new(u64::from(imm) + 1000);
        let mut m = Machine::new();
        let mut bad = Mismatches::default();
        for (name, s, f, gen) in &cases {
            for mx in [0x1f80, 0x1fc0] {
                for _ in 0..CASES {
                    let (a, b) = (gen(&mut rng), gen(&mut rng));
                    // Equal operands are otherwise rare.
                    let b = if rng.below(4) == 0 { a } else { b };
                    m.set_xmm(0, a);
                    m.set_xmm(1, b);
                    m.set_mxcsr(mx);
                    s.run(&mut m);
                    let out = f(a, b, mx);
                    if out.value != m.xmm(0) || mx | out.flags != m.mxcsr() {
                        bad.add(format!(
                            "{name} imm={imm} mx={mx:#x} a={a:#x} b={b:#x} cpu={:#x}/{:#x} emu={:#x}/{:#x}",
                            m.xmm(0), m.mxcsr(), out.value, mx | out.flags
                        ));
                    }
                }
            }
        }
        bad.finish("cmp*");
    }
}

#[test]
fn comis_flags() {
    type C = fn(u128, u128, u32) -> FpOut<u64>;
    let cases: [(&str, Snippet, C, Gen); 4] = [
        (
            "comiss",
            Snippet::new(|a| a.comiss(xmm0, xmm1)),
            simd::comiss,
            ps,
        ),
        (
            "ucomiss",
            Snippet::new(|a| a.ucomiss(xmm0, xmm1)),
            simd::ucomiss,
            ps,
        ),
        (
            "comisd",
            Snippet::new(|a| a.comisd(xmm0, xmm1)),
            simd::comisd,
            pd,
        ),
        (
            "ucomisd",
            Snippet::new(|a| a.ucomisd(xmm0, xmm1)),
            simd::ucomisd,
            pd,
        ),
    ];
    let mut rng = Rng::new(77);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for (name, s, f, gen) in &cases {
        for mx in [0x1f80, 0x1fc0] {
            for _ in 0..2000 {
                let (a, b) = (gen(&mut rng), gen(&mut rng));
                let b = if rng.below(4) == 0 { a } else { b };
                let fl_in = rng.next_u64() & native::STATUS_FLAGS;
                m.set_xmm(0, a);
                m.set_xmm(1, b);
                m.set_mxcsr(mx);
                m.rflags = fl_in;
                s.run(&mut m);
                let out = f(a, b, mx);
                let want = (fl_in & !simd::COMI_WRITTEN) | out.value;
                if m.rflags & native::STATUS_FLAGS != want || mx | out.flags != m.mxcsr() {
                    bad.add(format!(
                        "{name} mx={mx:#x} a={a:#x} b={b:#x} cpu={:#x}/{:#x} emu={want:#x}/{:#x}",
                        m.rflags & native::STATUS_FLAGS,
                        m.mxcsr(),
                        mx | out.flags
                    ));
                }
            }
        }
    }
    bad.finish("comis");
}

/// Products landing right at the smallest normal, where tininess-after-rounding, UE and
/// FTZ decide the result.
#[test]
fn underflow_boundary() {
    fn pair64(r: &mut Rng) -> (u64, u64) {
        let a = 1.0 + (r.next_u64() >> 12) as f64 * f64::EPSILON / 4096.0;
        let b = (f64::MIN_POSITIVE / a).to_bits();
        (
            a.to_bits(),
            b.wrapping_add(r.next_u64() % 9).wrapping_sub(4),
        )
    }
    fn pair32(r: &mut Rng) -> (u32, u32) {
        let a = 1.0 + (r.next_u64() >> 41) as f32 * f32::EPSILON / 8.0;
        let b = (f32::MIN_POSITIVE / a).to_bits();
        (
            a.to_bits(),
            b.wrapping_add((r.next_u64() % 9) as u32).wrapping_sub(4),
        )
    }
    let sd = Snippet::new(|a| a.mulpd(xmm0, xmm1));
    let sps = Snippet::new(|a| a.mulps(xmm2, xmm3));
    let mut rng = Rng::new(8);
    let mut m = Machine::new();
    let mut bad = Mismatches::default();
    for mx in configs() {
        for _ in 0..CASES {
            let ((a0, b0), (a1, b1)) = (pair64(&mut rng), pair64(&mut rng));
            let (a, b) = (
                u128::from(a0) | (u128::from(a1) << 64),
                u128::from(b0) | (u128::from(b1) << 64),
            );
            let ps: Vec<(u32, u32)> = (0..4).map(|_| pair32(&mut rng)).collect();
            let c = ps
                .iter()
                .enumerate()
                .fold(0u128, |x, (i, p)| x | (u128::from(p.0) << (32 * i)));
            let d = ps
                .iter()
                .enumerate()
                .fold(0u128, |x, (i, p)| x | (u128::from(p.1) << (32 * i)));
            for (s, f, x, y, xi) in [
                (&sd, simd::mulpd as FpFn, a, b, 0),
                (&sps, simd::mulps as FpFn, c, d, 2),
            ] {
                m.set_xmm(xi, x);
                m.set_xmm(xi + 1, y);
                m.set_mxcsr(mx);
                s.run(&mut m);
                let out = f(x, y, mx);
                if out.value != m.xmm(xi) || mx | out.flags != m.mxcsr() {
                    bad.add(format!(
                        "mx={mx:#x} x={x:#x} y={y:#x} cpu={:#x}/{:#x} emu={:#x}/{:#x}",
                        m.xmm(xi),
                        m.mxcsr(),
                        out.value,
                        mx | out.flags
                    ));
                }
            }
        }
    }
    bad.finish("underflow boundary");
}
