//! Privileged and system instructions: control/debug registers, MSRs,
//! descriptor tables, port I/O, flags control, CPUID, TSC.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};
use vmm_types::{bits, msr};

use crate::bus::Bus;
use crate::cpu::{Cpu, GS, RAX, RCX, RDX};
use crate::exception::{Exc, XResult};
use crate::flags::{self, mask};

impl Cpu {
    #[inline]
    fn require_cpl0(&self) -> XResult<()> {
        if self.cpl != 0 {
            Err(Exc::gp(0))
        } else {
            Ok(())
        }
    }

    fn iopl(&self) -> u8 {
        ((self.flags.rflags & flags::IOPL) >> 12) as u8
    }

    /// Whether port I/O is permitted (IOPL only; no TSS bitmap).
    fn io_allowed(&self) -> bool {
        self.cr0 & bits::CR0_PE == 0 || self.cpl <= self.iopl()
    }

    /// MOV to/from CR and DR.
    #[inline(never)]
    pub(crate) fn mov_crdr(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        self.require_cpl0()?;
        let r0 = i.op_register(0);
        let r1 = i.op_register(1);
        if r0.is_cr() || r0.is_dr() {
            let v = self.reg(r1);
            let n = r0.number();
            if r0.is_dr() {
                self.dr[n & 7] = v;
                return Ok(());
            }
            self.write_cr(bus, n, v)
        } else {
            let n = r1.number();
            let v = if r1.is_dr() {
                self.dr[n & 7]
            } else {
                match n {
                    0 => self.cr0,
                    2 => self.cr2,
                    3 => self.cr3,
                    4 => self.cr4,
                    8 => bus.cr8(),
                    _ => return Err(Exc::ud()),
                }
            };
            self.set_reg(r0, v);
            Ok(())
        }
    }

    /// Writes a control register with its side effects.
    pub(crate) fn write_cr(&mut self, bus: &mut dyn Bus, n: usize, v: u64) -> XResult<()> {
        match n {
            0 => {
                if v >> 32 != 0 || (v & bits::CR0_PG != 0 && v & bits::CR0_PE == 0) {
                    return Err(Exc::gp(0));
                }
                let old = self.cr0;
                self.cr0 = v | bits::CR0_ET;
                if (old ^ self.cr0) & (bits::CR0_PG | bits::CR0_WP | bits::CR0_PE) != 0 {
                    self.tlb.flush_all();
                }
                if self.cr0 & bits::CR0_PG != 0 && self.efer & bits::EFER_LME != 0 {
                    if self.cr4 & bits::CR4_PAE == 0 {
                        return Err(Exc::gp(0));
                    }
                    self.efer |= bits::EFER_LMA;
                } else if self.cr0 & bits::CR0_PG == 0 {
                    self.efer &= !bits::EFER_LMA;
                }
                if (old ^ self.cr0) & bits::CR0_PE != 0 {
                    self.cpl = 0;
                }
                self.update_mode();
            }
            2 => self.cr2 = v,
            3 => {
                self.cr3 = v & 0x000f_ffff_ffff_fff8;
                self.tlb.flush_nonglobal();
                self.code_gen += 1;
                self.break_block = true;
            }
            4 => {
                let allowed = bits::CR4_VME
                    | bits::CR4_PVI
                    | bits::CR4_TSD
                    | bits::CR4_DE
                    | bits::CR4_PSE
                    | bits::CR4_PAE
                    | bits::CR4_MCE
                    | bits::CR4_PGE
                    | bits::CR4_PCE
                    | bits::CR4_OSFXSR
                    | bits::CR4_OSXMMEXCPT
                    | bits::CR4_UMIP;
                if v & !allowed != 0 {
                    return Err(Exc::gp(0));
                }
                self.cr4 = v;
                self.tlb.flush_all();
                self.break_block = true;
            }
            8 => {
                bus.set_cr8(v & 0xf);
                self.stop = true;
            }
            _ => return Err(Exc::ud()),
        }
        Ok(())
    }

