//! Linear-to-physical translation: 4-level paging with a software TLB, and
//! the virtual-memory accessors every instruction uses.

use vmm_types::bits;

use crate::bus::Bus;
use crate::cpu::Cpu;
use crate::exception::{Exc, XResult};

const TLB_SIZE: usize = 1024;
const PTE_P: u64 = 1;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_G: u64 = 1 << 8;
const PTE_NX: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const E_USER: u8 = 1;
const E_WRITE: u8 = 2;
const E_NX: u8 = 4;
const E_DIRTY: u8 = 8;
const E_GLOBAL: u8 = 16;

/// Kind of memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    /// Linear page number + 1 (0 = invalid).
    tag: u64,
    ppage: u64,
    flags: u8,
}

/// A direct-mapped software TLB.
pub struct Tlb {
    entries: Vec<Entry>,
    /// Counts flushes, so that caches derived from translations (the
    /// translator's TLB) know when to drop theirs.
    pub epoch: u64,
    /// The last flushes: the linear address of an INVLPG, `FULL_FLUSH` or
    /// `NONGLOBAL_FLUSH`,
    /// at index `epoch % FLUSH_LOG`.
    log: [u64; FLUSH_LOG],
}

/// Flushes remembered by [`Tlb::flushes_since`].
pub const FLUSH_LOG: usize = 16;
/// A flush of every translation in the log.
pub const FULL_FLUSH: u64 = u64::MAX;
/// A flush of the non-global translations (CR3 write) in the log.
pub const NONGLOBAL_FLUSH: u64 = u64::MAX - 1;

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: vec![Entry::default(); TLB_SIZE],
            epoch: 0,
            log: [FULL_FLUSH; FLUSH_LOG],
        }
    }
}

impl Tlb {
    fn record(&mut self, what: u64) {
        self.epoch += 1;
        self.log[self.epoch as usize % FLUSH_LOG] = what;
    }

    /// The flushes after epoch `since` (INVLPG addresses or the markers), if
    /// all are still remembered.
    pub fn flushes_since(&self, since: u64) -> Option<impl Iterator<Item = u64> + '_> {
        let n = self.epoch.checked_sub(since)?;
        (n as usize <= FLUSH_LOG)
            .then(|| (since + 1..=self.epoch).map(|e| self.log[e as usize % FLUSH_LOG]))
    }

    /// Drops every translation.
    pub fn flush_all(&mut self) {
        self.record(FULL_FLUSH);
        self.entries.iter_mut().for_each(|e| e.tag = 0);
    }

    /// Drops non-global translations (CR3 write).
    pub fn flush_nonglobal(&mut self) {
        self.record(NONGLOBAL_FLUSH);
        for e in self.entries.iter_mut() {
            if e.flags & E_GLOBAL == 0 {
                e.tag = 0;
            }
        }
    }

    /// Drops the translation of one linear address (INVLPG).
    pub fn flush_page(&mut self, lin: u64) {
        self.record(lin);
        let vpn = lin >> 12;
        let e = &mut self.entries[vpn as usize % TLB_SIZE];
        if e.tag == vpn + 1 {
            e.tag = 0;
        }
        // Large pages are cached per 4K page; drop all entries of a 2M region too.
        for e in self.entries.iter_mut() {
            if e.tag != 0 && (e.tag - 1) >> 9 == vpn >> 9 {
                e.tag = 0;
            }
        }
    }
}

impl Cpu {
    fn pf(&mut self, lin: u64, present: bool, acc: Access, user: bool) -> Exc {
        let mut code = present as u32;
        if acc == Access::Write {
            code |= 2;
        }
        if user {
            code |= 4;
        }
        if acc == Access::Exec && self.efer & bits::EFER_NXE != 0 {
            code |= 16;
        }
        self.cr2 = lin;
        Exc::new(14, Some(code))
    }

    /// Translates a linear address for an access by the current privilege level
    /// without raising anything (a translator fills its own TLB with this):
    /// `None` where the access would fault. Sets accessed and dirty bits like
    /// the access itself would.
    pub fn probe(&mut self, bus: &mut dyn Bus, lin: u64, acc: Access) -> Option<u64> {
        let cr2 = self.cr2;
        let r = self.translate(bus, lin, acc, self.is_user());
        self.cr2 = cr2;
        r.ok()
    }

