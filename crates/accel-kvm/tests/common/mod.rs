//! A minimal machine for running test guests directly on `accel-kvm`: guest RAM,
//! hand-built boot state for the 64-bit Linux boot protocol entry (boot_params,
//! GDT, identity-mapped page tables) and an I/O handler with a COM1 that collects
//! output, port 0x80 that counts writes, and the i8042 reset.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accel::{GuestMemory, IoHandler, Vcpu, VcpuExit, VcpuKick, Vm};
use accel_kvm::KvmVm;
use vm_memory::{Bytes, GuestAddress};
use vmm_types::{bits, CpuState, DescriptorTable, Regs, Segment, SpecialRegs};

pub const BOOT_PARAMS: u64 = 0x7000;
pub const CMDLINE: u64 = 0x2_0000;
pub const GDT: u64 = 0x500;
pub const PML4: u64 = 0x9000;
pub const STACK_TOP: u64 = 0x8ff0;

/// Whether this host can run the tests at all.
pub fn have_kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("skipped: /dev/kvm is not usable on this host");
    }
    ok
}

pub fn memory(size: usize) -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

/// Writes page tables identity-mapping the first 4 GiB, a flat GDT, boot_params
/// with the command line, and returns the boot CPU's state entering at `entry`.
pub fn boot_state(mem: &GuestMemory, entry: u64, cmdline: &str) -> CpuState {
    let pdpt = PML4 + 0x1000;
    let pd = PML4 + 0x2000;
    mem.write_obj(pdpt | 3, GuestAddress(PML4)).unwrap();
    for g in 0..4u64 {
        mem.write_obj((pd + g * 0x1000) | 3, GuestAddress(pdpt + g * 8))
            .unwrap();
    }
    for i in 0..2048u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(pd + i * 8))
            .unwrap();
    }
    let gdt = [
        0u64,
        0,
        Segment::code64(0x10).to_gdt_entry(),
        Segment::data(0x18).to_gdt_entry(),
    ];
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT + 8 * i as u64)).unwrap();
    }
    mem.write_slice(&[0u8; 4096], GuestAddress(BOOT_PARAMS))
        .unwrap();
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    mem.write_slice(&c, GuestAddress(CMDLINE)).unwrap();
    mem.write_obj(CMDLINE as u32, GuestAddress(BOOT_PARAMS + 0x228))
        .unwrap();
    mem.write_obj(0u32, GuestAddress(BOOT_PARAMS + 0xc8))
        .unwrap();

    let data = Segment::data(0x18);
    CpuState {
        regs: Regs {
            rip: entry,
            rsi: BOOT_PARAMS,
            rsp: STACK_TOP,
            rflags: bits::RFLAGS_FIXED,
            ..Default::default()
        },
        sregs: SpecialRegs {
            cs: Segment::code64(0x10),
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: Segment::tss(0, 0, 0xfff),
            ldt: Segment {
                unusable: true,
                type_: 2,
                ..Default::default()
            },
            gdt: DescriptorTable {
                base: GDT,
                limit: (gdt.len() * 8 - 1) as u16,
            },
            idt: DescriptorTable { base: 0, limit: 0 },
            cr0: bits::CR0_PE | bits::CR0_ET | bits::CR0_NE | bits::CR0_PG,
            cr3: PML4,
            cr4: bits::CR4_PAE,
            efer: bits::EFER_LME | bits::EFER_LMA,
            apic_base: 0xfee0_0000 | (1 << 11) | (1 << 8),
            ..Default::default()
        },
        fpu: Default::default(),
        msrs: Vec::new(),
        ..Default::default()
    }
}

/// Loads a test guest ELF into memory, returning its 64-bit entry point.
pub fn load_guest(mem: &GuestMemory, name: &str) -> u64 {
    let path = test_guests::build(name).unwrap();
    let image = test_guests::elf::parse(&std::fs::read(path).unwrap()).unwrap();
    for seg in &image.segments {
        mem.write_slice(&seg.data, GuestAddress(seg.paddr)).unwrap();
    }
    image.entry
}

/// COM1 output, port 0x80 writes, reset requests; kicks every vCPU when the guest
/// resets or shuts down.
#[derive(Default)]
pub struct TestIo {
    pub serial: Mutex<Vec<u8>>,
    pub port80_writes: AtomicU64,
    pub port80_bytes: AtomicU64,
    /// Every port 0x80 write, in order (element by element for string I/O).
    pub port80_log: Mutex<Vec<Vec<u8>>>,
    /// Every MMIO write as (address, data).
    pub mmio_log: Mutex<Vec<(u64, Vec<u8>)>>,
    pub reset: AtomicBool,
    pub stop: AtomicBool,
    pub kickers: Mutex<Vec<Arc<dyn VcpuKick>>>,
}

impl TestIo {
    pub fn stop_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for k in self.kickers.lock().unwrap().iter() {
            k.kick();
        }
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.serial.lock().unwrap()).into_owned()
    }
}

impl IoHandler for TestIo {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        // LSR: transmitter empty; everything else reads as all ones.
        let v = if port == 0x3fd { 0x60 } else { 0xff };
        data.fill(v);
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        match port {
            0x3f8 => self.serial.lock().unwrap().extend_from_slice(data),
            0x80 => {
                self.port80_writes.fetch_add(1, Ordering::Relaxed);
                self.port80_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                let mut log = self.port80_log.lock().unwrap();
                if log.len() < 64 {
                    log.push(data.to_vec());
                }
            }
            0x64 if data == [0xfe] => {
                self.reset.store(true, Ordering::SeqCst);
                self.stop_all();
            }
            _ => {}
        }
    }

    /// Reads return the low byte of the address plus the byte's index, so a test
    /// can tell which address was read.
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (addr as u8).wrapping_add(i as u8);
        }
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.mmio_log.lock().unwrap().push((addr, data.to_vec()));
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reset,
    Shutdown,
    Error(String),
    TimedOut,
}

