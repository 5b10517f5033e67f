//! Exceptions as values, and their delivery through the IDT (real mode, 32-bit
//! protected mode and long mode).

use vmm_types::{bits, Segment};

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
        if self.efer & bits::EFER_LMA == 0 {
            if self.cr0 & bits::CR0_PE == 0 {
                return self.deliver_real(bus, vector, ret_rip);
            }
            return self.deliver_protected(bus, vector, code, kind, ret_rip);
        }
        let ext = ext_bit(kind);
        let (lo, hi) = self.idt_gate(bus, vector, kind, true)?;
        let typ = (lo >> 40) & 0xf;
        let sel = ((lo >> 16) & 0xffff) as u16;
        let target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | (hi << 32);
        let ist = (hi_ist(lo)) as u64;
        let (cs_desc, new_cpl) = self.gate_cs(bus, sel, ext)?;
        if !cs_desc.l || cs_desc.db {
            // Not a 64-bit code segment.
            return Err(Exc::gp((sel as u32 & !3) | ext));
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

    /// Reads IDT entry `vector` (16 bytes in long mode, else 8) and checks it as
    /// SDM Vol. 2 "INT n" does, in its order: the entry outside the IDT limit or not
    /// a gate valid in this mode -> #GP, gate DPL < CPL for INT n/INT3/INTO -> #GP,
    /// gate not present -> #NP. The error code names the IDT entry: `vector << 3`
    /// with the IDT bit (2), in both modes, plus EXT (1) for events the program did
    /// not ask for (SDM Vol. 3A, 6.13). Returns the entry's two quadwords (the
    /// second is 0 outside long mode).
    fn idt_gate(
        &mut self,
        bus: &mut dyn Bus,
        vector: u8,
        kind: EventKind,
        long: bool,
    ) -> XResult<(u64, u64)> {
        let ext = ext_bit(kind);
        let idt_code = (vector as u32) << 3 | 2 | ext;
        let size: u32 = if long { 16 } else { 8 };
        if vector as u32 * size + size - 1 > self.idt.limit as u32 {
            return Err(Exc::gp(idt_code));
        }
        let ga = self.idt.base.wrapping_add((vector as u32 * size) as u64);
        let lo = self.read_lin_as(bus, ga, 8, false)?;
        let hi = if long {
            self.read_lin_as(bus, ga.wrapping_add(8), 8, false)?
        } else {
            0
        };
        // Type with the S bit (44:40): a code/data descriptor is never a gate.
        let typ = ((lo >> 40) & 0x1f) as u8;
        let valid = if long {
            matches!(typ, INT_GATE32 | TRAP_GATE32)
        } else {
            matches!(
                typ,
                TASK_GATE | INT_GATE16 | TRAP_GATE16 | INT_GATE32 | TRAP_GATE32
            )
        };
        if !valid {
            return Err(Exc::gp(idt_code));
        }
        let dpl = ((lo >> 45) & 3) as u8;
        if kind == EventKind::Software && dpl < self.cpl {
            return Err(Exc::gp(idt_code));
        }
        if lo & (1 << 47) == 0 {
            return Err(Exc::new(11, Some(idt_code)));
        }
        Ok((lo, hi))
    }

    /// Loads and checks the code segment an interrupt or trap gate names (SDM
    /// Vol. 2 "INT n", TRAP-OR-INTERRUPT-GATE). Returns it and the CPL the handler
    /// runs at (a conforming segment keeps the CPL).
    fn gate_cs(&mut self, bus: &mut dyn Bus, sel: u16, ext: u32) -> XResult<(Segment, u8)> {
        if sel & !3 == 0 {
            return Err(Exc::gp(ext));
        }
        let code = (sel as u32 & !3) | ext;
        let d = self.load_descriptor(bus, sel).map_err(|e| {
            if e.vector == 13 {
                Exc::gp(code)
            } else {
                e
            }
        })?;
        if !d.s || d.type_ & 8 == 0 || d.dpl > self.cpl {
            return Err(Exc::gp(code));
        }
        if !d.present {
            return Err(Exc::new(11, Some(code)));
        }
        let new_cpl = if d.type_ & 4 != 0 { self.cpl } else { d.dpl };
        Ok((d, new_cpl))
    }

    /// Real-mode delivery through the interrupt vector table.
    fn deliver_real(&mut self, bus: &mut dyn Bus, vector: u8, ret_rip: u64) -> XResult<()> {
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
        Ok(())
    }

    /// 32-bit protected-mode delivery through an interrupt or trap gate (16- or
    /// 32-bit), at the same privilege or to an inner one with the stack from the
    /// TSS (SDM Vol. 2 "INT n"). Not emulated: task gates (a task switch) and
    /// virtual-8086 mode (EFLAGS.VM cannot be set here); stack-segment limit checks
    /// are not made, as for ordinary pushes.
    fn deliver_protected(
        &mut self,
        bus: &mut dyn Bus,
        vector: u8,
        code: Option<u32>,
        kind: EventKind,
        ret_rip: u64,
    ) -> XResult<()> {
        let ext = ext_bit(kind);
        let (lo, _) = self.idt_gate(bus, vector, kind, false)?;
        let typ = ((lo >> 40) & 0x1f) as u8;
        if typ == TASK_GATE {
            // Task switches are not emulated: fault on the IDT entry (the guest sees
            // #GP, or #DF / shutdown if that cannot be delivered either) rather than
            // run the task's code in the current task.
            tracing::warn!(
                vector,
                "interrupt through a task gate: task switches are not emulated"
            );
            return Err(Exc::gp((vector as u32) << 3 | 2 | ext));
        }
        let gate32 = typ & 8 != 0;
        let sel = ((lo >> 16) & 0xffff) as u16;
        let target = if gate32 {
            (lo & 0xffff) | ((lo >> 32) & 0xffff_0000)
        } else {
            lo & 0xffff
        };
        let (cs_desc, new_cpl) = self.gate_cs(bus, sel, ext)?;
        let changing = new_cpl < self.cpl;
        let (ss, esp) = if changing {
            self.tss_stack(bus, new_cpl, ext)?
        } else {
            (self.seg[SS], self.gpr[4] & 0xffff_ffff)
        };
        if target > cs_desc.limit as u64 {
            return Err(Exc::gp(ext));
        }
        let mut frame = [0u64; 6];
        let mut n = 0;
        if changing {
            frame[0] = self.seg[SS].selector as u64;
            frame[1] = self.gpr[4] & 0xffff_ffff;
            n = 2;
        }
        frame[n] = self.flags.get();
        frame[n + 1] = self.seg[CS].selector as u64;
        frame[n + 2] = ret_rip;
        n += 3;
        if let Some(c) = code {
            frame[n] = c as u64;
            n += 1;
        }
        // Write the whole frame before changing any state, so that a fault while
        // pushing is delivered with the state of the interrupted code.
        let width = if gate32 { 4 } else { 2 };
        let sp_mask = if ss.db { 0xffff_ffff } else { 0xffff };
        let user = new_cpl == 3;
        let mut sp = esp;
        for &v in &frame[..n] {
            sp = sp.wrapping_sub(width) & sp_mask;
            self.write_lin_as(bus, ss.base.wrapping_add(sp), width as usize, v, user)?;
        }
        self.gpr[4] = (esp & !sp_mask) | sp;
        if changing {
            self.seg[SS] = ss;
        }
        let mut cs = cs_desc;
        cs.selector = (sel & !3) | new_cpl as u16;
        self.seg[CS] = cs;
        self.cpl = new_cpl;
        self.rip = target;
        self.flags.materialize();
        self.flags.rflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
        if typ & 1 == 0 {
            // Interrupt (not trap) gate.
            self.flags.rflags &= !flags::IF;
        }
        self.int_shadow = false;
        self.update_mode();
        Ok(())
    }

    /// SS:ESP for privilege `cpl` from the current (32- or 16-bit) TSS, checked as
    /// SDM Vol. 2 "INT n" INTER-PRIVILEGE-LEVEL-INTERRUPT does: #TS for a TSS too
    /// short, a null or unsuitable SS, #SS for one not present.
    fn tss_stack(&mut self, bus: &mut dyn Bus, cpl: u8, ext: u32) -> XResult<(Segment, u64)> {
        let ts = |c: u32| Exc::new(10, Some(c));
        let tss32 = self.tr.type_ & 8 != 0;
        let (off, len, w) = if tss32 {
            (cpl as u64 * 8 + 4, 6, 4)
        } else {
            (cpl as u64 * 4 + 2, 4, 2)
        };
        if off + len - 1 > self.tr.limit as u64 {
            return Err(ts((self.tr.selector as u32 & !3) | ext));
        }
        let a = self.tr.base.wrapping_add(off);
        let esp = self.read_lin_as(bus, a, w, false)?;
        let ss_sel = self.read_lin_as(bus, a.wrapping_add(w as u64), 2, false)? as u16;
        if ss_sel & !3 == 0 {
            return Err(ts(ext));
        }
        let ss_code = (ss_sel as u32 & !3) | ext;
        if (ss_sel & 3) as u8 != cpl {
            return Err(ts(ss_code));
        }
        let d = self.load_descriptor(bus, ss_sel).map_err(|e| {
            if e.vector == 13 {
                ts(ss_code)
            } else {
                e
            }
        })?;
        // A writable data segment at exactly the new privilege.
        if !d.s || d.type_ & 0xa != 2 || d.dpl != cpl {
            return Err(ts(ss_code));
        }
        if !d.present {
            return Err(Exc::ss(ss_code));
        }
        Ok((d, esp))
    }
}

