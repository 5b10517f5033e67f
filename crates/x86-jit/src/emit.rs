//! Translation of one decoded guest block into host code.
//!
//! Guest GPRs stay in the host registers of the same number; the host RSP points
//! at the [`Ctx`](crate::ctx::Ctx) (see ctx.rs). An instruction with a memory
//! operand is run on a host address: three scratch registers the instruction does
//! not use are spilled to the context, the linear address is computed with LEA,
//! looked up in the inline TLB (tag compare, add), and the instruction is
//! re-encoded with `[scratch]` as its operand. A miss calls `helpers::fill`; when
//! that cannot give a host address (a fault, MMIO, a page crossing, a store to a
//! page holding code) the block exits before the instruction and the interpreter
//! runs it, so guest state is exact at that boundary. The guest's arithmetic
//! flags live in the host flags; the probe saves them (pushfq) only where a
//! later instruction may read them before they are overwritten.

use crate::asm::{Assembler, Label};
use iced_x86::{
    Code, ConditionCode, IcedError, Instruction, InstructionInfoFactory, MemoryOperand,
    Mnemonic as M, OpKind, Register, RflagsBits,
};

use crate::classify::{classify, host_form, is_shift, used_gprs, uses_high_byte, Kind};
use crate::ctx;

/// Probe size meaning "16 bytes, 16-byte aligned" (helpers::fill decodes it).
pub const ALIGNED16: u32 = 0x80 | 16;

/// The arithmetic flags the translator keeps in host RFLAGS.
const ARITH: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::PF
    | RflagsBits::CF;

const R64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// What a block's translation needs from its surroundings.
pub struct Env<'a> {
    /// Where the common exit routine is.
    pub exit: u64,
    /// Host entry of an already translated block for guest `rip` on the same page
    /// with the same privilege, if any (for direct links).
    pub lookup: &'a dyn Fn(u64) -> Option<u64>,
    /// The jump-table routine for this privilege, called with the guest RIP in
    /// `exit_rip`: leaves in `jmp_tmp` where to go on (the block, or an exit).
    pub jump_table: u64,
    /// The exit for a jump-table miss (guest flags in `Ctx::spec`, RIP in
    /// `exit_rip`).
    pub jump_miss: u64,
    /// Helper-call routines: TLB fill, then RDTSC, each called with 0 or 8 bytes
    /// pushed.
    pub fill: [u64; 4],
    /// Inline TLB tables for this privilege: (read, write) table numbers.
    pub tables: (usize, usize),
    /// For a block that runs on into a second page: the address of that page's
    /// code-map word and the value it had when the block was decoded.
    pub second: Option<(u64, u32)>,
}

/// A translated block.
pub struct Translated {
    pub code: Vec<u8>,
    /// Where the jump table enters the block (the guest flags in `Ctx::spec`
    /// then, see `emit`): the start, or a prologue that loads them.
    pub jt_entry: u64,
    /// Exit stubs that can later be linked: (stub host address, guest target).
    pub links: Vec<(u64, u64)>,
}

/// Deferred out-of-line code.
enum Outline {
    /// TLB miss path of a memory access.
    Miss {
        label: Label,
        resume: Label,
        fallback: Label,
        regs: [usize; 3],
        info: u64,
        pushed: bool,
        rip: u64,
        uncounted: u64,
    },
    /// An exit that may later be linked to a block for `target`.
    Link { label: Label, target: u64 },
    /// An inline jump-table lookup missed: `regs` restored, then the miss exit.
    JumpMiss { label: Label, regs: [usize; 3] },
    /// Budget exhausted at block entry.
    /// Back to the interpreter before the instruction at `rip`, with the scratch
    /// registers `regs` restored (a guarded instruction's fallback).
    Fallback {
        label: Label,
        regs: [usize; 3],
        pushed: bool,
        rip: u64,
        uncounted: u64,
    },
    /// An exit of `kind` (budget exhausted, or a guarded instruction's fallback).
    Exit {
        label: Label,
        pushed: bool,
        rip: u64,
        kind: u64,
        uncounted: u64,
    },
}

struct Asm {
    a: Assembler,
    /// Bytes pushed on the host stack since the context was at `[rsp]`.
    bias: i32,
    /// Out-of-line code, with the `spec` state where it was asked for.
    outlines: Vec<(Outline, bool)>,
    /// The guest's arithmetic flags are in `Ctx::spec` (the host's may have been
    /// clobbered since): exits load them back first.
    spec: bool,
}

/// Why a block could not be translated.
#[derive(Debug)]
pub enum Fail {
    Encode(IcedError),
    Unsupported(&'static str),
}

impl From<IcedError> for Fail {
    fn from(e: IcedError) -> Fail {
        Fail::Encode(e)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Encode(e) => write!(f, "encoding: {e}"),
            Fail::Unsupported(w) => write!(f, "unsupported: {w}"),
        }
    }
}

type R<T> = Result<T, Fail>;

fn mem(off: i32) -> MemoryOperand {
    MemoryOperand::with_base_displ(Register::RSP, off as i64)
}

impl Asm {
    fn add(&mut self, i: Instruction) -> R<()> {
        Ok(self.a.add_instruction(i)?)
    }
    /// `mov [ctx + off], reg64`
    fn st(&mut self, off: i32, r: usize) -> R<()> {
        self.add(Instruction::with2(
            Code::Mov_rm64_r64,
            mem(off + self.bias),
            R64[r],
        )?)
    }
    /// `mov reg64, [ctx + off]`
    fn ld(&mut self, r: usize, off: i32) -> R<()> {
        self.add(Instruction::with2(
            Code::Mov_r64_rm64,
            R64[r],
            mem(off + self.bias),
        )?)
    }
    fn st_imm32(&mut self, off: i32, v: u32) -> R<()> {
        self.add(Instruction::with2(
            Code::Mov_rm32_imm32,
            mem(off + self.bias),
            v,
        )?)
    }
    fn mov_imm(&mut self, r: usize, v: u64) -> R<()> {
        self.add(Instruction::with2(Code::Mov_r64_imm64, R64[r], v)?)
    }
    fn lea(&mut self, r: usize, m: MemoryOperand) -> R<()> {
        self.add(Instruction::with2(Code::Lea_r64_m, R64[r], m)?)
    }
    /// Saves the guest's arithmetic flags on the host stack (8 bytes: OF as 0/1,
    /// then LAHF's byte of SF ZF AF PF CF), for [`Asm::popfq`]. Not with
    /// PUSHFQ/POPFQ, which are microcoded (POPFQ costs tens of cycles): LAHF,
    /// SETO and SAHF are single fast instructions. RAX is borrowed for AL/AH.
    /// The other RFLAGS bits (DF, IF, ...) are the host's own and never change in
    /// native code, so they need no saving.
    fn pushfq(&mut self) -> R<()> {
        self.st(ctx::FLAGS_RAX, 0)?;
        self.a.lahf()?;
        self.add(Instruction::with1(Code::Seto_rm8, Register::AL)?)?;
        self.lea(4, MemoryOperand::with_base_displ(Register::RSP, -8))?;
        self.bias += 8;
        self.add(Instruction::with2(
            Code::Mov_rm16_r16,
            MemoryOperand::with_base(Register::RSP),
            Register::AX,
        )?)?;
        self.ld(0, ctx::FLAGS_RAX)
    }

