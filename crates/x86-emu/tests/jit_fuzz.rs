//! Differential fuzzing of the translator (x86-jit) against the interpreter: random
//! integer programs — ALU, shifts, multiplies, bit operations, flag readers, loads,
//! stores and locked read-modify-writes through a base register, push/pop, forward
//! branches — wrapped in a loop that runs three times (so blocks are translated and
//! linked), run by both from the same state; registers, flags and memory must end
//! equal. A fixed seed in CI; `HAKO_FUZZ_PROGRAMS=N HAKO_FUZZ_SEED=S` for longer runs.

mod common;

use common::{machine, TestBus, STACK};
use iced_x86::code_asm::CodeAssembler;
use iced_x86::{Code, Instruction, MemoryOperand, Register};
use x86_emu::{Cpu, StopReason};

const DATA: u64 = 0x30_0000;
const DATA_LEN: usize = 0x2000;
/// Registers a program may write (never RSP, R14 = loop counter, R15 = data base).
const POOL: [Register; 13] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::RDX,
    Register::RSI,
    Register::RDI,
    Register::RBP,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

fn r32(r: Register) -> Register {
    r.full_register32()
}

fn data_mem(rng: &mut Rng, size: u64) -> MemoryOperand {
    let disp = rng.below(DATA_LEN as u64 - 8) as i64;
    let disp = if rng.below(2) == 0 {
        disp & !(size as i64 - 1)
    } else {
        disp
    };
    MemoryOperand::with_base_displ(Register::R15, disp)
}

/// Reg-reg/reg-mem ALU codes with all flags defined (AF aside).
const ALU64: [Code; 8] = [
    Code::Add_r64_rm64,
    Code::Or_r64_rm64,
    Code::Adc_r64_rm64,
    Code::Sbb_r64_rm64,
    Code::And_r64_rm64,
    Code::Sub_r64_rm64,
    Code::Xor_r64_rm64,
    Code::Cmp_r64_rm64,
];
const ALU32: [Code; 8] = [
    Code::Add_r32_rm32,
    Code::Or_r32_rm32,
    Code::Adc_r32_rm32,
    Code::Sbb_r32_rm32,
    Code::And_r32_rm32,
    Code::Sub_r32_rm32,
    Code::Xor_r32_rm32,
    Code::Cmp_r32_rm32,
];
/// Flag readers.
const READERS64: [Code; 6] = [
    Code::Cmove_r64_rm64,
    Code::Cmovb_r64_rm64,
    Code::Cmovl_r64_rm64,
    Code::Cmovo_r64_rm64,
    Code::Cmovbe_r64_rm64,
    Code::Cmovs_r64_rm64,
];
/// Leave some flags undefined: followed by a CMP in the programs.
const UNDEF64: [Code; 8] = [
    Code::Imul_r64_rm64,
    Code::Bsf_r64_rm64,
    Code::Bsr_r64_rm64,
    Code::Popcnt_r64_rm64,
    Code::Bt_rm64_r64,
    Code::Bts_rm64_r64,
    Code::Shld_rm64_r64_CL,
    Code::Shrd_rm64_r64_CL,
];

/// A REP string instruction with 64-bit addressing.
fn string(code: Code) -> Instruction {
    match code {
        Code::Stosw_m16_AX => Instruction::with_rep_stosw(64),
        Code::Stosd_m32_EAX => Instruction::with_rep_stosd(64),
        Code::Stosq_m64_RAX => Instruction::with_rep_stosq(64),
        Code::Movsb_m8_m8 => Instruction::with_rep_movsb(64),
        Code::Movsw_m16_m16 => Instruction::with_rep_movsw(64),
        Code::Movsd_m32_m32 => Instruction::with_rep_movsd(64),
        _ => Instruction::with_rep_movsq(64),
    }
    .unwrap()
}

