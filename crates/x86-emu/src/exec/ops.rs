//! Operand access: effective addresses, register/memory/immediate operands,
//! and the stack.

use iced_x86::{Instruction, OpKind, Register};

use crate::bus::Bus;
use crate::cpu::{Cpu, CS, DS, ES, FS, GS, SS};
use crate::exception::{Exc, XResult};
use crate::flags::mask;

/// Segment register index of an iced segment register.
#[inline]
pub fn seg_index(r: Register) -> usize {
    match r {
        Register::ES => ES,
        Register::CS => CS,
        Register::SS => SS,
        Register::FS => FS,
        Register::GS => GS,
        _ => DS,
    }
}

impl Cpu {
    /// Linear address of a code offset.
    #[inline]
    pub(crate) fn code_lin(&self, ip: u64) -> u64 {
        if self.bitness == 64 {
            ip
        } else {
            self.seg[CS].base.wrapping_add(ip) & 0xffff_ffff
        }
    }

    /// Linear address for `seg:offset`.
    #[inline]
    pub(crate) fn lin(&self, seg: usize, off: u64) -> u64 {
        if self.bitness == 64 {
            if seg >= FS {
                self.seg[seg].base.wrapping_add(off)
            } else {
                off
            }
        } else {
            self.seg[seg].base.wrapping_add(off) & 0xffff_ffff
        }
    }

    /// Effective address (offset, before segmentation) of the memory operand.
    #[inline]
    pub(crate) fn ea_off(&self, i: &Instruction) -> u64 {
        let base = i.memory_base();
        let index = i.memory_index();
        let mut a = i.memory_displacement64();
        let mut asize = 0usize;
        if base != Register::None {
            if base == Register::RIP {
                return a;
            }
            if base == Register::EIP {
                return a & 0xffff_ffff;
            }
            a = a.wrapping_add(self.reg(base));
            asize = base.size();
        }
        if index != Register::None {
            a = a.wrapping_add(self.reg(index).wrapping_mul(i.memory_index_scale() as u64));
            asize = index.size();
        }
        if asize == 0 {
            asize = (self.bitness / 8) as usize;
        }
        match asize {
            4 => a & 0xffff_ffff,
            2 => a & 0xffff,
            _ => a,
        }
    }

    /// Linear address of the memory operand.
    #[inline]
    pub(crate) fn ea(&self, i: &Instruction) -> u64 {
        let off = self.ea_off(i);
        self.lin(seg_index(i.memory_segment()), off)
    }

    /// Size in bytes of operand `n`.
    #[inline]
    pub(crate) fn op_size(&self, i: &Instruction, n: u32) -> u8 {
        match i.op_kind(n) {
            OpKind::Register => i.op_register(n).size() as u8,
            OpKind::Memory => i.memory_size().size() as u8,
            _ => 8,
        }
    }