    /// RDMSR.
    #[inline(never)]
    pub(crate) fn rdmsr(&mut self, bus: &mut dyn Bus) -> XResult<()> {
        self.require_cpl0()?;
        let idx = self.gpr[RCX] as u32;
        let v = match self.read_msr(bus, idx) {
            Some(v) => v,
            None => {
                warn_msr("rdmsr", idx);
                return Err(Exc::gp(0));
            }
        };
        self.gpr[RAX] = v & 0xffff_ffff;
        self.gpr[RDX] = v >> 32;
        Ok(())
    }

    /// WRMSR.
    #[inline(never)]
    pub(crate) fn wrmsr(&mut self, bus: &mut dyn Bus) -> XResult<()> {
        self.require_cpl0()?;
        let idx = self.gpr[RCX] as u32;
        let v = (self.gpr[RDX] << 32) | (self.gpr[RAX] & 0xffff_ffff);
        self.stop = true;
        if idx == msr::IA32_TSC {
            self.write_tsc(bus, v);
            return Ok(());
        }
        if idx == IA32_TSC_ADJUST {
            // Writing TSC_ADJUST moves the TSC by the difference.
            let old = self.other_msr(idx).unwrap_or(0);
            self.msrs.tsc_offset = self.msrs.tsc_offset.wrapping_add(v.wrapping_sub(old));
            self.store_other_msr(idx, v);
            return Ok(());
        }
        if self.set_msr_local(idx, v) {
            return Ok(());
        }
        // The platform's TSC-deadline timer runs on the platform TSC: take the
        // guest's offset (IA32_TSC writes) out. A deadline before the platform's
        // time 0 is in the past: 1 fires at once (0 would disarm).
        let v = if idx == msr::IA32_TSC_DEADLINE && v != 0 {
            let p = v.wrapping_sub(self.msrs.tsc_offset);
            if (p as i64) <= 0 {
                1
            } else {
                p
            }
        } else {
            v
        };
        if bus.wrmsr(idx, v) {
            return Ok(());
        }
        warn_msr("wrmsr", idx);
        Err(Exc::gp(0))
    }

    /// Reads an MSR (CPU-local first, then the platform's).
    pub fn read_msr(&mut self, bus: &mut dyn Bus, idx: u32) -> Option<u64> {
        let m = &self.msrs;
        Some(match idx {
            msr::IA32_EFER => self.efer,
            msr::IA32_STAR => m.star,
            msr::IA32_LSTAR => m.lstar,
            msr::IA32_CSTAR => m.cstar,
            msr::IA32_FMASK => m.fmask,
            msr::IA32_FS_BASE => self.seg[crate::cpu::FS].base,
            msr::IA32_GS_BASE => self.seg[GS].base,
            msr::IA32_KERNEL_GS_BASE => m.kernel_gs_base,
            msr::IA32_SYSENTER_CS => m.sysenter_cs,
            msr::IA32_SYSENTER_ESP => m.sysenter_esp,
            msr::IA32_SYSENTER_EIP => m.sysenter_eip,
            msr::IA32_PAT => m.pat,
            msr::IA32_TSC_AUX => m.tsc_aux,
            msr::IA32_TSC => bus.tsc().wrapping_add(m.tsc_offset),
            msr::IA32_MISC_ENABLE => m.misc_enable,
            // The platform keeps the deadline on its TSC (see `wrmsr`).
            msr::IA32_TSC_DEADLINE => match bus.rdmsr(idx)? {
                0 => 0,
                d => d.wrapping_add(m.tsc_offset),
            },
            msr::IA32_BIOS_SIGN_ID | msr::IA32_MTRRCAP => 0,
            // Locked, VMX off: the OS must not try to configure it.
            msr::IA32_FEATURE_CONTROL => 1,
            msr::IA32_MTRR_DEF_TYPE | IA32_TSC_ADJUST => self.other_msr(idx).unwrap_or(0),
            // IA32_ARCH_CAPABILITIES: not affected by the speculative-execution
            // issues Linux would otherwise mitigate at a cost (an emulator has none).
            0x10a => crate::cpuid::ARCH_CAPABILITIES,
            // MCG_CAP / MCG_STATUS: no machine-check banks.
            0x179 | 0x17a => 0,
            _ => {
                if let Some(v) = self.other_msr(idx) {
                    return Some(v);
                }
                return bus.rdmsr(idx);
            }
        })
    }