    /// Whether user-mode code may read `lin` (the page is a user page).
    pub fn probe_user(&mut self, bus: &mut dyn Bus, lin: u64) -> bool {
        let cr2 = self.cr2;
        let r = self.translate(bus, lin, Access::Read, true);
        self.cr2 = cr2;
        r.is_ok()
    }

    /// Whether the TLB holds `lin`'s page as a global one (survives CR3 writes).
    pub fn is_global(&self, lin: u64) -> bool {
        let vpn = lin >> 12;
        let e = self.tlb.entries[vpn as usize % TLB_SIZE];
        e.tag == vpn + 1 && e.flags & E_GLOBAL != 0
    }

    /// How many times the TLB was flushed (see [`Tlb::epoch`]).
    pub fn tlb_epoch(&self) -> u64 {
        self.tlb.epoch
    }

    /// The TLB's flushes after epoch `since`, if remembered (see
    /// [`Tlb::flushes_since`]).
    pub fn tlb_flushes_since(&self, since: u64) -> Option<Vec<u64>> {
        self.tlb.flushes_since(since).map(|f| f.collect())
    }

    /// Translates a linear address. `user` is whether the access is made with
    /// user privilege (CPL 3 and not an implicit supervisor access).
    #[inline]
    pub(crate) fn translate(
        &mut self,
        bus: &mut dyn Bus,
        lin: u64,
        acc: Access,
        user: bool,
    ) -> XResult<u64> {
        if self.cr0 & bits::CR0_PG == 0 {
            return Ok(if self.efer & bits::EFER_LMA != 0 {
                lin
            } else {
                lin & 0xffff_ffff
            });
        }
        let vpn = lin >> 12;
        let e = self.tlb.entries[vpn as usize % TLB_SIZE];
        if e.tag == vpn + 1 {
            let ok = match acc {
                Access::Read => !user || e.flags & E_USER != 0,
                Access::Write => {
                    e.flags & E_DIRTY != 0
                        && (!user || e.flags & E_USER != 0)
                        && (e.flags & E_WRITE != 0 || (!user && self.cr0 & bits::CR0_WP == 0))
                }
                Access::Exec => e.flags & E_NX == 0 && (!user || e.flags & E_USER != 0),
            };
            if ok {
                return Ok(e.ppage | (lin & 0xfff));
            }
        }
        self.walk(bus, lin, acc, user)
    }

    fn walk(&mut self, bus: &mut dyn Bus, lin: u64, acc: Access, user: bool) -> XResult<u64> {
        if self.cr4 & bits::CR4_PAE == 0 || self.efer & bits::EFER_LMA == 0 {
            return self.walk_legacy(bus, lin, acc, user);
        }
        // Canonical check.
        if ((lin as i64) << 16 >> 16) as u64 != lin {
            return Err(Exc::gp(0));
        }
        let nxe = self.efer & bits::EFER_NXE != 0;
        let mut table = self.cr3 & ADDR_MASK;
        let mut rw = true;
        let mut us = true;
        let mut nx = false;
        let mut level = 4;
        let mut entry_addrs = [0u64; 4];
        let mut n = 0;
        let (ppage_base, page_mask, last_addr, last) = loop {
            let shift = 12 + 9 * (level - 1);
            let idx = (lin >> shift) & 511;
            let ea = table + idx * 8;
            let pte = bus.read(ea, 8);
            if pte & PTE_P == 0 {
                return Err(self.pf(lin, false, acc, user));
            }
            rw &= pte & PTE_RW != 0;
            us &= pte & PTE_US != 0;
            if nxe {
                nx |= pte & PTE_NX != 0;
            }
            if level == 1 || (level <= 3 && pte & PTE_PS != 0) {
                let pmask = (1u64 << shift) - 1;
                break ((pte & ADDR_MASK) & !pmask, pmask, ea, pte);
            }
            entry_addrs[n] = ea;
            n += 1;
            table = pte & ADDR_MASK;
            level -= 1;
        };
        // Permission checks.
        let wp = self.cr0 & bits::CR0_WP != 0;
        let denied = (user && !us)
            || (acc == Access::Write && !rw && (user || wp))
            || (acc == Access::Exec && nx);
        if denied {
            return Err(self.pf(lin, true, acc, user));
        }
        // Accessed bits on the upper levels, accessed/dirty on the leaf.
        for &ea in &entry_addrs[..n] {
            let v = bus.read(ea, 8);
            if v & PTE_A == 0 {
                bus.write(ea, 8, v | PTE_A);
            }
        }
        let mut leaf = last | PTE_A;
        if acc == Access::Write {
            leaf |= PTE_D;
        }
        if leaf != last {
            bus.write(last_addr, 8, leaf);
        }
        let phys = ppage_base | (lin & page_mask);
        let mut flags = 0;
        if us {
            flags |= E_USER;
        }
        if rw {
            flags |= E_WRITE;
        }
        if nx {
            flags |= E_NX;
        }
        if leaf & PTE_D != 0 {
            flags |= E_DIRTY;
        }
        if leaf & PTE_G != 0 && self.cr4 & bits::CR4_PGE != 0 {
            flags |= E_GLOBAL;
        }
        let vpn = lin >> 12;
        self.tlb.entries[vpn as usize % TLB_SIZE] = Entry {
            tag: vpn + 1,
            ppage: phys & !0xfff,
            flags,
        };
        Ok(phys)
    }