fn one(a: &mut CodeAssembler, rng: &mut Rng, depth: &mut u32) {
    let d = rng.pick(&POOL);
    let s = rng.pick(&POOL);
    let i = match rng.below(25) {
        23 => {
            // DIV by a nonzero memory operand, high half zero: never faults.
            let m = data_mem(rng, 8);
            a.add_instruction(
                Instruction::with2(Code::Xor_r32_rm32, Register::EDX, Register::EDX).unwrap(),
            )
            .unwrap();
            a.add_instruction(Instruction::with2(Code::Or_rm64_imm8, m, 1).unwrap())
                .unwrap();
            a.add_instruction(Instruction::with1(Code::Div_rm64, m).unwrap())
                .unwrap();
            // DIV leaves the flags undefined.
            Instruction::with2(Code::Cmp_r64_rm64, rng.pick(&POOL), rng.pick(&POOL))
        }
        24 => Ok(Instruction::with(if rng.below(2) == 0 {
            Code::Rdtsc
        } else {
            Code::Rdtscp
        })),
        22 => {
            // A forward rep stos/movs inside the data area, sometimes crossing a page.
            let es = [1u64, 2, 4, 8][rng.below(4) as usize];
            let n = rng.below(0x800 / es);
            let dst = rng.below(DATA_LEN as u64 - n * es);
            let src = rng.below(DATA_LEN as u64 - n * es);
            let lea = |r, d| {
                Instruction::with2(
                    Code::Lea_r64_m,
                    r,
                    MemoryOperand::with_base_displ(Register::R15, d as i64),
                )
            };
            a.add_instruction(lea(Register::RDI, dst).unwrap()).unwrap();
            a.add_instruction(lea(Register::RSI, src).unwrap()).unwrap();
            a.add_instruction(
                Instruction::with2(Code::Mov_r32_imm32, Register::ECX, n as u32).unwrap(),
            )
            .unwrap();
            let code = match (rng.below(2), es) {
                (0, 1) => Code::Stosb_m8_AL,
                (0, 2) => Code::Stosw_m16_AX,
                (0, 4) => Code::Stosd_m32_EAX,
                (0, _) => Code::Stosq_m64_RAX,
                (_, 1) => Code::Movsb_m8_m8,
                (_, 2) => Code::Movsw_m16_m16,
                (_, 4) => Code::Movsd_m32_m32,
                _ => Code::Movsq_m64_m64,
            };
            let mut i = Instruction::with_rep_stosb(64).unwrap();
            i = if matches!(code, Code::Stosb_m8_AL) {
                i
            } else {
                string(code)
            };
            Ok(i)
        }
        0..=3 => Instruction::with2(rng.pick(&ALU64), d, s),
        4 => Instruction::with2(rng.pick(&ALU32), r32(d), r32(s)),
        5 | 6 => Instruction::with2(rng.pick(&ALU64), d, data_mem(rng, 8)),
        7 => Instruction::with2(rng.pick(&ALU32), r32(d), data_mem(rng, 4)),
        8 => {
            let code = rng.pick(&[
                Code::Add_rm64_r64,
                Code::Sub_rm64_r64,
                Code::Xor_rm64_r64,
                Code::Mov_rm64_r64,
            ]);
            let mut i = Instruction::with2(code, data_mem(rng, 8), s).unwrap();
            if code != Code::Mov_rm64_r64 && rng.below(3) == 0 {
                i.set_has_lock_prefix(true);
            }
            Ok(i)
        }
        9 => Instruction::with2(
            rng.pick(&[
                Code::Add_rm64_imm32,
                Code::And_rm64_imm32,
                Code::Cmp_rm64_imm32,
                Code::Mov_rm64_imm32,
            ]),
            data_mem(rng, 8),
            rng.next() as i32,
        ),
        10 => Instruction::with2(
            rng.pick(&[
                Code::Add_rm64_imm32,
                Code::Sub_rm64_imm32,
                Code::Xor_rm64_imm32,
                Code::Adc_rm64_imm32,
            ]),
            d,
            rng.next() as i32,
        ),
        11 => Instruction::with2(rng.pick(&READERS64), d, s),
        12 => Instruction::with2(rng.pick(&READERS64), d, data_mem(rng, 8)),
        13 => Instruction::with1(
            rng.pick(&[
                Code::Sete_rm8,
                Code::Setb_rm8,
                Code::Setg_rm8,
                Code::Setno_rm8,
            ]),
            rng.pick(&[Register::AL, Register::BL, Register::CL, Register::DL]),
        ),
        14 => Instruction::with2(
            rng.pick(&[Code::Movzx_r64_rm8, Code::Movsx_r64_rm8]),
            d,
            data_mem(rng, 1),
        ),
        15 => Instruction::with2(Code::Movsxd_r64_rm32, d, data_mem(rng, 4)),
        16 => Instruction::with2(
            Code::Lea_r64_m,
            d,
            MemoryOperand::new(
                Register::R15,
                s,
                4,
                rng.below(64) as i64,
                1,
                false,
                Register::None,
            ),
        ),
        17 => Instruction::with1(
            rng.pick(&[
                Code::Inc_rm64,
                Code::Dec_rm64,
                Code::Neg_rm64,
                Code::Not_rm64,
            ]),
            d,
        ),
        18 => {
            // Undefined flags, then a CMP that defines them all.
            let first = match rng.below(4) {
                0 => match rng.pick(&UNDEF64) {
                    c @ (Code::Shld_rm64_r64_CL | Code::Shrd_rm64_r64_CL) => {
                        Instruction::with3(c, d, s, Register::CL)
                    }
                    c => Instruction::with2(c, d, s),
                },
                1 => Instruction::with2(
                    rng.pick(&[
                        Code::Shl_rm64_imm8,
                        Code::Sar_rm64_imm8,
                        Code::Ror_rm64_imm8,
                        Code::Rcl_rm64_imm8,
                    ]),
                    d,
                    rng.below(64) as u32,
                ),
                2 => Instruction::with1(Code::Mul_rm64, s),
                _ => Instruction::with2(Code::Imul_r64_rm64, d, data_mem(rng, 8)),
            };
            a.add_instruction(first.unwrap()).unwrap();
            Instruction::with2(Code::Cmp_r64_rm64, rng.pick(&POOL), rng.pick(&POOL))
        }
        19 => {
            if *depth > 0 && rng.below(2) == 0 {
                *depth -= 1;
                Instruction::with1(Code::Pop_r64, d)
            } else if *depth < 16 {
                *depth += 1;
                Instruction::with1(Code::Push_r64, s)
            } else {
                Instruction::with2(
                    Code::Mov_r64_rm64,
                    d,
                    MemoryOperand::with_base_displ(Register::RSP, 0),
                )
            }
        }
        20 => Instruction::with2(Code::Xadd_rm64_r64, data_mem(rng, 8), s),
        _ => {
            // A forward branch over the next instruction.
            let mut skip = a.create_label();
            let cc = rng.below(4);
            match cc {
                0 => a.je(skip).unwrap(),
                1 => a.jb(skip).unwrap(),
                2 => a.jl(skip).unwrap(),
                _ => a.jno(skip).unwrap(),
            }
            a.add_instruction(Instruction::with2(Code::Add_r64_rm64, d, s).unwrap())
                .unwrap();
            a.set_label(&mut skip).unwrap();
            Instruction::with2(Code::Mov_r64_rm64, s, d)
        }
    };
    a.add_instruction(i.unwrap()).unwrap();
}