    /// Restores the flags [`Asm::pushfq`] saved and drops them from the host
    /// stack: an 8-bit ADD that overflows exactly when OF was set, then SAHF.
    fn popfq(&mut self) -> R<()> {
        self.st(ctx::FLAGS_RAX, 0)?;
        let saved = |d: i64| MemoryOperand::with_base_displ(Register::RSP, d);
        self.add(Instruction::with2(
            Code::Mov_r8_rm8,
            Register::AL,
            saved(0),
        )?)?;
        self.add(Instruction::with2(
            Code::Add_rm8_imm8,
            Register::AL,
            0x7fu32,
        )?)?;
        self.add(Instruction::with2(
            Code::Mov_r8_rm8,
            Register::AH,
            saved(1),
        )?)?;
        self.a.sahf()?;
        self.ld(0, ctx::FLAGS_RAX)?;
        self.lea(4, MemoryOperand::with_base_displ(Register::RSP, 8))?;
        self.bias -= 8;
        Ok(())
    }

    fn outline(&mut self, o: Outline) {
        self.outlines.push((o, self.spec));
    }

    /// Saves the guest's arithmetic flags (the host's now) in `Ctx::spec`, in
    /// [`Asm::pushfq`]'s format.
    fn spec_save(&mut self) -> R<()> {
        self.st(ctx::FLAGS_RAX, 0)?;
        self.a.lahf()?;
        self.add(Instruction::with1(Code::Seto_rm8, Register::AL)?)?;
        self.add(Instruction::with2(
            Code::Mov_rm16_r16,
            mem(ctx::SPEC + self.bias),
            Register::AX,
        )?)?;
        self.ld(0, ctx::FLAGS_RAX)
    }

    /// Loads the host's arithmetic flags from `Ctx::spec`.
    fn spec_restore(&mut self) -> R<()> {
        self.st(ctx::FLAGS_RAX, 0)?;
        let b = self.bias;
        self.add(Instruction::with2(
            Code::Mov_r8_rm8,
            Register::AL,
            mem(ctx::SPEC + b),
        )?)?;
        self.add(Instruction::with2(
            Code::Add_rm8_imm8,
            Register::AL,
            0x7fu32,
        )?)?;
        self.add(Instruction::with2(
            Code::Mov_r8_rm8,
            Register::AH,
            mem(ctx::SPEC + 1 + b),
        )?)?;
        self.a.sahf()?;
        self.ld(0, ctx::FLAGS_RAX)
    }

    /// Leaves native code with `exit_rip = rip`.
    fn exit(&mut self, exit: u64, rip: u64, kind: u64, uncounted: u64) -> R<()> {
        debug_assert_eq!(self.bias, 0);
        if self.spec {
            self.spec_restore()?;
        }
        self.st_imm32(ctx::EXIT_RIP, rip as u32)?;
        self.st_imm32(ctx::EXIT_RIP + 4, (rip >> 32) as u32)?;
        if kind != 0 {
            self.st_imm32(ctx::EXIT_KIND, kind as u32)?;
        }
        if uncounted != 0 {
            self.st_imm32(ctx::UNCOUNTED, uncounted as u32)?;
        }
        Ok(self.a.jmp(exit)?)
    }

    /// Goes on at the guest RIP in `exit_rip` through the jump table.
    fn via_jump_table(&mut self, env: &Env) -> R<()> {
        debug_assert_eq!(self.bias, 0);
        if self.spec {
            return self.jump_inline(env);
        }
        self.spec_save()?;
        self.a.call(env.jump_table)?;
        self.add(Instruction::with1(Code::Jmp_rm64, mem(ctx::JMP_TMP))?)
    }

    /// The jump-table lookup in line, where the host flags are free (the guest's
    /// are in `Ctx::spec`), so ordinary ALU instructions index and compare.
    fn jump_inline(&mut self, env: &Env) -> R<()> {
        // RCX, RDX, RAX (RDX: its low word is named below).
        let (a, b, c) = (1usize, 2usize, 0usize);
        let regs = [a, b, c];
        spill(self, regs)?;
        self.ld(a, ctx::EXIT_RIP)?;
        // b = jump_slot(rip) * 16
        let (a32, b32) = (R64[a].full_register32(), R64[b].full_register32());
        self.add(Instruction::with2(Code::Mov_r32_rm32, b32, a32)?)?;
        self.add(Instruction::with1(Code::Bswap_r32, b32)?)?;
        self.add(Instruction::with2(
            Code::Lea_r32_m,
            b32,
            MemoryOperand::with_base_index(R64[b], R64[a]),
        )?)?;
        self.add(Instruction::with2(Code::Movzx_r32_rm16, b32, Register::DX)?)?;
        self.add(Instruction::with2(Code::Shl_rm32_imm8, b32, 4u32)?)?;
        // c = rip + salt: the key it must match
        let class = usize::from(env.tables.0 == 2) as i32;
        self.add(Instruction::with2(Code::Mov_r64_rm64, R64[c], R64[a])?)?;
        self.add(Instruction::with2(
            Code::Sub_r64_rm64,
            R64[c],
            mem(ctx::NEG_SALT + 8 * class),
        )?)?;
        let table = ctx::JUMP + class * ctx::JUMP_BYTES;
        let entry = |d: i32| {
            MemoryOperand::new(
                Register::RSP,
                R64[b],
                1,
                (table + d) as i64,
                1,
                false,
                Register::None,
            )
        };
        self.add(Instruction::with2(Code::Cmp_r64_rm64, R64[c], entry(0))?)?;
        let miss = self.a.create_label();
        self.a.jcc(ConditionCode::ne, miss)?;
        self.add(Instruction::with2(Code::Mov_r64_rm64, R64[c], entry(8))?)?;
        self.st(ctx::JMP_TMP, c)?;
        unspill(self, regs)?;
        self.add(Instruction::with1(Code::Jmp_rm64, mem(ctx::JMP_TMP))?)?;
        self.outline(Outline::JumpMiss { label: miss, regs });
        Ok(())
    }

