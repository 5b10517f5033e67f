//! Decoded basic blocks, cached by physical address.
//!
//! Decoding is separate from execution: a block is a list of iced-x86
//! instructions that an interpreter (or later a JIT) runs. Each block records the
//! generations of its pages in the VM-wide [`CodeMap`]; a write to one of them by
//! any vCPU moves the generation, and the block is dropped on its next entry.

// FxHash: these maps are looked up on hot paths with integer keys, where SipHash's
// DoS resistance buys nothing.
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

use crate::bus::Bus;
use crate::code_map::CodeMap;
use crate::cpu::Cpu;
use crate::exception::XResult;
use crate::mmu::Access;

/// Longest block, in instructions.
const MAX_BLOCK: usize = 48;
const FAST_SIZE: usize = 1 << 14;

/// Slot of a physical block address in the direct-mapped front cache.
#[inline]
fn fast_slot(phys: u64) -> usize {
    ((phys ^ (phys >> 14) ^ (phys >> 28)) as usize) & (FAST_SIZE - 1)
}

/// A decoded straight-line run of instructions.
pub struct Block {
    pub insns: Vec<Instruction>,
    /// Linear address the block was decoded at (RIP-relative operands depend on it).
    pub vstart: u64,
    pub bitness: u32,
    pub phys: u64,
    /// The block's code bytes within its first page, to detect changes made
    /// behind the CPU's back (device DMA into a reused page).
    pub bytes: Vec<u8>,
    /// (physical page, [`CodeMap`] generation) of the one or two pages the block's
    /// bytes come from, as they were when it was decoded.
    pub pages: [(u64, u32); 2],
    pub npages: u8,
    /// Unique per decode in the process (0: not cached, decoded for one use).
    pub serial: u64,
}

impl Block {
    fn empty() -> Block {
        Block {
            insns: Vec::new(),
            vstart: 0,
            bitness: 0,
            phys: u64::MAX,
            bytes: Vec::new(),
            pages: [(0, 0); 2],
            npages: 0,
            serial: 0,
        }
    }

    /// Whether no vCPU wrote the block's pages since it was decoded.
    #[inline]
    fn current(&self, code: &CodeMap) -> bool {
        self.pages[..self.npages as usize]
            .iter()
            .all(|&(pn, g)| code.current(pn) == g)
    }
}

/// Index of a block in the cache's arena.
pub type BlockId = u32;
const NONE: BlockId = u32::MAX;

/// Physical-address keyed cache of decoded blocks (an arena indexed by
/// [`BlockId`], so executing a block needs no reference counting).
pub struct BlockCache {
    arena: Vec<Block>,
    free: Vec<BlockId>,
    map: HashMap<u64, BlockId>,
    fast: Vec<BlockId>,
    page_blocks: HashMap<u64, Vec<BlockId>>,
    /// (page, generation) of recently verified user code pages.
    checked: Vec<(u64, u64)>,
}

/// Last [`Block::serial`] given out, by any vCPU's cache: serials are unique in
/// the process, so a translation keyed by one never matches a block of another
/// CPU (or of a CPU recreated by INIT).
static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

const CHECKED_SIZE: usize = 256;

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            arena: Vec::new(),
            free: Vec::new(),
            map: HashMap::default(),
            fast: vec![NONE; FAST_SIZE],
            page_blocks: HashMap::default(),
            checked: vec![(u64::MAX, 0); CHECKED_SIZE],
        }
    }
}