/// Gate types with the descriptor's S bit (bits 44:40 of an IDT entry).
const TASK_GATE: u8 = 0x05;
const INT_GATE16: u8 = 0x06;
const TRAP_GATE16: u8 = 0x07;
const INT_GATE32: u8 = 0x0e;
const TRAP_GATE32: u8 = 0x0f;

/// The EXT bit of error codes raised while delivering an event: set unless the
/// program itself asked for it with INT n / INT3 / INTO (SDM Vol. 3A, 6.13).
fn ext_bit(kind: EventKind) -> u32 {
    (kind != EventKind::Software) as u32
}

fn hi_ist(lo: u64) -> u8 {
    ((lo >> 32) & 7) as u8
}

#[cfg(test)]
mod tests {
    //! 32-bit protected-mode delivery on a flat machine without paging: GDT at
    //! 0x1000, IDT at 0x2000, TSS at 0x3000, handlers `hlt` at 0x4000 + 0x10 * vector.
    use super::*;
    use vmm_types::DescriptorTable;

    const GDT: u64 = 0x1000;
    const IDT: u64 = 0x2000;
    const TSS: u64 = 0x3000;
    const USER_CODE: u64 = 0x5000;
    const STACK: u64 = 0x8000;
    const STACK0: u64 = 0x9000;
    const KCODE: u16 = 0x08;
    const KDATA: u16 = 0x10;
    const UCODE: u16 = 0x1b;
    const UDATA: u16 = 0x23;
    const TSS_SEL: u16 = 0x28;