    /// Goes on at guest `target`: a direct jump to its translation if there is
    /// one, else an exit stub that may be linked later.
    fn goto(&mut self, env: &Env, target: u64, page: u64) -> R<()> {
        if target & !0xfff == page {
            if let Some(host) = (env.lookup)(target) {
                return Ok(self.a.jmp(host)?);
            }
            let label = self.a.create_label();
            self.a.jmp_label(label)?;
            // The stub itself comes out of line so that it can be patched alone.
            self.outline(Outline::Link { label, target });
            return Ok(());
        }
        self.st_imm32(ctx::EXIT_RIP, target as u32)?;
        self.st_imm32(ctx::EXIT_RIP + 4, (target >> 32) as u32)?;
        self.via_jump_table(env)
    }
}

/// Picks `n` scratch registers not in `used` (and never RSP).
fn scratch(used: u16, low_only: bool, n: usize) -> Option<[usize; 3]> {
    let mut out = [0usize; 3];
    let mut k = 0;
    // Prefer registers whose encoding needs no REX and are caller-saved.
    for r in [1usize, 2, 6, 7, 0, 3, 5, 8, 9, 10, 11, 12, 13, 14, 15] {
        if k == n {
            break;
        }
        if used & (1 << r) != 0 || (low_only && r >= 8) {
            continue;
        }
        out[k] = r;
        k += 1;
    }
    (k == n).then_some(out)
}

/// Flag effects for liveness: (read, killed) arithmetic flags.
fn flag_effects(i: &Instruction, kind: Kind) -> (u32, u32) {
    match kind {
        Kind::Nop
        | Kind::Push
        | Kind::Pop
        | Kind::Jmp
        | Kind::Call
        | Kind::Ret
        | Kind::JmpReg
        | Kind::CallReg => (0, 0),
        _ => {
            let read = i.rflags_read() & ARITH;
            // Shifts and rotates leave the flags alone for a zero count.
            let killed = if is_shift(i.mnemonic()) {
                0
            } else {
                i.rflags_modified() & ARITH
            };
            (read, killed)
        }
    }
}

/// Translates the longest translatable prefix of `insns` (a decoded block at
/// guest `insns[0].ip()`), for host address `ip`. Fails if the first
/// instruction is not translatable.
pub fn translate(insns: &[Instruction], ip: u64, env: &Env, sse: bool) -> Result<Translated, Fail> {
    let mut info = InstructionInfoFactory::new();
    let mut kinds = Vec::with_capacity(insns.len());
    for i in insns {
        let Some(k) = classify(i, &mut info, sse, env.tables.0 == 0) else {
            break;
        };
        kinds.push(k);
        if k.ends_block() {
            break;
        }
    }
    if kinds.is_empty() {
        return Err(Fail::Unsupported("first instruction"));
    }
    emit(&insns[..kinds.len()], &kinds, ip, env, &mut info)
}

