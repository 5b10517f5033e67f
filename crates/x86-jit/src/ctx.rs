//! The per-vCPU context native code works on. While translated guest code runs,
//! the host stack pointer points at [`Ctx`], so every field is `[rsp + offset]`
//! and no host register is taken away from the guest: guest RAX..R15 live in the
//! same host registers, except RSP, whose guest value lives in `gpr[4]`.
//! Below the context lies a host stack area for `pushfq` and helper calls.

use std::mem::offset_of;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries of each inline TLB table (direct-mapped by linear page number).
pub const TLB_SIZE: usize = 1024;
/// A tag no page-aligned address equals.
pub const TLB_INVALID: u64 = 1;

/// Kernel-mode reads, kernel-mode writes, user-mode reads, user-mode writes.
pub const TABLES: usize = 4;

/// One inline TLB entry: `tag` is the page's linear address, `addend` turns a
/// linear address in that page into a host address, `phys` is the guest-physical
/// page number (for shoot-downs). Atomics, because another vCPU's thread may
/// invalidate a write entry (see `JitGroup`); native code reads them as plain
/// 64-bit loads, which is what an atomic is on x86-64.
#[repr(C)]
pub struct TlbEntry {
    pub tag: AtomicU64,
    pub addend: AtomicU64,
    pub phys: AtomicU64,
    /// 1 if the page is global (kept across CR3 writes).
    pub global: AtomicU64,
}

/// log2 of the size of a TlbEntry (the probe scales the index by it).
pub const TLB_ENTRY_SHIFT: u32 = 5;
const _: () = assert!(std::mem::size_of::<TlbEntry>() == 1 << TLB_ENTRY_SHIFT);

impl TlbEntry {
    /// Makes the entry map linear page `page` to `host_page` (guest page `phys`).
    pub fn set(&self, page: u64, host_page: u64, phys: u64, global: bool) {
        self.tag.store(TLB_INVALID, Ordering::Relaxed);
        self.addend
            .store(host_page.wrapping_sub(page), Ordering::Relaxed);
        self.phys.store(phys, Ordering::Relaxed);
        self.global.store(global as u64, Ordering::Relaxed);
        self.tag.store(page, Ordering::Release);
    }
}

/// Why native code returned.
pub const EXIT_CONTINUE: u64 = 0;
/// Interpret the instruction at `exit_rip` (a TLB miss the fill could not serve).
pub const EXIT_INTERPRET: u64 = 1;
/// The instruction budget ran out before the block at `exit_rip`.
pub const EXIT_BUDGET: u64 = 2;
/// An indirect or cross-page jump to `exit_rip` missed the jump table.
pub const EXIT_JUMP_MISS: u64 = 3;

