//! SSE/SSE2 (and cheap MMX) semantics as pure functions on register values.
//!
//! No CPU struct here: the executor reads the operands, calls one of these functions and
//! writes the result back. Register values are `u128` (XMM) or `u64` (MMX, `mmx_*`),
//! lane 0 in the low bits.
//!
//! # API summary (for the executor)
//! - [`int`]: `paddb..paddq`, `psub*`, saturating `padds*/paddus*/psubs*/psubus*`,
//!   `pcmpeq*/pcmpgt*`, `pminub/pmaxub/pminsw/pmaxsw`, `pavgb/pavgw`, `pmullw/pmulhw/
//!   pmulhuw/pmuludq/pmaddwd`, `psadbw`, `pmovmskb`, `pand/pandn/por/pxor` — all
//!   `fn(a: u128, b: u128) -> u128` with `a` the destination (first source). MMX forms:
//!   zero-extend to u128 and keep the low 64 bits (lane-wise ops), or `mmx_psadbw`,
//!   `mmx_pmovmskb`.
//! - [`shift`]: `psllw/d/q, psrlw/d/q, psraw/d(a, count: u64)` (count = imm8 or the low
//!   quadword of the source), `pslldq/psrldq(a, imm: u8)`.
//! - [`shuffle`]: `pshufd/pshuflw/pshufhw(src, imm)`, `mmx_pshufw`, `shufps/shufpd(a, b,
//!   imm)`, `punpck{l,h}{bw,wd,dq,qdq}(a, b)` (also UNPCK{L,H}P{S,D}), `mmx_punpckl/h`,
//!   `packsswb/packssdw/packuswb` (+ `mmx_`), `movmskps/movmskpd -> u32`,
//!   `pinsrw/pextrw`, `movss_merge/movsd_merge/movhlps/movlhps/movq_zext`.
//! - [`float`] (lane ops exact in every rounding mode, flags per the SDM, checked against
//!   the host CPU): `{add,sub,mul,div,min,max}{ps,ss,pd,sd}(a, b, mxcsr) -> FpOut<u128>`,
//!   `sqrtps/sqrtpd(b, mxcsr)`, `sqrtss/sqrtsd(a, b, mxcsr)`.
//! - [`compare`]: `cmpps/cmpss/cmppd/cmpsd(a, b, imm, mxcsr) -> FpOut<u128>` (predicates
//!   0..7), `comiss/ucomiss/comisd/ucomisd(a, b, mxcsr) -> FpOut<u64>`: clear
//!   [`compare::COMI_WRITTEN`] in RFLAGS and OR in the value.
//! - [`convert`]: `cvtsi2ss/cvtsi2sd(a, i64, mxcsr)`, `cvt(t)ss2si/cvt(t)sd2si(b, is64,
//!   mxcsr) -> FpOut<u64>` (zero-extended; integer indefinite on IE), `cvtss2sd/cvtsd2ss(a,
//!   b, mxcsr)`, `cvtps2pd/cvtpd2ps/cvtdq2ps/cvt(t)ps2dq/cvt(t)pd2dq(b, mxcsr)`,
//!   `cvtdq2pd(b) -> u128`, MMX `cvtpi2ps/cvt(t)ps2pi/cvtpi2pd/cvt(t)pd2pi`.
//! - [`mxcsr`]: bit constants, `mxcsr_valid` (LDMXCSR/FXRSTOR #GP check), [`FpEnv`].
//!
//! Floating-point functions return [`mxcsr::FpOut`]; call `FpOut::commit(&mut mxcsr)` to
//! merge the exception flags. It returns `Err(SimdFault)` when an unmasked exception
//! occurred: the destination must then stay unchanged and the caller raises #XM
//! (CR4.OSXMMEXCPT=1) or #UD. [`softfloat`] is the shared exact IEEE core (also used by
//! the x87 code for the 80-bit format).

pub mod compare;
pub mod convert;
pub mod fast;
pub mod float;
pub mod int;
pub mod lanes;
pub mod mxcsr;
pub mod shift;
pub mod shuffle;
pub mod softfloat;

pub use compare::*;
pub use convert::*;
pub use float::*;
pub use int::*;
pub use mxcsr::{FpEnv, FpOut, Rounding, SimdFault};
pub use shift::*;
pub use shuffle::*;
