//! Running a snippet's bytes in the emulator (`x86_emu::Cpu`) from the same starting
//! [`Machine`] state as the native run, to compare the two.
//!
//! The emulated machine: flat RAM, long mode at CPL0 with identity-mapped 2 MiB pages,
//! the snippet at `CODE` followed by HLT, the scratch memory at `DATA`. RSI and RDI, the
//! pointer registers by convention, are moved from the native scratch memory to `DATA`
//! (and back for comparison) when they point into it.

use super::{Machine, RDI, RSI, RSP};
use vmm_types::{bits, CpuState, DescriptorTable, Segment};
use x86_emu::x87::fxsave::{fxrstor_parse, fxsave_image};
use x86_emu::{Bus, Cpu, StopReason};

const RAM: usize = 4 << 20;
const PML4: u64 = 0x1000;
/// Guest address of the snippet.
pub const CODE: u64 = 0x10_0000;
/// Guest RSP.
pub const STACK: u64 = 0x20_0000;
/// Guest address of the scratch memory.
pub const DATA: u64 = 0x30_0000;
const GDT: u64 = 0x5000;
const IDT: u64 = 0x6000;
/// One HLT per exception vector: an exception ends the run at `HANDLERS + vector + 1`.
const HANDLERS: u64 = 0x18_0000;

/// Flat RAM behind the emulator's bus.
struct FlatBus {
    ram: Vec<u8>,
}

impl Bus for FlatBus {
    fn read(&mut self, addr: u64, size: usize) -> u64 {
        let a = addr as usize;
        if a.checked_add(size).is_none_or(|e| e > self.ram.len()) {
            return u64::MAX;
        }
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&self.ram[a..a + size]);
        u64::from_le_bytes(b)
    }
    fn write(&mut self, addr: u64, size: usize, val: u64) {
        let a = addr as usize;
        if a.checked_add(size).is_some_and(|e| e <= self.ram.len()) {
            self.ram[a..a + size].copy_from_slice(&val.to_le_bytes()[..size]);
        }
    }
    fn atomic_rmw(&mut self, addr: u64, size: usize, f: &mut dyn FnMut(u64) -> u64) -> u64 {
        let old = self.read(addr, size);
        let new = f(old);
        self.write(addr, size, new);
        old
    }
    fn is_ram(&mut self, addr: u64) -> bool {
        (addr as usize) < self.ram.len()
    }
    fn io_in(&mut self, _port: u16, _size: usize) -> u32 {
        u32::MAX
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
    fn host_addr(&mut self, addr: u64) -> Option<usize> {
        ((addr as usize) < self.ram.len()).then(|| self.ram.as_mut_ptr() as usize + addr as usize)
    }
}

/// The state an emulated run ends in, in the native harness' terms.
pub struct EmuResult {
    /// GPRs, pointers into the scratch memory translated to the native addresses.
    pub gpr: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
    /// The FXSAVE image of the final x87/SSE state.
    pub fx: [u8; 512],
    /// The scratch memory.
    pub mem: [u8; 1024],
}

fn to_guest(m: &Machine, v: u64) -> u64 {
    let base = m.mem_addr(0);
    if (base..base + 1024).contains(&v) {
        v - base + DATA
    } else {
        v
    }
}

fn to_host(m: &Machine, v: u64) -> u64 {
    if (DATA..DATA + 1024).contains(&v) {
        v - DATA + m.mem_addr(0)
    } else {
        v
    }
}

