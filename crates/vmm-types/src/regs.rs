//! General-purpose, segment, control and FPU register state.

use serde::{Deserialize, Serialize};

/// General-purpose registers, RIP and RFLAGS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

impl Regs {
    /// The 16 general-purpose registers in encoding order (RAX=0 .. R15=15).
    pub fn gprs(&self) -> [u64; 16] {
        [
            self.rax, self.rcx, self.rdx, self.rbx, self.rsp, self.rbp, self.rsi, self.rdi,
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15,
        ]
    }

    /// Sets the 16 general-purpose registers from encoding order (RAX=0 .. R15=15).
    pub fn set_gprs(&mut self, g: [u64; 16]) {
        [
            self.rax, self.rcx, self.rdx, self.rbx, self.rsp, self.rbp, self.rsi, self.rdi,
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15,
        ] = g;
    }
}

/// A segment register with its hidden (cached descriptor) part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    /// Descriptor type field (4 bits).
    pub type_: u8,
    pub present: bool,
    pub dpl: u8,
    /// Default operation size (D/B bit).
    pub db: bool,
    /// Code/data (true) or system (false) descriptor.
    pub s: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Granularity.
    pub g: bool,
    pub avl: bool,
    pub unusable: bool,
}

impl Segment {
    /// A flat 64-bit code segment (long mode, ring 0).
    pub fn code64(selector: u16) -> Self {
        Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_: 0xb,
            present: true,
            dpl: 0,
            db: false,
            s: true,
            l: true,
            g: true,
            avl: false,
            unusable: false,
        }
    }

    /// A flat read/write data segment (ring 0).
    pub fn data(selector: u16) -> Self {
        Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_: 0x3,
            present: true,
            dpl: 0,
            db: true,
            s: true,
            l: false,
            g: true,
            avl: false,
            unusable: false,
        }
    }

    /// A busy 64-bit TSS.
    pub fn tss(selector: u16, base: u64, limit: u32) -> Self {
        Segment {
            base,
            limit,
            selector,
            type_: 0xb,
            present: true,
            dpl: 0,
            db: false,
            s: false,
            l: false,
            g: false,
            avl: false,
            unusable: false,
        }
    }

    /// Packs the descriptor into the 8-byte GDT format (base bits 0..31 only).
    pub fn to_gdt_entry(&self) -> u64 {
        let limit = if self.g { self.limit >> 12 } else { self.limit } as u64;
        let base = self.base & 0xffff_ffff;
        let access = (self.type_ as u64 & 0xf)
            | ((self.s as u64) << 4)
            | ((self.dpl as u64 & 3) << 5)
            | ((self.present as u64) << 7);
        let flags = (self.avl as u64)
            | ((self.l as u64) << 1)
            | ((self.db as u64) << 2)
            | ((self.g as u64) << 3);
        (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (access << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (flags << 52)
            | (((base >> 24) & 0xff) << 56)
    }
}

/// GDTR or IDTR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// Segment, descriptor-table and control registers plus EFER and the APIC base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialRegs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
}

/// x87/SSE state in the layout of the FXSAVE area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuState {
    /// ST0..ST7 / MM0..MM7 as 80-bit values in the low 10 bytes of 16.
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag word as FXSAVE stores it (one bit per register).
    pub ftwx: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
}

impl Default for FpuState {
    fn default() -> Self {
        FpuState {
            fpr: [[0; 16]; 8],
            fcw: 0x37f,
            fsw: 0,
            ftwx: 0,
            last_opcode: 0,
            last_ip: 0,
            last_dp: 0,
            xmm: [[0; 16]; 16],
            mxcsr: 0x1f80,
        }
    }
}

/// Debug registers DR0-DR3, DR6 and DR7 (Intel SDM Vol. 3B, 17.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugRegs {
    /// Breakpoint linear addresses DR0..DR3.
    pub db: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
}

impl Default for DebugRegs {
    /// The values after reset.
    fn default() -> Self {
        DebugRegs {
            db: [0; 4],
            dr6: 0xffff_0ff0,
            dr7: 0x400,
        }
    }
}

/// The complete architectural state of one vCPU that the VMM sets and reads.
///
/// - **x87/SSE**: [`CpuState::fpu`] is canonical. [`CpuState::xsave`] is the
///   standard-format (non-compacted) XSAVE image, see [`crate::xsave`]; its legacy
///   region is always written equal to `fpu` by the accelerators (with MXCSR_MASK
///   and the reserved bytes zero) and ignored on load, so the two cannot disagree.
///   The image carries the extended components (AVX at byte 576, ...) that
///   [`CpuState::xcr0`] enables. An empty `xsave` means "no extended state"
///   (XSTATE_BV = x87|SSE), which is what an entry state built by hand gives.
/// - **Local APIC**: [`CpuState::lapic`] is the 1 KiB xAPIC register page
///   ([`crate::lapic`]); its TMCCT (current count, offset 0x390) holds the timer's
///   count at the moment of the save, and restoring continues counting down from
///   it. An armed TSC-deadline timer is the `IA32_TSC_DEADLINE` MSR in
///   [`CpuState::msrs`] (guest TSC units). An empty `lapic` leaves the vCPU's local
///   APIC as it is (entry states).
/// - **Time**: `IA32_TSC` in [`CpuState::msrs`] is the guest TSC at the save.
///   Restore the VM ([`crate::VmState`]) before its vCPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuState {
    pub regs: Regs,
    pub sregs: SpecialRegs,
    pub fpu: FpuState,
    /// Model-specific registers as (index, value), see [`crate::msr`] and
    /// [`crate::msr::STATE`] for the ones a full save contains.
    pub msrs: Vec<(u32, u64)>,
    /// XCR0 (XFEATURE_ENABLED_MASK); 1 (x87 only) after reset and on CPUs without XSAVE.
    #[serde(default = "xcr0_reset")]
    pub xcr0: u64,
    /// Standard-format XSAVE image, or empty (see the type's documentation).
    #[serde(default)]
    pub xsave: Vec<u8>,
    #[serde(default)]
    pub debug: DebugRegs,
    /// The local APIC register page (1024 bytes), or empty.
    #[serde(default)]
    pub lapic: Vec<u8>,
    #[serde(default)]
    pub mp_state: crate::events::MpState,
    #[serde(default)]
    pub events: crate::events::CpuEvents,
}

fn xcr0_reset() -> u64 {
    1
}

impl Default for CpuState {
    fn default() -> Self {
        CpuState {
            regs: Regs::default(),
            sregs: SpecialRegs::default(),
            fpu: FpuState::default(),
            msrs: Vec::new(),
            xcr0: xcr0_reset(),
            xsave: Vec::new(),
            debug: DebugRegs::default(),
            lapic: Vec::new(),
            mp_state: Default::default(),
            events: Default::default(),
        }
    }
}

impl CpuState {
    /// The value of MSR `index` in [`CpuState::msrs`], if present.
    pub fn msr(&self, index: u32) -> Option<u64> {
        self.msrs.iter().find(|m| m.0 == index).map(|m| m.1)
    }
}