    struct Ram(Vec<u8>);

    impl Bus for Ram {
        fn read(&mut self, addr: u64, size: usize) -> u64 {
            let a = addr as usize;
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(&self.0[a..a + size]);
            u64::from_le_bytes(b)
        }
        fn write(&mut self, addr: u64, size: usize, val: u64) {
            let a = addr as usize;
            self.0[a..a + size].copy_from_slice(&val.to_le_bytes()[..size]);
        }
        fn atomic_rmw(&mut self, addr: u64, size: usize, f: &mut dyn FnMut(u64) -> u64) -> u64 {
            let old = self.read(addr, size);
            self.write(addr, size, f(old));
            old
        }
        fn is_ram(&mut self, _addr: u64) -> bool {
            true
        }
        fn io_in(&mut self, _port: u16, _size: usize) -> u32 {
            !0
        }
        fn io_out(&mut self, _port: u16, _size: usize, _val: u32) {}
        fn tsc(&mut self) -> u64 {
            0
        }
        fn rdmsr(&mut self, _msr: u32) -> Option<u64> {
            None
        }
        fn wrmsr(&mut self, _msr: u32, _val: u64) -> bool {
            false
        }
        fn cr8(&mut self) -> u64 {
            0
        }
        fn set_cr8(&mut self, _val: u64) {}
    }