    fn other_msr(&self, idx: u32) -> Option<u64> {
        self.msrs
            .other
            .iter()
            .find(|(k, _)| *k == idx)
            .map(|(_, v)| *v)
    }

    /// Writes a CPU-local MSR; returns false if it is not one.
    pub(crate) fn set_msr_local(&mut self, idx: u32, v: u64) -> bool {
        match idx {
            msr::IA32_EFER => {
                let keep = self.efer & bits::EFER_LMA;
                self.efer = (v & (bits::EFER_SCE | bits::EFER_LME | bits::EFER_NXE)) | keep;
                if v & bits::EFER_LMA != 0 && self.cr0 & bits::CR0_PG != 0 {
                    self.efer |= bits::EFER_LMA;
                }
                self.tlb.flush_all();
                self.update_mode();
            }
            msr::IA32_STAR => self.msrs.star = v,
            msr::IA32_LSTAR => self.msrs.lstar = v,
            msr::IA32_CSTAR => self.msrs.cstar = v,
            msr::IA32_FMASK => self.msrs.fmask = v & 0xffff_ffff,
            msr::IA32_FS_BASE => self.seg[crate::cpu::FS].base = v,
            msr::IA32_GS_BASE => self.seg[GS].base = v,
            msr::IA32_KERNEL_GS_BASE => self.msrs.kernel_gs_base = v,
            msr::IA32_SYSENTER_CS => self.msrs.sysenter_cs = v,
            msr::IA32_SYSENTER_ESP => self.msrs.sysenter_esp = v,
            msr::IA32_SYSENTER_EIP => self.msrs.sysenter_eip = v,
            msr::IA32_PAT => self.msrs.pat = v,
            msr::IA32_TSC_AUX => self.msrs.tsc_aux = v & 0xffff_ffff,
            msr::IA32_MISC_ENABLE => self.msrs.misc_enable = v,
            crate::cpu::TSC_OFFSET_PSEUDO_MSR => self.msrs.tsc_offset = v,
            msr::IA32_BIOS_SIGN_ID | msr::IA32_FEATURE_CONTROL => {}
            // MTRR default type, fixed and variable ranges; MCG status.
            0x2ff
            | 0x250
            | 0x258
            | 0x259
            | 0x268..=0x26f
            | 0x200..=0x20f
            | 0x17a
            | IA32_TSC_ADJUST => {
                self.store_other_msr(idx, v);
            }
            _ => return false,
        }
        true
    }

    fn store_other_msr(&mut self, idx: u32, v: u64) {
        if let Some(e) = self.msrs.other.iter_mut().find(|(k, _)| *k == idx) {
            e.1 = v;
        } else {
            self.msrs.other.push((idx, v));
        }
    }

    /// Writes IA32_TSC (sets the offset against the platform clock).
    pub(crate) fn write_tsc(&mut self, bus: &mut dyn Bus, v: u64) {
        self.msrs.tsc_offset = v.wrapping_sub(bus.tsc());
    }

