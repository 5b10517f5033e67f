//! Segment descriptor loading (GDT/LDT) for MOV/POP to segment registers,
//! far transfers and task register loads.

use vmm_types::{bits, Segment};

use crate::bus::Bus;
use crate::cpu::{Cpu, CS, SS};
use crate::exception::{Exc, XResult};

/// Decodes an 8-byte descriptor into a segment (selector left 0).
pub fn decode_descriptor(d: u64) -> Segment {
    let limit = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    let g = d & (1 << 55) != 0;
    Segment {
        base: ((d >> 16) & 0xff_ffff) | ((d >> 32) & 0xff00_0000),
        limit: if g { (limit << 12) | 0xfff } else { limit },
        selector: 0,
        type_: ((d >> 40) & 0xf) as u8,
        s: d & (1 << 44) != 0,
        dpl: ((d >> 45) & 3) as u8,
        present: d & (1 << 47) != 0,
        avl: d & (1 << 52) != 0,
        l: d & (1 << 53) != 0,
        db: d & (1 << 54) != 0,
        g,
        unusable: false,
    }
}

impl Cpu {
    /// Linear address of a selector's descriptor.
    fn descriptor_addr(&self, sel: u16) -> XResult<u64> {
        let idx = (sel & !7) as u64;
        let (base, limit) = if sel & 4 != 0 {
            (self.ldt.base, self.ldt.limit as u64)
        } else {
            (self.gdt.base, self.gdt.limit as u64)
        };
        if idx + 7 > limit {
            return Err(Exc::gp(sel as u32 & !3));
        }
        Ok(base.wrapping_add(idx))
    }

    /// Reads and decodes the descriptor a selector refers to.
    pub(crate) fn load_descriptor(&mut self, bus: &mut dyn Bus, sel: u16) -> XResult<Segment> {
        let a = self.descriptor_addr(sel)?;
        let d = self.read_lin_as(bus, a, 8, false)?;
        let mut s = decode_descriptor(d);
        s.selector = sel;
        Ok(s)
    }

    /// Reads a 16-byte system descriptor (TSS/LDT in long mode).
    pub(crate) fn load_system_descriptor(
        &mut self,
        bus: &mut dyn Bus,
        sel: u16,
    ) -> XResult<(Segment, u64)> {
        let a = self.descriptor_addr(sel)?;
        let d = self.read_lin_as(bus, a, 8, false)?;
        let mut s = decode_descriptor(d);
        s.selector = sel;
        if self.efer & bits::EFER_LMA != 0 {
            let hi = self.read_lin_as(bus, a + 8, 8, false)?;
            s.base |= (hi & 0xffff_ffff) << 32;
        }
        Ok((s, a))
    }

    /// Loads a segment register in real mode.
    pub(crate) fn load_real_seg(&mut self, idx: usize, sel: u16) {
        let s = &mut self.seg[idx];
        s.selector = sel;
        s.base = (sel as u64) << 4;
        if idx == CS {
            self.update_mode();
        }
    }

    /// MOV/POP to a data segment register or SS, with protected-mode checks.
    pub(crate) fn load_seg(&mut self, bus: &mut dyn Bus, idx: usize, sel: u16) -> XResult<()> {
        if self.cr0 & bits::CR0_PE == 0 {
            self.load_real_seg(idx, sel);
            return Ok(());
        }
        if sel & !3 == 0 {
            if idx == SS && !(self.long64() && self.cpl != 3) {
                return Err(Exc::gp(0));
            }
            let long = self.long64();
            let s = &mut self.seg[idx];
            s.selector = sel;
            s.unusable = true;
            s.present = false;
            if !long {
                s.base = 0;
            }
            // In 64-bit mode a null FS/GS load keeps the base on Intel; Linux relies on
            // neither behaviour. Clear it to match AMD's documented reset of the base.
            return Ok(());
        }
        let mut d = self.load_descriptor(bus, sel)?;
        if !d.s {
            return Err(Exc::gp(sel as u32 & !3));
        }
        if !d.present {
            return Err(if idx == SS {
                Exc::ss(sel as u32 & !3)
            } else {
                Exc::new(11, Some(sel as u32 & !3))
            });
        }
        // Set the accessed bit in the descriptor.
        if d.type_ & 1 == 0 {
            let a = self.descriptor_addr(sel)?;
            let raw = self.read_lin_as(bus, a, 8, false)?;
            self.write_lin_as(bus, a, 8, raw | (1 << 40), false)?;
            d.type_ |= 1;
        }
        self.seg[idx] = d;
        Ok(())
    }

    /// Far transfer to a code segment (far JMP/CALL/RET, IRET): loads CS.
    pub(crate) fn load_cs(&mut self, bus: &mut dyn Bus, sel: u16, cpl: u8) -> XResult<()> {
        if self.cr0 & bits::CR0_PE == 0 {
            self.load_real_seg(CS, sel);
            return Ok(());
        }
        if sel & !3 == 0 {
            return Err(Exc::gp(0));
        }
        let mut d = self.load_descriptor(bus, sel)?;
        if !d.s || d.type_ & 8 == 0 {
            return Err(Exc::gp(sel as u32 & !3));
        }
        if !d.present {
            return Err(Exc::new(11, Some(sel as u32 & !3)));
        }
        d.selector = (sel & !3) | cpl as u16;
        self.seg[CS] = d;
        self.cpl = cpl;
        self.update_mode();
        Ok(())
    }
}