    fn seg(selector: u16, code: bool, dpl: u8) -> Segment {
        let mut s = Segment::data(selector);
        if code {
            s.type_ = 0xb;
        }
        s.dpl = dpl;
        s
    }

    fn handler(vector: u8) -> u64 {
        0x4000 + 0x10 * vector as u64
    }

    /// An IDT entry: `typ` is bits 44:40 (gate type with the S bit).
    fn gate(bus: &mut Ram, vector: u8, typ: u8, dpl: u8, present: bool) {
        let h = handler(vector);
        let lo = (h & 0xffff)
            | (KCODE as u64) << 16
            | (typ as u64) << 40
            | (dpl as u64) << 45
            | (present as u64) << 47
            | (h >> 16) << 48;
        bus.write(IDT + vector as u64 * 8, 8, lo);
    }

    /// A ring-0 CPU in 32-bit protected mode with IF set and 32-bit interrupt
    /// gates (DPL 0) for every vector below 0x30.
    fn machine() -> (Cpu, Ram) {
        let mut bus = Ram(vec![0; 0x10000]);
        bus.write(GDT + 8, 8, seg(KCODE, true, 0).to_gdt_entry());
        bus.write(GDT + 0x10, 8, seg(KDATA, false, 0).to_gdt_entry());
        bus.write(GDT + 0x18, 8, seg(UCODE, true, 3).to_gdt_entry());
        bus.write(GDT + 0x20, 8, seg(UDATA, false, 3).to_gdt_entry());
        // ESP0 / SS0.
        bus.write(TSS + 4, 4, STACK0);
        bus.write(TSS + 8, 2, KDATA as u64);
        for v in 0..0x30 {
            gate(&mut bus, v, INT_GATE32, 0, true);
            bus.write(handler(v), 1, 0xf4);
        }
        let mut cpu = Cpu::new(0);
        cpu.cr0 = bits::CR0_PE | bits::CR0_ET;
        cpu.gdt = DescriptorTable {
            base: GDT,
            limit: 0x2f,
        };
        cpu.idt = DescriptorTable {
            base: IDT,
            limit: 0x7ff,
        };
        let mut tr = Segment::tss(TSS_SEL, TSS, 0x67);
        tr.type_ = 0xb;
        cpu.tr = tr;
        cpu.seg = [seg(KDATA, false, 0); 6];
        cpu.seg[CS] = seg(KCODE, true, 0);
        cpu.cpl = 0;
        cpu.gpr[4] = STACK;
        cpu.rip = 0x1234;
        cpu.flags.load(flags::IF | 2);
        cpu.update_mode();
        (cpu, bus)
    }

    /// Drops `cpu` to ring 3 (flat user segments) at USER_CODE.
    fn to_user(cpu: &mut Cpu) {
        cpu.seg = [seg(UDATA, false, 3); 6];
        cpu.seg[CS] = seg(UCODE, true, 3);
        cpu.cpl = 3;
        cpu.rip = USER_CODE;
        cpu.update_mode();
    }

    /// Asserts that the CPU entered the ring-0 handler of `vector` (nothing else
    /// ran), returns the stack pointer.
    fn entered(cpu: &Cpu, vector: u8) -> u64 {
        assert_eq!(cpu.rip, handler(vector), "handler of vector {vector:#x}");
        assert_eq!(cpu.seg[CS].selector, KCODE);
        assert_eq!(cpu.cpl, 0);
        cpu.gpr[4]
    }

    fn dword(bus: &mut Ram, a: u64) -> u64 {
        bus.read(a, 4)
    }

    /// Executes the instruction bytes `code` at USER_CODE in ring 3; stops at the
    /// handler's HLT (rolled back so RIP is the handler's address).
    fn run_user(cpu: &mut Cpu, bus: &mut Ram, code: &[u8]) {
        to_user(cpu);
        for (k, &b) in code.iter().enumerate() {
            bus.write(USER_CODE + k as u64, 1, b as u64);
        }
        assert_eq!(cpu.run(bus, 10), StopReason::Halted);
        cpu.rip -= 1;
    }