    /// 32-bit paging without PAE (and PAE outside long mode), used only by
    /// mode-switch trampolines; no TLB caching.
    fn walk_legacy(
        &mut self,
        bus: &mut dyn Bus,
        lin: u64,
        acc: Access,
        user: bool,
    ) -> XResult<u64> {
        let lin = lin & 0xffff_ffff;
        if self.cr4 & bits::CR4_PAE != 0 {
            let pdpte = bus.read((self.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8, 8);
            if pdpte & PTE_P == 0 {
                return Err(self.pf(lin, false, acc, user));
            }
            let pde_a = (pdpte & ADDR_MASK) + ((lin >> 21) & 511) * 8;
            let pde = bus.read(pde_a, 8);
            if pde & PTE_P == 0 {
                return Err(self.pf(lin, false, acc, user));
            }
            if pde & PTE_PS != 0 {
                return Ok((pde & ADDR_MASK & !0x1f_ffff) | (lin & 0x1f_ffff));
            }
            let pte = bus.read((pde & ADDR_MASK) + ((lin >> 12) & 511) * 8, 8);
            if pte & PTE_P == 0 {
                return Err(self.pf(lin, false, acc, user));
            }
            return Ok((pte & ADDR_MASK) | (lin & 0xfff));
        }
        let pde = bus.read((self.cr3 & 0xffff_f000) + ((lin >> 22) & 1023) * 4, 4);
        if pde & PTE_P == 0 {
            return Err(self.pf(lin, false, acc, user));
        }
        if pde & PTE_PS != 0 && self.cr4 & bits::CR4_PSE != 0 {
            return Ok((pde & 0xffc0_0000) | (lin & 0x3f_ffff));
        }
        let pte = bus.read((pde & 0xffff_f000) + ((lin >> 12) & 1023) * 4, 4);
        if pte & PTE_P == 0 {
            return Err(self.pf(lin, false, acc, user));
        }
        Ok((pte & 0xffff_f000) | (lin & 0xfff))
    }

    #[inline]
    fn is_user(&self) -> bool {
        self.cpl == 3
    }

    /// Reads `size` bytes at a linear address with the current privilege.
    #[inline]
    pub(crate) fn read_lin(&mut self, bus: &mut dyn Bus, lin: u64, size: usize) -> XResult<u64> {
        let user = self.is_user();
        self.read_lin_as(bus, lin, size, user)
    }

    /// Reads with explicit privilege (`user = false` for implicit supervisor accesses).
    pub(crate) fn read_lin_as(
        &mut self,
        bus: &mut dyn Bus,
        lin: u64,
        size: usize,
        user: bool,
    ) -> XResult<u64> {
        if (lin & 0xfff) + size as u64 <= 0x1000 {
            let p = self.translate(bus, lin, Access::Read, user)?;
            Ok(bus.read(p, size))
        } else {
            let first = (0x1000 - (lin & 0xfff)) as usize;
            let p1 = self.translate(bus, lin, Access::Read, user)?;
            let p2 = self.translate(bus, lin.wrapping_add(first as u64), Access::Read, user)?;
            let mut v = 0u64;
            for k in 0..size {
                let b = if k < first {
                    bus.read(p1 + k as u64, 1)
                } else {
                    bus.read(p2 + (k - first) as u64, 1)
                };
                v |= b << (8 * k);
            }
            Ok(v)
        }
    }

    /// Writes `size` bytes at a linear address with the current privilege.
    #[inline]
    pub(crate) fn write_lin(
        &mut self,
        bus: &mut dyn Bus,
        lin: u64,
        size: usize,
        val: u64,
    ) -> XResult<()> {
        let user = self.is_user();
        self.write_lin_as(bus, lin, size, val, user)
    }

    /// Writes with explicit privilege.
    pub(crate) fn write_lin_as(
        &mut self,
        bus: &mut dyn Bus,
        lin: u64,
        size: usize,
        val: u64,
        user: bool,
    ) -> XResult<()> {
        if (lin & 0xfff) + size as u64 <= 0x1000 {
            let p = self.translate(bus, lin, Access::Write, user)?;
            bus.write(p, size, val);
            self.code_write_check(p);
        } else {
            let first = (0x1000 - (lin & 0xfff)) as usize;
            let p1 = self.translate(bus, lin, Access::Write, user)?;
            let p2 = self.translate(bus, lin.wrapping_add(first as u64), Access::Write, user)?;
            for k in 0..size {
                let b = (val >> (8 * k)) & 0xff;
                if k < first {
                    bus.write(p1 + k as u64, 1, b);
                } else {
                    bus.write(p2 + (k - first) as u64, 1, b);
                }
            }
            self.code_write_check(p1);
            self.code_write_check(p2);
        }
        Ok(())
    }

    /// Reads 16 bytes (SSE operands).
    pub(crate) fn read_lin128(&mut self, bus: &mut dyn Bus, lin: u64) -> XResult<u128> {
        let lo = self.read_lin(bus, lin, 8)?;
        let hi = self.read_lin(bus, lin.wrapping_add(8), 8)?;
        Ok(lo as u128 | (hi as u128) << 64)
    }

    /// Writes 16 bytes (SSE operands).
    pub(crate) fn write_lin128(&mut self, bus: &mut dyn Bus, lin: u64, v: u128) -> XResult<()> {
        // Probe both halves first so a fault leaves memory unchanged.
        let user = self.is_user();
        self.translate(bus, lin, Access::Write, user)?;
        self.translate(bus, lin.wrapping_add(15), Access::Write, user)?;
        self.write_lin(bus, lin, 8, v as u64)?;
        self.write_lin(bus, lin.wrapping_add(8), 8, (v >> 64) as u64)
    }

    /// Atomic read-modify-write at a linear address; returns the old value.
    pub(crate) fn rmw_lin(
        &mut self,
        bus: &mut dyn Bus,
        lin: u64,
        size: usize,
        f: &mut dyn FnMut(u64) -> u64,
    ) -> XResult<u64> {
        if (lin & 0xfff) + size as u64 <= 0x1000 && lin % size as u64 == 0 {
            let user = self.is_user();
            let p = self.translate(bus, lin, Access::Write, user)?;
            let old = bus.atomic_rmw(p, size, f);
            self.code_write_check(p);
            Ok(old)
        } else {
            // Split or misaligned locked access: not atomic against other vCPUs.
            let user = self.is_user();
            self.translate(bus, lin, Access::Write, user)?;
            let old = self.read_lin(bus, lin, size)?;
            let new = f(old);
            self.write_lin(bus, lin, size, new)?;
            Ok(old)
        }
    }

    /// Records a write in the VM-wide code map (after the bytes are stored): when
    /// the page holds decoded code, every vCPU's blocks of it become stale; this
    /// vCPU drops its own now and ends the current block.
    #[inline]
    pub(crate) fn code_write_check(&mut self, phys: u64) {
        if self.code.written(phys >> 12) {
            self.blocks.invalidate_page(phys >> 12);
            self.break_block = true;
        }
    }
}