impl BlockCache {
    /// Drops every block.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.free.clear();
        self.map.clear();
        self.fast.iter_mut().for_each(|e| *e = NONE);
        self.page_blocks.clear();
        self.checked.iter_mut().for_each(|e| *e = (u64::MAX, 0));
    }

    /// The block with id `id`.
    #[inline]
    pub fn block(&self, id: BlockId) -> &Block {
        &self.arena[id as usize]
    }

    /// Drops this vCPU's blocks that touch physical page `pn`.
    pub fn invalidate_page(&mut self, pn: u64) {
        if let Some(ids) = self.page_blocks.remove(&pn) {
            for id in ids {
                let b = &mut self.arena[id as usize];
                if b.insns.is_empty() {
                    continue; // already freed (block spanning two pages)
                }
                let phys = b.phys;
                b.insns = Vec::new();
                b.phys = u64::MAX;
                if self.map.get(&phys) == Some(&id) {
                    self.map.remove(&phys);
                }
                let slot = &mut self.fast[fast_slot(phys)];
                if *slot == id {
                    *slot = NONE;
                }
                self.free.push(id);
            }
        }
    }

    #[inline]
    fn get(&mut self, phys: u64, vstart: u64, bitness: u32) -> Option<BlockId> {
        let slot = fast_slot(phys);
        let id = self.fast[slot];
        if id != NONE {
            let b = &self.arena[id as usize];
            if b.phys == phys && b.vstart == vstart && b.bitness == bitness {
                return Some(id);
            }
        }
        let id = *self.map.get(&phys)?;
        let b = &self.arena[id as usize];
        if b.vstart == vstart && b.bitness == bitness {
            self.fast[slot] = id;
            return Some(id);
        }
        None
    }

    /// Whether page `pn`'s blocks were verified in generation `gen`.
    #[inline]
    fn page_checked(&self, pn: u64, gen: u64) -> bool {
        let e = self.checked[(pn as usize) & (CHECKED_SIZE - 1)];
        e == (pn, gen)
    }

    /// Compares page `pn`'s blocks with memory; drops the page's blocks if any
    /// changed. Returns whether they were all still valid.
    fn verify_page(&mut self, bus: &mut dyn Bus, pn: u64, gen: u64) -> bool {
        let mut buf = [0u8; 0x1000];
        let ok = self.page_blocks.get(&pn).is_none_or(|ids| {
            ids.iter().all(|&id| {
                let b = &self.arena[id as usize];
                if b.insns.is_empty() {
                    return true;
                }
                let now = &mut buf[..b.bytes.len()];
                bus.read_bytes(b.phys, now);
                *now == *b.bytes
            })
        });
        if ok {
            self.checked[(pn as usize) & (CHECKED_SIZE - 1)] = (pn, gen);
        } else {
            self.invalidate_page(pn);
        }
        ok
    }

    fn insert_uncached(&mut self, mut b: Block) -> BlockId {
        b.phys = u64::MAX - 1;
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.arena.push(Block::empty());
                (self.arena.len() - 1) as BlockId
            }
        };
        self.arena[id as usize] = b;
        // Freed again by the next uncached fetch.
        self.page_blocks.entry(u64::MAX >> 12).or_default().push(id);
        id
    }

    fn insert(&mut self, mut b: Block) -> BlockId {
        b.serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let phys = b.phys;
        if let Some(&old) = self.map.get(&phys) {
            // Same physical start decoded for another linear address or mode:
            // replace it in place, registered on the new block's pages too.
            for &(pn, _) in &b.pages[..b.npages as usize] {
                let ids = self.page_blocks.entry(pn).or_default();
                if !ids.contains(&old) {
                    ids.push(old);
                }
            }
            self.arena[old as usize] = b;
            self.fast[fast_slot(phys)] = old;
            return old;
        }
        let (pages, npages) = (b.pages, b.npages as usize);
        let id = match self.free.pop() {
            Some(id) => {
                self.arena[id as usize] = b;
                id
            }
            None => {
                self.arena.push(b);
                (self.arena.len() - 1) as BlockId
            }
        };
        for &(pn, _) in &pages[..npages] {
            self.page_blocks.entry(pn).or_default().push(id);
        }
        self.fast[fast_slot(phys)] = id;
        self.map.insert(phys, id);
        id
    }
}

impl Cpu {
    /// The decoded block at RIP, for a translator: the same lookup the interpreter
    /// does (decoding if needed, dropping blocks whose code changed). An error is
    /// the exception fetching would raise; leave it to [`Cpu::run`].
    pub fn block_at_rip(&mut self, bus: &mut dyn Bus) -> XResult<BlockId> {
        self.fetch_block(bus)
    }

    /// The block with id `id` (from [`Cpu::block_at_rip`]).
    pub fn block(&self, id: BlockId) -> &Block {
        self.blocks.block(id)
    }

    /// The VM-wide code map this vCPU uses.
    pub fn code_map(&self) -> &Arc<CodeMap> {
        &self.code
    }

    /// Returns the block starting at RIP, decoding it if needed.
    pub(crate) fn fetch_block(&mut self, bus: &mut dyn Bus) -> XResult<BlockId> {
        let lin = self.code_lin(self.rip);
        let user = self.cpl == 3;
        let phys = self.translate(bus, lin, Access::Exec, user)?;
        if let Some(b) = self.blocks.get(phys, self.rip, self.bitness) {
            let blk = self.blocks.block(b);
            if !blk.current(&self.code) {
                // Some vCPU wrote one of its pages since it was decoded.
                let stale = blk.pages;
                let n = blk.npages as usize;
                for &(pn, _) in &stale[..n] {
                    self.blocks.invalidate_page(pn);
                }
                return self.decode_block(bus, lin, phys, user);
            }
            // User code may live in pages a device wrote by DMA since they were
            // decoded (page cache reuse): re-check a page's blocks once per
            // address-space switch.
            if self.cpl != 3 || self.blocks.page_checked(phys >> 12, self.code_gen) {
                return Ok(b);
            }
            if self.blocks.verify_page(bus, phys >> 12, self.code_gen) {
                return Ok(b);
            }
        }
        self.decode_block(bus, lin, phys, user)
    }