    #[test]
    fn valid_gate_same_privilege() {
        let (mut cpu, mut bus) = machine();
        let fl = cpu.flags.get();
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x20), None);
        let sp = entered(&cpu, 0x20);
        assert_eq!(sp, STACK - 12);
        assert_eq!(dword(&mut bus, sp), 0x1234);
        assert_eq!(dword(&mut bus, sp + 4), KCODE as u64);
        assert_eq!(dword(&mut bus, sp + 8), fl);
        assert_eq!(cpu.flags.get() & flags::IF, 0, "interrupt gate clears IF");
    }

    #[test]
    fn trap_gate_keeps_if_and_pushes_the_error_code() {
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 13, TRAP_GATE32, 0, true);
        assert_eq!(cpu.raise(&mut bus, Exc::gp(0x58)), None);
        let sp = entered(&cpu, 13);
        assert_eq!(sp, STACK - 16);
        assert_eq!(dword(&mut bus, sp), 0x58);
        assert_eq!(dword(&mut bus, sp + 4), 0x1234);
        assert_ne!(cpu.flags.get() & flags::IF, 0);
    }

    #[test]
    fn sixteen_bit_gate_pushes_words() {
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 0x21, INT_GATE16, 0, true);
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x21), None);
        let sp = entered(&cpu, 0x21);
        assert_eq!(sp, STACK - 6);
        assert_eq!(bus.read(sp, 2), 0x1234);
        assert_eq!(bus.read(sp + 2, 2), KCODE as u64);
        assert_eq!(cpu.flags.get() & flags::IF, 0);
    }

    #[test]
    fn entry_beyond_the_idt_limit_is_gp() {
        let (mut cpu, mut bus) = machine();
        // Vector 0x20's entry is 0x100..=0x107: one byte short.
        cpu.idt.limit = 0x106;
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x20), None);
        let sp = entered(&cpu, 13);
        assert_eq!(dword(&mut bus, sp), 0x20 << 3 | 2 | 1, "IDT + EXT");
        assert_eq!(
            dword(&mut bus, sp + 4),
            0x1234,
            "no frame for 0x20 was pushed"
        );
        assert_eq!(sp, STACK - 16);
        // INT n: EXT clear.
        let (mut cpu, mut bus) = machine();
        cpu.idt.limit = 0x106;
        gate(&mut bus, 13, INT_GATE32, 0, true);
        run_user(&mut cpu, &mut bus, &[0xcd, 0x20]);
        let sp = entered(&cpu, 13);
        assert_eq!(dword(&mut bus, sp), 0x20 << 3 | 2);
        assert_eq!(
            dword(&mut bus, sp + 4),
            USER_CODE,
            "the fault points at INT"
        );
        // The last byte in the limit is enough.
        let (mut cpu, mut bus) = machine();
        cpu.idt.limit = 0x107;
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x20), None);
        entered(&cpu, 0x20);
    }

    #[test]
    fn not_present_gate_is_np() {
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 0x22, INT_GATE32, 0, false);
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x22), None);
        let sp = entered(&cpu, 11);
        assert_eq!(dword(&mut bus, sp), 0x22 << 3 | 2 | 1);
        // Software: no EXT. A DPL-3 gate so only presence fails.
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 0x22, INT_GATE32, 3, false);
        run_user(&mut cpu, &mut bus, &[0xcd, 0x22]);
        let sp = entered(&cpu, 11);
        // Ring 3 -> 0: error code, EIP, CS, EFLAGS, ESP, SS on the TSS stack.
        assert_eq!(sp, STACK0 - 24);
        assert_eq!(dword(&mut bus, sp), 0x22 << 3 | 2);
    }

    #[test]
    fn non_gate_types_are_gp() {
        // Reserved, 286 TSS, LDT, busy TSS, call gates, 32-bit TSS, and a code
        // segment whose type bits would read as an interrupt gate (S = 1).
        for typ in [0x00, 0x01, 0x02, 0x03, 0x04, 0x09, 0x0b, 0x0c, 0x1e, 0x1a] {
            let (mut cpu, mut bus) = machine();
            gate(&mut bus, 0x23, typ, 0, true);
            assert_eq!(cpu.inject_interrupt(&mut bus, 0x23), None);
            let sp = entered(&cpu, 13);
            assert_eq!(dword(&mut bus, sp), 0x23 << 3 | 3, "type {typ:#x}");
        }
        // A bad type is reported before presence.
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 0x23, 0x0c, 0, false);
        cpu.raise(&mut bus, Exc::new(0x23, None));
        let sp = entered(&cpu, 13);
        assert_eq!(dword(&mut bus, sp), 0x23 << 3 | 3);
    }

    #[test]
    fn task_gate_is_gp_not_a_silent_handler_call() {
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 0x24, TASK_GATE, 0, true);
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x24), None);
        let sp = entered(&cpu, 13);
        assert_eq!(dword(&mut bus, sp), 0x24 << 3 | 3);
        // Presence is still checked first.
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 0x24, TASK_GATE, 0, false);
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x24), None);
        let sp = entered(&cpu, 11);
        assert_eq!(dword(&mut bus, sp), 0x24 << 3 | 3);
    }

    #[test]
    fn int_n_needs_gate_dpl_at_least_cpl() {
        // INT 0x25 from ring 3 through a DPL-0 gate: #GP(0x25 * 8 + 2), no EXT.
        let (mut cpu, mut bus) = machine();
        run_user(&mut cpu, &mut bus, &[0xcd, 0x25]);
        let sp = entered(&cpu, 13);
        assert_eq!(sp, STACK0 - 24);
        assert_eq!(dword(&mut bus, sp), 0x25 << 3 | 2);
        assert_eq!(dword(&mut bus, sp + 4), USER_CODE);
        // INT3 alike.
        let (mut cpu, mut bus) = machine();
        run_user(&mut cpu, &mut bus, &[0xcc]);
        let sp = entered(&cpu, 13);
        assert_eq!(dword(&mut bus, sp), 3 << 3 | 2);
        // Through a DPL-3 gate it goes to the handler at ring 0 on the TSS stack.
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 0x25, INT_GATE32, 3, true);
        run_user(&mut cpu, &mut bus, &[0xcd, 0x25]);
        let sp = entered(&cpu, 0x25);
        assert_eq!(sp, STACK0 - 20);
        assert_eq!(dword(&mut bus, sp), USER_CODE + 2, "EIP after INT");
        assert_eq!(dword(&mut bus, sp + 4), UCODE as u64);
        assert_eq!(dword(&mut bus, sp + 12), STACK);
        assert_eq!(dword(&mut bus, sp + 16), UDATA as u64);
        assert_eq!(cpu.seg[SS].selector, KDATA);
    }

    #[test]
    fn external_interrupts_and_exceptions_ignore_gate_dpl() {
        let (mut cpu, mut bus) = machine();
        to_user(&mut cpu);
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x25), None);
        let sp = entered(&cpu, 0x25);
        assert_eq!(sp, STACK0 - 20);
        assert_eq!(dword(&mut bus, sp), USER_CODE);
        assert_eq!(dword(&mut bus, sp + 16), UDATA as u64);
        // #UD in ring 3 (ud2) through the DPL-0 gate.
        let (mut cpu, mut bus) = machine();
        run_user(&mut cpu, &mut bus, &[0x0f, 0x0b]);
        let sp = entered(&cpu, 6);
        assert_eq!(dword(&mut bus, sp), USER_CODE);
    }

    #[test]
    fn bad_tss_stack_is_ts() {
        // SS0 null: #TS(EXT), and nothing changed.
        let (mut cpu, mut bus) = machine();
        bus.write(TSS + 8, 2, 0);
        to_user(&mut cpu);
        assert_eq!(
            cpu.deliver(&mut bus, 0x26, None, EventKind::External, USER_CODE),
            Err(Exc::new(10, Some(1)))
        );
        assert_eq!(cpu.cpl, 3);
        assert_eq!(cpu.gpr[4], STACK);
        assert_eq!(cpu.rip, USER_CODE);
        // #TS cannot be delivered either (it needs the same stack): #DF, which
        // fails the same way: triple fault.
        assert_eq!(
            cpu.inject_interrupt(&mut bus, 0x26),
            Some(StopReason::Shutdown)
        );
        // SS0 with the wrong RPL / a code segment / not present.
        for (sel, desc, want) in [
            (KDATA | 3, None, Exc::new(10, Some(KDATA as u32 | 1))),
            (KCODE, None, Exc::new(10, Some(KCODE as u32 | 1))),
            (KDATA, Some(false), Exc::ss(KDATA as u32 | 1)),
        ] {
            let (mut cpu, mut bus) = machine();
            bus.write(TSS + 8, 2, sel as u64);
            if let Some(p) = desc {
                let mut d = seg(KDATA, false, 0);
                d.present = p;
                bus.write(GDT + 0x10, 8, d.to_gdt_entry());
            }
            to_user(&mut cpu);
            assert_eq!(
                cpu.deliver(&mut bus, 0x26, None, EventKind::External, USER_CODE),
                Err(want)
            );
        }
    }

    #[test]
    fn bad_gate_code_segment() {
        // Null selector: #GP(EXT).
        let (mut cpu, mut bus) = machine();
        bus.write(IDT + 0x27 * 8 + 2, 2, 0);
        assert_eq!(
            cpu.deliver(&mut bus, 0x27, None, EventKind::External, 0),
            Err(Exc::gp(1))
        );
        // A data segment: #GP(selector + EXT).
        bus.write(IDT + 0x27 * 8 + 2, 2, KDATA as u64);
        assert_eq!(
            cpu.deliver(&mut bus, 0x27, None, EventKind::External, 0),
            Err(Exc::gp(KDATA as u32 | 1))
        );
        // Beyond the GDT limit: #GP(selector + EXT).
        bus.write(IDT + 0x27 * 8 + 2, 2, 0x40);
        assert_eq!(
            cpu.deliver(&mut bus, 0x27, None, EventKind::External, 0),
            Err(Exc::gp(0x41))
        );
        // Not present: #NP(selector), software.
        let mut kc = seg(KCODE, true, 0);
        kc.present = false;
        bus.write(GDT + 8, 8, kc.to_gdt_entry());
        bus.write(IDT + 0x27 * 8 + 2, 2, KCODE as u64);
        assert_eq!(
            cpu.deliver(&mut bus, 0x27, None, EventKind::Software, 0),
            Err(Exc::new(11, Some(KCODE as u32)))
        );
        assert_eq!(cpu.rip, 0x1234);
        assert_eq!(cpu.gpr[4], STACK);
    }

    #[test]
    fn fault_while_delivering_is_double_fault() {
        // #GP's own gate is not present: #GP then #NP (both contributory) -> #DF.
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 13, INT_GATE32, 0, false);
        assert_eq!(cpu.raise(&mut bus, Exc::gp(0)), None);
        let sp = entered(&cpu, 8);
        assert_eq!(dword(&mut bus, sp), 0, "#DF error code");
        assert_eq!(dword(&mut bus, sp + 4), 0x1234);
        // An external interrupt through a missing gate: #NP, whose gate is missing
        // too -> #DF.
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 0x20, INT_GATE32, 0, false);
        gate(&mut bus, 11, INT_GATE32, 0, false);
        assert_eq!(cpu.inject_interrupt(&mut bus, 0x20), None);
        entered(&cpu, 8);
        // And with #DF's gate beyond the limit as well: triple fault.
        let (mut cpu, mut bus) = machine();
        cpu.idt.limit = 7;
        assert_eq!(cpu.raise(&mut bus, Exc::gp(0)), Some(StopReason::Shutdown));
        // A benign exception first is handled serially: #UD -> #GP, delivered.
        let (mut cpu, mut bus) = machine();
        gate(&mut bus, 6, 0x0c, 0, true);
        assert_eq!(cpu.raise(&mut bus, Exc::ud()), None);
        let sp = entered(&cpu, 13);
        assert_eq!(dword(&mut bus, sp), 6 << 3 | 3);
    }
}
