//! Exceptions as values, and their delivery through the long-mode IDT.

use vmm_types::bits;

use crate::bus::Bus;
use crate::cpu::{Cpu, StopReason, CS, SS};
use crate::flags;

/// A pending exception: vector and optional error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exc {
    pub vector: u8,
    pub code: Option<u32>,
}

/// Result of an operation that may raise an exception.
pub type XResult<T> = Result<T, Exc>;

impl Exc {
    pub fn new(vector: u8, code: Option<u32>) -> Self {
        Exc { vector, code }
    }
    /// #GP(code).
    pub fn gp(code: u32) -> Self {
        Exc::new(13, Some(code))
    }
    /// #UD.
    pub fn ud() -> Self {
        Exc::new(6, None)
    }
    /// #DE.
    pub fn de() -> Self {
        Exc::new(0, None)
    }
    /// #SS(code).
    pub fn ss(code: u32) -> Self {
        Exc::new(12, Some(code))
    }
    /// #NM.
    pub fn nm() -> Self {
        Exc::new(7, None)
    }
}

/// How an event reaches the IDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Processor exception (RIP = faulting instruction).
    Exception,
    /// External interrupt or NMI.
    External,
    /// INT n / INT3 / INTO (privilege-checked against the gate's DPL).
    Software,
}

fn is_contributory(v: u8) -> bool {
    matches!(v, 0 | 10 | 11 | 12 | 13)
}

impl Cpu {
    /// Raises an exception detected while executing: delivers it, escalating
    /// to #DF and triple fault. Returns `Some(Shutdown)` on triple fault.
    pub(crate) fn raise(&mut self, bus: &mut dyn Bus, e: Exc) -> Option<StopReason> {
        let mut cur = e;
        // Each failed delivery combines with the fault it raised (SDM Vol. 3A, table 6-5).
        for _ in 0..8 {
            match self.deliver(bus, cur.vector, cur.code, EventKind::Exception, self.rip) {
                Ok(()) => return None,
                Err(next) => {
                    if cur.vector == 8 {
                        break;
                    }
                    let df = (is_contributory(cur.vector) && is_contributory(next.vector))
                        || (cur.vector == 14
                            && (is_contributory(next.vector) || next.vector == 14));
                    cur = if df { Exc::new(8, Some(0)) } else { next };
                }
            }
        }
        tracing::warn!(rip = format_args!("{:#x}", self.rip), "triple fault");
        Some(StopReason::Shutdown)
    }

    /// Delivers an external interrupt vector (the caller checked IF).
    pub fn inject_interrupt(&mut self, bus: &mut dyn Bus, vector: u8) -> Option<StopReason> {
        self.halted = false;
        match self.deliver(bus, vector, None, EventKind::External, self.rip) {
            Ok(()) => None,
            Err(e) => self.raise(bus, e),
        }
    }

    /// Delivers an NMI.
    pub fn inject_nmi(&mut self, bus: &mut dyn Bus) -> Option<StopReason> {
        self.inject_interrupt(bus, 2)
    }

