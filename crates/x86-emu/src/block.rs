//! Decoded basic blocks, cached by physical address.
//!
//! Decoding is separate from execution: a block is a list of iced-x86
//! instructions that an interpreter (or later a JIT) runs. A write to a page
//! holding cached code drops that page's blocks.

use std::collections::HashMap;
use std::sync::Arc;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

use crate::bus::Bus;
use crate::cpu::Cpu;
use crate::exception::XResult;
use crate::mmu::Access;

/// Longest block, in instructions.
const MAX_BLOCK: usize = 48;
const FAST_SIZE: usize = 4096;

/// A decoded straight-line run of instructions.
pub struct Block {
    pub insns: Vec<Instruction>,
    /// Linear address the block was decoded at (RIP-relative operands depend on it).
    pub vstart: u64,
    pub bitness: u32,
    pub phys: u64,
}

/// Physical-address keyed cache of decoded blocks.
pub struct BlockCache {
    map: HashMap<u64, Arc<Block>>,
    fast: Vec<Option<Arc<Block>>>,
    code_pages: Vec<u64>,
    page_blocks: HashMap<u64, Vec<u64>>,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache { map: HashMap::new(), fast: vec![None; FAST_SIZE], code_pages: Vec::new(), page_blocks: HashMap::new() }
    }
}

impl BlockCache {
    /// Drops every block.
    pub fn clear(&mut self) {
        self.map.clear();
        self.fast.iter_mut().for_each(|e| *e = None);
        self.code_pages.iter_mut().for_each(|w| *w = 0);
        self.page_blocks.clear();
    }

    /// Whether physical page `pn` holds cached code.
    #[inline]
    pub fn is_code_page(&self, pn: u64) -> bool {
        let w = (pn / 64) as usize;
        w < self.code_pages.len() && self.code_pages[w] & (1 << (pn % 64)) != 0
    }

    fn mark(&mut self, pn: u64, start: u64) {
        let w = (pn / 64) as usize;
        if w >= 1 << 26 {
            return;
        }
        if w >= self.code_pages.len() {
            self.code_pages.resize(w + 1, 0);
        }
        self.code_pages[w] |= 1 << (pn % 64);
        self.page_blocks.entry(pn).or_default().push(start);
    }

    /// Drops the blocks that touch physical page `pn`.
    pub fn invalidate_page(&mut self, pn: u64) {
        let w = (pn / 64) as usize;
        if w < self.code_pages.len() {
            self.code_pages[w] &= !(1 << (pn % 64));
        }
        if let Some(starts) = self.page_blocks.remove(&pn) {
            for s in starts {
                self.map.remove(&s);
                let slot = &mut self.fast[(s as usize) % FAST_SIZE];
                if slot.as_ref().is_some_and(|b| b.phys == s) {
                    *slot = None;
                }
            }
        }
    }

    #[inline]
    fn get(&mut self, phys: u64, vstart: u64, bitness: u32) -> Option<Arc<Block>> {
        let slot = (phys as usize) % FAST_SIZE;
        if let Some(b) = &self.fast[slot] {
            if b.phys == phys && b.vstart == vstart && b.bitness == bitness {
                return Some(b.clone());
            }
        }
        let b = self.map.get(&phys)?;
        if b.vstart == vstart && b.bitness == bitness {
            self.fast[slot] = Some(b.clone());
            return Some(b.clone());
        }
        None
    }

    fn insert(&mut self, b: Arc<Block>, pages: &[u64]) {
        for &p in pages {
            self.mark(p, b.phys);
        }
        self.fast[(b.phys as usize) % FAST_SIZE] = Some(b.clone());
        self.map.insert(b.phys, b);
    }
}

impl Cpu {
    /// Returns the block starting at RIP, decoding it if needed.
    pub(crate) fn fetch_block(&mut self, bus: &mut dyn Bus) -> XResult<Arc<Block>> {
        let lin = self.code_lin(self.rip);
        let user = self.cpl == 3;
        let phys = self.translate(bus, lin, Access::Exec, user)?;
        if let Some(b) = self.blocks.get(phys, self.rip, self.bitness) {
            return Ok(b);
        }
        let page_left = 0x1000 - (phys & 0xfff) as usize;
        let want = page_left.min(MAX_BLOCK * 8);
        let mut buf = Vec::with_capacity(want + 16);
        read_bytes(bus, phys, want, &mut buf);
        let mut pages = vec![phys >> 12];
        let mut insns = Vec::with_capacity(16);
        let mut extended = false;
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
                read_bytes(bus, p2, 16, &mut buf);
                pages.push(p2 >> 12);
                extended = true;
                continue;
            }
            if insns.is_empty() {
                // Could not decode anything: execute an invalid instruction (#UD).
                insns.push(Instruction::default());
            }
            break;
        }
        let b = Arc::new(Block { insns: std::mem::take(&mut insns), vstart: self.rip, bitness: self.bitness, phys });
        if bus.is_ram(phys) {
            self.blocks.insert(b.clone(), &pages);
        }
        Ok(b)
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
        M::Wrmsr | M::Lgdt | M::Lidt | M::Ltr | M::Lldt | M::Sti | M::Popf | M::Popfq | M::Invlpg | M::Hlt | M::Out | M::Outsb | M::Outsw | M::Outsd | M::In | M::Lmsw | M::Clts
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
