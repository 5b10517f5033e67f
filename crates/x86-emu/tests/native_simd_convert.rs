//! SSE/SSE2 conversions of `x86_emu::simd` (values and MXCSR flags) checked against the
//! host CPU in all rounding modes with DAZ/FTZ on and off.

mod native;

use iced_x86::code_asm::*;
use native::gen::{Gen, Rng};
use native::{Machine, Mismatches, Snippet, RAX};
use x86_emu::simd::{self, FpOut};

const CASES: usize = 400;

fn configs() -> impl Iterator<Item = u32> {
    (0..4u32).flat_map(|rc| {
        [0, 0x40, 0x8000, 0x8040]
            .into_iter()
            .map(move |x| 0x1f80 | (rc << 13) | x)
    })
}

/// A double near the edges of integer ranges or halfway between integers.
fn near_int_f64(r: &mut Rng) -> f64 {
    const EDGES: [f64; 8] = [
        2147483648.0,
        2147483647.0,
        9223372036854775808.0,
        9223372036854774784.0,
        4294967296.0,
        0.5,
        1.5,
        2.5,
    ];
    let sign = if r.below(2) == 0 { 1.0 } else { -1.0 };
    let v = match r.below(3) {
        0 => EDGES[r.below(EDGES.len())],
        1 => EDGES[r.below(4)] + [-1.0, -0.5, 0.5, 1.0, -0.75][r.below(5)],
        _ => ((r.next_u64() >> r.below(64)) as f64) + [0.0, 0.25, 0.5, 0.75][r.below(4)],
    };
    sign * v
}

fn gen_f64(r: &mut Rng) -> u128 {
    let lane = |r: &mut Rng| {
        if r.below(2) == 0 {
            near_int_f64(r).to_bits()
        } else {
            r.float_bits(64)
        }
    };
    u128::from(lane(r)) | (u128::from(lane(r)) << 64)
}

fn gen_f32(r: &mut Rng) -> u128 {
    (0..4).fold(0, |acc, i| {
        let bits = if r.below(2) == 0 {
            (near_int_f64(r) as f32).to_bits()
        } else {
            r.float_bits(32) as u32
        };
        acc | (u128::from(bits) << (32 * i))
    })
}

fn gen_int(r: &mut Rng) -> u128 {
    r.int_u128()
}

type XmmFn = Box<dyn Fn(u128, u128, u32) -> FpOut<u128>>;

/// `op xmm0, xmm1` vs `f(xmm0, xmm1, mxcsr)`.
fn check_xmm(name: &str, s: Snippet, f: XmmFn, gen: fn(&mut Rng) -> u128, bad: &mut Mismatches) {
    let mut rng = Rng::new(name.len() as u64 * 131);
    let mut m = Machine::new();
    for mx in configs() {
        for _ in 0..CASES {
            let (a, b) = (gen(&mut rng), gen(&mut rng));
            m.set_xmm(0, a);
            m.set_xmm(1, b);
            m.set_mxcsr(mx);
            s.run(&mut m);
            let out = f(a, b, mx);
            if out.value != m.xmm(0) || mx | out.flags != m.mxcsr() {
                bad.add(format!(
                    "{name} mx={mx:#x} b={b:#034x}\n  cpu={:#034x}/{:#x}\n  emu={:#034x}/{:#x}",
                    m.xmm(0),
                    m.mxcsr(),
                    out.value,
                    mx | out.flags
                ));
            }
        }
    }
}