fn emit(
    insns: &[Instruction],
    kinds: &[Kind],
    ip: u64,
    env: &Env,
    info: &mut InstructionInfoFactory,
) -> R<Translated> {
    let n = insns.len();
    let start = insns[0].ip();
    let page = start & !0xfff;
    // Flags across blocks. Through the jump table (returns, indirect and
    // cross-page jumps) the guest's flags travel in `Ctx::spec`, not in the host's:
    // a block that ends that way saves them there once, right after the last
    // instruction that may write them (`save_at`; at entry if none does), and from
    // there on treats them as dead but for its own readers — the probes and
    // checks of a function's epilogue then need not preserve flags that the code
    // after the return will most likely never read. Its exits load them back. A
    // block entered through the jump table whose flags are live on entry loads
    // them from `Ctx::spec` first (`Translated::jt_entry`). Direct links keep them
    // in the host's flags, so blocks that end that way (or with a conditional
    // jump) assume them live at the end.
    let jt_end = match kinds[n - 1] {
        Kind::Ret | Kind::JmpReg | Kind::CallReg | Kind::JmpMem | Kind::CallMem => true,
        Kind::Jmp | Kind::Call => insns[n - 1].near_branch64() & !0xfff != page,
        _ => false,
    };
    let save_at = (0..n)
        .rev()
        .find(|&k| insns[k].rflags_modified() & ARITH != 0)
        .map_or(0, |k| k + 1);
    // live[k]: arithmetic flags live before instruction k (live[n]: after the block).
    let mut live = vec![0u32; n + 1];
    live[n] = if jt_end { 0 } else { ARITH };
    for k in (0..n).rev() {
        let (read, killed) = flag_effects(&insns[k], kinds[k]);
        let mut after = live[k + 1];
        if jt_end && k + 1 == save_at {
            after |= ARITH; // the save reads them all
        }
        live[k] = read | (after & !killed);
    }
    let mut s = Asm {
        a: Assembler::new(ip),
        bias: 0,
        outlines: Vec::new(),
        spec: false,
    };

    // Entry: count the block against the budget.
    let after_save = s.a.create_label();
    if jt_end && save_at == 0 {
        s.spec_save()?;
        s.spec = true;
        s.a.set_label(after_save);
    }
    let entry_pushed = live[0] != 0;
    if entry_pushed {
        s.pushfq()?;
    }
    let budget_label = s.a.create_label();
    s.add(Instruction::with2(
        Code::Sub_rm64_imm32,
        MemoryOperand::with_base_displ(Register::RSP, (ctx::BUDGET + s.bias) as i64),
        n as u32,
    )?)?;
    s.a.jcc(ConditionCode::s, budget_label)?;
    s.outline(Outline::Exit {
        kind: ctx::EXIT_BUDGET,
        label: budget_label,
        pushed: entry_pushed,
        rip: start,
        uncounted: n as u64,
    });
    if let Some((word, gen)) = env.second {
        // Back to the dispatcher (which decodes it anew) if the second page was
        // written since.
        s.st(ctx::SPILL, 0)?;
        s.mov_imm(0, word)?;
        s.add(Instruction::with2(
            Code::Cmp_rm32_imm32,
            MemoryOperand::with_base(Register::RAX),
            gen,
        )?)?;
        s.ld(0, ctx::SPILL)?;
        let stale = s.a.create_label();
        s.a.jcc(ConditionCode::ne, stale)?;
        s.outline(Outline::Exit {
            kind: ctx::EXIT_CONTINUE,
            label: stale,
            pushed: entry_pushed,
            rip: start,
            uncounted: n as u64,
        });
    }
    if entry_pushed {
        s.popfq()?;
    }

    let kernel = env.tables.0 == 0;
    let mut ended = false;
    for (k, (i, &kind)) in insns.iter().zip(kinds).enumerate() {
        let uncounted = (n - k) as u64;
        if jt_end && k == save_at && k > 0 {
            s.spec_save()?;
            s.spec = true;
        }
        let used = used_gprs(i, info);
        let low = uses_high_byte(i);
        let flags_live = live[k] != 0;
        match kind {
            Kind::Nop => {}
            Kind::Copy => s.add(host_form(i))?,
            Kind::CopyRsp => copy_rsp(&mut s, i, used)?,
            Kind::Mem {
                write,
                size,
                aligned,
            } => {
                let regs = scratch(used, low, 3).ok_or(Fail::Unsupported("no scratch"))?;
                let a = regs[0];
                spill(&mut s, regs)?;
                address(&mut s, i, regs)?;
                let size = if aligned { ALIGNED16 } else { size };
                probe(
                    &mut s,
                    env,
                    regs,
                    size,
                    write,
                    flags_live,
                    i.ip(),
                    uncounted,
                )?;
                s.ld(regs[1], ctx::SPILL + 8)?;
                s.ld(regs[2], ctx::SPILL + 16)?;
                let mut j = host_form(i);
                j.set_memory_base(R64[a]);
                j.set_memory_index(Register::None);
                j.set_memory_index_scale(1);
                j.set_memory_displacement64(0);
                j.set_memory_displ_size(0);
                j.set_segment_prefix(Register::None);
                s.add(j)?;
                s.ld(a, ctx::SPILL)?;
            }
            Kind::Push | Kind::Call | Kind::CallReg => {
                let value = match kind {
                    Kind::Push if i.op0_kind() == OpKind::Register => {
                        Pushed::Reg(i.op0_register().number())
                    }
                    Kind::Push => Pushed::Imm(i.immediate(0)),
                    _ => Pushed::Imm(i.next_ip()),
                };
                push(&mut s, env, used, value, flags_live, i.ip(), uncounted)?;
                match kind {
                    Kind::Call => {
                        s.goto(env, i.near_branch64(), page)?;
                        ended = true;
                    }
                    Kind::CallReg => {
                        s.st(ctx::EXIT_RIP, i.op0_register().number())?;
                        s.via_jump_table(env)?;
                        ended = true;
                    }
                    _ => {}
                }
            }
            Kind::Pop | Kind::Ret => {
                let regs = scratch(used, false, 3).ok_or(Fail::Unsupported("no scratch"))?;
                let (a, b) = (regs[0], regs[1]);
                spill(&mut s, regs)?;
                s.ld(a, ctx::RSP_SLOT)?;
                probe(&mut s, env, regs, 8, false, flags_live, i.ip(), uncounted)?;
                if kind == Kind::Pop {
                    let dst = i.op0_register().number();
                    s.add(Instruction::with2(
                        Code::Mov_r64_rm64,
                        R64[dst],
                        MemoryOperand::with_base(R64[a]),
                    )?)?;
                } else {
                    s.add(Instruction::with2(
                        Code::Mov_r64_rm64,
                        R64[a],
                        MemoryOperand::with_base(R64[a]),
                    )?)?;
                    s.st(ctx::EXIT_RIP, a)?;
                }
                s.ld(b, ctx::RSP_SLOT)?;
                s.lea(b, MemoryOperand::with_base_displ(R64[b], 8))?;
                s.st(ctx::RSP_SLOT, b)?;
                unspill(&mut s, regs)?;
                if kind == Kind::Ret {
                    s.via_jump_table(env)?;
                    ended = true;
                }
            }
            Kind::Jmp => {
                s.goto(env, i.near_branch64(), page)?;
                ended = true;
            }
            Kind::JmpMem | Kind::CallMem => {
                // The target, loaded through the TLB like any operand.
                let regs = scratch(used, false, 3).ok_or(Fail::Unsupported("no scratch"))?;
                let a = regs[0];
                spill(&mut s, regs)?;
                address(&mut s, i, regs)?;
                probe(&mut s, env, regs, 8, false, flags_live, i.ip(), uncounted)?;
                s.add(Instruction::with2(
                    Code::Mov_r64_rm64,
                    R64[a],
                    MemoryOperand::with_base(R64[a]),
                )?)?;
                s.st(ctx::EXIT_RIP, a)?;
                unspill(&mut s, regs)?;
                if kind == Kind::CallMem {
                    // Push the return address; exit_rip survives the probe.
                    let ret = Pushed::Imm(i.next_ip());
                    push(&mut s, env, used, ret, flags_live, i.ip(), uncounted)?;
                }
                s.via_jump_table(env)?;
                ended = true;
            }
            Kind::RepStr { movs, es } => {
                rep_string(&mut s, env, i, used, movs, es, flags_live, uncounted)?
            }
            Kind::Rdtsc { aux } => {
                // The helper saves every register a call clobbers, but not flags.
                if flags_live {
                    s.pushfq()?;
                }
                let routine = env.fill[2 + usize::from(s.bias != 0)];
                s.a.call(routine)?;
                let fault = s.a.create_label();
                s.add(Instruction::with2(
                    Code::Cmp_rm8_imm8,
                    MemoryOperand::with_base_displ(
                        Register::RSP,
                        (ctx::HELPER_AUX + 7 + s.bias) as i64,
                    ),
                    0u32,
                )?)?;
                s.a.jcc(ConditionCode::ne, fault)?;
                s.outline(Outline::Exit {
                    label: fault,
                    pushed: flags_live,
                    rip: i.ip(),
                    kind: ctx::EXIT_INTERPRET,
                    uncounted,
                });
                s.add(Instruction::with2(
                    Code::Mov_r32_rm32,
                    Register::EAX,
                    mem(ctx::HELPER_RET + s.bias),
                )?)?;
                s.add(Instruction::with2(
                    Code::Mov_r32_rm32,
                    Register::EDX,
                    mem(ctx::HELPER_RET + 4 + s.bias),
                )?)?;
                if aux {
                    s.add(Instruction::with2(
                        Code::Mov_r32_rm32,
                        Register::ECX,
                        mem(ctx::HELPER_AUX + s.bias),
                    )?)?;
                }
                if flags_live {
                    s.popfq()?;
                }
            }
            Kind::DivMem { size } => {
                let regs = scratch(used, false, 3).ok_or(Fail::Unsupported("no scratch"))?;
                let (a, c) = (regs[0], regs[2]);
                spill(&mut s, regs)?;
                address(&mut s, i, regs)?;
                if flags_live {
                    return Err(Fail::Unsupported("flags live across DIV"));
                }
                probe(&mut s, env, regs, size, false, false, i.ip(), uncounted)?;
                let (load, cmp, div, hi, cr) = if size == 8 {
                    (
                        Code::Mov_r64_rm64,
                        Code::Cmp_r64_rm64,
                        Code::Div_rm64,
                        Register::RDX,
                        R64[c],
                    )
                } else {
                    (
                        Code::Mov_r32_rm32,
                        Code::Cmp_r32_rm32,
                        Code::Div_rm32,
                        Register::EDX,
                        R64[c].full_register32(),
                    )
                };
                s.add(Instruction::with2(
                    load,
                    cr,
                    MemoryOperand::with_base(R64[a]),
                )?)?;
                s.add(Instruction::with2(cmp, hi, cr)?)?;
                let fault = s.a.create_label();
                s.a.jcc(ConditionCode::ae, fault)?;
                s.outline(Outline::Fallback {
                    label: fault,
                    regs,
                    pushed: false,
                    rip: i.ip(),
                    uncounted,
                });
                s.add(Instruction::with1(div, cr)?)?;
                unspill(&mut s, regs)?;
            }
            Kind::Div => {
                // #DE (zero divisor or quotient overflow) iff high half >= divisor:
                // then the interpreter runs it and raises. Flags are undefined after
                // DIV, so the compare may clobber them.
                let d = i.op0_register();
                let hi = if d.size() == 8 {
                    Register::RDX
                } else {
                    Register::EDX
                };
                let code = if d.size() == 8 {
                    Code::Cmp_r64_rm64
                } else {
                    Code::Cmp_r32_rm32
                };
                let label = s.a.create_label();
                if flags_live {
                    return Err(Fail::Unsupported("flags live across DIV"));
                }
                s.add(Instruction::with2(code, hi, d)?)?;
                s.a.jcc(ConditionCode::ae, label)?;
                s.outline(Outline::Exit {
                    label,
                    pushed: false,
                    rip: i.ip(),
                    kind: ctx::EXIT_INTERPRET,
                    uncounted,
                });
                s.add(*i)?;
            }
            Kind::Pushf => push(
                &mut s,
                env,
                used,
                Pushed::Flags,
                flags_live,
                i.ip(),
                uncounted,
            )?,
            Kind::Popf => popf(&mut s, env, used, kernel, i.ip(), uncounted)?,
            Kind::Cli => {
                if flags_live {
                    s.pushfq()?;
                }
                s.add(Instruction::with2(
                    Code::And_rm64_imm32,
                    mem(ctx::SYSFLAGS + s.bias),
                    !(IF as u32) as i32,
                )?)?;
                if flags_live {
                    s.popfq()?;
                }
            }
            Kind::MovSreg => {
                let d = i.op0_register();
                let sel = mem(ctx::SEL + 2 * seg_index(i.op1_register()) + s.bias);
                s.add(if d.size() == 2 {
                    Instruction::with2(Code::Mov_r16_rm16, d, sel)?
                } else {
                    Instruction::with2(Code::Movzx_r32_rm16, d.full_register32(), sel)?
                })?;
            }
            Kind::Leave => {
                let regs = scratch(used, false, 3).ok_or(Fail::Unsupported("no scratch"))?;
                let (a, b) = (regs[0], regs[1]);
                spill(&mut s, regs)?;
                s.add(Instruction::with2(
                    Code::Mov_r64_rm64,
                    R64[a],
                    Register::RBP,
                )?)?;
                probe(&mut s, env, regs, 8, false, flags_live, i.ip(), uncounted)?;
                s.lea(b, MemoryOperand::with_base_displ(Register::RBP, 8))?;
                s.st(ctx::RSP_SLOT, b)?;
                s.add(Instruction::with2(
                    Code::Mov_r64_rm64,
                    Register::RBP,
                    MemoryOperand::with_base(R64[a]),
                )?)?;
                unspill(&mut s, regs)?;
            }
            Kind::MovRsp { load } => {
                let regs = scratch(used, false, 3).ok_or(Fail::Unsupported("no scratch"))?;
                let (a, b) = (regs[0], regs[1]);
                spill(&mut s, regs)?;
                address(&mut s, i, regs)?;
                probe(&mut s, env, regs, 8, !load, flags_live, i.ip(), uncounted)?;
                let at = MemoryOperand::with_base(R64[a]);
                if load {
                    s.add(Instruction::with2(Code::Mov_r64_rm64, R64[b], at)?)?;
                    s.st(ctx::RSP_SLOT, b)?;
                } else {
                    s.ld(b, ctx::RSP_SLOT)?;
                    s.add(Instruction::with2(Code::Mov_rm64_r64, at, R64[b])?)?;
                }
                unspill(&mut s, regs)?;
            }
            Kind::JmpReg => {
                s.st(ctx::EXIT_RIP, i.op0_register().number())?;
                s.via_jump_table(env)?;
                ended = true;
            }
            Kind::Jcc => {
                if i.condition_code() == ConditionCode::None {
                    return Err(Fail::Unsupported("no condition"));
                }
                let taken = s.a.create_label();
                s.a.jcc(i.condition_code(), taken)?;
                s.goto(env, i.next_ip(), page)?;
                s.a.set_label(taken);
                s.goto(env, i.near_branch64(), page)?;
                ended = true;
            }
        }
    }
    if !ended {
        let next = insns[n - 1].next_ip();
        s.goto(env, next, page)?;
    }

    // Out-of-line code.
    // The jump table's entry: flags from `Ctx::spec` if the block reads them.
    let mut jt_label = None;
    if live[0] != 0 || (jt_end && save_at == 0) {
        let l = s.a.create_label();
        s.a.set_label(l);
        if live[0] != 0 {
            s.spec = false;
            s.spec_restore()?;
        }
        if jt_end && save_at == 0 {
            s.a.jmp_label(after_save)?;
        } else {
            s.a.jmp(ip)?;
        }
        jt_label = Some(l);
    }
    let outlines = std::mem::take(&mut s.outlines);
    let mut link_labels = Vec::new();
    for (o, spec) in outlines {
        s.spec = spec;
        match o {
            Outline::Miss {
                label,
                resume,
                fallback,
                regs,
                info,
                pushed,
                rip,
                uncounted,
            } => {
                s.a.set_label(label);
                s.bias = if pushed { 8 } else { 0 };
                miss(&mut s, env, regs, info)?;
                s.add(Instruction::with2(
                    Code::Test_rm64_r64,
                    R64[regs[0]],
                    R64[regs[0]],
                )?)?;
                s.a.jcc(ConditionCode::e, fallback)?;
                s.a.jmp_label(resume)?;
                s.a.set_label(fallback);
                unspill(&mut s, regs)?;
                if pushed {
                    s.popfq()?;
                }
                s.exit(env.exit, rip, ctx::EXIT_INTERPRET, uncounted)?;
            }
            Outline::Fallback {
                label,
                regs,
                pushed,
                rip,
                uncounted,
            } => {
                s.a.set_label(label);
                s.bias = if pushed { 8 } else { 0 };
                unspill(&mut s, regs)?;
                if pushed {
                    s.popfq()?;
                }
                s.exit(env.exit, rip, ctx::EXIT_INTERPRET, uncounted)?;
            }
            Outline::JumpMiss { label, regs } => {
                s.a.set_label(label);
                unspill(&mut s, regs)?;
                s.a.jmp(env.jump_miss)?;
            }
            Outline::Link { label, target } => {
                debug_assert!(!spec, "links keep the flags in the host's");
                s.a.set_label(label);
                link_labels.push((label, target));
                s.exit(env.exit, target, 0, 0)?;
            }
            Outline::Exit {
                label,
                pushed,
                rip,
                kind,
                uncounted,
            } => {
                s.a.set_label(label);
                s.bias = if pushed { 8 } else { 0 };
                if pushed {
                    s.popfq()?;
                }
                s.exit(env.exit, rip, kind, uncounted)?;
            }
        }
    }
    let res =
        s.a.finish()
            .map_err(|_| Fail::Unsupported("a branch to an unbound label"))?;
    let links = link_labels
        .iter()
        .map(|&(label, target)| (res.label_ip(label), target))
        .collect();
    let jt_entry = jt_label.map_or(ip, |l| res.label_ip(l));
    Ok(Translated {
        code: res.code,
        jt_entry,
        links,
    })
}

