//! The x86-emu [`Bus`] of one vCPU: guest RAM through vm-memory, the local
//! APIC and IOAPIC MMIO windows, the PIC/PIT ports, and everything else
//! through the VMM's [`IoHandler`].

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use accel::IoHandler;
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion, VolatileMemory, VolatileSlice};
use vmm_types::dirty::DirtyLog;
use vmm_types::msr;
use x86_emu::Bus;

use crate::irqchip::lapic::LapicAction;
use crate::vm::{lock, Shared, IOAPIC_BASE, IOAPIC_SIZE};

/// A RAM region as a volatile slice, for fast lookups.
struct Ram<'a> {
    start: u64,
    len: u64,
    slice: VolatileSlice<'a, ()>,
}

/// One vCPU's view of the machine during a `run` slice.
pub(crate) struct EmuBus<'a> {
    pub shared: &'a Shared,
    pub io: &'a dyn IoHandler,
    pub idx: usize,
    /// Base of this vCPU's LAPIC window (cached; updated on APIC base writes).
    pub lapic_base: u64,
    ram: Vec<Ram<'a>>,
    /// Where stores are logged during a live migration (taken at the start of `run`:
    /// logging is switched with every vCPU outside it).
    dirty: Option<Arc<DirtyLog>>,
}

impl<'a> EmuBus<'a> {
    pub fn new(shared: &'a Shared, io: &'a dyn IoHandler, idx: usize, lapic_base: u64) -> Self {
        let ram = shared
            .mem
            .iter()
            .filter_map(|r| {
                let slice = r.as_volatile_slice().ok()?;
                Some(Ram {
                    start: r.start_addr().0,
                    len: r.len(),
                    slice,
                })
            })
            .collect();
        EmuBus {
            shared,
            io,
            idx,
            lapic_base,
            ram,
            dirty: lock(&shared.dirty).clone(),
        }
    }

    /// The RAM slice and offset holding `[addr, addr + size)`, if it is RAM.
    #[inline]
    fn ram(&self, addr: u64, size: usize) -> Option<(&VolatileSlice<'a, ()>, usize)> {
        for r in &self.ram {
            let off = addr.wrapping_sub(r.start);
            if off < r.len && off + size as u64 <= r.len {
                return Some((&r.slice, off as usize));
            }
        }
        None
    }

    fn lapic_action(&self, a: Option<LapicAction>) {
        match a {
            Some(LapicAction::SendIpi(ipi)) => self.shared.send_ipi(&ipi, self.idx),
            Some(LapicAction::Eoi { vector }) => self.shared.eoi(vector),
            None => {}
        }
    }

    fn mmio_read(&mut self, addr: u64, size: usize) -> u64 {
        if addr & !0xfff == self.lapic_base {
            let now = self.shared.now_ns();
            let l = lock(&self.shared.cpus[self.idx].lapic);
            let v = l.read((addr & 0xff0) as u32, now) as u64;
            return (v >> ((addr & 3) * 8)) & size_mask(size);
        }
        if (IOAPIC_BASE..IOAPIC_BASE + IOAPIC_SIZE).contains(&addr) {
            let v = lock(&self.shared.platform)
                .ioapic
                .mmio_read(addr - IOAPIC_BASE) as u64;
            return v & size_mask(size);
        }
        let mut buf = [0xffu8; 8];
        self.io.mmio_read(addr, &mut buf[..size]);
        u64::from_le_bytes(buf) & size_mask(size)
    }

    fn mmio_write(&mut self, addr: u64, size: usize, val: u64) {
        if addr & !0xfff == self.lapic_base {
            let now = self.shared.now_ns();
            let action = lock(&self.shared.cpus[self.idx].lapic).write(
                (addr & 0xff0) as u32,
                val as u32,
                now,
            );
            self.lapic_action(action);
            return;
        }
        if (IOAPIC_BASE..IOAPIC_BASE + IOAPIC_SIZE).contains(&addr) {
            let ds = lock(&self.shared.platform)
                .ioapic
                .mmio_write(addr - IOAPIC_BASE, val as u32);
            for d in ds {
                self.shared.deliver(&d);
            }
            return;
        }
        self.io.mmio_write(addr, &val.to_le_bytes()[..size]);
    }
}

fn size_mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

