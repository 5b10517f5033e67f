//! x86-jit: a same-ISA translator for [`x86_emu`]. Guest and host are both
//! x86-64, so most guest integer code runs on the host CPU as it is: register
//! instructions are re-encoded unchanged, memory operands are rewritten to host
//! addresses through an inline software TLB, and control flow leaves through exit
//! stubs that are linked directly to the next block once it is translated.
//! Everything else — privileged and I/O instructions, `cpuid`, string
//! instructions, SSE, faults — is left to the interpreter, which stays the
//! reference: [`Jit::run`] is a drop-in replacement for [`Cpu::run`].
//!
//! Blocks come from the interpreter's block cache ([`Cpu::block_at_rip`]), so a
//! translation is dropped exactly when the interpreter drops the decoded block
//! (a write to its page by any vCPU, DMA into user code pages). `unsafe` is
//! confined to this crate: the executable buffer (codebuf.rs), the context's
//! allocation (ctx.rs), the call into native code here and the helper
//! (helpers.rs).

mod asm;
mod classify;
mod codebuf;
mod ctx;
mod emit;
mod helpers;

use rustc_hash::FxHashMap as HashMap;
use std::io;
use std::time::Instant;

use iced_x86::code_asm::*;
use x86_emu::block::BlockId;
use x86_emu::{Bus, Cpu, StopReason};

use crate::codebuf::CodeBuf;
use crate::ctx::{Frame, TABLES};

/// Size of each vCPU's code cache; when full it is emptied and refilled.
const CODE_CACHE: usize = 64 << 20;
/// Executions of a block in the interpreter before it is translated (boot code
/// mostly runs once: translating it would cost more than interpreting it).
const HOT: u32 = 16;
/// The arithmetic flags in RFLAGS.
const ARITH_FLAGS: u64 = 0x8d5;
const DF: u64 = 1 << 10;

/// Counters for `HAKO_EMU_STATS`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JitStats {
    /// Blocks translated.
    pub blocks: u64,
    /// Time spent translating, in nanoseconds.
    pub translate_ns: u64,
    /// Guest instructions run by native code.
    pub native_insns: u64,
    /// Guest instructions run by the interpreter.
    pub interp_insns: u64,
    /// Times the code cache was emptied because it was full.
    pub flushes: u64,
    /// Entries into native code from the dispatcher.
    pub entries: u64,
    /// Exits by kind: continue, interpret, budget, jump-table miss.
    pub exits: [u64; 4],
}

#[derive(Clone, Copy, Default)]
struct Slot {
    serial: u64,
    hits: u32,
    cpl: u8,
    /// Host entry, 0 if not translated.
    host: u64,
    /// Its entry for the jump table (see `emit::Translated::jt_entry`).
    jt: u64,
    /// Not translatable (its first instruction is the interpreter's).
    never: bool,
}

/// (physical address, guest RIP, CPL) of a block.
type Key = (u64, u64, u8);

/// The translator of one vCPU (not shared between threads).
pub struct Jit {
    frame: Box<Frame>,
    code: CodeBuf,
    /// Bytes of trampolines at the start of the code buffer.
    base_len: usize,
    enter: u64,
    exit: u64,
    /// Jump-table routines (kernel, user), and the exit for a miss.
    jump_table: [u64; 3],
    /// Helper-call routines (see emit::Env::fill).
    fill: [u64; 4],
    /// Salt steps of the jump table (see `ctx::jump_key`), 1..=0xffff.
    salt_steps: [u64; 2],
    /// The kernel class of the jump table holds a block on a non-global page
    /// (which a CR3 write may remap).
    kernel_nonglobal: bool,
    write_epoch: u64,
    /// 2 MiB regions (linear address >> 21) of the blocks in the jump table.
    code_regions: [rustc_hash::FxHashSet<u64>; 2],
    last_region: [u64; 2],
    slots: Vec<Slot>,
    /// Translations by key, with the code-map generation they were made at.
    map: HashMap<Key, (u64, u32)>,
    /// Exit stubs waiting for a block to be translated.
    pending: HashMap<Key, Vec<u64>>,
    tlb_epoch: u64,
    code_epoch: u64,
    cr: (u64, u64, u64),
    group: Option<std::sync::Arc<JitGroup>>,
    pub stats: JitStats,
    hot: u32,
    /// Whether translations may contain SSE instructions (see `sse_native`).
    sse: bool,
    last_continue: bool,
    /// `HAKO_JIT_DEBUG`: interpreted block starts by mnemonic, printed on drop.
    debug: Option<HashMap<String, u64>>,
    /// `HAKO_JIT_PERFMAP`: /tmp/perf-PID.map, naming each block for `perf report`.
    perf_map: Option<std::fs::File>,
}