/// What a rewritten push stores.
enum Pushed {
    Reg(usize),
    Imm(u64),
    /// The guest's RFLAGS (PUSHFQ): arithmetic flags from the host's, the rest
    /// from `Ctx::sysflags`, without RF and VM (as PUSHF stores them).
    Flags,
}

const IF: u64 = 1 << 9;
/// RFLAGS bits other than the arithmetic ones that POPF may change: at CPL 3
/// (TF DF NT AC ID)...
const POPF_USER: u64 = (1 << 8) | (1 << 10) | (1 << 14) | (1 << 18) | (1 << 21);
/// ...and at CPL 0.
const POPF_KERNEL: u64 = POPF_USER | IF | (3 << 12);

/// Index of a segment register in `Ctx::sel`.
fn seg_index(r: Register) -> i32 {
    match r {
        Register::ES => 0,
        Register::CS => 1,
        Register::SS => 2,
        Register::DS => 3,
        Register::FS => 4,
        _ => 5,
    }
}

/// POPFQ natively when the popped value leaves every system flag POPF could
/// change as it is (the common case: nested interrupt-flag restores, user code);
/// otherwise the interpreter runs it (it may set IF, TF, AC...). The arithmetic
/// flags go to the host's through a host POPFQ of just those bits.
fn popf(s: &mut Asm, env: &Env, used: u16, kernel: bool, rip: u64, uncounted: u64) -> R<()> {
    let regs = scratch(used, false, 3).ok_or(Fail::Unsupported("no scratch"))?;
    let (a, b, c) = (regs[0], regs[1], regs[2]);
    spill(s, regs)?;
    s.ld(a, ctx::RSP_SLOT)?;
    // POPF overwrites every arithmetic flag: none is live before it.
    probe(s, env, regs, 8, false, false, rip, uncounted)?;
    s.add(Instruction::with2(
        Code::Mov_r64_rm64,
        R64[b],
        MemoryOperand::with_base(R64[a]),
    )?)?;
    s.add(Instruction::with2(Code::Mov_r64_rm64, R64[c], R64[b])?)?;
    s.add(Instruction::with2(
        Code::Xor_r64_rm64,
        R64[c],
        mem(ctx::SYSFLAGS + s.bias),
    )?)?;
    // (At CPL 3 a change of IF goes to the interpreter too: with IOPL 3 it would
    // take effect.)
    let mask = if kernel { POPF_KERNEL } else { POPF_USER | IF };
    s.add(Instruction::with2(
        Code::Test_rm64_imm32,
        R64[c],
        mask as u32,
    )?)?;
    let label = s.a.create_label();
    s.a.jcc(ConditionCode::ne, label)?;
    s.outline(Outline::Fallback {
        label,
        regs,
        pushed: false,
        rip,
        uncounted,
    });
    s.add(Instruction::with2(
        Code::And_rm64_imm32,
        R64[b],
        crate::ARITH_FLAGS as i32,
    )?)?;
    s.ld(c, ctx::RSP_SLOT)?;
    s.lea(c, MemoryOperand::with_base_displ(R64[c], 8))?;
    s.st(ctx::RSP_SLOT, c)?;
    // (A real POPFQ: it takes the whole value; POPF is not that frequent.)
    s.add(Instruction::with1(Code::Push_r64, R64[b])?)?;
    s.a.popfq()?;
    unspill(s, regs)
}