#[test]
fn xmm_to_xmm() {
    let mut bad = Mismatches::default();
    let cases: Vec<(&str, Snippet, XmmFn, Gen)> = vec![
        (
            "cvtss2sd",
            Snippet::new(|a| a.cvtss2sd(xmm0, xmm1)),
            Box::new(simd::cvtss2sd),
            gen_f32,
        ),
        (
            "cvtsd2ss",
            Snippet::new(|a| a.cvtsd2ss(xmm0, xmm1)),
            Box::new(simd::cvtsd2ss),
            gen_f64,
        ),
        (
            "cvtps2pd",
            Snippet::new(|a| a.cvtps2pd(xmm0, xmm1)),
            Box::new(|_, b, m| simd::cvtps2pd(b, m)),
            gen_f32,
        ),
        (
            "cvtpd2ps",
            Snippet::new(|a| a.cvtpd2ps(xmm0, xmm1)),
            Box::new(|_, b, m| simd::cvtpd2ps(b, m)),
            gen_f64,
        ),
        (
            "cvtdq2ps",
            Snippet::new(|a| a.cvtdq2ps(xmm0, xmm1)),
            Box::new(|_, b, m| simd::cvtdq2ps(b, m)),
            gen_int,
        ),
        (
            "cvtdq2pd",
            Snippet::new(|a| a.cvtdq2pd(xmm0, xmm1)),
            Box::new(|_, b, _| FpOut {
                value: simd::cvtdq2pd(b),
                flags: 0,
            }),
            gen_int,
        ),
        (
            "cvtps2dq",
            Snippet::new(|a| a.cvtps2dq(xmm0, xmm1)),
            Box::new(|_, b, m| simd::cvtps2dq(b, m)),
            gen_f32,
        ),
        (
            "cvttps2dq",
            Snippet::new(|a| a.cvttps2dq(xmm0, xmm1)),
            Box::new(|_, b, m| simd::cvttps2dq(b, m)),
            gen_f32,
        ),
        (
            "cvtpd2dq",
            Snippet::new(|a| a.cvtpd2dq(xmm0, xmm1)),
            Box::new(|_, b, m| simd::cvtpd2dq(b, m)),
            gen_f64,
        ),
        (
            "cvttpd2dq",
            Snippet::new(|a| a.cvttpd2dq(xmm0, xmm1)),
            Box::new(|_, b, m| simd::cvttpd2dq(b, m)),
            gen_f64,
        ),
    ];
    for (name, s, f, gen) in cases {
        check_xmm(name, s, f, gen, &mut bad);
    }
    bad.finish("xmm conversions");
}

type ToIntFn = fn(u128, bool, u32) -> FpOut<u64>;

#[test]
fn float_to_gpr() {
    let mut bad = Mismatches::default();
    let cases: Vec<(&str, Snippet, ToIntFn, bool, Gen)> = vec![
        (
            "cvtss2si r32",
            Snippet::new(|a| a.cvtss2si(eax, xmm1)),
            simd::cvtss2si,
            false,
            gen_f32,
        ),
        (
            "cvtss2si r64",
            Snippet::new(|a| a.cvtss2si(rax, xmm1)),
            simd::cvtss2si,
            true,
            gen_f32,
        ),
        (
            "cvttss2si r32",
            Snippet::new(|a| a.cvttss2si(eax, xmm1)),
            simd::cvttss2si,
            false,
            gen_f32,
        ),
        (
            "cvttss2si r64",
            Snippet::new(|a| a.cvttss2si(rax, xmm1)),
            simd::cvttss2si,
            true,
            gen_f32,
        ),
        (
            "cvtsd2si r32",
            Snippet::new(|a| a.cvtsd2si(eax, xmm1)),
            simd::cvtsd2si,
            false,
            gen_f64,
        ),
        (
            "cvtsd2si r64",
            Snippet::new(|a| a.cvtsd2si(rax, xmm1)),
            simd::cvtsd2si,
            true,
            gen_f64,
        ),
        (
            "cvttsd2si r32",
            Snippet::new(|a| a.cvttsd2si(eax, xmm1)),
            simd::cvttsd2si,
            false,
            gen_f64,
        ),
        (
            "cvttsd2si r64",
            Snippet::new(|a| a.cvttsd2si(rax, xmm1)),
            simd::cvttsd2si,
            true,
            gen_f64,
        ),
    ];
    let mut rng = Rng::new(4242);
    let mut m = Machine::new();
    for (name, s, f, is64, gen) in cases {
        for mx in configs() {
            for _ in 0..CASES {
                let b = gen(&mut rng);
                m.set_xmm(1, b);
                m.set_mxcsr(mx);
                m.gpr[RAX] = rng.next_u64();
                s.run(&mut m);
                let out = f(b, is64, mx);
                if out.value != m.gpr[RAX] || mx | out.flags != m.mxcsr() {
                    bad.add(format!(
                        "{name} mx={mx:#x} b={b:#x} cpu={:#x}/{:#x} emu={:#x}/{:#x}",
                        m.gpr[RAX],
                        m.mxcsr(),
                        out.value,
                        mx | out.flags
                    ));
                }
            }
        }
    }
    bad.finish("float -> gpr");
}

