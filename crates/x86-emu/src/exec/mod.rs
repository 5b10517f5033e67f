//! The interpreter: runs decoded blocks and dispatches instructions.

mod alu;
mod control;
pub(crate) mod ops;
mod sse;
mod string;
mod system;
mod x87;

use std::sync::atomic::{AtomicBool, Ordering};

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::bus::Bus;
use crate::cpu::{Cpu, StopReason, RAX, RBX, RCX, RDX, SS};
use crate::exception::{Exc, XResult};
use crate::flags::mask;

impl Cpu {
    /// Runs up to `budget` instructions. Returns early when the CPU halts, a
    /// triple fault happens, or an instruction needs the platform to look at
    /// interrupts (I/O, STI, interrupt controller accesses).
    pub fn run(&mut self, bus: &mut dyn Bus, budget: u64) -> StopReason {
        self.run_inner(bus, budget, false)
    }

    /// Like [`Cpu::run`], but stops after exactly `count` instructions even within
    /// a block (a translator hands single instructions to the interpreter).
    pub fn run_exact(&mut self, bus: &mut dyn Bus, count: u64) -> StopReason {
        self.run_inner(bus, count, true)
    }

    #[inline(always)]
    fn run_inner(&mut self, bus: &mut dyn Bus, budget: u64, exact: bool) -> StopReason {
        self.stop = false;
        let end = self.icount + budget;
        while self.icount < end {
            if self.halted {
                return StopReason::Halted;
            }
            let block = match self.fetch_block(bus) {
                Ok(b) => b,
                Err(e) => {
                    if let Some(r) = self.raise(bus, e) {
                        return r;
                    }
                    continue;
                }
            };
            self.break_block = false;
            let len = self.blocks.block(block).insns.len();
            for k in 0..len {
                let insn = self.blocks.block(block).insns[k];
                let ins = &insn;
                if self.trace.is_some() {
                    self.trace_insn();
                }
                let shadow = self.int_shadow;
                let ip = self.rip;
                self.rip = ins.next_ip();
                if self.bitness != 64 {
                    self.rip &= 0xffff_ffff;
                }
                match self.exec(bus, ins) {
                    Ok(()) => {
                        self.icount += 1;
                        if shadow {
                            self.int_shadow = false;
                            self.stop = true;
                        }
                    }
                    Err(e) => {
                        self.rip = ip;
                        if let Some(r) = self.raise(bus, e) {
                            return r;
                        }
                        break;
                    }
                }
                if self.break_block || self.stop || (exact && self.icount >= end) {
                    break;
                }
            }
            if self.stop {
                if self.halted {
                    return StopReason::Halted;
                }
                return StopReason::Yield;
            }
        }
        StopReason::Yield
    }