/// Pushes `value` onto the guest stack through the TLB (RSP moves only once the
/// store is done, so a fault leaves it as it was).
fn push(
    s: &mut Asm,
    env: &Env,
    used: u16,
    value: Pushed,
    flags_live: bool,
    rip: u64,
    uncounted: u64,
) -> R<()> {
    let regs = scratch(used, false, 3).ok_or(Fail::Unsupported("no scratch"))?;
    let (a, b) = (regs[0], regs[1]);
    spill(s, regs)?;
    s.ld(a, ctx::RSP_SLOT)?;
    s.lea(a, MemoryOperand::with_base_displ(R64[a], -8))?;
    probe(s, env, regs, 8, true, flags_live, rip, uncounted)?;
    let src = match value {
        Pushed::Reg(4) => {
            s.ld(b, ctx::RSP_SLOT)?;
            b
        }
        Pushed::Reg(r) => r,
        Pushed::Imm(v) => {
            s.mov_imm(b, v)?;
            b
        }
        Pushed::Flags => {
            // The host flags are the guest's here (live or not): read them whole
            // (PUSHFQ, then pop), save them, compute on a register, restore them.
            s.a.pushfq()?;
            s.add(Instruction::with1(Code::Pop_r64, R64[b])?)?;
            s.pushfq()?;
            s.add(Instruction::with2(
                Code::And_rm64_imm32,
                R64[b],
                crate::ARITH_FLAGS as i32,
            )?)?;
            s.add(Instruction::with2(
                Code::Or_r64_rm64,
                R64[b],
                mem(ctx::SYSFLAGS + s.bias),
            )?)?;
            s.add(Instruction::with2(
                Code::And_rm64_imm32,
                R64[b],
                !0x3_0000i32,
            )?)?;
            s.popfq()?;
            b
        }
    };
    s.add(Instruction::with2(
        Code::Mov_rm64_r64,
        MemoryOperand::with_base(R64[a]),
        R64[src],
    )?)?;
    s.ld(a, ctx::RSP_SLOT)?;
    s.lea(a, MemoryOperand::with_base_displ(R64[a], -8))?;
    s.st(ctx::RSP_SLOT, a)?;
    unspill(s, regs)
}

