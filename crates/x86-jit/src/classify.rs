//! Which guest instructions the translator runs natively, and how.
//!
//! Everything not listed here is left to the interpreter: the block's native code
//! ends before it and the dispatcher hands it over.

use iced_x86::{
    Code, Instruction, InstructionInfoFactory, Mnemonic as M, OpAccess, OpKind, Register,
};

/// How one guest instruction is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No effect on guest state (NOP forms, ENDBR64, PAUSE).
    Nop,
    /// Register and immediate operands only; copied as is.
    Copy,
    /// Copied with guest RSP (an explicit 64-bit operand or a LEA base) put in a
    /// scratch register around it.
    CopyRsp,
    /// One explicit memory operand, rewritten to a host address after an inline
    /// TLB probe; `aligned`: the access faults unless 16-byte aligned (SSE).
    Mem {
        write: bool,
        size: u32,
        aligned: bool,
    },
    Push,
    Pop,
    /// Block terminators.
    Jcc,
    Jmp,
    Call,
    Ret,
    JmpReg,
    CallReg,
    /// `jmp`/`call` through a 64-bit memory operand.
    JmpMem,
    CallMem,
    /// Unsigned 32/64-bit DIV by a register, guarded against #DE.
    Div,
    /// The same with a memory divisor.
    DivMem {
        size: u32,
    },
    /// RDTSC (`aux`: RDTSCP) through a helper call.
    Rdtsc {
        aux: bool,
    },
    /// `rep stos` / `rep movs` with 64-bit addresses (`es`: element size), run
    /// natively when it stays within a page (the dispatcher runs native code only
    /// with DF clear).
    RepStr {
        movs: bool,
        es: u32,
    },
    /// PUSHFQ: the host's arithmetic flags with the guest's others (`Ctx::sysflags`).
    Pushf,
    /// POPFQ, natively when it changes no system flag it may change (else, e.g.
    /// when it sets IF, the interpreter runs it and the platform gets a look in).
    Popf,
    /// CLI in kernel mode: clears IF in `Ctx::sysflags`.
    Cli,
    /// `mov reg, sreg`: the selector from `Ctx::sel`.
    MovSreg,
    /// LEAVE (64-bit): RSP = RBP, then pop RBP.
    Leave,
    /// `mov [mem], rsp` (`load` false) or `mov rsp, [mem]` (64-bit).
    MovRsp {
        load: bool,
    },
}

impl Kind {
    pub fn ends_block(self) -> bool {
        matches!(
            self,
            Kind::Jcc
                | Kind::Jmp
                | Kind::Call
                | Kind::Ret
                | Kind::JmpReg
                | Kind::CallReg
                | Kind::JmpMem
                | Kind::CallMem
        )
    }
}

/// Integer instructions the host computes exactly like the interpreter (given
/// their operands are translated).
fn alu(m: M) -> bool {
    matches!(
        m,
        M::Add
            | M::Or
            | M::Adc
            | M::Sbb
            | M::And
            | M::Sub
            | M::Xor
            | M::Cmp
            | M::Test
            | M::Inc
            | M::Dec
            | M::Neg
            | M::Not
            | M::Mov
            | M::Movzx
            | M::Movsx
            | M::Movsxd
            | M::Lea
            | M::Imul
            | M::Mul
            | M::Bt
            | M::Bts
            | M::Btr
            | M::Btc
            | M::Bsf
            | M::Bsr
            | M::Tzcnt
            | M::Lzcnt
            | M::Popcnt
            | M::Bswap
            | M::Xchg
            | M::Cmpxchg
            | M::Xadd
            | M::Cbw
            | M::Cwde
            | M::Cdqe
            | M::Cwd
            | M::Cdq
            | M::Cqo
            | M::Lahf
            | M::Sahf
            | M::Stc
            | M::Clc
            | M::Cmc
    ) || is_shift(m)
        || is_setcc(m)
        || is_cmov(m)
}