fn cas_loop<A, T>(
    a: &A,
    f: &mut dyn FnMut(u64) -> u64,
    load: impl Fn(&A) -> T,
    cas: impl Fn(&A, T, T) -> Result<T, T>,
) -> u64
where
    T: Copy + Into<u64> + TryFrom<u64>,
{
    let mut cur = load(a);
    loop {
        let new_u = f(cur.into());
        let new = match T::try_from(new_u) {
            Ok(v) => v,
            Err(_) => return cur.into(),
        };
        match cas(a, cur, new) {
            Ok(_) => return cur.into(),
            Err(actual) => cur = actual,
        }
    }
}

impl Bus for EmuBus<'_> {
    #[inline]
    fn read(&mut self, addr: u64, size: usize) -> u64 {
        if let Some((s, off)) = self.ram(addr, size) {
            if addr % size as u64 == 0 {
                let r = match size {
                    1 => s.load::<u8>(off, Ordering::Relaxed).map(u64::from),
                    2 => s.load::<u16>(off, Ordering::Relaxed).map(u64::from),
                    4 => s.load::<u32>(off, Ordering::Relaxed).map(u64::from),
                    _ => s.load::<u64>(off, Ordering::Relaxed),
                };
                if let Ok(v) = r {
                    return v;
                }
            }
            let mut buf = [0u8; 8];
            if s.read_slice(&mut buf[..size], off).is_ok() {
                return u64::from_le_bytes(buf);
            }
        }
        self.mmio_read(addr, size)
    }

    #[inline]
    fn write(&mut self, addr: u64, size: usize, val: u64) {
        if let Some(d) = &self.dirty {
            d.mark_page(addr);
        }
        if let Some((s, off)) = self.ram(addr, size) {
            if addr % size as u64 == 0 {
                let r = match size {
                    1 => s.store(val as u8, off, Ordering::Relaxed),
                    2 => s.store(val as u16, off, Ordering::Relaxed),
                    4 => s.store(val as u32, off, Ordering::Relaxed),
                    _ => s.store(val, off, Ordering::Relaxed),
                };
                if r.is_ok() {
                    return;
                }
            }
            if s.write_slice(&val.to_le_bytes()[..size], off).is_ok() {
                return;
            }
        }
        self.mmio_write(addr, size, val);
    }

    fn atomic_rmw(&mut self, addr: u64, size: usize, f: &mut dyn FnMut(u64) -> u64) -> u64 {
        if let Some(d) = &self.dirty {
            d.mark_page(addr);
        }
        if addr % size as u64 == 0 {
            if let Some(slice) = self
                .ram(addr, size)
                .and_then(|(s, off)| s.subslice(off, size).ok())
            {
                let done = match size {
                    1 => slice.get_atomic_ref::<AtomicU8>(0).ok().map(|a| {
                        cas_loop(
                            a,
                            f,
                            |a| a.load(Ordering::SeqCst),
                            |a, c, n| a.compare_exchange(c, n, Ordering::SeqCst, Ordering::SeqCst),
                        )
                    }),
                    2 => slice.get_atomic_ref::<AtomicU16>(0).ok().map(|a| {
                        cas_loop(
                            a,
                            f,
                            |a| a.load(Ordering::SeqCst),
                            |a, c, n| a.compare_exchange(c, n, Ordering::SeqCst, Ordering::SeqCst),
                        )
                    }),
                    4 => slice.get_atomic_ref::<AtomicU32>(0).ok().map(|a| {
                        cas_loop(
                            a,
                            f,
                            |a| a.load(Ordering::SeqCst),
                            |a, c, n| a.compare_exchange(c, n, Ordering::SeqCst, Ordering::SeqCst),
                        )
                    }),
                    _ => slice.get_atomic_ref::<AtomicU64>(0).ok().map(|a| {
                        cas_loop(
                            a,
                            f,
                            |a| a.load(Ordering::SeqCst),
                            |a, c, n| a.compare_exchange(c, n, Ordering::SeqCst, Ordering::SeqCst),
                        )
                    }),
                };
                if let Some(old) = done {
                    return old;
                }
            }
        }
        // Misaligned or not RAM: serialize against other split locks.
        let _g = lock(&self.shared.split_lock);
        let old = self.read(addr, size);
        let new = f(old);
        self.write(addr, size, new);
        old
    }

    fn is_ram(&mut self, addr: u64) -> bool {
        self.ram(addr, 1).is_some()
    }

    fn read_bytes(&mut self, addr: u64, buf: &mut [u8]) {
        match self.ram(addr, buf.len()) {
            Some((s, off)) if s.read_slice(buf, off).is_ok() => {}
            _ => buf
                .iter_mut()
                .enumerate()
                .for_each(|(k, b)| *b = self.read(addr + k as u64, 1) as u8),
        }
    }

    fn write_bytes(&mut self, addr: u64, data: &[u8]) {
        if let Some(d) = &self.dirty {
            d.mark(addr, data.len() as u64);
        }
        match self.ram(addr, data.len()) {
            Some((s, off)) if s.write_slice(data, off).is_ok() => {}
            _ => data
                .iter()
                .enumerate()
                .for_each(|(k, &b)| self.write(addr + k as u64, 1, b as u64)),
        }
    }

    fn note_write_page(&mut self, addr: u64) {
        if let Some(d) = &self.dirty {
            d.mark_page(addr);
        }
    }

    fn host_addr(&mut self, addr: u64) -> Option<usize> {
        let page = addr & !0xfff;
        let (s, off) = self.ram(page, 0x1000)?;
        // The slice maps guest RAM for the VM's lifetime (vm-memory's mmap backend
        // never moves or unmaps a region while the GuestMemory exists).
        Some(s.ptr_guard_mut().as_ptr() as usize + off + (addr & 0xfff) as usize)
    }

    fn io_in(&mut self, port: u16, size: usize) -> u32 {
        match port {
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => {
                let mut p = lock(&self.shared.platform);
                let mut v = 0u32;
                for k in 0..size {
                    v |= (p.pic.io_read(port + k as u16) as u32) << (8 * k);
                }
                v
            }
            0x40..=0x43 | 0x61 => {
                let now = self.shared.now_ns();
                lock(&self.shared.platform).pit.io_read(port, now) as u32
                    | if size > 1 {
                        0xffff_ff00 & size_mask(size) as u32
                    } else {
                        0
                    }
            }
            _ => {
                let mut buf = [0xffu8; 4];
                self.io.pio_read(port, &mut buf[..size]);
                u32::from_le_bytes(buf) & size_mask(size) as u32
            }
        }
    }

    fn io_out(&mut self, port: u16, size: usize, val: u32) {
        match port {
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => {
                let mut p = lock(&self.shared.platform);
                for k in 0..size {
                    p.pic.io_write(port + k as u16, (val >> (8 * k)) as u8);
                }
            }
            0x40..=0x43 | 0x61 => {
                let now = self.shared.now_ns();
                lock(&self.shared.platform)
                    .pit
                    .io_write(port, val as u8, now);
            }
            _ => self.io.pio_write(port, &val.to_le_bytes()[..size]),
        }
    }

    fn tsc(&mut self) -> u64 {
        // 1 GHz nominal: the TSC counts nanoseconds since the VM started.
        self.shared.now_ns()
    }

    fn rdmsr(&mut self, idx: u32) -> Option<u64> {
        let l = lock(&self.shared.cpus[self.idx].lapic);
        match idx {
            msr::IA32_APIC_BASE => Some(l.apic_base()),
            msr::IA32_TSC_DEADLINE => Some(l.tsc_deadline_ns().unwrap_or(0)),
            _ => None,
        }
    }

    fn wrmsr(&mut self, idx: u32, val: u64) -> bool {
        let mut l = lock(&self.shared.cpus[self.idx].lapic);
        match idx {
            msr::IA32_APIC_BASE => {
                if l.set_apic_base(val).is_err() {
                    return false;
                }
                self.lapic_base = l.base_address();
                true
            }
            msr::IA32_TSC_DEADLINE => {
                l.set_tsc_deadline_ns(if val == 0 { None } else { Some(val) });
                true
            }
            _ => false,
        }
    }

    fn cr8(&mut self) -> u64 {
        lock(&self.shared.cpus[self.idx].lapic).cr8()
    }

    fn set_cr8(&mut self, val: u64) {
        lock(&self.shared.cpus[self.idx].lapic).set_cr8(val);
    }
}