fn spill(s: &mut Asm, regs: [usize; 3]) -> R<()> {
    for (k, &r) in regs.iter().enumerate() {
        s.st(ctx::SPILL + 8 * k as i32, r)?;
    }
    Ok(())
}

fn unspill(s: &mut Asm, regs: [usize; 3]) -> R<()> {
    for (k, &r) in regs.iter().enumerate() {
        s.ld(r, ctx::SPILL + 8 * k as i32)?;
    }
    Ok(())
}

/// Linear address of `i`'s memory operand into scratch `regs[0]` (may use regs[2]).
fn address(s: &mut Asm, i: &Instruction, regs: [usize; 3]) -> R<()> {
    let (a, c) = (regs[0], regs[2]);
    let base = i.memory_base();
    let index = i.memory_index();
    let scale = i.memory_index_scale();
    if base == Register::RIP {
        s.mov_imm(a, i.ip_rel_memory_address())?;
    } else {
        let disp = i.memory_displacement64() as i64;
        let disp = if i32::try_from(disp).is_ok() {
            disp
        } else {
            return Err(Fail::Unsupported("64-bit displacement"));
        };
        let b = if base == Register::RSP {
            s.ld(a, ctx::RSP_SLOT)?;
            R64[a]
        } else {
            base
        };
        s.lea(
            a,
            MemoryOperand::new(
                b,
                index,
                scale,
                disp,
                if disp == 0 { 0 } else { 1 },
                false,
                Register::None,
            ),
        )?;
    }
    match i.memory_segment() {
        Register::FS => {
            s.ld(c, ctx::FS_BASE)?;
            s.lea(a, MemoryOperand::with_base_index(R64[a], R64[c]))?;
        }
        Register::GS => {
            s.ld(c, ctx::GS_BASE)?;
            s.lea(a, MemoryOperand::with_base_index(R64[a], R64[c]))?;
        }
        _ => {}
    }
    Ok(())
}

/// Inline TLB probe: turns the linear address in `regs[0]` into a host address,
/// or takes the miss path. Clobbers regs[1], regs[2] and (if not live) flags.
#[allow(clippy::too_many_arguments)]
fn probe(
    s: &mut Asm,
    env: &Env,
    regs: [usize; 3],
    size: u32,
    write: bool,
    flags_live: bool,
    rip: u64,
    uncounted: u64,
) -> R<()> {
    if flags_live {
        s.pushfq()?;
    }
    probe_inner(s, env, regs, size, write, flags_live, rip, uncounted)?;
    if flags_live {
        s.popfq()?;
    }
    Ok(())
}

/// The probe itself; `pushed`: the guest flags are on the host stack (the miss
/// path's fallback pops them).
#[allow(clippy::too_many_arguments)]
fn probe_inner(
    s: &mut Asm,
    env: &Env,
    regs: [usize; 3],
    size: u32,
    write: bool,
    pushed: bool,
    rip: u64,
    uncounted: u64,
) -> R<()> {
    let (a, b, c) = (regs[0], regs[1], regs[2]);
    let table = if write { env.tables.1 } else { env.tables.0 };
    let off = ctx::TLB + table as i32 * ctx::TABLE_BYTES;
    // b = index * entry size
    s.add(Instruction::with2(Code::Mov_r64_rm64, R64[b], R64[a])?)?;
    s.add(Instruction::with2(
        Code::Shr_rm64_imm8,
        R64[b],
        12 - ctx::TLB_ENTRY_SHIFT,
    )?)?;
    s.add(Instruction::with2(
        Code::And_rm64_imm32,
        R64[b],
        (ctx::TLB_SIZE as i32 - 1) << ctx::TLB_ENTRY_SHIFT,
    )?)?;
    if size == ALIGNED16 {
        // c = page, with the low 4 bits kept: differs from the tag if misaligned.
        s.add(Instruction::with2(Code::Mov_r64_rm64, R64[c], R64[a])?)?;
        s.add(Instruction::with2(
            Code::And_rm64_imm32,
            R64[c],
            -4096i32 | 15,
        )?)?;
    } else {
        // c = page of the access's last byte: differs from the tag if it crosses a page.
        s.lea(c, MemoryOperand::with_base_displ(R64[a], size as i64 - 1))?;
        s.add(Instruction::with2(Code::And_rm64_imm32, R64[c], -4096i32)?)?;
    }
    let entry = |d: i32| {
        MemoryOperand::new(
            Register::RSP,
            R64[b],
            1,
            (off + d + s.bias) as i64,
            1,
            false,
            Register::None,
        )
    };
    let tag = entry(0);
    let addend = entry(8);
    s.add(Instruction::with2(Code::Cmp_r64_rm64, R64[c], tag)?)?;
    let label = s.a.create_label();
    let resume = s.a.create_label();
    let fallback = s.a.create_label();
    s.a.jcc(ConditionCode::ne, label)?;
    s.add(Instruction::with2(Code::Add_r64_rm64, R64[a], addend)?)?;
    s.a.set_label(resume);
    let info = size as u64 | (write as u64) << 8 | (table as u64) << 9;
    s.outline(Outline::Miss {
        label,
        resume,
        fallback,
        regs,
        info,
        pushed,
        rip,
        uncounted,
    });
    Ok(())
}