/// Shifts and rotates: they leave the flags alone for a zero count.
pub fn is_shift(m: M) -> bool {
    matches!(
        m,
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
    )
}

fn is_setcc(m: M) -> bool {
    matches!(
        m,
        M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg
    )
}

fn is_cmov(m: M) -> bool {
    matches!(
        m,
        M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg
    )
}

/// SSE/SSE2 instructions (what the guest's CPUID offers and the interpreter
/// implements) that the host runs as they are, given the guest's XMM registers and
/// MXCSR are loaded (the dispatcher checks that MXCSR masks every exception and
/// CR0/CR4 allow SSE). MXCSR accesses, FXSAVE and MASKMOVDQU (an implicit
/// operand) stay with the interpreter; MMX forms are excluded by their operands.
fn is_sse(i: &Instruction) -> bool {
    use iced_x86::CpuidFeature as F;
    let f = i.cpuid_features();
    !f.is_empty()
        && f.iter().all(|x| matches!(x, F::SSE | F::SSE2))
        && !matches!(
            i.mnemonic(),
            M::Ldmxcsr | M::Stmxcsr | M::Fxsave | M::Fxrstor | M::Maskmovdqu | M::Clflush
        )
        && (0..i.op_count()).all(|k| i.op_kind(k) != OpKind::Register || !i.op_register(k).is_mm())
}

/// `rep stos{b,w,d,q}` and `rep movs{b,w,d,q}` with RDI/RSI addressing and no
/// segment override.
fn rep_string(i: &Instruction) -> Option<Kind> {
    if !i.has_rep_prefix() || i.has_repne_prefix() || i.has_lock_prefix() {
        return None;
    }
    let (movs, es) = match i.mnemonic() {
        M::Stosb => (false, 1),
        M::Stosw => (false, 2),
        M::Stosd => (false, 4),
        M::Stosq => (false, 8),
        M::Movsb => (true, 1),
        M::Movsw => (true, 2),
        M::Movsd => (true, 4),
        M::Movsq => (true, 8),
        _ => return None,
    };
    if i.op0_kind() != OpKind::MemoryESRDI {
        return None;
    }
    if movs && (i.op1_kind() != OpKind::MemorySegRSI || i.memory_segment() != Register::DS) {
        return None;
    }
    Some(Kind::RepStr { movs, es })
}

/// A 64-bit memory operand with 64-bit addressing (a jump or call target).
fn mem64(i: &Instruction) -> bool {
    i.memory_size().size() == 8 && addr64(i)
}

/// A memory operand with 64-bit addressing and at most a 32-bit displacement.
fn addr64(i: &Instruction) -> bool {
    let b = i.memory_base();
    let x = i.memory_index();
    (b == Register::None || b == Register::RIP || b.is_gpr64())
        && (x == Register::None || (x.is_gpr64() && x != Register::RSP))
        && (b == Register::RIP || i.memory_displ_size() != 8)
}

/// Whether `r` is a general-purpose register other than the stack pointer.
fn plain_gpr(r: Register) -> bool {
    r.is_gpr() && r.full_register() != Register::RSP
}

/// The guest instruction as the host should run it. The emulated CPU has no
/// BMI1/LZCNT (CPUID says so), where `tzcnt`/`lzcnt` encodings execute as
/// `bsf`/`bsr`; the host has them, so they are re-coded.
pub fn host_form(i: &Instruction) -> Instruction {
    let mut j = *i;
    let code = match i.code() {
        Code::Tzcnt_r16_rm16 => Code::Bsf_r16_rm16,
        Code::Tzcnt_r32_rm32 => Code::Bsf_r32_rm32,
        Code::Tzcnt_r64_rm64 => Code::Bsf_r64_rm64,
        Code::Lzcnt_r16_rm16 => Code::Bsr_r16_rm16,
        Code::Lzcnt_r32_rm32 => Code::Bsr_r32_rm32,
        Code::Lzcnt_r64_rm64 => Code::Bsr_r64_rm64,
        c => c,
    };
    j.set_code(code);
    // The F3 prefix that made it TZCNT/LZCNT is part of the code; drop the flag.
    if code != i.code() {
        j.set_has_repe_prefix(false);
    }
    j
}