/// Runs `body` in the emulator from `m`'s state (RSP excepted), through the
/// translator (`jit`, translating every block the first time) or the interpreter
/// alone. `Err` describes an emulator stop other than reaching the trailing HLT (an
/// exception it raised, an unimplemented instruction...).
pub fn run_emulated(body: &[u8], m: &Machine, jit: bool) -> Result<EmuResult, String> {
    let mut bus = FlatBus { ram: vec![0; RAM] };
    let code = CODE as usize;
    bus.ram[code..code + body.len()].copy_from_slice(body);
    bus.ram[code + body.len()] = 0xf4; // hlt
    let data = DATA as usize;
    bus.ram[data..data + 1024].copy_from_slice(&m.mem);
    bus.write(PML4, 8, 0x2000 | 7);
    bus.write(0x2000, 8, 0x3000 | 7);
    for k in 0..(RAM as u64 >> 21) {
        bus.write(0x3000 + k * 8, 8, (k << 21) | 0x87);
    }
    for v in 0..32u64 {
        let h = HANDLERS + v;
        bus.ram[h as usize] = 0xf4;
        let lo = (h & 0xffff) | (8 << 16) | (0x8e << 40) | (((h >> 16) & 0xffff) << 48);
        bus.write(IDT + 16 * v, 8, lo);
        bus.write(IDT + 16 * v + 8, 8, h >> 32);
    }
    bus.write(GDT + 8, 8, Segment::code64(8).to_gdt_entry());
    bus.write(GDT + 16, 8, Segment::data(0x10).to_gdt_entry());

    let mut s = CpuState::default();
    let mut gprs = m.gpr;
    for r in [RSI, RDI] {
        gprs[r] = to_guest(m, gprs[r]);
    }
    gprs[RSP] = STACK;
    s.regs.set_gprs(gprs);
    s.regs.rip = CODE;
    s.regs.rflags = (m.rflags & super::STATUS_FLAGS) | 2;
    s.sregs.cs = Segment::code64(8);
    for seg in [
        &mut s.sregs.ds,
        &mut s.sregs.es,
        &mut s.sregs.ss,
        &mut s.sregs.fs,
        &mut s.sregs.gs,
    ] {
        *seg = Segment::data(0x10);
    }
    s.sregs.tr = Segment::tss(0x18, 0, 0x67);
    s.sregs.gdt = DescriptorTable {
        base: GDT,
        limit: 0x1f,
    };
    s.sregs.idt = DescriptorTable {
        base: IDT,
        limit: 0xfff,
    };
    s.sregs.cr0 = bits::CR0_PE | bits::CR0_PG | bits::CR0_ET | bits::CR0_WP | bits::CR0_NE;
    s.sregs.cr3 = PML4;
    s.sregs.cr4 = bits::CR4_PAE | bits::CR4_OSFXSR | bits::CR4_OSXMMEXCPT;
    s.sregs.efer = bits::EFER_LME | bits::EFER_LMA | bits::EFER_NXE | bits::EFER_SCE;
    s.fpu = fxrstor_parse(&m.fx, true).map_err(|e| e.to_string())?;

    let mut cpu = Cpu::new(0);
    cpu.set_state(&s);
    // POPF, STI, I/O... end a run early with `Yield`; keep going up to a budget.
    let mut stop = StopReason::Yield;
    let mut jit = jit.then(|| {
        let mut j = x86_jit::Jit::new(None).expect("translator");
        j.set_hot_threshold(1);
        j
    });
    for _ in 0..100 {
        stop = match jit.as_mut() {
            Some(j) => j.run(&mut cpu, &mut bus, 10_000),
            None => cpu.run(&mut bus, 10_000),
        };
        if stop != StopReason::Yield {
            break;
        }
    }
    let out = cpu.state();
    let end = CODE + body.len() as u64 + 1;
    if stop == StopReason::Halted && (HANDLERS + 1..=HANDLERS + 32).contains(&out.regs.rip) {
        let vector = out.regs.rip - HANDLERS - 1;
        return Err(format!("the emulator raised exception vector {vector}"));
    }
    if stop != StopReason::Halted || out.regs.rip != end {
        return Err(format!(
            "emulator stopped with {stop:?} at rip {:#x} (expected HLT at {:#x})",
            out.regs.rip,
            end - 1
        ));
    }
    let mut mem = [0u8; 1024];
    mem.copy_from_slice(&bus.ram[data..data + 1024]);
    Ok(EmuResult {
        gpr: {
            let mut g = out.regs.gprs();
            for r in [RSI, RDI] {
                g[r] = to_host(m, g[r]);
            }
            g
        },
        rflags: out.regs.rflags,
        fx: fxsave_image(&out.fpu, true),
        mem,
    })
}