#[repr(C, align(64))]
pub struct Ctx {
    /// Guest GPRs in encoding order (in on entry, out on exit); `gpr[4]` is the
    /// guest RSP throughout.
    pub gpr: [u64; 16],
    /// Guest arithmetic flags (OF SF ZF AF PF CF), in and out.
    pub flags: u64,
    /// The other guest RFLAGS bits (IF, IOPL, AC, ...), in and out: native
    /// PUSHF/POPF/CLI read and write them here.
    pub sysflags: u64,
    /// Guest segment selectors (ES CS SS DS FS GS), in: `mov reg, sreg` reads them.
    pub sel: [u16; 8],
    /// Scratch registers' guest values while a rewritten instruction runs.
    pub spill: [u64; 4],
    /// RAX while saved flags are restored (see `emit::Asm::popfq`).
    pub flags_rax: u64,
    /// The guest's arithmetic flags across jump-table transfers (see `emit::emit`):
    /// OF as 0/1, then LAHF's byte.
    pub spec: u64,
    pub host_rsp: u64,
    pub exit_rip: u64,
    pub exit_kind: u64,
    /// Instructions left; each block subtracts its length on entry.
    pub budget: i64,
    /// Instructions a block counted on entry but did not run (it left early).
    pub uncounted: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    /// `helpers::fill`, called on an inline TLB miss.
    pub fill_fn: u64,
    /// `helpers::tsc`, called for RDTSC/RDTSCP.
    pub tsc_fn: u64,
    /// A helper's second result (TSC_AUX; bit 63: the instruction faults).
    pub helper_aux: u64,
    /// Where the entry trampoline jumps.
    pub entry: u64,
    /// Caller-saved guest registers across a helper call.
    pub saved: [u64; 16],
    /// The `helpers::Env` of the current run.
    pub env: *mut std::ffi::c_void,
    pub helper_ret: u64,
    /// Where the jump-table lookup jumps on a hit.
    pub jmp_tmp: u64,
    /// Minus the current jump-table salt of each class (see `jump_key`).
    pub neg_salt: [u64; 2],
    /// A TLB miss's linear address and `helpers::fill` info, for the fill routine.
    pub miss_lin: u64,
    pub miss_info: u64,
    /// Guest MXCSR while native code runs (in and out), and the host's.
    pub mxcsr: u32,
    pub host_mxcsr: u32,
    /// Guest XMM0..15 (in and out).
    pub xmm: [u128; 16],
    /// XMM registers across a helper call.
    pub xmm_saved: [u128; 16],
    pub tlb: [[TlbEntry; TLB_SIZE]; TABLES],
    /// Jump table, per privilege class (kernel, user), indexed by
    /// `jump_slot(rip)`: (guest RIP + salt, host entry of that block), side by
    /// side so that a lookup touches one cache line.
    pub jump: [[JumpEntry; JUMP_SIZE]; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct JumpEntry {
    pub key: u64,
    pub host: u64,
}

/// Jump-table entries per privilege class.
pub const JUMP_SIZE: usize = 1 << 16;

/// The jump-table slot of `rip`: its low 16 bits plus the byte-swapped low 32
/// (so that bits 16..31 spread blocks 64 KiB apart, as the kernel's are), as the
/// jump-table routine computes it with flag-free instructions.
pub fn jump_slot(rip: u64) -> usize {
    (rip as u16).wrapping_add((rip as u32).swap_bytes() as u16) as usize
}

/// The jump-table key of `rip` under `salt`. Entries are invalidated wholesale by
/// moving the salt in steps of 2^48: keys of one class differ from each other by
/// less than 2^47 (their RIPs are all canonical in the same half), so an old
/// entry never matches after a step; an all-zero entry never matches a canonical
/// RIP while the salt's step count is in 1..=0xffff.
pub fn jump_key(rip: u64, salt: u64) -> u64 {
    rip.wrapping_add(salt)
}

/// Host stack below the context (helpers run on it).
pub const STACK: usize = 256 * 1024;

/// The context with its stack area, heap-allocated once per vCPU.
#[repr(C, align(64))]
pub struct Frame {
    pub stack: [u8; STACK],
    pub ctx: Ctx,
}

impl Frame {
    pub fn new() -> Box<Frame> {
        let layout = std::alloc::Layout::new::<Frame>();
        // SAFETY: Frame has a non-zero size; every field of it is an integer, an
        // atomic integer, an array of those or a raw pointer, for which all-zero
        // bytes are a valid value, so the zeroed allocation is an initialised Frame that the Box
        // owns (allocated with Frame's own layout, as Box requires).
        let f = unsafe {
            let p = std::alloc::alloc_zeroed(layout).cast::<Frame>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        };
        f.ctx.flush(0..TABLES);
        f
    }
}

impl Ctx {
    /// Invalidates the given TLB tables.
    /// After a CR3 write: invalidates the entries of non-global pages.
    pub fn flush_nonglobal(&self) {
        for t in &self.tlb {
            for e in t.iter() {
                if e.global.load(Ordering::Relaxed) == 0 {
                    e.tag.store(TLB_INVALID, Ordering::Relaxed);
                }
            }
        }
    }

    /// Invalidates every entry for the 2 MiB region holding linear address `lin`
    /// (an INVLPG may drop a large page, which the tables hold as 4 KiB pages).
    pub fn flush_region(&self, lin: u64) {
        for t in &self.tlb {
            for e in t.iter() {
                let tag = e.tag.load(Ordering::Relaxed);
                if tag != TLB_INVALID && tag >> 21 == lin >> 21 {
                    e.tag.store(TLB_INVALID, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn flush(&self, tables: std::ops::Range<usize>) {
        for t in &self.tlb[tables] {
            t.iter()
                .for_each(|e| e.tag.store(TLB_INVALID, Ordering::Relaxed));
        }
    }
}

pub const GPR: i32 = offset_of!(Ctx, gpr) as i32;
pub const RSP_SLOT: i32 = GPR + 4 * 8;
pub const FLAGS: i32 = offset_of!(Ctx, flags) as i32;
pub const SYSFLAGS: i32 = offset_of!(Ctx, sysflags) as i32;
pub const SEL: i32 = offset_of!(Ctx, sel) as i32;
pub const SPILL: i32 = offset_of!(Ctx, spill) as i32;
pub const FLAGS_RAX: i32 = offset_of!(Ctx, flags_rax) as i32;
pub const SPEC: i32 = offset_of!(Ctx, spec) as i32;
pub const HOST_RSP: i32 = offset_of!(Ctx, host_rsp) as i32;
pub const EXIT_RIP: i32 = offset_of!(Ctx, exit_rip) as i32;
pub const EXIT_KIND: i32 = offset_of!(Ctx, exit_kind) as i32;
pub const BUDGET: i32 = offset_of!(Ctx, budget) as i32;
pub const UNCOUNTED: i32 = offset_of!(Ctx, uncounted) as i32;
pub const FS_BASE: i32 = offset_of!(Ctx, fs_base) as i32;
pub const GS_BASE: i32 = offset_of!(Ctx, gs_base) as i32;
pub const FILL_FN: i32 = offset_of!(Ctx, fill_fn) as i32;
pub const TSC_FN: i32 = offset_of!(Ctx, tsc_fn) as i32;
pub const HELPER_AUX: i32 = offset_of!(Ctx, helper_aux) as i32;
pub const ENTRY: i32 = offset_of!(Ctx, entry) as i32;
pub const SAVED: i32 = offset_of!(Ctx, saved) as i32;
pub const HELPER_RET: i32 = offset_of!(Ctx, helper_ret) as i32;
pub const TLB: i32 = offset_of!(Ctx, tlb) as i32;
pub const MISS_LIN: i32 = offset_of!(Ctx, miss_lin) as i32;
pub const MISS_INFO: i32 = offset_of!(Ctx, miss_info) as i32;
pub const MXCSR: i32 = offset_of!(Ctx, mxcsr) as i32;
pub const HOST_MXCSR: i32 = offset_of!(Ctx, host_mxcsr) as i32;
pub const XMM: i32 = offset_of!(Ctx, xmm) as i32;
pub const XMM_SAVED: i32 = offset_of!(Ctx, xmm_saved) as i32;
pub const JMP_TMP: i32 = offset_of!(Ctx, jmp_tmp) as i32;
pub const NEG_SALT: i32 = offset_of!(Ctx, neg_salt) as i32;
pub const JUMP: i32 = offset_of!(Ctx, jump) as i32;
/// Bytes per jump-table array.
pub const JUMP_BYTES: i32 = (JUMP_SIZE * std::mem::size_of::<JumpEntry>()) as i32;
/// Bytes per TLB table.
pub const TABLE_BYTES: i32 = (TLB_SIZE * std::mem::size_of::<TlbEntry>()) as i32;