/// Runs every vCPU on its own thread until the guest resets or shuts down (or a
/// generous hang guard fires), returning the outcome and the serial output.
pub fn run(vm: &KvmVm, vcpus: Vec<Box<dyn Vcpu>>, io: Arc<TestIo>) -> (Outcome, String) {
    io.kickers
        .lock()
        .unwrap()
        .extend(vcpus.iter().map(|v| v.kicker()));
    let outcome = Arc::new(Mutex::new(None::<Outcome>));
    let timed_out = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = vcpus
        .into_iter()
        .map(|mut vcpu| {
            let io = io.clone();
            let outcome = outcome.clone();
            std::thread::spawn(move || loop {
                if io.stop.load(Ordering::SeqCst) {
                    return;
                }
                let r = vcpu.run(&*io);
                let mut o = outcome.lock().unwrap();
                match r {
                    Ok(VcpuExit::Interrupted) => continue,
                    Ok(VcpuExit::Shutdown) => {
                        o.get_or_insert(Outcome::Shutdown);
                    }
                    Ok(other) => {
                        o.get_or_insert(Outcome::Error(format!("vCPU {}: {other:?}", vcpu.id())));
                    }
                    Err(e) => {
                        o.get_or_insert(Outcome::Error(format!("vCPU {}: {e}", vcpu.id())));
                    }
                }
                drop(o);
                io.stop_all();
                return;
            })
        })
        .collect();
    // Hang guard (not a performance assertion): stop a guest that never ends.
    {
        let io = io.clone();
        let timed_out = timed_out.clone();
        std::thread::spawn(move || {
            for _ in 0..1200 {
                if io.stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            timed_out.store(true, Ordering::SeqCst);
            io.stop_all();
        });
    }
    for t in threads {
        t.join().unwrap();
    }
    let _ = vm;
    let out = io.output();
    let o = if io.reset.load(Ordering::SeqCst) {
        Outcome::Reset
    } else if let Some(o) = outcome.lock().unwrap().clone() {
        o
    } else if timed_out.load(Ordering::SeqCst) {
        Outcome::TimedOut
    } else {
        Outcome::Error("stopped without a reason".into())
    };
    (o, out)
}

/// Where [`boot_code`] puts raw machine code.
pub const CODE: u64 = 0x10_0000;

/// A VM with one vCPU entering raw 64-bit `code` at [`CODE`].
pub fn vm_with_code(code: &[u8]) -> (KvmVm, Box<dyn Vcpu>) {
    vm_with_code_and_handlers(code, &[])
}

/// Where [`vm_with_code_and_handlers`] puts the IDT.
pub const IDT: u64 = 0x1000;

/// Like [`vm_with_code`], plus an IDT whose gate `vector` enters `handler` (raw
/// code placed at CODE + 0x100 * (i + 1) for the i-th pair).
pub fn vm_with_code_and_handlers(code: &[u8], handlers: &[(u8, &[u8])]) -> (KvmVm, Box<dyn Vcpu>) {
    let mem = memory(16 << 20);
    mem.write_slice(code, GuestAddress(CODE)).unwrap();
    let mut state = boot_state(&mem, CODE, "");
    for (i, (vector, handler)) in handlers.iter().enumerate() {
        let at = CODE + 0x100 * (i as u64 + 1);
        mem.write_slice(handler, GuestAddress(at)).unwrap();
        // 64-bit interrupt gate: offset, selector 0x10, present, DPL 0, type 0xe.
        let lo = (at & 0xffff) | (0x10 << 16) | (0x8e00u64 << 32) | ((at >> 16) & 0xffff) << 48;
        let hi = at >> 32;
        let gate = IDT + 16 * u64::from(*vector);
        mem.write_obj(lo, GuestAddress(gate)).unwrap();
        mem.write_obj(hi, GuestAddress(gate + 8)).unwrap();
    }
    if let Some(max) = handlers.iter().map(|h| h.0).max() {
        state.sregs.idt = DescriptorTable {
            base: IDT,
            limit: 16 * u16::from(max) + 15,
        };
    }
    let vm = KvmVm::new(mem, 1).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.set_state(&state).unwrap();
    (vm, vcpu)
}

/// Runs raw 64-bit machine code on one vCPU until it resets or shuts down.
pub fn boot_code(code: &[u8]) -> (Outcome, String, Arc<TestIo>) {
    let (vm, vcpu) = vm_with_code(code);
    let io = Arc::new(TestIo::default());
    let (o, out) = run(&vm, vec![vcpu], io.clone());
    (o, out, io)
}

/// Boots guest `name` with `cpus` vCPUs and `cmdline`; returns outcome, output, io.
pub fn boot(name: &str, cmdline: &str, cpus: u32) -> (Outcome, String, Arc<TestIo>) {
    let mem = memory(64 << 20);
    let entry = load_guest(&mem, name);
    let state = boot_state(&mem, entry, cmdline);
    let vm = KvmVm::new(mem, cpus).unwrap();
    let mut vcpus = Vec::new();
    for id in 0..cpus {
        vcpus.push(vm.create_vcpu(id).unwrap());
    }
    vcpus[0].set_state(&state).unwrap();
    let io = Arc::new(TestIo::default());
    let (o, out) = run(&vm, vcpus, io.clone());
    (o, out, io)
}
