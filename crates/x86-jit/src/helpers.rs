//! Rust functions native code calls. They run on the context's stack area with
//! the guest registers saved by the caller (see emit.rs).

use x86_emu::mmu::Access;
use x86_emu::{Bus, Cpu};

use std::sync::atomic::{fence, Ordering};

use crate::ctx::{Ctx, TLB_INVALID, TLB_SIZE};

/// What a helper may touch during one native run: the CPU and its bus, which the
/// dispatcher does not use while native code runs.
pub struct Env {
    pub cpu: *mut Cpu,
    pub bus: *mut dyn Bus,
}

const CR4_SMAP: u64 = 1 << 21;

fn canonical(lin: u64) -> bool {
    ((lin as i64) << 16 >> 16) as u64 == lin
}

/// Inline TLB miss for linear address `lin`; `info` = size | write << 8 |
/// table << 9. Fills the entry and returns the host address, or 0 when the
/// access must go to the interpreter.
///
/// # Safety
///
/// `ctx` must be the context of the current native run, whose `env` points at a
/// live [`Env`].
pub unsafe extern "C" fn fill(ctx: *mut Ctx, lin: u64, info: u64) -> u64 {
    // SAFETY: the caller's contract: ctx is the running context and env is live;
    // the dispatcher holds no reference to either the CPU or the bus meanwhile.
    let (ctx, cpu, bus) = unsafe {
        let ctx = &*ctx;
        let env = &mut *(ctx.env as *mut Env);
        (ctx, &mut *env.cpu, &mut *env.bus)
    };
    let (size, aligned) = match info & 0xff {
        s if s == crate::emit::ALIGNED16 as u64 => (16, true),
        s => (s, false),
    };
    if aligned && lin % 16 != 0 {
        return 0; // the interpreter raises #GP
    }
    let write = info & 0x100 != 0;
    let table = (info >> 9) as usize & 3;
    match translate(cpu, bus, lin, size, write, table) {
        Some((page, host_page, phys)) => {
            let global = cpu.is_global(lin);
            let entry = &ctx.tlb[table][(lin >> 12) as usize % TLB_SIZE];
            entry.set(page, host_page, phys, global);
            if write {
                // Another vCPU may have started decoding the page after
                // `translate` looked: either its shoot-down (which fences after
                // marking the page) sees this entry, or this load sees the mark.
                fence(Ordering::SeqCst);
                if cpu.code_map().holds_code(phys) {
                    entry.tag.store(TLB_INVALID, Ordering::Release);
                    return 0;
                }
            }
            lin.wrapping_add(host_page.wrapping_sub(page))
        }
        None => 0,
    }
}

/// RDTSC/RDTSCP: returns the TSC; TSC_AUX (or bit 63 set: #GP) in `helper_aux`.
///
/// # Safety
///
/// As for [`fill`].
pub unsafe extern "C" fn tsc(ctx: *mut Ctx, _lin: u64, _info: u64) -> u64 {
    // SAFETY: as in `fill`; of the context, only helper_aux is written.
    let (aux, cpu, bus) = unsafe {
        let env = &mut *((*ctx).env as *mut Env);
        (
            std::ptr::addr_of_mut!((*ctx).helper_aux),
            &mut *env.cpu,
            &mut *env.bus,
        )
    };
    let (t, a) = cpu
        .read_tsc(bus)
        .map_or((0, 1u64 << 63), |(t, a)| (t, a as u64));
    // SAFETY: `aux` points into the live context (see above).
    unsafe { aux.write(a) };
    t
}

/// (linear page, host page, guest page number) of `lin`'s page, if native
/// accesses may use it.
fn translate(
    cpu: &mut Cpu,
    bus: &mut dyn Bus,
    lin: u64,
    size: u64,
    write: bool,
    table: usize,
) -> Option<(u64, u64, u64)> {
    if !canonical(lin) || (lin & 0xfff) + size > 0x1000 {
        return None;
    }
    let phys = cpu.probe(bus, lin, if write { Access::Write } else { Access::Read })?;
    // With SMAP on, kernel-mode tables hold no user pages, so STAC/CLAC need no
    // check inline (the table is flushed when CR4 changes).
    if table < 2 && cpu.cr4 & CR4_SMAP != 0 && cpu.probe_user(bus, lin) {
        return None;
    }
    // Stores to pages holding code must invalidate translations: slow path (the
    // interpreter's store clears the page's code bit, so the next fill succeeds).
    // When a page starts holding code later, `JitGroup::page_became_code` drops
    // every vCPU's write entries for it.
    if write && cpu.code_map().holds_code(phys >> 12) {
        return None;
    }
    let host = bus.host_addr(phys & !0xfff)? as u64;
    if write {
        // The entry lets stores bypass the bus until the next dirty-log sync drops it.
        bus.note_write_page(phys);
    }
    Some((lin & !0xfff, host, phys >> 12))
}