    fn trace_insn(&mut self) {
        let g = self.gpr;
        let line = format!(
            "RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\nRSI={:016x} RDI={:016x} RBP={:016x} RSP={:016x}\n\
             R8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}\nR12={:016x} R13={:016x} R14={:016x} R15={:016x}\n\
             RIP={:016x} RFL={:08x} CPL={}\n",
            g[0], g[3], g[1], g[2], g[6], g[7], g[5], g[4], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15],
            self.rip,
            self.flags.get(),
            self.cpl
        );
        if let Some(t) = self.trace.as_mut() {
            if t.write_all(line.as_bytes()).is_err() {
                self.trace = None;
            }
        }
    }

    /// Executes one instruction whose RIP has already been advanced.
    fn exec(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        match i.mnemonic() {
            M::Mov => self.mov(bus, i),
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
                self.alu2(bus, i)
            }
            M::Inc | M::Dec | M::Neg | M::Not => self.unary(bus, i),
            M::Lea => {
                let v = self.ea_off(i);
                self.set_reg(i.op_register(0), v & mask(self.op_size(i, 0)));
                Ok(())
            }
            M::Movzx => {
                let s = self.op_size(i, 1);
                let v = self.rd(bus, i, 1, s)?;
                self.set_reg(i.op_register(0), v);
                Ok(())
            }
            M::Movsx | M::Movsxd => {
                let s = self.op_size(i, 1);
                let v = self.rd(bus, i, 1, s)?;
                let shift = 64 - 8 * s as u32;
                let sv = ((v << shift) as i64 >> shift) as u64;
                let d = self.op_size(i, 0);
                self.set_reg(i.op_register(0), sv & mask(d));
                Ok(())
            }
            M::Push => {
                let size = self.stack_op_size(i);
                let v = match i.op_kind(0) {
                    OpKind::Register if i.op_register(0).is_segment_register() => {
                        self.seg[ops::seg_index(i.op_register(0))].selector as u64
                    }
                    _ => self.rd(bus, i, 0, size)?,
                };
                self.push(bus, size, v)
            }
            M::Pop => {
                let size = self.stack_op_size(i);
                let save = self.gpr[4];
                let v = self.pop(bus, size)?;
                let r =
                    if i.op_kind(0) == OpKind::Register && i.op_register(0).is_segment_register() {
                        let idx = ops::seg_index(i.op_register(0));
                        let r = self.load_seg(bus, idx, v as u16);
                        if r.is_ok() && idx == SS {
                            self.int_shadow = true;
                        }
                        r
                    } else {
                        self.wr(bus, i, 0, size, v)
                    };
                if r.is_err() {
                    self.gpr[4] = save;
                }
                r
            }
            M::Pusha | M::Pushad => self.pusha(bus, i),
            M::Popa | M::Popad => self.popa(bus, i),
            M::Xchg => self.xchg(bus, i),
            M::Nop
            | M::Pause
            | M::Lfence
            | M::Mfence
            | M::Sfence
            | M::Wbinvd
            | M::Invd
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Prefetchw
            | M::Clflush
            | M::Clflushopt
            | M::Endbr64
            | M::Endbr32 => Ok(()),
            M::Jmp
            | M::Call
            | M::Ret
            | M::Jrcxz
            | M::Jecxz
            | M::Jcxz
            | M::Loop
            | M::Loope
            | M::Loopne => {
                if matches!(i.op_kind(0), OpKind::FarBranch16 | OpKind::FarBranch32)
                    || (i.op_kind(0) == OpKind::Memory && is_far_mem(i))
                {
                    self.far_branch(bus, i)
                } else {
                    self.near_branch(bus, i)
                }
            }
            M::Ja
            | M::Jae
            | M::Jb
            | M::Jbe
            | M::Je
            | M::Jne
            | M::Jg
            | M::Jge
            | M::Jl
            | M::Jle
            | M::Jo
            | M::Jno
            | M::Jp
            | M::Jnp
            | M::Js
            | M::Jns => self.near_branch(bus, i),
            M::Retf => self.far_branch(bus, i),
            M::Cmova
            | M::Cmovae
            | M::Cmovb
            | M::Cmovbe
            | M::Cmove
            | M::Cmovne
            | M::Cmovg
            | M::Cmovge
            | M::Cmovl
            | M::Cmovle
            | M::Cmovo
            | M::Cmovno
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovs
            | M::Cmovns => {
                let size = self.op_size(i, 0);
                let v = self.rd(bus, i, 1, size)?;
                let take = self.flags.cond((i.condition_code() as u8).wrapping_sub(1));
                let r = i.op_register(0);
                if take {
                    self.set_reg(r, v);
                } else if size == 4 {
                    let cur = self.reg(r);
                    self.set_reg(r, cur);
                }
                Ok(())
            }
            M::Seta
            | M::Setae
            | M::Setb
            | M::Setbe
            | M::Sete
            | M::Setne
            | M::Setg
            | M::Setge
            | M::Setl
            | M::Setle
            | M::Seto
            | M::Setno
            | M::Setp
            | M::Setnp
            | M::Sets
            | M::Setns => {
                let v = self.flags.cond((i.condition_code() as u8).wrapping_sub(1)) as u64;
                self.wr(bus, i, 0, 1, v)
            }
            M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr => {
                self.shift(bus, i)
            }
            M::Shld | M::Shrd => self.shift_double(bus, i),
            M::Mul | M::Imul => self.mul(bus, i),
            M::Div | M::Idiv => self.div(bus, i),
            M::Bt | M::Bts | M::Btr | M::Btc => self.bit_test(bus, i),
            M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt | M::Popcnt => self.bit_scan(bus, i),
            M::Xadd => self.xadd(bus, i),
            M::Cmpxchg => self.cmpxchg(bus, i),
            M::Cmpxchg8b | M::Cmpxchg16b => self.cmpxchg_wide(bus, i),
            M::Bswap => {
                let r = i.op_register(0);
                let v = self.reg(r);
                let nv = if r.size() == 8 {
                    v.swap_bytes()
                } else {
                    (v as u32).swap_bytes() as u64
                };
                self.set_reg(r, nv);
                Ok(())
            }
            M::Movbe => {
                let size = self.op_size(i, 0);
                let v = self.rd(bus, i, 1, size)?;
                let sw = match size {
                    2 => (v as u16).swap_bytes() as u64,
                    4 => (v as u32).swap_bytes() as u64,
                    _ => v.swap_bytes(),
                };
                self.wr(bus, i, 0, size, sw)
            }
            M::Cbw => {
                let v = self.gpr[RAX] as u8 as i8 as i16 as u16 as u64;
                self.set_reg_sized(RAX, 2, v);
                Ok(())
            }
            M::Cwde => {
                self.gpr[RAX] = self.gpr[RAX] as u16 as i16 as i32 as u32 as u64;
                Ok(())
            }
            M::Cdqe => {
                self.gpr[RAX] = self.gpr[RAX] as u32 as i32 as i64 as u64;
                Ok(())
            }
            M::Cwd => {
                let v = if self.gpr[RAX] & 0x8000 != 0 {
                    0xffff
                } else {
                    0
                };
                self.set_reg_sized(RDX, 2, v);
                Ok(())
            }
            M::Cdq => {
                self.gpr[RDX] = if self.gpr[RAX] & 0x8000_0000 != 0 {
                    0xffff_ffff
                } else {
                    0
                };
                Ok(())
            }
            M::Cqo => {
                self.gpr[RDX] = if (self.gpr[RAX] as i64) < 0 {
                    u64::MAX
                } else {
                    0
                };
                Ok(())
            }
            M::Leave => self.leave(bus, i),
            M::Enter => self.enter(bus, i),
            M::Xlatb => {
                let seg = ops::seg_index(i.memory_segment());
                let am = mask((self.bitness / 8) as u8);
                let off = (self.gpr[RBX].wrapping_add(self.gpr[RAX] & 0xff)) & am;
                let v = self.read_lin(bus, self.lin(seg, off), 1)?;
                self.set_reg_sized(RAX, 1, v);
                Ok(())
            }
            M::Movsb
            | M::Movsw
            | M::Movsq
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Stosq
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
            | M::Lodsq
            | M::Cmpsb
            | M::Cmpsw
            | M::Cmpsq
            | M::Scasb
            | M::Scasw
            | M::Scasd
            | M::Scasq
            | M::Insb
            | M::Insw
            | M::Insd
            | M::Outsb
            | M::Outsw
            | M::Outsd => {
                if matches!(
                    i.mnemonic(),
                    M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd
                ) && self.cr0 & vmm_types::bits::CR0_PE != 0
                    && self.cpl > ((self.flags.rflags >> 12) & 3) as u8
                {
                    return Err(Exc::gp(0));
                }
                self.string_op(bus, i)
            }
            M::Movsd | M::Cmpsd if string::is_string(i) => self.string_op(bus, i),
            M::Int | M::Int3 | M::Into | M::Int1 => self.soft_int(bus, i),
            M::Iret | M::Iretd | M::Iretq => self.iret(bus, i),
            M::Syscall => self.syscall(i),
            M::Sysret | M::Sysretq => self.sysret(i),
            M::Swapgs => self.swapgs(),
            M::Hlt => self.hlt(),
            M::Cli
            | M::Sti
            | M::Pushf
            | M::Pushfd
            | M::Pushfq
            | M::Popf
            | M::Popfd
            | M::Popfq
            | M::Clc
            | M::Stc
            | M::Cmc
            | M::Cld
            | M::Std
            | M::Lahf
            | M::Sahf => self.flag_ops(bus, i),
            M::Cpuid => {
                let (a, b, c, d) = self.cpuid.query(self.gpr[RAX] as u32, self.gpr[RCX] as u32);
                self.gpr[RAX] = a as u64;
                self.gpr[RBX] = b as u64;
                self.gpr[RCX] = c as u64;
                self.gpr[RDX] = d as u64;
                Ok(())
            }
            M::Rdtsc | M::Rdtscp => self.rdtsc(bus, i),
            M::Rdmsr => self.rdmsr(bus),
            M::Wrmsr => self.wrmsr(bus),
            M::Lgdt
            | M::Lidt
            | M::Sgdt
            | M::Sidt
            | M::Lldt
            | M::Sldt
            | M::Ltr
            | M::Str
            | M::Smsw
            | M::Lmsw
            | M::Invlpg => self.desc_tables(bus, i),
            M::Clts => self.clts(),
            M::Verr | M::Verw => self.verrw(bus, i),
            M::In | M::Out => self.port_io(bus, i),
            M::Ud2 | M::Ud0 | M::Ud1 => Err(Exc::ud()),
            _ => self.sse_or_x87(bus, i),
        }
    }

    /// MOV in all its forms (GPR, memory, segment, control and debug registers).
    #[inline]
    fn mov(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        if i.op_kind(0) == OpKind::Register {
            let r0 = i.op_register(0);
            if r0.is_cr() || r0.is_dr() {
                return self.mov_crdr(bus, i);
            }
            if r0.is_segment_register() {
                let v = self.rd(bus, i, 1, 2)? as u16;
                let idx = ops::seg_index(r0);
                self.load_seg(bus, idx, v)?;
                if idx == SS {
                    self.int_shadow = true;
                }
                return Ok(());
            }
        }
        if i.op_kind(1) == OpKind::Register {
            let r1 = i.op_register(1);
            if r1.is_cr() || r1.is_dr() {
                return self.mov_crdr(bus, i);
            }
            if r1.is_segment_register() {
                let v = self.seg[ops::seg_index(r1)].selector as u64;
                let size = if i.op_kind(0) == OpKind::Register {
                    self.op_size(i, 0)
                } else {
                    2
                };
                return self.wr(bus, i, 0, size, v);
            }
        }
        let size = self.op_size(i, 0);
        let v = self.rd(bus, i, 1, size)?;
        self.wr(bus, i, 0, size, v)
    }
}

fn is_far_mem(i: &Instruction) -> bool {
    use iced_x86::MemorySize as S;
    matches!(i.memory_size(), S::SegPtr16 | S::SegPtr32 | S::SegPtr64)
}

/// Logs an unimplemented instruction once per mnemonic.
pub(crate) fn warn_unimplemented(i: &Instruction) {
    static SEEN: std::sync::Mutex<Vec<M>> = std::sync::Mutex::new(Vec::new());
    static ANY: AtomicBool = AtomicBool::new(false);
    ANY.store(true, Ordering::Relaxed);
    if let Ok(mut seen) = SEEN.lock() {
        if !seen.contains(&i.mnemonic()) {
            seen.push(i.mnemonic());
            tracing::warn!(
                "unimplemented instruction {:?} ({:?}) at {:#x}: #UD",
                i.mnemonic(),
                i.code(),
                i.ip()
            );
        }
    }
}
