//! The architectural state of one emulated x86-64 CPU.

use std::sync::Arc;

use iced_x86::Register;
use serde::{Deserialize, Serialize};
use vmm_types::{bits, msr, CpuState, DescriptorTable, FpuState, Regs, Segment, SpecialRegs};

use crate::block::BlockCache;
use crate::code_map::CodeMap;
use crate::flags::Flags;
use crate::mmu::Tlb;

/// Segment register indices in encoding order.
pub const ES: usize = 0;
pub const CS: usize = 1;
pub const SS: usize = 2;
pub const DS: usize = 3;
pub const FS: usize = 4;
pub const GS: usize = 5;

pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;

/// Why the CPU stopped executing (other than an exhausted budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Instruction budget used up or a platform event needs checking.
    Yield,
    /// HLT executed; the CPU waits for an interrupt.
    Halted,
    /// Triple fault.
    Shutdown,
}

/// x87 and SSE registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuRegs {
    /// ST0..ST7 (in FXSAVE order, relative to TOP), 80-bit values.
    pub fpr: [[u8; 10]; 8],
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag word (bit per physical register, 1 = valid).
    pub ftwx: u8,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    pub xmm: [u128; 16],
    pub mxcsr: u32,
}

impl Default for FpuRegs {
    fn default() -> Self {
        FpuRegs {
            fpr: [[0; 10]; 8],
            fcw: 0x37f,
            fsw: 0,
            ftwx: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            xmm: [0; 16],
            mxcsr: 0x1f80,
        }
    }
}

/// Model-specific registers the CPU itself keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub fmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub pat: u64,
    pub tsc_aux: u64,
    /// Added to the platform TSC (guest writes to IA32_TSC).
    pub tsc_offset: u64,
    pub misc_enable: u64,
    /// Other MSRs the guest wrote and may read back (MTRRs, ...).
    pub other: Vec<(u32, u64)>,
}

/// One emulated CPU.
pub struct Cpu {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub flags: Flags,
    pub seg: [Segment; 6],
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub dr: [u64; 8],
    pub msrs: Msrs,
    pub fpu: FpuRegs,
    /// Current privilege level.
    pub cpl: u8,
    /// Decode bitness (16, 32, 64) for the current CS and mode.
    pub bitness: u32,
    /// Interrupts are inhibited for one instruction (after STI / MOV SS).
    pub int_shadow: bool,
    pub halted: bool,
    /// Set by instructions after which the platform should be consulted
    /// (I/O, STI, interrupt controller writes) or that change the decode context.
    pub(crate) stop: bool,
    /// Set when the current block must not continue (code modified, mode changed).
    pub(crate) break_block: bool,
    pub(crate) tlb: Tlb,
    pub(crate) blocks: BlockCache,
    /// Which physical pages hold code, shared by every vCPU of the VM.
    pub(crate) code: Arc<CodeMap>,
    pub(crate) trace: Option<Box<dyn std::io::Write + Send>>,
    /// Instructions retired.
    pub icount: u64,
    /// Bumped on every address-space switch (CR3 write): user code pages are
    /// re-verified against memory once per generation.
    pub(crate) code_gen: u64,
    pub cpuid: crate::cpuid::CpuidModel,
}

impl Cpu {
    /// A CPU in the reset state of a bare machine (not yet runnable in long mode).
    pub fn new(apic_id: u32) -> Self {
        let mut cs = Segment::data(0xf000);
        cs.type_ = 0xb;
        cs.base = 0xffff_0000;
        cs.limit = 0xffff;
        cs.db = false;
        cs.g = false;
        let mut data = Segment::data(0);
        data.limit = 0xffff;
        data.db = false;
        data.g = false;
        let mut cpu = Cpu {
            gpr: [0; 16],
            rip: 0xfff0,
            flags: Flags::default(),
            seg: [data, cs, data, data, data, data],
            tr: Segment::tss(0, 0, 0xffff),
            ldt: Segment {
                type_: 2,
                present: true,
                limit: 0xffff,
                ..Default::default()
            },
            gdt: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idt: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            cr0: bits::CR0_ET | bits::CR0_NW | bits::CR0_CD,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            msrs: Msrs {
                pat: msr::PAT_RESET,
                misc_enable: 1,
                ..Default::default()
            },
            fpu: FpuRegs::default(),
            cpl: 0,
            bitness: 16,
            int_shadow: false,
            halted: false,
            stop: false,
            break_block: false,
            tlb: Tlb::default(),
            blocks: BlockCache::default(),
            code: Arc::default(),
            trace: None,
            icount: 0,
            code_gen: 0,
            cpuid: crate::cpuid::CpuidModel::new(apic_id),
        };
        cpu.update_mode();
        cpu
    }