    /// LGDT/LIDT/SGDT/SIDT/LLDT/SLDT/LTR/STR/LMSW/SMSW/INVLPG.
    #[inline(never)]
    pub(crate) fn desc_tables(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let mn = i.mnemonic();
        let bsize = if self.bitness == 64 { 8 } else { 4 };
        match mn {
            M::Lgdt | M::Lidt => {
                self.require_cpl0()?;
                let a = self.ea(i);
                let limit = self.read_lin(bus, a, 2)? as u16;
                let mut base = self.read_lin(bus, a + 2, bsize)?;
                if bsize == 4 {
                    base &= 0xffff_ffff;
                }
                let t = if mn == M::Lgdt {
                    &mut self.gdt
                } else {
                    &mut self.idt
                };
                t.base = base;
                t.limit = limit;
            }
            M::Sgdt | M::Sidt => {
                let t = if mn == M::Sgdt { self.gdt } else { self.idt };
                let a = self.ea(i);
                self.write_lin(bus, a, 2, t.limit as u64)?;
                self.write_lin(bus, a + 2, bsize, t.base)?;
            }
            M::Lldt => {
                self.require_cpl0()?;
                let sel = self.rd(bus, i, 0, 2)? as u16;
                if sel & !3 == 0 {
                    self.ldt = vmm_types::Segment {
                        unusable: true,
                        ..Default::default()
                    };
                } else {
                    let (s, _) = self.load_system_descriptor(bus, sel)?;
                    if s.type_ != 2 {
                        return Err(Exc::gp(sel as u32 & !3));
                    }
                    self.ldt = s;
                }
            }
            M::Ltr => {
                self.require_cpl0()?;
                let sel = self.rd(bus, i, 0, 2)? as u16;
                let (mut s, a) = self.load_system_descriptor(bus, sel)?;
                if s.type_ != 9 && s.type_ != 1 {
                    return Err(Exc::gp(sel as u32 & !3));
                }
                // Mark busy.
                let raw = self.read_lin_as(bus, a, 8, false)?;
                self.write_lin_as(bus, a, 8, raw | (2 << 40), false)?;
                s.type_ |= 2;
                self.tr = s;
            }
            M::Sldt | M::Str => {
                let v = if mn == M::Sldt {
                    self.ldt.selector
                } else {
                    self.tr.selector
                } as u64;
                let size = if i.op_kind(0) == OpKind::Register {
                    self.op_size(i, 0)
                } else {
                    2
                };
                self.wr(bus, i, 0, size, v)?;
            }
            M::Smsw => {
                let size = if i.op_kind(0) == OpKind::Register {
                    self.op_size(i, 0)
                } else {
                    2
                };
                self.wr(bus, i, 0, size, self.cr0 & mask(size))?;
            }
            M::Lmsw => {
                self.require_cpl0()?;
                let v = self.rd(bus, i, 0, 2)?;
                // LMSW cannot clear PE.
                let new = (self.cr0 & !0xe) | (v & 0xf) | (self.cr0 & 1);
                self.write_cr(bus, 0, new)?;
            }
            M::Invlpg => {
                self.require_cpl0()?;
                let a = self.ea(i);
                self.tlb.flush_page(a);
            }
            _ => return Err(Exc::ud()),
        }
        Ok(())
    }

    /// IN/OUT.
    #[inline(never)]
    pub(crate) fn port_io(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        if !self.io_allowed() {
            return Err(Exc::gp(0));
        }
        self.stop = true;
        if i.mnemonic() == M::In {
            let size = i.op_register(0).size();
            let port = if i.op_kind(1) == OpKind::Register {
                self.gpr[RDX] as u16
            } else {
                i.immediate(1) as u16
            };
            let v = bus.io_in(port, size) as u64;
            self.set_reg_sized(RAX, size as u8, v);
        } else {
            let size = i.op_register(1).size();
            let port = if i.op_kind(0) == OpKind::Register {
                self.gpr[RDX] as u16
            } else {
                i.immediate(0) as u16
            };
            let v = self.gpr[RAX] & mask(size as u8);
            bus.io_out(port, size, v as u32);
        }
        Ok(())
    }

    /// CLI/STI/PUSHF/POPF/CLC/STC/CMC/CLD/STD/LAHF/SAHF.
    #[inline(never)]
    pub(crate) fn flag_ops(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        match i.mnemonic() {
            M::Cli | M::Sti => {
                if self.cr0 & bits::CR0_PE != 0 && self.cpl > self.iopl() {
                    return Err(Exc::gp(0));
                }
                self.flags.materialize();
                if i.mnemonic() == M::Sti {
                    if self.flags.rflags & flags::IF == 0 {
                        self.int_shadow = true;
                    }
                    self.flags.rflags |= flags::IF;
                } else {
                    self.flags.rflags &= !flags::IF;
                }
                // STI: the platform is consulted after the shadowed instruction.
            }
            M::Pushf | M::Pushfd | M::Pushfq => {
                let size = self.stack_op_size(i);
                let v = self.flags.get() & !(flags::VM | flags::RF);
                self.push(bus, size, v & mask(size))?;
            }
            M::Popf | M::Popfd | M::Popfq => {
                let size = self.stack_op_size(i);
                let v = self.pop(bus, size)?;
                let mut changeable =
                    flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
                if self.cpl == 0 || self.cr0 & bits::CR0_PE == 0 {
                    changeable |= flags::IOPL | flags::IF;
                } else if self.cpl <= self.iopl() {
                    changeable |= flags::IF;
                }
                if size == 2 {
                    changeable &= 0xffff;
                }
                let cur = self.flags.get();
                self.flags.load((cur & !changeable) | (v & changeable));
                if cur & flags::IF == 0 && self.flags.rflags & flags::IF != 0 {
                    self.stop = true;
                }
            }
            M::Clc => self.flags.set_bits(flags::CF, false),
            M::Stc => self.flags.set_bits(flags::CF, true),
            M::Cmc => {
                let c = self.flags.cf();
                self.flags.set_bits(flags::CF, !c);
            }
            M::Cld => self.flags.rflags &= !flags::DF,
            M::Std => self.flags.rflags |= flags::DF,
            M::Lahf => {
                let f = self.flags.get() & 0xff;
                self.set_reg(Register::AH, f);
            }
            M::Sahf => {
                let ah = self.reg(Register::AH);
                let mask = flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF;
                let cur = self.flags.get();
                self.flags.load((cur & !mask) | (ah & mask));
            }
            _ => return Err(Exc::ud()),
        }
        Ok(())
    }