    /// Decodes the block at RIP (linear `lin`, physical `phys`) and caches it.
    fn decode_block(
        &mut self,
        bus: &mut dyn Bus,
        lin: u64,
        phys: u64,
        user: bool,
    ) -> XResult<BlockId> {
        self.blocks.invalidate_page(u64::MAX >> 12);
        let cacheable = bus.is_ram(phys) && CodeMap::trackable(phys >> 12);
        // Mark before reading the bytes (see code_map's ordering note).
        let g0 = if cacheable {
            self.code.mark(phys >> 12)
        } else {
            0
        };
        let mut pages = [(phys >> 12, g0), (0, 0)];
        let mut npages = 1;
        let page_left = 0x1000 - (phys & 0xfff) as usize;
        let want = page_left.min(MAX_BLOCK * 8);
        let mut buf = Vec::with_capacity(want + 16);
        read_bytes(bus, phys, want, &mut buf);
        let mut insns = Vec::with_capacity(16);
        let mut extended = false;
        let mut cross_uncached = false;
        loop {
            insns.clear();
            let mut dec = Decoder::with_ip(self.bitness, &buf, self.rip, DecoderOptions::NONE);
            let mut ins = Instruction::default();
            let mut truncated = false;
            while dec.can_decode() && insns.len() < MAX_BLOCK {
                let pos = dec.position();
                dec.decode_out(&mut ins);
                if ins.is_invalid() && dec.last_error() == iced_x86::DecoderError::NoMoreBytes {
                    truncated = pos == 0;
                    break;
                }
                insns.push(ins);
                if ins.flow_control() != FlowControl::Next || ins.is_invalid() || ends_block(&ins) {
                    break;
                }
            }
            if insns.is_empty() && truncated && !extended && want == page_left {
                // The first instruction crosses into the next page.
                let next_lin = lin.wrapping_add(page_left as u64);
                let p2 = self.translate(bus, next_lin, Access::Exec, user)?;
                let cacheable2 = cacheable && bus.is_ram(p2) && CodeMap::trackable(p2 >> 12);
                let g = if cacheable2 {
                    self.code.mark(p2 >> 12)
                } else {
                    0
                };
                read_bytes(bus, p2, 16, &mut buf);
                pages[1] = (p2 >> 12, g);
                npages = 2;
                if !cacheable2 {
                    cross_uncached = true;
                }
                extended = true;
                continue;
            }
            if insns.is_empty() {
                // Could not decode anything: execute an invalid instruction (#UD).
                insns.push(Instruction::default());
            }
            break;
        }
        let end = insns
            .last()
            .map_or(0, |l| (l.next_ip().wrapping_sub(self.rip)) as usize);
        let b = Block {
            insns: std::mem::take(&mut insns),
            vstart: self.rip,
            bitness: self.bitness,
            phys,
            bytes: buf[..end.min(page_left).min(buf.len())].to_vec(),
            pages,
            npages,
            serial: 0,
        };
        if !cacheable || cross_uncached {
            // Not cacheable (ROM/MMIO): keep it in a scratch slot that is never looked up.
            return Ok(self.blocks.insert_uncached(b));
        }
        Ok(self.blocks.insert(b))
    }
}

/// Instructions after which the decode context may change.
fn ends_block(i: &Instruction) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(
        i.mnemonic(),
        M::Mov if i.op0_register().is_cr()
    ) || matches!(
        i.mnemonic(),
        M::Wrmsr
            | M::Lgdt
            | M::Lidt
            | M::Ltr
            | M::Lldt
            | M::Sti
            | M::Popf
            | M::Popfq
            | M::Invlpg
            | M::Hlt
            | M::Out
            | M::Outsb
            | M::Outsw
            | M::Outsd
            | M::In
            | M::Lmsw
            | M::Clts
    )
}

fn read_bytes(bus: &mut dyn Bus, phys: u64, n: usize, buf: &mut Vec<u8>) {
    let mut off = 0;
    while off + 8 <= n {
        buf.extend_from_slice(&bus.read(phys + off as u64, 8).to_le_bytes());
        off += 8;
    }
    while off < n {
        buf.push(bus.read(phys + off as u64, 1) as u8);
        off += 1;
    }
}