    /// Shares the VM-wide code map: every vCPU of a VM must use the same one, so a
    /// code write by one is seen by all (a new CPU has a private map).
    pub fn set_code_map(&mut self, code: Arc<CodeMap>) {
        self.code = code;
        self.blocks.clear();
    }

    /// Whether the last [`Cpu::run`] stopped for the platform (I/O, STI, an
    /// interrupt controller access, a mode change) rather than for its budget.
    pub fn stop_requested(&self) -> bool {
        self.stop
    }

    /// Whether a per-instruction trace is on (a translator leaves such a CPU to
    /// the interpreter).
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Enables a per-instruction trace (RIP and GPRs) written to `w`.
    pub fn set_trace(&mut self, w: Option<Box<dyn std::io::Write + Send>>) {
        self.trace = w;
    }

    /// Replaces the CPUID table the guest sees (leaves not listed fall back to the
    /// built-in model).
    pub fn set_cpuid(&mut self, entries: Vec<vmm_types::CpuidEntry>) {
        self.cpuid.overrides = entries;
    }

    /// Delivers exception `vector` (with `error_code` if it has one) as if the
    /// current instruction had raised it: used to complete an exception another
    /// accelerator saved as pending or injected. Escalates to #DF and triple fault;
    /// returns `Some(Shutdown)` on a triple fault.
    pub fn inject_exception(
        &mut self,
        bus: &mut dyn crate::Bus,
        vector: u8,
        error_code: Option<u32>,
    ) -> Option<StopReason> {
        self.halted = false;
        self.raise(bus, crate::exception::Exc::new(vector, error_code))
    }

    /// Whether the CPU would accept a maskable interrupt now.
    pub fn interrupts_enabled(&self) -> bool {
        self.flags.rflags & crate::flags::IF != 0 && !self.int_shadow
    }

    /// Recomputes CPL-independent decode state after CS/CR0/EFER changes.
    pub(crate) fn update_mode(&mut self) {
        let cs = &self.seg[CS];
        self.bitness = if self.efer & bits::EFER_LMA != 0 && cs.l {
            64
        } else if self.cr0 & bits::CR0_PE != 0 && cs.db {
            32
        } else {
            16
        };
        self.break_block = true;
    }

    /// Whether the CPU is in 64-bit mode.
    #[inline]
    pub fn long64(&self) -> bool {
        self.bitness == 64
    }

    /// Reads a general-purpose register given as an iced register.
    #[inline]
    pub(crate) fn reg(&self, r: Register) -> u64 {
        let n = r as usize;
        match n {
            1..=20 => {
                let i = n - 1;
                if (4..8).contains(&i) {
                    (self.gpr[i - 4] >> 8) & 0xff
                } else {
                    self.gpr[if i >= 8 { i - 4 } else { i }] & 0xff
                }
            }
            21..=36 => self.gpr[n - 21] & 0xffff,
            37..=52 => self.gpr[n - 37] & 0xffff_ffff,
            53..=68 => self.gpr[n - 53],
            _ => 0,
        }
    }

    /// Writes a general-purpose register (32-bit writes zero-extend).
    #[inline]
    pub(crate) fn set_reg(&mut self, r: Register, v: u64) {
        let n = r as usize;
        match n {
            1..=20 => {
                let i = n - 1;
                if (4..8).contains(&i) {
                    let g = &mut self.gpr[i - 4];
                    *g = (*g & !0xff00) | ((v & 0xff) << 8);
                } else {
                    let g = &mut self.gpr[if i >= 8 { i - 4 } else { i }];
                    *g = (*g & !0xff) | (v & 0xff);
                }
            }
            21..=36 => {
                let g = &mut self.gpr[n - 21];
                *g = (*g & !0xffff) | (v & 0xffff);
            }
            37..=52 => self.gpr[n - 37] = v & 0xffff_ffff,
            53..=68 => self.gpr[n - 53] = v,
            _ => {}
        }
    }