/// `rep stos`/`rep movs` (forward, 64-bit addresses) whose bytes lie within one
/// page of each operand: run natively on the host addresses, RDI/RSI advanced by
/// the byte count afterwards. Anything else (longer, page-crossing, MMIO, code
/// pages) goes to the interpreter, which copies a page at a time.
#[allow(clippy::too_many_arguments)]
fn rep_string(
    s: &mut Asm,
    env: &Env,
    i: &Instruction,
    used: u16,
    movs: bool,
    es: u32,
    flags_live: bool,
    uncounted: u64,
) -> R<()> {
    let regs = scratch(used, false, 3).ok_or(Fail::Unsupported("no scratch"))?;
    let (a, b, c) = (regs[0], regs[1], regs[2]);
    spill(s, regs)?;
    if flags_live {
        s.pushfq()?;
    }
    let fallback = s.a.create_label();
    s.outline(Outline::Fallback {
        label: fallback,
        regs,
        pushed: flags_live,
        rip: i.ip(),
        uncounted,
    });
    let bytes = |s: &mut Asm| {
        s.lea(
            b,
            MemoryOperand::new(
                Register::None,
                Register::RCX,
                es,
                0,
                0,
                false,
                Register::None,
            ),
        )
    };
    s.add(Instruction::with2(
        Code::Cmp_rm64_imm32,
        Register::RCX,
        4096i32,
    )?)?;
    s.a.jcc(ConditionCode::a, fallback)?;
    bytes(s)?;
    for ptr in [Register::RDI, Register::RSI]
        .into_iter()
        .take(1 + movs as usize)
    {
        s.add(Instruction::with2(Code::Mov_r64_rm64, R64[c], ptr)?)?;
        s.add(Instruction::with2(Code::And_rm64_imm32, R64[c], 0xfffi32)?)?;
        s.add(Instruction::with2(Code::Add_r64_rm64, R64[c], R64[b])?)?;
        s.add(Instruction::with2(Code::Cmp_rm64_imm32, R64[c], 0x1000i32)?)?;
        s.a.jcc(ConditionCode::a, fallback)?;
    }
    if movs {
        s.add(Instruction::with2(
            Code::Mov_r64_rm64,
            R64[a],
            Register::RSI,
        )?)?;
        probe_inner(s, env, regs, 1, false, flags_live, i.ip(), uncounted)?;
        s.st(ctx::SPILL + 24, a)?;
    }
    s.add(Instruction::with2(
        Code::Mov_r64_rm64,
        R64[a],
        Register::RDI,
    )?)?;
    probe_inner(s, env, regs, 1, true, flags_live, i.ip(), uncounted)?;
    // Guest RDI/RSI aside (the helper save area is free here); host addresses in.
    s.st(ctx::SAVED + 8 * 7, 7)?;
    s.add(Instruction::with2(
        Code::Mov_r64_rm64,
        Register::RDI,
        R64[a],
    )?)?;
    if movs {
        s.st(ctx::SAVED + 8 * 6, 6)?;
        s.ld(6, ctx::SPILL + 24)?;
    }
    bytes(s)?;
    if flags_live {
        s.popfq()?;
    }
    s.add(host_form(i))?;
    s.ld(7, ctx::SAVED + 8 * 7)?;
    s.lea(7, MemoryOperand::with_base_index(Register::RDI, R64[b]))?;
    if movs {
        s.ld(6, ctx::SAVED + 8 * 6)?;
        s.lea(6, MemoryOperand::with_base_index(Register::RSI, R64[b]))?;
    }
    unspill(s, regs)
}

/// TLB miss: calls the shared fill routine (which saves what a helper call may
/// clobber and calls `helpers::fill`); leaves the host address (or 0) in regs[0].
fn miss(s: &mut Asm, env: &Env, regs: [usize; 3], info: u64) -> R<()> {
    let a = regs[0];
    s.st(ctx::MISS_LIN, a)?;
    s.st_imm32(ctx::MISS_INFO, info as u32)?;
    let routine = env.fill[usize::from(s.bias != 0)];
    s.a.call(routine)?;
    s.ld(a, ctx::HELPER_RET)
}

/// An instruction naming RSP (or a LEA with an RSP or RIP-relative base).
fn copy_rsp(s: &mut Asm, i: &Instruction, used: u16) -> R<()> {
    if i.mnemonic() == M::Lea && i.memory_base() == Register::RIP {
        // The address is a constant; LEA would compute it relative to the host code.
        let dst = i.op0_register();
        let v = i.ip_rel_memory_address();
        return match dst.size() {
            8 => s.mov_imm(dst.number(), v),
            4 => s.add(Instruction::with2(Code::Mov_r32_imm32, dst, v as u32)?),
            _ => Err(Fail::Unsupported("16-bit LEA")),
        };
    }
    let regs = scratch(used, uses_high_byte(i), 1).ok_or(Fail::Unsupported("no scratch"))?;
    let t = regs[0];
    s.st(ctx::SPILL + 24, t)?;
    s.ld(t, ctx::RSP_SLOT)?;
    let mut j = host_form(i);
    for k in 0..j.op_count() {
        if j.op_kind(k) == OpKind::Register && j.op_register(k) == Register::RSP {
            j.set_op_register(k, R64[t]);
        }
    }
    if j.memory_base() == Register::RSP {
        j.set_memory_base(R64[t]);
    }
    s.add(j)?;
    s.st(ctx::RSP_SLOT, t)?;
    s.ld(t, ctx::SPILL + 24)
}