#[test]
fn gpr_to_float() {
    type FromInt = fn(u128, i64, u32) -> FpOut<u128>;
    let cases: Vec<(&str, Snippet, FromInt, bool)> = vec![
        (
            "cvtsi2ss r32",
            Snippet::new(|a| a.cvtsi2ss(xmm0, eax)),
            simd::cvtsi2ss,
            false,
        ),
        (
            "cvtsi2ss r64",
            Snippet::new(|a| a.cvtsi2ss(xmm0, rax)),
            simd::cvtsi2ss,
            true,
        ),
        (
            "cvtsi2sd r32",
            Snippet::new(|a| a.cvtsi2sd(xmm0, eax)),
            simd::cvtsi2sd,
            false,
        ),
        (
            "cvtsi2sd r64",
            Snippet::new(|a| a.cvtsi2sd(xmm0, rax)),
            simd::cvtsi2sd,
            true,
        ),
    ];
    let mut bad = Mismatches::default();
    let mut rng = Rng::new(99);
    let mut m = Machine::new();
    for (name, s, f, is64) in cases {
        for mx in configs() {
            for _ in 0..CASES {
                let a = rng.ps();
                let raw = (rng.int_u128() as u64) >> rng.below(64);
                let raw = if rng.below(2) == 0 {
                    raw.wrapping_neg()
                } else {
                    raw
                };
                m.set_xmm(0, a);
                m.gpr[RAX] = raw;
                m.set_mxcsr(mx);
                s.run(&mut m);
                let v = if is64 {
                    raw as i64
                } else {
                    i64::from(raw as i32)
                };
                let out = f(a, v, mx);
                if out.value != m.xmm(0) || mx | out.flags != m.mxcsr() {
                    bad.add(format!(
                        "{name} mx={mx:#x} v={v:#x} cpu={:#x} emu={:#x}",
                        m.xmm(0),
                        out.value
                    ));
                }
            }
        }
    }
    bad.finish("gpr -> float");
}

#[test]
fn mmx_conversions() {
    let s = Snippet::new(|a| {
        a.cvtps2pi(mm0, xmm1)?;
        a.cvttps2pi(mm1, xmm1)?;
        a.cvtpd2pi(mm2, xmm2)?;
        a.cvttpd2pi(mm3, xmm2)?;
        a.cvtpi2pd(xmm4, mm4)?;
        a.cvtpi2ps(xmm5, mm4)
    });
    let mut bad = Mismatches::default();
    let mut rng = Rng::new(5);
    let mut m = Machine::new();
    for mx in configs() {
        for _ in 0..CASES {
            let (f32s, f64s, ints, a) = (
                gen_f32(&mut rng),
                gen_f64(&mut rng),
                rng.int_u128() as u64,
                rng.ps(),
            );
            m.set_xmm(1, f32s);
            m.set_xmm(2, f64s);
            m.set_mm(4, ints);
            m.set_xmm(5, a);
            m.set_mxcsr(mx);
            s.run(&mut m);
            let outs = [
                simd::cvtps2pi(f32s, mx),
                simd::cvttps2pi(f32s, mx),
                simd::cvtpd2pi(f64s, mx),
                simd::cvttpd2pi(f64s, mx),
            ];
            let p2s = simd::cvtpi2ps(a, ints, mx);
            let flags = outs.iter().fold(p2s.flags, |acc, o| acc | o.flags);
            let got = [m.mm(0), m.mm(1), m.mm(2), m.mm(3)];
            if got != outs.map(|o| o.value)
                || m.xmm(4) != simd::cvtpi2pd(ints)
                || m.xmm(5) != p2s.value
                || m.mxcsr() != mx | flags
            {
                bad.add(format!("mx={mx:#x} f32s={f32s:#x} f64s={f64s:#x} ints={ints:#x} cpu={got:x?} emu={:x?}", outs.map(|o| o.value)));
            }
        }
    }
    bad.finish("mmx conversions");
}