    /// Reads operand `n` as a `size`-byte value.
    #[inline]
    pub(crate) fn rd(
        &mut self,
        bus: &mut dyn Bus,
        i: &Instruction,
        n: u32,
        size: u8,
    ) -> XResult<u64> {
        match i.op_kind(n) {
            OpKind::Register => Ok(self.reg(i.op_register(n))),
            OpKind::Memory => {
                let a = self.ea(i);
                self.read_lin(bus, a, size as usize)
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
            | OpKind::Immediate8_2nd => Ok(i.immediate(n) & mask(size)),
            _ => Err(Exc::ud()),
        }
    }

    /// Writes operand `n`.
    #[inline]
    pub(crate) fn wr(
        &mut self,
        bus: &mut dyn Bus,
        i: &Instruction,
        n: u32,
        size: u8,
        v: u64,
    ) -> XResult<()> {
        match i.op_kind(n) {
            OpKind::Register => {
                self.set_reg(i.op_register(n), v);
                Ok(())
            }
            OpKind::Memory => {
                let a = self.ea(i);
                self.write_lin(bus, a, size as usize, v)
            }
            _ => Err(Exc::ud()),
        }
    }

    /// Stack address size in bytes.
    #[inline]
    pub(crate) fn stack_size(&self) -> u8 {
        if self.bitness == 64 {
            8
        } else if self.seg[SS].db {
            4
        } else {
            2
        }
    }

    #[inline]
    fn sp_add(&mut self, d: u64) {
        match self.stack_size() {
            8 => self.gpr[4] = self.gpr[4].wrapping_add(d),
            4 => self.gpr[4] = self.gpr[4].wrapping_add(d) & 0xffff_ffff,
            _ => self.gpr[4] = (self.gpr[4] & !0xffff) | (self.gpr[4].wrapping_add(d) & 0xffff),
        }
    }

    #[inline]
    fn sp_lin(&self, sp: u64) -> u64 {
        match self.stack_size() {
            8 => sp,
            4 => self.lin(SS, sp & 0xffff_ffff),
            _ => self.lin(SS, sp & 0xffff),
        }
    }

    /// Pushes a `size`-byte value.
    #[inline]
    pub(crate) fn push(&mut self, bus: &mut dyn Bus, size: u8, v: u64) -> XResult<()> {
        let sp = self.gpr[4].wrapping_sub(size as u64);
        let a = self.sp_lin(sp);
        self.write_lin(bus, a, size as usize, v)?;
        self.sp_add((size as u64).wrapping_neg());
        Ok(())
    }

    /// Pops a `size`-byte value.
    #[inline]
    pub(crate) fn pop(&mut self, bus: &mut dyn Bus, size: u8) -> XResult<u64> {
        let a = self.sp_lin(self.gpr[4]);
        let v = self.read_lin(bus, a, size as usize)?;
        self.sp_add(size as u64);
        Ok(v)
    }

    /// PUSHA/PUSHAD (not in 64-bit mode, where the opcodes are invalid): AX CX DX
    /// BX, the SP from before, BP SI DI. A fault leaves SP as it was.
    pub(crate) fn pusha(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size: u8 = if i.mnemonic() == iced_x86::Mnemonic::Pushad {
            4
        } else {
            2
        };
        let save = self.gpr[4];
        for r in [0, 1, 2, 3, 4, 5, 6, 7] {
            let v = if r == 4 { save } else { self.gpr[r] };
            if let Err(e) = self.push(bus, size, v) {
                self.gpr[4] = save;
                return Err(e);
            }
        }
        Ok(())
    }

    /// POPA/POPAD: DI SI BP, a skipped SP slot, BX DX CX AX. A fault leaves every
    /// register as it was.
    pub(crate) fn popa(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size: u8 = if i.mnemonic() == iced_x86::Mnemonic::Popad {
            4
        } else {
            2
        };
        let save = self.gpr;
        let mut vals = [0u64; 8];
        for r in [7, 6, 5, 4, 3, 2, 1, 0] {
            match self.pop(bus, size) {
                Ok(v) => vals[r] = v,
                Err(e) => {
                    self.gpr = save;
                    return Err(e);
                }
            }
        }
        for r in [0, 1, 2, 3, 5, 6, 7] {
            self.set_reg_sized(r, size, vals[r]);
        }
        Ok(())
    }

    /// Reads the value `off` bytes above the stack pointer without popping.
    pub(crate) fn peek(&mut self, bus: &mut dyn Bus, off: u64, size: u8) -> XResult<u64> {
        let a = self.sp_lin(self.gpr[4].wrapping_add(off));
        self.read_lin(bus, a, size as usize)
    }

    /// Operand size of a push/pop-like instruction (from its stack increment).
    #[inline]
    pub(crate) fn stack_op_size(&self, i: &Instruction) -> u8 {
        let inc = i.stack_pointer_increment().unsigned_abs();
        if inc == 2 || inc == 4 || inc == 8 {
            inc as u8
        } else {
            self.stack_size()
        }
    }
}