    /// Delivers one event through the IDT. `ret_rip` is the RIP pushed.
    pub(crate) fn deliver(
        &mut self,
        bus: &mut dyn Bus,
        vector: u8,
        code: Option<u32>,
        kind: EventKind,
        ret_rip: u64,
    ) -> Result<(), crate::exception::Exc> {
        let ext = (kind != EventKind::Software) as u32;
        let idt_code = (vector as u32) << 3 | 2 | ext;
        if self.efer & bits::EFER_LMA == 0 {
            return self.deliver_legacy(bus, vector, code, kind, ret_rip);
        }
        if (vector as u32) * 16 + 15 > self.idt.limit as u32 {
            return Err(Exc::gp(idt_code));
        }
        let ga = self.idt.base.wrapping_add(vector as u64 * 16);
        let lo = self.read_lin_as(bus, ga, 8, false)?;
        let hi = self.read_lin_as(bus, ga + 8, 8, false)?;
        let typ = (lo >> 40) & 0xf;
        let dpl = ((lo >> 45) & 3) as u8;
        let present = lo & (1 << 47) != 0;
        if typ != 0xe && typ != 0xf {
            return Err(Exc::gp(idt_code));
        }
        if kind == EventKind::Software && dpl < self.cpl {
            return Err(Exc::gp(idt_code));
        }
        if !present {
            return Err(Exc::new(11, Some(idt_code)));
        }
        let sel = ((lo >> 16) & 0xffff) as u16;
        let target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | (hi << 32);
        let ist = (hi_ist(lo)) as u64;
        let cs_desc = self.load_descriptor(bus, sel)?;
        let new_cpl = cs_desc.dpl;
        if sel & !3 == 0 || !cs_desc.present {
            return Err(Exc::gp(sel as u32 & !3));
        }
        let old_rflags = self.flags.get();
        let old_ss = self.seg[SS].selector as u64;
        let old_rsp = self.gpr[4];
        let old_cs = self.seg[CS].selector as u64;
        let mut rsp = old_rsp;
        let changing = new_cpl < self.cpl;
        if ist != 0 {
            rsp = self.read_lin_as(bus, self.tr.base + 0x24 + (ist - 1) * 8, 8, false)?;
        } else if changing {
            rsp = self.read_lin_as(bus, self.tr.base + 4 + new_cpl as u64 * 8, 8, false)?;
        }
        rsp &= !0xf;
        let mut frame = vec![old_ss, old_rsp, old_rflags, old_cs, ret_rip];
        if let Some(c) = code {
            frame.push(c as u64);
        }
        // Push with the new privilege (supervisor).
        let mut sp = rsp;
        for v in frame {
            sp = sp.wrapping_sub(8);
            self.write_lin_as(bus, sp, 8, v, false)?;
        }
        if changing {
            let mut ss = vmm_types::Segment::data(0);
            ss.dpl = new_cpl;
            ss.selector = new_cpl as u16;
            self.seg[SS] = ss;
        }
        self.gpr[4] = sp;
        let mut cs = cs_desc;
        cs.selector = (sel & !3) | new_cpl as u16;
        self.seg[CS] = cs;
        self.cpl = new_cpl;
        self.rip = target;
        self.flags.materialize();
        self.flags.rflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
        if typ == 0xe {
            self.flags.rflags &= !flags::IF;
        }
        self.int_shadow = false;
        self.update_mode();
        Ok(())
    }

    /// Real-mode and 32-bit protected-mode delivery (trampolines only).
    fn deliver_legacy(
        &mut self,
        bus: &mut dyn Bus,
        vector: u8,
        code: Option<u32>,
        _kind: EventKind,
        ret_rip: u64,
    ) -> Result<(), Exc> {
        if self.cr0 & bits::CR0_PE == 0 {
            let ent = self.read_lin_as(bus, self.idt.base + vector as u64 * 4, 4, false)?;
            let f = self.flags.get();
            for v in [f, self.seg[CS].selector as u64, ret_rip] {
                let sp = self.gpr[4].wrapping_sub(2) & 0xffff;
                self.gpr[4] = (self.gpr[4] & !0xffff) | sp;
                self.write_lin_as(bus, self.seg[SS].base + sp, 2, v, false)?;
            }
            self.flags.rflags &= !(flags::IF | flags::TF | flags::AC);
            self.load_real_seg(CS, (ent >> 16) as u16);
            self.rip = ent & 0xffff;
            return Ok(());
        }
        // 32-bit protected mode, same privilege only.
        let ga = self.idt.base.wrapping_add(vector as u64 * 8);
        let lo = self.read_lin_as(bus, ga, 8, false)?;
        let sel = ((lo >> 16) & 0xffff) as u16;
        let target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000);
        let cs_desc = self.load_descriptor(bus, sel)?;
        let f = self.flags.get();
        let mut vals = vec![f, self.seg[CS].selector as u64, ret_rip];
        if let Some(c) = code {
            vals.push(c as u64);
        }
        for v in vals {
            let sp = self.gpr[4].wrapping_sub(4) & 0xffff_ffff;
            self.write_lin_as(bus, self.seg[SS].base + sp, 4, v, false)?;
            self.gpr[4] = sp;
        }
        let mut cs = cs_desc;
        cs.selector = sel;
        self.seg[CS] = cs;
        self.rip = target;
        self.flags.materialize();
        self.flags.rflags &= !(flags::TF | flags::NT | flags::RF);
        if (lo >> 40) & 0xf == 0xe {
            self.flags.rflags &= !flags::IF;
        }
        self.update_mode();
        Ok(())
    }
}

fn hi_ist(lo: u64) -> u8 {
    ((lo >> 32) & 7) as u8
}