    /// Imports the architectural state the VMM hands over: registers, x87/SSE
    /// (from `fpu`; this CPU has no XSAVE components), debug registers, the MSRs
    /// it keeps itself, HLT (`mp_state` Halted) and the interrupt shadow. The
    /// platform's parts (LAPIC, TSC, wait-for-SIPI, pending events) are the caller's.
    pub fn set_state(&mut self, s: &CpuState) {
        self.gpr = s.regs.gprs();
        self.rip = s.regs.rip;
        self.flags.load(s.regs.rflags);
        let sr = &s.sregs;
        self.seg = [sr.es, sr.cs, sr.ss, sr.ds, sr.fs, sr.gs];
        self.tr = sr.tr;
        self.ldt = sr.ldt;
        self.gdt = sr.gdt;
        self.idt = sr.idt;
        self.cr0 = sr.cr0;
        self.cr2 = sr.cr2;
        self.cr3 = sr.cr3;
        self.cr4 = sr.cr4;
        self.efer = sr.efer;
        self.cpl = if sr.cr0 & bits::CR0_PE != 0 {
            sr.cs.selector as u8 & 3
        } else {
            0
        };
        let f = &s.fpu;
        for (d, src) in self.fpu.fpr.iter_mut().zip(f.fpr.iter()) {
            d.copy_from_slice(&src[..10]);
        }
        self.fpu.fcw = f.fcw;
        self.fpu.fsw = f.fsw;
        self.fpu.ftwx = f.ftwx;
        self.fpu.fop = f.last_opcode;
        self.fpu.fip = f.last_ip;
        self.fpu.fdp = f.last_dp;
        for (d, src) in self.fpu.xmm.iter_mut().zip(f.xmm.iter()) {
            *d = u128::from_le_bytes(*src);
        }
        self.fpu.mxcsr = f.mxcsr;
        for &(idx, val) in &s.msrs {
            let _ = self.set_msr_local(idx, val);
        }
        self.dr = [
            s.debug.db[0],
            s.debug.db[1],
            s.debug.db[2],
            s.debug.db[3],
            0,
            0,
            s.debug.dr6,
            s.debug.dr7,
        ];
        self.halted = s.mp_state == vmm_types::MpState::Halted;
        self.int_shadow = s.events.interrupt_shadow != vmm_types::InterruptShadow::None;
        self.tlb.flush_all();
        self.blocks.clear();
        self.update_mode();
    }

    /// Exports the architectural state (`apic_base`, `cr8`, the LAPIC page, the TSC
    /// and the pending events are the platform's). The interrupt shadow is saved as
    /// STI blocking: this CPU's shadow blocks maskable interrupts only.
    pub fn state(&self) -> CpuState {
        let mut regs = Regs {
            rip: self.rip,
            rflags: self.flags.get(),
            ..Default::default()
        };
        regs.set_gprs(self.gpr);
        let sregs = SpecialRegs {
            es: self.seg[ES],
            cs: self.seg[CS],
            ss: self.seg[SS],
            ds: self.seg[DS],
            fs: self.seg[FS],
            gs: self.seg[GS],
            tr: self.tr,
            ldt: self.ldt,
            gdt: self.gdt,
            idt: self.idt,
            cr0: self.cr0,
            cr2: self.cr2,
            cr3: self.cr3,
            cr4: self.cr4,
            cr8: 0,
            efer: self.efer,
            apic_base: 0,
        };
        let mut fpu = FpuState::default();
        for (d, src) in fpu.fpr.iter_mut().zip(self.fpu.fpr.iter()) {
            d[..10].copy_from_slice(src);
        }
        fpu.fcw = self.fpu.fcw;
        fpu.fsw = self.fpu.fsw;
        fpu.ftwx = self.fpu.ftwx;
        fpu.last_opcode = self.fpu.fop;
        fpu.last_ip = self.fpu.fip;
        fpu.last_dp = self.fpu.fdp;
        for (d, src) in fpu.xmm.iter_mut().zip(self.fpu.xmm.iter()) {
            *d = src.to_le_bytes();
        }
        fpu.mxcsr = self.fpu.mxcsr;
        let m = &self.msrs;
        let mut msrs = vec![
            (msr::IA32_STAR, m.star),
            (msr::IA32_LSTAR, m.lstar),
            (msr::IA32_CSTAR, m.cstar),
            (msr::IA32_FMASK, m.fmask),
            (msr::IA32_KERNEL_GS_BASE, m.kernel_gs_base),
            (msr::IA32_SYSENTER_CS, m.sysenter_cs),
            (msr::IA32_SYSENTER_ESP, m.sysenter_esp),
            (msr::IA32_SYSENTER_EIP, m.sysenter_eip),
            (msr::IA32_PAT, m.pat),
            (msr::IA32_TSC_AUX, m.tsc_aux),
            (msr::IA32_MISC_ENABLE, m.misc_enable),
            (TSC_OFFSET_PSEUDO_MSR, m.tsc_offset),
        ];
        msrs.extend(m.other.iter().copied());
        let xsave = vmm_types::xsave::canonical(&fpu, &[], 1);
        CpuState {
            regs,
            sregs,
            fpu,
            msrs,
            xcr0: 1,
            xsave,
            debug: vmm_types::DebugRegs {
                db: [self.dr[0], self.dr[1], self.dr[2], self.dr[3]],
                dr6: self.dr[6],
                dr7: self.dr[7],
            },
            mp_state: if self.halted {
                vmm_types::MpState::Halted
            } else {
                vmm_types::MpState::Runnable
            },
            events: vmm_types::CpuEvents {
                interrupt_shadow: if self.int_shadow {
                    vmm_types::InterruptShadow::Sti
                } else {
                    vmm_types::InterruptShadow::None
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// Pseudo MSR index under which [`Cpu::state`] saves the TSC offset.
pub const TSC_OFFSET_PSEUDO_MSR: u32 = 0x4b56_4d00;