impl Drop for Jit {
    fn drop(&mut self) {
        if let Some(g) = &self.group {
            let me = std::ptr::addr_of!(self.frame.ctx) as usize;
            g.members().retain(|&c| c != me);
        }
        if let Some(d) = &self.debug {
            let mut v: Vec<_> = d.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1));
            eprintln!("x86-jit: {:?}", self.stats);
            for (m, n) in v.iter().take(300) {
                eprintln!("x86-jit: interpreted from {m}: {n}");
            }
        }
    }
}

// SAFETY: a Jit owns its code buffer and context outright (no aliasing pointers
// into them exist outside it); moving it to another thread moves that ownership.
unsafe impl Send for Jit {}

impl Jit {
    /// A translator with an empty code cache, a member of `group` (the vCPUs of
    /// one VM) if given.
    pub fn new(group: Option<std::sync::Arc<JitGroup>>) -> io::Result<Jit> {
        let mut code = CodeBuf::new(CODE_CACHE)?;
        let (enter, exit, jump_table, fill) =
            trampolines(&mut code).map_err(|e| io::Error::other(e.to_string()))?;
        let mut frame = Frame::new();
        frame.ctx.fill_fn = helpers::fill as *const () as u64;
        frame.ctx.tsc_fn = helpers::tsc as *const () as u64;
        if let Some(g) = &group {
            g.members().push(std::ptr::addr_of!(frame.ctx) as usize);
        }
        let mut jit = Jit {
            frame,
            base_len: code.used(),
            code,
            enter,
            exit,
            jump_table,
            fill,
            salt_steps: [0; 2],
            kernel_nonglobal: false,
            write_epoch: u64::MAX,
            code_regions: Default::default(),
            last_region: [u64::MAX; 2],
            slots: Vec::new(),
            map: HashMap::default(),
            pending: HashMap::default(),
            tlb_epoch: u64::MAX,
            code_epoch: u64::MAX,
            cr: (0, 0, 0),
            group,
            stats: JitStats::default(),
            last_continue: false,
            sse: false,
            hot: std::env::var("HAKO_JIT_HOT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(HOT),
            debug: std::env::var_os("HAKO_JIT_DEBUG").map(|_| HashMap::default()),
            perf_map: None,
        };
        jit.perf_map = std::env::var_os("HAKO_JIT_PERFMAP").and_then(|_| {
            let path = format!("/tmp/perf-{}.map", std::process::id());
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()?;
            use std::io::Write;
            let end = jit.code.next_ip();
            let mut names = vec![(enter, "enter"), (exit, "exit")];
            names.extend(jit.jump_table[..2].iter().map(|&a| (a, "jump_table")));
            names.push((jit.jump_table[2], "jump_miss"));
            names.extend(jit.fill[..2].iter().map(|&a| (a, "fill_helper")));
            names.extend(jit.fill[2..].iter().map(|&a| (a, "tsc_helper")));
            for (k, &(a, name)) in names.iter().enumerate() {
                let next = names.get(k + 1).map_or(end, |n| n.0);
                let _ = writeln!(f, "{a:x} {:x} jit_{name}", next - a);
            }
            Some(f)
        });
        Ok(jit)
    }

    /// Translates blocks after `n` interpreted executions (default 16; 1 translates
    /// every block the first time it runs, as tests want).
    pub fn set_hot_threshold(&mut self, n: u32) {
        self.hot = n.max(1);
    }

    /// Invalidates the whole jump table.
    fn new_salt(&mut self) {
        self.new_class_salt(0);
        self.new_class_salt(1);
    }

    /// Invalidates the jump table of one privilege class.
    fn new_class_salt(&mut self, class: usize) {
        self.code_regions[class].clear();
        self.last_region[class] = u64::MAX;
        self.kernel_nonglobal &= class == 1;
        self.salt_steps[class] += 1;
        if self.salt_steps[class] > 0xffff {
            self.frame.ctx.jump[class]
                .iter_mut()
                .for_each(|e| e.key = 0);
            self.salt_steps[class] = 1;
        }
        self.frame.ctx.neg_salt[class] = (self.salt_steps[class] << 48).wrapping_neg();
    }

    /// Forgets every translation and TLB entry: for a CPU that was replaced (INIT)
    /// or that now runs over other memory.
    pub fn reset(&mut self) {
        self.flush_code();
        self.frame.ctx.flush(0..TABLES);
        self.tlb_epoch = u64::MAX;
    }

    /// Bytes of translated code in the cache.
    pub fn code_bytes(&self) -> usize {
        self.code.used() - self.base_len
    }

    /// Runs up to `budget` guest instructions, like [`Cpu::run`] (and with the
    /// same stop reasons), translating hot blocks.
    pub fn run(&mut self, cpu: &mut Cpu, bus: &mut dyn Bus, budget: u64) -> StopReason {
        let end = cpu.icount + budget;
        while cpu.icount < end {
            if cpu.halted {
                return StopReason::Halted;
            }
            let sse = sse_native(cpu);
            if sse != self.sse {
                // No SSE translation may survive into a state where it could trap.
                if !sse {
                    self.flush_code();
                }
                self.sse = sse;
            }
            if cpu.bitness != 64 || cpu.tracing() {
                let before = cpu.icount;
                let r = cpu.run(bus, end - cpu.icount);
                self.stats.interp_insns += cpu.icount - before;
                return r;
            }
            if cpu.int_shadow {
                if let Some(r) = self.interpret(cpu, bus, true) {
                    return r;
                }
                continue;
            }
            // Read before the block is validated: a code write after this point
            // must keep the block out of the jump table (see `native`).
            let writes = cpu.code_map().write_epoch();
            let id = match cpu.block_at_rip(bus) {
                Ok(id) => id,
                Err(_) => {
                    // The fetch faults: the interpreter raises it.
                    if let Some(r) = self.interpret(cpu, bus, true) {
                        return r;
                    }
                    continue;
                }
            };
            let (host, jt) = self.host_for(cpu, id);
            if let Some(d) = self.debug.as_mut() {
                if std::mem::take(&mut self.last_continue) {
                    let b = cpu.block(id);
                    let what = if host != 0 {
                        "translated"
                    } else if b.npages != 1 {
                        "two pages"
                    } else {
                        "not translated"
                    };
                    *d.entry(format!(
                        "(exit by a link stub or a jump-table miss to a {what} block)"
                    ))
                    .or_default() += 1;
                }
            }
            if host == 0 {
                if let Some(r) = self.interpret(cpu, bus, false) {
                    return r;
                }
                continue;
            }
            match self.native(cpu, bus, host, jt, end - cpu.icount, writes) {
                ctx::EXIT_INTERPRET => {
                    if let Some(d) = self.debug.as_mut() {
                        let what = match cpu.block_at_rip(bus) {
                            Ok(id) => format!("{:?}", cpu.block(id).insns[0].mnemonic()),
                            Err(_) => "?".into(),
                        };
                        *d.entry(format!("(fallback at {what})")).or_default() += 1;
                    }
                    if let Some(r) = self.interpret(cpu, bus, true) {
                        return r;
                    }
                }
                // Less budget left than the next block is long.
                ctx::EXIT_BUDGET => break,
                _ => self.last_continue = true,
            }
        }
        StopReason::Yield
    }

    /// Interprets one instruction (`exact`) or one block; `Some` if the run
    /// must end there.
    fn interpret(&mut self, cpu: &mut Cpu, bus: &mut dyn Bus, exact: bool) -> Option<StopReason> {
        let before = cpu.icount;
        let r = if exact {
            cpu.run_exact(bus, 1)
        } else {
            cpu.run(bus, 1)
        };
        self.stats.interp_insns += cpu.icount - before;
        match r {
            StopReason::Yield if !cpu.stop_requested() => None,
            r => Some(r),
        }
    }

    /// The host entry for block `id` and its jump-table entry, translating it
    /// once it is hot; 0 if it stays with the interpreter for now.
    fn host_for(&mut self, cpu: &mut Cpu, id: BlockId) -> (u64, u64) {
        let b = cpu.block(id);
        if b.serial == 0 || b.bitness != 64 {
            return (0, 0);
        }
        let (serial, phys, rip) = (b.serial, b.phys, b.vstart);
        let cpl = cpu.cpl;
        let i = id as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, Slot::default());
        }
        let s = &mut self.slots[i];
        if s.serial != serial || s.cpl != cpl {
            *s = Slot {
                serial,
                cpl,
                ..Slot::default()
            };
        }
        if s.host != 0 || s.never {
            if s.never {
                if let Some(d) = self.debug.as_mut() {
                    let b = cpu.block(id);
                    let key = format!("{}", b.insns[0]);
                    *d.entry(key).or_default() += 1;
                }
            }
            return (s.host, s.jt);
        }
        s.hits += 1;
        if s.hits < self.hot {
            return (0, 0);
        }
        let (host, jt) = self.translate(cpu, id, (phys, rip, cpl));
        let s = &mut self.slots[i];
        s.host = host;
        s.jt = jt;
        s.never = host == 0;
        (host, jt)
    }

    fn translate(&mut self, cpu: &Cpu, id: BlockId, key: Key) -> (u64, u64) {
        let t0 = Instant::now();
        let b = cpu.block(id);
        let (phys, rip, cpl) = key;
        let page_phys = phys & !0xfff;
        let page_rip = rip & !0xfff;
        // The generation the block was decoded at: links between blocks of one page
        // are only made between decodes of the same generation.
        let gen = b.pages[0].1;
        // A block that runs on into a second page checks that page's generation
        // on entry (links and the jump table reach it with only the first page's
        // checked).
        let second = if b.npages > 1 {
            let (pn, gen) = b.pages[1];
            match cpu.code_map().word_addr(pn) {
                Some(addr) => Some((addr as u64, gen)),
                None => return (0, 0),
            }
        } else {
            None
        };
        let tables = if cpl == 3 { (2, 3) } else { (0, 1) };
        let mut attempt = 0;
        loop {
            let ip = self.code.next_ip();
            let map = &self.map;
            let lookup = |target: u64| -> Option<u64> {
                let k = (page_phys | (target & 0xfff), target, cpl);
                map.get(&k).filter(|e| e.1 == gen).map(|e| e.0)
            };
            let env = emit::Env {
                exit: self.exit,
                lookup: &lookup,
                jump_table: self.jump_table[usize::from(cpl == 3)],
                jump_miss: self.jump_table[2],
                fill: self.fill,
                tables,
                second,
            };
            let t = match emit::translate(&b.insns, ip, &env, self.sse) {
                Ok(t) => t,
                Err(e) => {
                    if let Some(d) = self.debug.as_mut() {
                        let m = b.insns[0].mnemonic();
                        *d.entry(format!("(failed {m:?}: {e})")).or_default() += 1;
                    }
                    return (0, 0);
                }
            };
            if !self.code.push(&t.code) {
                if attempt > 0 {
                    return (0, 0);
                }
                attempt += 1;
                self.flush_code();
                continue;
            }
            debug_assert_eq!(page_rip, rip & !0xfff);
            self.map.insert(key, (ip, gen));
            // Link the stubs that were waiting for this block.
            if let Some(stubs) = self.pending.remove(&key) {
                for at in stubs {
                    self.code.patch_jmp(at, ip);
                }
            }
            for (at, target) in t.links {
                let k = (page_phys | (target & 0xfff), target, cpl);
                match self.map.get(&k) {
                    // A link to itself (a loop) or to a block the lookup missed.
                    Some(&(host, g)) if g == gen => self.code.patch_jmp(at, host),
                    _ => self.pending.entry(k).or_default().push(at),
                }
            }
            self.stats.blocks += 1;
            self.stats.translate_ns += t0.elapsed().as_nanos() as u64;
            if let Some(f) = self.perf_map.as_mut() {
                use std::io::Write;
                let name = if cpl == 3 { "user" } else { "kernel" };
                // One write per line: every vCPU appends to the same file.
                let line = format!("{ip:x} {:x} guest_{name}_{rip:x}\n", t.code.len());
                let _ = f.write_all(line.as_bytes());
            }
            return (ip, t.jt_entry);
        }
    }

    /// Empties the code cache.
    fn flush_code(&mut self) {
        self.new_salt();
        self.code.truncate(self.base_len);
        self.map.clear();
        self.pending.clear();
        self.slots.iter_mut().for_each(|s| *s = Slot::default());
        self.stats.flushes += 1;
    }

    /// Runs native code from `host` with at most `budget` instructions; returns
    /// the exit kind with the CPU's state updated.
    /// `writes`: the code map's write epoch before the block was validated.
    fn native(
        &mut self,
        cpu: &mut Cpu,
        bus: &mut dyn Bus,
        host: u64,
        jt: u64,
        budget: u64,
        writes: u64,
    ) -> u64 {
        let tlb_epoch = cpu.tlb_epoch();
        let code_epoch = cpu.code_map().epoch();
        let write_epoch = cpu.code_map().write_epoch();
        let cr = (cpu.cr0, cpu.cr4, cpu.efer);
        // The inline TLB and the jump table after TLB flushes: a CR3 write keeps
        // what maps the kernel half; an INVLPG drops its 2 MiB region.
        let mut stale = [write_epoch != self.write_epoch; 2];
        if tlb_epoch != self.tlb_epoch || cr != self.cr {
            use x86_emu::mmu::{FULL_FLUSH, NONGLOBAL_FLUSH};
            let events = if cr == self.cr {
                cpu.tlb_flushes_since(self.tlb_epoch)
                    .filter(|p| !p.contains(&FULL_FLUSH))
            } else {
                None
            };
            match events {
                Some(events) => {
                    for p in events {
                        if p == NONGLOBAL_FLUSH {
                            self.frame.ctx.flush_nonglobal();
                            stale[1] = true;
                            stale[0] |= self.kernel_nonglobal;
                        } else {
                            self.frame.ctx.flush_region(p);
                            for (class, st) in stale.iter_mut().enumerate() {
                                *st |= self.code_regions[class].contains(&(p >> 21));
                            }
                        }
                    }
                }
                None => {
                    self.frame.ctx.flush(0..TABLES);
                    stale = [true; 2];
                }
            }
            self.tlb_epoch = tlb_epoch;
            self.cr = cr;
        }
        if code_epoch != self.code_epoch {
            // A page became code: no native stores to it from now on (JitGroup did
            // that for entries of that page; this catches a Jit outside a group).
            self.frame.ctx.flush(1..2);
            self.frame.ctx.flush(3..4);
            self.code_epoch = code_epoch;
        }
        // The jump table holds translations by linear address: valid while no
        // mapping of a region holding them changed and no code was written.
        for (class, st) in stale.into_iter().enumerate() {
            if st {
                self.new_class_salt(class);
            }
        }
        self.write_epoch = write_epoch;
        // Enter the block in the jump table, unless code was written since it was
        // validated (it may be stale then, and the salt already counts that write).
        if writes == write_epoch {
            let class = usize::from(cpu.cpl == 3);
            let slot = ctx::jump_slot(cpu.rip);
            let salt = self.salt_steps[class] << 48;
            self.frame.ctx.jump[class][slot] = ctx::JumpEntry {
                key: ctx::jump_key(cpu.rip, salt),
                host: jt,
            };
            // (In 64-bit mode the linear address of RIP is RIP.)
            if class == 0 && !cpu.is_global(cpu.rip) {
                self.kernel_nonglobal = true;
            }
            if self.last_region[class] != cpu.rip >> 21 {
                self.last_region[class] = cpu.rip >> 21;
                self.code_regions[class].insert(cpu.rip >> 21);
            }
        }
        // The context is reached through a raw pointer, never a reference to all
        // of it: other vCPUs' threads may invalidate its TLB entries (JitGroup)
        // at any time, through the atomics; everything else is this thread's.
        let c: *mut ctx::Ctx = std::ptr::addr_of_mut!(self.frame.ctx);
        let full_flags = cpu.flags.get();
        if full_flags & DF != 0 {
            // Translations assume DF clear (string instructions run forward).
            return ctx::EXIT_INTERPRET;
        }
        self.stats.entries += 1;
        let start = budget.min(i64::MAX as u64) as i64;
        let bus_ptr: *mut (dyn Bus + '_) = bus;
        // SAFETY: only the lifetime bound of the trait object changes; the pointer
        // is used by helpers during the call below only, while `bus` is alive.
        let bus_ptr: *mut (dyn Bus + 'static) = unsafe { std::mem::transmute(bus_ptr) };
        let mut env = helpers::Env {
            cpu: cpu as *mut Cpu,
            bus: bus_ptr,
        };
        // SAFETY: `c` points at this Jit's live context; the fields written here are
        // only ever accessed by this thread (field places, no reference to the
        // whole context is made).
        unsafe {
            (*c).gpr = cpu.gpr;
            (*c).xmm = cpu.fpu.xmm;
            (*c).mxcsr = cpu.fpu.mxcsr;
            (*c).flags = full_flags & ARITH_FLAGS;
            (*c).sysflags = full_flags & !ARITH_FLAGS;
            for (k, seg) in cpu.seg.iter().take(6).enumerate() {
                (*c).sel[k] = seg.selector;
            }
            (*c).fs_base = cpu.seg[x86_emu::cpu::FS].base;
            (*c).gs_base = cpu.seg[x86_emu::cpu::GS].base;
            (*c).budget = start;
            (*c).uncounted = 0;
            (*c).exit_kind = ctx::EXIT_CONTINUE;
            (*c).entry = host;
            (*c).env = (&mut env as *mut helpers::Env).cast();
        }
        // SAFETY: `enter` is the trampoline made by `trampolines`, taking the context
        // in RDI; `host` is a translation in this vCPU's code buffer made for the
        // current CPL, page generation and 64-bit mode (checked by `host_for`), and
        // every translation leaves through `exit`, which restores the host's
        // callee-saved registers and stack. While it runs, helpers reach the CPU
        // and the bus only through `env`, and nothing else uses them.
        unsafe {
            let f: unsafe extern "C" fn(*mut ctx::Ctx) = std::mem::transmute(self.enter as usize);
            f(c);
        }
        // SAFETY: as for the writes above; native code has returned.
        let (gpr, xmm, mxcsr, flags, sysflags, rip, left, uncounted, kind) = unsafe {
            (*c).env = std::ptr::null_mut();
            (
                (*c).gpr,
                (*c).xmm,
                (*c).mxcsr,
                (*c).flags,
                (*c).sysflags,
                (*c).exit_rip,
                (*c).budget,
                (*c).uncounted,
                (*c).exit_kind,
            )
        };
        cpu.gpr = gpr;
        cpu.fpu.xmm = xmm;
        cpu.fpu.mxcsr = mxcsr;
        cpu.flags
            .load((sysflags & !ARITH_FLAGS) | (flags & ARITH_FLAGS));
        cpu.rip = rip;
        let ran = (start - left) as u64 - uncounted;
        cpu.icount += ran;
        self.stats.native_insns += ran;
        self.stats.exits[kind as usize & 3] += 1;
        kind
    }
}

/// Whether SSE instructions may run natively: the guest masks every SIMD
/// floating-point exception (so none can trap in the host) and CR0/CR4 let SSE
/// run without #NM/#UD (so the host needs no checks). Otherwise SSE instructions
/// are left to the interpreter.
fn sse_native(cpu: &Cpu) -> bool {
    const CR0_EM: u64 = 1 << 2;
    const CR0_TS: u64 = 1 << 3;
    const CR4_OSFXSR: u64 = 1 << 9;
    cpu.fpu.mxcsr & 0x1f80 == 0x1f80
        && cpu.cr0 & (CR0_EM | CR0_TS) == 0
        && cpu.cr4 & CR4_OSFXSR != 0
}

/// Emits the entry and exit trampolines and the two jump-table routines at the
/// start of `code`.
#[allow(clippy::type_complexity)]
fn trampolines(code: &mut CodeBuf) -> Result<(u64, u64, [u64; 3], [u64; 4]), iced_x86::IcedError> {
    use crate::ctx::*;
    const GUEST: [AsmRegister64; 16] = [
        rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
    ];
    const XMMS: [AsmRegisterXmm; 16] = [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
        xmm14, xmm15,
    ];
    // What a helper call may clobber (System V): these GPRs and every XMM.
    const CALLER_SAVED: [usize; 9] = [0, 1, 2, 6, 7, 8, 9, 10, 11];
    let mut a = CodeAssembler::new(64)?;
    let mut exit_label = a.create_label();
    // enter(ctx: rdi)
    for r in [rbx, rbp, r12, r13, r14, r15] {
        a.push(r)?;
    }
    a.mov(qword_ptr(rdi + HOST_RSP), rsp)?;
    a.mov(rsp, rdi)?;
    a.stmxcsr(dword_ptr(rsp + HOST_MXCSR))?;
    a.ldmxcsr(dword_ptr(rsp + MXCSR))?;
    for (k, x) in XMMS.iter().enumerate() {
        a.movdqu(*x, xmmword_ptr(rsp + (XMM + 16 * k as i32)))?;
    }
    a.push(qword_ptr(rsp + FLAGS))?;
    a.popfq()?;
    for (k, r) in GUEST.iter().enumerate() {
        if k != 4 && k != 7 {
            a.mov(*r, qword_ptr(rsp + (GPR + 8 * k as i32)))?;
        }
    }
    a.mov(rdi, qword_ptr(rsp + (GPR + 8 * 7)))?;
    a.jmp(qword_ptr(rsp + ENTRY))?;
    // exit: guest flags are the host flags; the context is at [rsp].
    a.set_label(&mut exit_label)?;
    a.mov(qword_ptr(rsp + GPR), rax)?;
    a.pushfq()?;
    a.pop(rax)?;
    a.mov(qword_ptr(rsp + FLAGS), rax)?;
    for (k, r) in GUEST.iter().enumerate() {
        if k != 4 && k != 0 {
            a.mov(qword_ptr(rsp + (GPR + 8 * k as i32)), *r)?;
        }
    }
    for (k, x) in XMMS.iter().enumerate() {
        a.movdqu(xmmword_ptr(rsp + (XMM + 16 * k as i32)), *x)?;
    }
    a.stmxcsr(dword_ptr(rsp + MXCSR))?;
    a.ldmxcsr(dword_ptr(rsp + HOST_MXCSR))?;
    a.mov(rsp, qword_ptr(rsp + HOST_RSP))?;
    for r in [r15, r14, r13, r12, rbp, rbx] {
        a.pop(r)?;
    }
    a.ret()?;
    // Jump table, called from a jump site (`call`, then `jmp [jmp_tmp]` there, so
    // that each site's indirect jump is predicted on its own): the guest RIP is in
    // exit_rip, all guest registers and flags are live, so only flag-free
    // instructions (MOV, BSWAP, LEA, MOVZX, NOT, JRCXZ) index and compare. Leaves
    // the block's host entry in jmp_tmp, or on a miss the address of an exit.
    let mut tables = [a.create_label(), a.create_label()];
    let mut miss = a.create_label();
    for (class, table) in tables.iter_mut().enumerate() {
        // 8: the return address of the call.
        let keys = 8 + JUMP + class as i32 * JUMP_BYTES;
        let hosts = keys + 8;
        let mut hit = a.create_label();
        a.set_label(table)?;
        a.mov(qword_ptr(rsp + (8 + SPILL)), rcx)?;
        a.mov(qword_ptr(rsp + (8 + SPILL + 8)), rdx)?;
        a.mov(qword_ptr(rsp + (8 + SPILL + 16)), rax)?;
        a.mov(rcx, qword_ptr(rsp + (8 + EXIT_RIP)))?;
        // The slot (see `ctx::jump_slot`).
        a.mov(edx, ecx)?;
        a.bswap(edx)?;
        a.lea(edx, dword_ptr(rdx + rcx))?;
        a.movzx(edx, dx)?;
        // 16-byte entries: index * 2, scaled by 8 below.
        a.lea(edx, dword_ptr(rdx + rdx))?;
        a.mov(rax, qword_ptr(rsp + rdx * 8 + keys))?;
        a.mov(rdx, qword_ptr(rsp + rdx * 8 + hosts))?;
        a.mov(qword_ptr(rsp + (8 + JMP_TMP)), rdx)?;
        a.mov(rdx, qword_ptr(rsp + (8 + NEG_SALT + 8 * class as i32)))?;
        // rcx = key - rip - salt = (!rip + 1) + key - salt
        a.not(rcx)?;
        a.lea(rcx, qword_ptr(rcx + rax + 1))?;
        a.lea(rcx, qword_ptr(rcx + rdx))?;
        a.jrcxz(hit)?;
        a.lea(rcx, ptr(miss))?;
        a.mov(qword_ptr(rsp + (8 + JMP_TMP)), rcx)?;
        a.set_label(&mut hit)?;
        a.mov(rcx, qword_ptr(rsp + (8 + SPILL)))?;
        a.mov(rdx, qword_ptr(rsp + (8 + SPILL + 8)))?;
        a.mov(rax, qword_ptr(rsp + (8 + SPILL + 16)))?;
        a.ret()?;
    }
    // A miss, jumped to from the site: the context is at [rsp] again; the guest
    // flags are in `spec` (see emit.rs) and go back to the host's for the exit.
    a.set_label(&mut miss)?;
    a.mov(qword_ptr(rsp + FLAGS_RAX), rax)?;
    a.mov(al, byte_ptr(rsp + SPEC))?;
    a.add(al, 0x7f)?;
    a.mov(ah, byte_ptr(rsp + (SPEC + 1)))?;
    a.sahf()?;
    a.mov(rax, qword_ptr(rsp + FLAGS_RAX))?;
    a.mov(dword_ptr(rsp + EXIT_KIND), EXIT_JUMP_MISS as u32)?;
    a.jmp(exit_label)?;
    // TLB fill: called (return address pushed) from a miss path with `bias` bytes
    // already pushed; the context is at [rsp + bias + 8].
    // Helper-call routines: [fill, fill, tsc, tsc], for 0 and 8 bytes pushed.
    let mut fills = [
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    ];
    for (k, fill) in fills.iter_mut().enumerate() {
        let func = if k < 2 { FILL_FN } else { TSC_FN };
        let mut b = 8 * (k % 2) as i32 + 8;
        a.set_label(fill)?;
        for &r in &CALLER_SAVED {
            a.mov(qword_ptr(rsp + (SAVED + 8 * r as i32 + b)), GUEST[r])?;
        }
        for (n, x) in XMMS.iter().enumerate() {
            a.movdqu(xmmword_ptr(rsp + (XMM_SAVED + 16 * n as i32 + b)), *x)?;
        }
        a.lea(rdi, qword_ptr(rsp + b))?;
        a.mov(rsi, qword_ptr(rsp + (MISS_LIN + b)))?;
        a.mov(rdx, qword_ptr(rsp + (MISS_INFO + b)))?;
        // The ABI wants RSP 16-byte aligned at the call; the context is.
        let pad = if b % 16 != 0 { 8 } else { 0 };
        if pad != 0 {
            a.lea(rsp, qword_ptr(rsp - pad))?;
            b += pad;
        }
        a.call(qword_ptr(rsp + (func + b)))?;
        if pad != 0 {
            a.lea(rsp, qword_ptr(rsp + pad))?;
            b -= pad;
        }
        a.mov(qword_ptr(rsp + (HELPER_RET + b)), rax)?;
        for (n, x) in XMMS.iter().enumerate() {
            a.movdqu(*x, xmmword_ptr(rsp + (XMM_SAVED + 16 * n as i32 + b)))?;
        }
        for &r in &CALLER_SAVED {
            a.mov(GUEST[r], qword_ptr(rsp + (SAVED + 8 * r as i32 + b)))?;
        }
        a.ret()?;
    }
    let ip = code.next_ip();
    let res = a.assemble_options(
        ip,
        iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let exit = res.label_ip(&exit_label)?;
    let jump = [
        res.label_ip(&tables[0])?,
        res.label_ip(&tables[1])?,
        res.label_ip(&miss)?,
    ];
    let fill = [
        res.label_ip(&fills[0])?,
        res.label_ip(&fills[1])?,
        res.label_ip(&fills[2])?,
        res.label_ip(&fills[3])?,
    ];
    if !code.push(&res.inner.code_buffer) {
        panic!("the code buffer cannot hold the trampolines");
    }
    Ok((ip, exit, jump, fill))
}

/// The translators of one VM's vCPUs. When a guest page starts holding code, every
/// vCPU's inline-TLB write entries for it are dropped at once (`page_became_code`,
/// hooked into the VM's `CodeMap`), so that no vCPU keeps storing to it natively,
/// unseen by the code map. (A store whose probe hit just before the drop may still
/// land without being seen: a window of a few instructions, as in QEMU.)
#[derive(Default)]
pub struct JitGroup {
    /// Addresses of the members' contexts.
    ctxs: std::sync::Mutex<Vec<usize>>,
}

impl JitGroup {
    pub fn new() -> std::sync::Arc<JitGroup> {
        std::sync::Arc::default()
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.ctxs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every member's write permissions (a live migration's dirty-log sync:
    /// the next store to each page refills its entry and logs the page). Call only
    /// while no member runs translated code.
    pub fn drop_write_entries(&self) {
        let members = self.members();
        for &c in members.iter() {
            // SAFETY: as in `page_became_code`: the context outlives its membership
            // and only its atomic TLB tables are reached.
            let tlb = unsafe { &*std::ptr::addr_of!((*(c as *const ctx::Ctx)).tlb) };
            for table in [1, 3] {
                for e in tlb[table].iter() {
                    e.tag
                        .store(ctx::TLB_INVALID, std::sync::atomic::Ordering::Release);
                }
            }
        }
    }

    /// Drops every member's write permission for guest page `pn`.
    pub fn page_became_code(&self, pn: u64) {
        // Pairs with the fence in `helpers::fill`: the page's code bit is set
        // before this scan reads the entries.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let members = self.members();
        for &c in members.iter() {
            // SAFETY: a member's context stays allocated until its Jit leaves the
            // group (in Drop, under this lock). Only the TLB tables are reached,
            // through a pointer to that field (no reference to the rest of the
            // context, which its owner mutates), and they consist of atomics.
            let tlb = unsafe { &*std::ptr::addr_of!((*(c as *const ctx::Ctx)).tlb) };
            for table in [1, 3] {
                for e in tlb[table].iter() {
                    if e.phys.load(std::sync::atomic::Ordering::Relaxed) == pn {
                        e.tag
                            .store(ctx::TLB_INVALID, std::sync::atomic::Ordering::Release);
                    }
                }
            }
        }
    }
}