/// Classifies `i`; `None` means the interpreter must run it. `sse`: whether SSE
/// instructions may run natively now; `kernel`: the block runs at CPL 0.
pub fn classify(
    i: &Instruction,
    info: &mut InstructionInfoFactory,
    sse: bool,
    kernel: bool,
) -> Option<Kind> {
    let m = i.mnemonic();
    if let Some(k) = rep_string(i) {
        return Some(k);
    }
    let sse = sse && is_sse(i);
    // F2/F3 are part of many SSE opcodes; elsewhere they mean REP (string ops).
    let rep_ok = sse || matches!(m, M::Tzcnt | M::Lzcnt | M::Popcnt);
    if i.is_invalid() || (i.has_rep_prefix() || i.has_repne_prefix()) && !rep_ok {
        return None;
    }
    if i.has_xacquire_prefix() || i.has_xrelease_prefix() {
        return None;
    }
    match m {
        M::Nop
        | M::Endbr64
        | M::Pause
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchnta
        | M::Prefetchw => return Some(Kind::Nop),
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => {
            return (i.op0_kind() == OpKind::NearBranch64).then_some(Kind::Jcc);
        }
        M::Jmp => {
            return match i.op0_kind() {
                OpKind::NearBranch64 => Some(Kind::Jmp),
                OpKind::Register if plain_gpr(i.op0_register()) && i.op0_register().is_gpr64() => {
                    Some(Kind::JmpReg)
                }
                OpKind::Memory if mem64(i) => Some(Kind::JmpMem),
                _ => None,
            };
        }
        M::Call => {
            return match i.op0_kind() {
                OpKind::NearBranch64 => Some(Kind::Call),
                OpKind::Register if plain_gpr(i.op0_register()) && i.op0_register().is_gpr64() => {
                    Some(Kind::CallReg)
                }
                OpKind::Memory if mem64(i) => Some(Kind::CallMem),
                _ => None,
            };
        }
        M::Div => {
            if i.op0_kind() == OpKind::Memory {
                let size = i.memory_size().size() as u32;
                let ok = matches!(size, 4 | 8) && addr64(i);
                return ok.then_some(Kind::DivMem { size });
            }
            let r = i.op0_register();
            let ok = i.op0_kind() == OpKind::Register && plain_gpr(r) && matches!(r.size(), 4 | 8);
            return ok.then_some(Kind::Div);
        }
        M::Pushfq => return Some(Kind::Pushf),
        M::Popfq => return Some(Kind::Popf),
        M::Cli => return kernel.then_some(Kind::Cli),
        M::Leave => return (i.code() == Code::Leaveq).then_some(Kind::Leave),
        M::Mov if i.op_count() == 2 && i.op1_kind() == OpKind::Register => {
            let (d, r) = (i.op0_register(), i.op1_register());
            if r.is_segment_register() {
                let ok = i.op0_kind() == OpKind::Register && plain_gpr(d);
                return ok.then_some(Kind::MovSreg);
            }
            if r == Register::RSP && i.op0_kind() == OpKind::Memory {
                return (addr64(i) && i.memory_base() != Register::RSP)
                    .then_some(Kind::MovRsp { load: false });
            }
        }
        M::Mov
            if i.op_count() == 2
                && i.op0_kind() == OpKind::Register
                && i.op0_register() == Register::RSP
                && i.op1_kind() == OpKind::Memory =>
        {
            return (addr64(i) && i.memory_base() != Register::RSP)
                .then_some(Kind::MovRsp { load: true });
        }
        M::Rdtsc => return Some(Kind::Rdtsc { aux: false }),
        M::Rdtscp => return Some(Kind::Rdtsc { aux: true }),
        M::Ret => return (i.op_count() == 0).then_some(Kind::Ret),
        M::Push => {
            return match i.op0_kind() {
                // (`push rsp` pushes the value RSP had before.)
                OpKind::Register if i.op0_register().is_gpr64() => Some(Kind::Push),
                OpKind::Immediate8to64 | OpKind::Immediate32to64 => Some(Kind::Push),
                _ => None,
            };
        }
        M::Pop => {
            return (i.op0_kind() == OpKind::Register
                && plain_gpr(i.op0_register())
                && i.op0_register().is_gpr64())
            .then_some(Kind::Pop);
        }
        _ => {}
    }
    if !alu(m) && !sse {
        return None;
    }
    let mut mem = false;
    let mut rsp = false;
    for k in 0..i.op_count() {
        match i.op_kind(k) {
            OpKind::Register => {
                let r = i.op_register(k);
                if sse && r.is_xmm() {
                    continue;
                }
                if !r.is_gpr() {
                    return None;
                }
                if r.full_register() == Register::RSP {
                    if r != Register::RSP {
                        return None; // ESP/SP/SPL: rare, left to the interpreter
                    }
                    rsp = true;
                }
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {}
            OpKind::Memory => {
                let b = i.memory_base();
                let x = i.memory_index();
                let base_ok = b == Register::None || b == Register::RIP || b.is_gpr64();
                let index_ok = x == Register::None || (x.is_gpr64() && x != Register::RSP);
                if !base_ok || !index_ok {
                    return None; // 32-bit addressing
                }
                if b == Register::RSP && m == M::Lea {
                    rsp = true;
                }
                mem = true;
            }
            _ => return None,
        }
    }
    // The implicit stack pointer (there is none among these) or a hidden operand.
    if m == M::Lea {
        if rsp
            && i.op0_register().full_register() == Register::RSP
            && i.op0_register() != Register::RSP
        {
            return None;
        }
        return Some(if rsp || i.memory_base() == Register::RIP {
            Kind::CopyRsp
        } else {
            Kind::Copy
        });
    }
    if mem {
        if rsp {
            return None; // RSP and a memory operand together: rare
        }
        // BT* with a register bit offset address memory beyond the operand.
        if matches!(m, M::Bt | M::Bts | M::Btr | M::Btc) && i.op1_kind() == OpKind::Register {
            return None;
        }
        let info = info.info(i);
        let used = info.used_memory();
        if used.len() != 1 {
            return None;
        }
        let write = !matches!(
            used[0].access(),
            OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess
        );
        let size = i.memory_size().size() as u32;
        if !matches!(size, 1 | 2 | 4 | 8 | 16) {
            return None;
        }
        // Legacy SSE faults on unaligned 16-byte operands, but for these moves.
        let aligned = size == 16 && !matches!(m, M::Movups | M::Movupd | M::Movdqu);
        return Some(Kind::Mem {
            write,
            size,
            aligned,
        });
    }
    Some(if rsp { Kind::CopyRsp } else { Kind::Copy })
}

/// The GPRs (by number) `i` reads or writes, explicitly or implicitly.
pub fn used_gprs(i: &Instruction, info: &mut InstructionInfoFactory) -> u16 {
    let mut set = 0u16;
    for u in info.info(i).used_registers() {
        let r = u.register();
        if r.is_gpr() {
            set |= 1 << r.full_register().number();
        }
    }
    for r in [i.memory_base(), i.memory_index()] {
        if r.is_gpr() {
            set |= 1 << r.full_register().number();
        }
    }
    set
}

/// Whether `i` names a high byte register (AH..BH), which cannot be encoded with
/// a REX prefix: its scratch registers must then be among the first eight.
pub fn uses_high_byte(i: &Instruction) -> bool {
    (0..i.op_count()).any(|k| {
        i.op_kind(k) == OpKind::Register
            && matches!(
                i.op_register(k),
                Register::AH | Register::CH | Register::DH | Register::BH
            )
    })
}