    /// VERR/VERW: ZF=1 if the segment is readable/writable at the current privilege.
    #[inline(never)]
    pub(crate) fn verrw(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let sel = self.rd(bus, i, 0, 2)? as u16;
        let ok = if sel & !3 == 0 {
            false
        } else {
            match self.load_descriptor(bus, sel) {
                Ok(d) => {
                    let code = d.type_ & 8 != 0;
                    let conforming = code && d.type_ & 4 != 0;
                    let priv_ok = conforming || d.dpl >= self.cpl.max((sel & 3) as u8);
                    let access = if i.mnemonic() == M::Verw {
                        !code && d.type_ & 2 != 0
                    } else {
                        !code || d.type_ & 2 != 0
                    };
                    d.s && priv_ok && access
                }
                Err(_) => false,
            }
        };
        self.flags.set_bits(flags::ZF, ok);
        Ok(())
    }

    /// SWAPGS.
    #[inline(never)]
    pub(crate) fn swapgs(&mut self) -> XResult<()> {
        if self.bitness != 64 {
            return Err(Exc::ud());
        }
        self.require_cpl0()?;
        std::mem::swap(&mut self.seg[GS].base, &mut self.msrs.kernel_gs_base);
        Ok(())
    }

    /// What RDTSC/RDTSCP would return now (TSC, TSC_AUX), or `None` where they
    /// raise #GP (CR4.TSD outside ring 0): for a translator that runs them itself.
    pub fn read_tsc(&mut self, bus: &mut dyn Bus) -> Option<(u64, u32)> {
        if self.cr4 & bits::CR4_TSD != 0 && self.cpl != 0 {
            return None;
        }
        let t = bus.tsc().wrapping_add(self.msrs.tsc_offset);
        Some((t, self.msrs.tsc_aux as u32))
    }

    /// RDTSC/RDTSCP.
    #[inline(never)]
    pub(crate) fn rdtsc(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        if self.cr4 & bits::CR4_TSD != 0 && self.cpl != 0 {
            return Err(Exc::gp(0));
        }
        let t = bus.tsc().wrapping_add(self.msrs.tsc_offset);
        self.gpr[RAX] = t & 0xffff_ffff;
        self.gpr[RDX] = t >> 32;
        if i.mnemonic() == M::Rdtscp {
            self.gpr[RCX] = self.msrs.tsc_aux & 0xffff_ffff;
        }
        Ok(())
    }

    /// HLT.
    #[inline(never)]
    pub(crate) fn hlt(&mut self) -> XResult<()> {
        self.require_cpl0()?;
        self.halted = true;
        self.stop = true;
        Ok(())
    }

    /// CLTS.
    #[inline(never)]
    pub(crate) fn clts(&mut self) -> XResult<()> {
        self.require_cpl0()?;
        self.cr0 &= !bits::CR0_TS;
        Ok(())
    }
}

/// IA32_TSC_ADJUST.
const IA32_TSC_ADJUST: u32 = 0x3b;

fn warn_msr(what: &str, idx: u32) {
    tracing::debug!("{what} of unknown MSR {idx:#x}: #GP");
}