fn program(a: &mut CodeAssembler, rng: &mut Rng, len: usize) {
    let mut top = a.create_label();
    a.mov(iced_x86::code_asm::r14, 3u64).unwrap();
    a.set_label(&mut top).unwrap();
    let mut depth = 0;
    for _ in 0..len {
        one(a, rng, &mut depth);
    }
    for _ in 0..depth {
        a.add_instruction(Instruction::with1(Code::Pop_r64, Register::R13).unwrap())
            .unwrap();
    }
    a.dec(iced_x86::code_asm::r14).unwrap();
    a.jnz(top).unwrap();
    a.hlt().unwrap();
}

fn run(cpu: &mut Cpu, bus: &mut TestBus, jit: Option<&mut x86_jit::Jit>) -> StopReason {
    let mut jit = jit;
    for _ in 0..1000 {
        let r = match jit.as_deref_mut() {
            Some(j) => j.run(cpu, bus, 10_000),
            None => cpu.run(bus, 10_000),
        };
        if r != StopReason::Yield {
            return r;
        }
    }
    StopReason::Yield
}

#[test]
fn translator_agrees_with_the_interpreter_on_random_programs() {
    let programs: usize = std::env::var("HAKO_FUZZ_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("HAKO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x4861_6b6f_6275_6e65);
    let mut rng = Rng(seed);
    let mut stats = x86_jit::JitStats::default();
    for p in 0..programs {
        let mut jit = x86_jit::Jit::new(None).expect("translator");
        jit.set_hot_threshold(1);
        let len = 8 + rng.below(40) as usize;
        let (mut c1, mut b1) = machine(|a| program(a, &mut rng, len));
        let mut data = vec![0u8; DATA_LEN];
        data.iter_mut().for_each(|b| *b = rng.next() as u8);
        b1.ram[DATA as usize..DATA as usize + DATA_LEN].copy_from_slice(&data);
        for (k, g) in c1.gpr.iter_mut().enumerate() {
            *g = match k {
                4 => STACK,
                15 => DATA,
                _ => rng.next() >> rng.below(64),
            };
        }
        c1.flags.load(rng.next() & 0x8d5);
        let (mut c2, mut b2) = (
            clone_cpu(&c1),
            TestBus {
                ram: b1.ram.clone(),
                io_log: Vec::new(),
            },
        );
        let r1 = run(&mut c1, &mut b1, None);
        let r2 = run(&mut c2, &mut b2, Some(&mut jit));
        let ctx = format!("program {p} (seed {seed:#x})");
        assert_eq!(
            r1,
            StopReason::Halted,
            "{ctx}: interpreter did not reach HLT"
        );
        assert_eq!(r2, r1, "{ctx}: stop reasons differ");
        assert_eq!(c2.rip, c1.rip, "{ctx}: rip");
        for k in 0..16 {
            assert_eq!(c2.gpr[k], c1.gpr[k], "{ctx}: gpr{k}");
        }
        // AF is undefined after the logical instructions and nothing here reads it.
        let mask = 0x8c5;
        assert_eq!(c2.flags.get() & mask, c1.flags.get() & mask, "{ctx}: flags");
        let d = DATA as usize..DATA as usize + DATA_LEN;
        assert!(b1.ram[d.clone()] == b2.ram[d], "{ctx}: data memory");
        let st = (STACK - 0x200) as usize..STACK as usize;
        assert!(b1.ram[st.clone()] == b2.ram[st], "{ctx}: stack memory");
        stats.blocks += jit.stats.blocks;
        stats.native_insns += jit.stats.native_insns;
        stats.interp_insns += jit.stats.interp_insns;
    }
    assert!(
        stats.blocks > programs as u64,
        "the translator translated {stats:?}"
    );
    assert!(stats.native_insns > stats.interp_insns, "{stats:?}");
}

fn clone_cpu(c: &Cpu) -> Cpu {
    let mut n = Cpu::new(0);
    n.set_state(&c.state());
    n
}
