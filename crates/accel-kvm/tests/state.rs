//! Full vCPU and VM state on KVM: round trips through the KVM ioctls, and a guest
//! moved between `emu` and `kvm` in both directions (docs/snapshot.md 3-5).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accel::{GuestMemory, IoHandler, Vcpu, VcpuExit, VcpuKick, Vm};
use accel_emu::EmuVm;
use accel_kvm::KvmVm;
use common::{boot_state, have_kvm, memory, vm_with_code, CODE};
use vm_memory::{Bytes, GuestAddress};
use vmm_types::{lapic, msr, CpuState, InterruptShadow, MpState, VmState};

/// Loads 1 and 0 onto the x87 stack (state for the move to carry), clears rbx
/// and r12, then loops at [`LOOP`]: rbx += 1, r12 += 3, `out %eax,$0x84` with
/// r12d and `out %eax,$0x80` with ebx. The loop is integer-only: this host's KVM
/// (a PVM backend) fails every x87 and SSE instruction but FNINIT with an
/// instruction-emulation error, so a KVM run enters at [`LOOP`].
#[rustfmt::skip]
const COUNTER: &[u8] = &[
    0xdb, 0xe3,                         // fninit
    0xd9, 0xe8,                         // fld1
    0xd9, 0xee,                         // fldz
    0x31, 0xdb,                         // xor %ebx,%ebx
    0x45, 0x31, 0xe4,                   // xor %r12d,%r12d
    // loop:
    0x48, 0xff, 0xc3,                   // inc %rbx
    0x49, 0x83, 0xc4, 0x03,             // add $3,%r12
    0x44, 0x89, 0xe0,                   // mov %r12d,%eax
    0xe7, 0x84,                         // out %eax,$0x84
    0x89, 0xd8,                         // mov %ebx,%eax
    0xe7, 0x80,                         // out %eax,$0x80
    0xeb, 0xee,                         // jmp loop
];
/// Offset of the loop in [`COUNTER`].
const LOOP: u64 = 11;

/// Records the counter the guest writes and kicks the vCPU after `stop_after`
/// more writes to port 0x80.
#[derive(Default)]
struct CounterIo {
    log: Mutex<Vec<(u16, u32)>>,
    left: AtomicUsize,
    kicker: Mutex<Option<Arc<dyn VcpuKick>>>,
}

impl CounterIo {
    fn arm(&self, vcpu: &dyn Vcpu, writes: usize) {
        self.left.store(writes, Ordering::SeqCst);
        *self.kicker.lock().unwrap() = Some(vcpu.kicker());
    }

    fn values(&self, port: u16) -> Vec<u32> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == port)
            .map(|e| e.1)
            .collect()
    }
}

impl IoHandler for CounterIo {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        let mut v = [0u8; 4];
        v[..data.len()].copy_from_slice(data);
        self.log.lock().unwrap().push((port, u32::from_le_bytes(v)));
        if port == 0x80 && self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(k) = self.kicker.lock().unwrap().as_ref() {
                k.kick();
            }
        }
    }
    fn mmio_read(&self, _addr: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _addr: u64, _data: &[u8]) {}
}

/// Runs until the kick that `io.arm` set up (with a hang guard).
fn run_until_kicked(vcpu: &mut dyn Vcpu, io: &CounterIo, writes: usize) {
    io.arm(vcpu, writes);
    let guard_kick = vcpu.kicker();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard = {
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                if done.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            guard_kick.kick();
            true
        })
    };
    let exit = vcpu.run(io).unwrap();
    done.store(true, Ordering::SeqCst);
    assert!(
        !guard.join().unwrap(),
        "the guest did not produce {writes} writes in 10 s"
    );
    assert_eq!(exit, VcpuExit::Interrupted);
}

fn counter_memory() -> (GuestMemory, CpuState) {
    let mem = memory(16 << 20);
    mem.write_slice(COUNTER, GuestAddress(CODE)).unwrap();
    let s = boot_state(&mem, CODE, "");
    (mem, s)
}

/// The page registers a guest programs, which must survive a move.
fn lapic_regs(s: &CpuState) -> Vec<u32> {
    [
        lapic::ID,
        lapic::TPR,
        lapic::LDR,
        lapic::DFR,
        lapic::SVR,
        lapic::LVT_TIMER,
        0x350,
        0x360,
    ]
    .iter()
    .map(|&o| lapic::get(&s.lapic, o))
    .collect()
}

/// Checks the whole log: 1, 2, 3, ... on 0x80 without a gap or a repeat, and
/// 3, 6, 9, ... on 0x84 (from R12).
fn check_continuous(io: &CounterIo, expected_len: usize) {
    let a = io.values(0x80);
    let b = io.values(0x84);
    assert!(a.len() >= expected_len, "only {} writes", a.len());
    for (i, v) in a.iter().enumerate() {
        assert_eq!(*v, i as u32 + 1, "port 0x80 write {i}: the counter jumped");
    }
    for (i, v) in b.iter().enumerate() {
        assert_eq!(*v, 3 * (i as u32 + 1), "port 0x84 write {i}: R12 jumped");
    }
    assert!(b.len() >= a.len() && b.len() - a.len() <= 1);
}

/// Moves the vCPU and platform state from `from` to `to` (VM first).
fn transfer(
    from_vm: &dyn Vm,
    from: &mut dyn Vcpu,
    to_vm: &dyn Vm,
    to: &mut dyn Vcpu,
) -> (CpuState, VmState) {
    let vm_state = from_vm.save_state().unwrap();
    let cpu = from.state().unwrap();
    // What a snapshot holds: serde round trip on the way.
    let cpu: CpuState = serde_json::from_str(&serde_json::to_string(&cpu).unwrap()).unwrap();
    let vm_state: VmState =
        serde_json::from_str(&serde_json::to_string(&vm_state).unwrap()).unwrap();
    to_vm.restore_state(&vm_state).unwrap();
    to.set_state(&cpu).unwrap();
    (cpu, vm_state)
}

#[test]
fn full_state_round_trips_through_kvm() {
    if !have_kvm() {
        return;
    }
    let (_vm, mut vcpu) = vm_with_code(&[0xeb, 0xfe]);
    let mut s = vcpu.state().unwrap();
    assert_eq!(s.lapic.len(), lapic::PAGE_SIZE);
    assert!(s.xsave.len() >= vmm_types::xsave::MIN_SIZE);
    assert_eq!(s.xcr0 & 1, 1);
    assert_eq!(s.mp_state, MpState::Runnable);
    assert!(s.msr(msr::IA32_TSC).is_some() && s.msr(msr::IA32_TSC_DEADLINE).is_some());
    s.regs.rbx = 0x1234;
    s.fpu.xmm[3] = [0x33; 16];
    s.fpu.mxcsr = 0x1fa0;
    s.debug.db = [0x1000, 0x2000, 0x3000, 0x4000];
    s.debug.dr7 = 0x400 | 0b11;
    s.events.interrupt_shadow = InterruptShadow::Sti;
    s.events.nmi_masked = true;
    lapic::set(&mut s.lapic, lapic::SVR, 0x1ff);
    lapic::set(&mut s.lapic, lapic::TPR, 0x30);
    s.sregs.cr8 = 3;
    vcpu.set_state(&s).unwrap();
    let mut back = vcpu.state().unwrap();
    // The TSC moved on while the two calls ran; everything else is as set.
    let tsc = |s: &CpuState| s.msr(msr::IA32_TSC).unwrap();
    assert!(tsc(&back) >= tsc(&s));
    for m in back.msrs.iter_mut() {
        if m.0 == msr::IA32_TSC {
            m.1 = tsc(&s);
        }
    }
    // PPR follows TPR; the image's legacy region follows `fpu`.
    lapic::set(&mut s.lapic, lapic::PPR, 0x30);
    s.xsave = vmm_types::xsave::canonical(&s.fpu, &s.xsave, s.xcr0);
    assert_eq!(back, s);
}

#[test]
fn vm_state_round_trips_through_kvm() {
    if !have_kvm() {
        return;
    }
    let (vm, _vcpu) = vm_with_code(&[0xeb, 0xfe]);
    let mut s = vm.save_state().unwrap();
    s.pic.master.vector_base = 0x20;
    s.pic.master.imr = 0xfb;
    s.pic.slave.vector_base = 0x28;
    s.ioapic.redirection[4] = 0x41;
    s.ioapic.id = 2;
    s.pit.channels[0].mode = 2;
    s.pit.channels[0].count = 11932;
    s.pit.channels[0].elapsed_ns = Some(0);
    s.clock_ns = 5_000_000_000;
    vm.restore_state(&s).unwrap();
    let back = vm.save_state().unwrap();
    assert_eq!(back.pic, s.pic);
    assert_eq!(back.ioapic, s.ioapic);
    assert_eq!(back.pit.channels[0].count, 11932);
    assert_eq!(back.pit.channels[0].mode, 2);
    assert!(back.clock_ns >= s.clock_ns && back.clock_ns < s.clock_ns + 1_000_000_000);
}

#[test]
fn a_guest_moves_from_emu_to_kvm_and_continues() {
    if !have_kvm() {
        return;
    }
    let (mem, entry) = counter_memory();
    let io = CounterIo::default();
    let emu = EmuVm::new(mem.clone(), 1).unwrap();
    let mut e = emu.create_vcpu(0).unwrap();
    e.set_state(&entry).unwrap();
    run_until_kicked(&mut *e, &io, 500);
    let kvm = KvmVm::new(mem, 1).unwrap();
    // A host KVM may lack features emu offers (this PVM host has no POPCNT, for
    // one); the check names the first. This guest uses none of them.
    if let Err(e) = kvm.check_cpuid(&emu.cpuid()) {
        eprintln!("note: a real restore would be refused: {e}");
        assert!(e.to_string().contains("which the target lacks"), "{e}");
    }
    let mut k = kvm.create_vcpu(0).unwrap();
    let (saved, _) = transfer(&emu, &mut *e, &kvm, &mut *k);
    let arrived = k.state().unwrap();
    assert_eq!(arrived.regs, saved.regs);
    // The x87 stack emu built (ST0 = 0, ST1 = 1, TOP = 6) arrived in KVM.
    assert_eq!(arrived.fpu, saved.fpu);
    assert_eq!((saved.fpu.fsw >> 11) & 7, 6);
    assert_eq!(saved.fpu.fpr[1][7..10], [0x80, 0xff, 0x3f]);
    assert_eq!(lapic_regs(&arrived), lapic_regs(&saved));
    let before = io.values(0x80).len();
    run_until_kicked(&mut *k, &io, 500);
    assert!(io.values(0x80).len() >= before + 500);
    check_continuous(&io, 1000);
}

#[test]
fn a_guest_moves_from_kvm_to_emu_and_continues() {
    if !have_kvm() {
        return;
    }
    let (mem, entry) = counter_memory();
    let io = CounterIo::default();
    let kvm = KvmVm::new(mem.clone(), 1).unwrap();
    let emu = EmuVm::new(mem, 1).unwrap();
    // Started on emu's baseline, the guest sees nothing emu lacks.
    kvm.set_cpuid_baseline(Some(emu.cpuid()));
    emu.check_cpuid(&kvm.cpuid()).unwrap();
    let mut k = kvm.create_vcpu(0).unwrap();
    let mut entry = entry;
    entry.regs.rip = CODE + LOOP;
    k.set_state(&entry).unwrap();
    run_until_kicked(&mut *k, &io, 500);
    let mut e = emu.create_vcpu(0).unwrap();
    let (saved, vm_state) = transfer(&kvm, &mut *k, &emu, &mut *e);
    let arrived = e.state().unwrap();
    assert_eq!(arrived.regs, saved.regs);
    assert_eq!(arrived.fpu, saved.fpu);
    assert_eq!(lapic_regs(&arrived), lapic_regs(&saved));
    // The guest TSC continues from the saved value (it does not restart at 0).
    assert!(arrived.msr(msr::IA32_TSC).unwrap() >= saved.msr(msr::IA32_TSC).unwrap());
    assert_eq!(emu.save_state().unwrap().pic, vm_state.pic);
    run_until_kicked(&mut *e, &io, 500);
    check_continuous(&io, 1000);
}

/// The LAPIC timer's position survives KVM_SET_LAPIC (through TMCCT) and an armed
/// TSC deadline survives KVM_SET_MSRS (after the LAPIC's mode and the TSC).
#[test]
fn lapic_timer_and_tsc_deadline_round_trip_through_kvm() {
    if !have_kvm() {
        return;
    }
    let (_vm, mut vcpu) = vm_with_code(&[0xeb, 0xfe]);
    let mut s = vcpu.state().unwrap();
    lapic::set(&mut s.lapic, lapic::SVR, 0x1ff);
    lapic::set(&mut s.lapic, lapic::LVT_TIMER, 0x1_0040); // masked one-shot
    lapic::set(&mut s.lapic, lapic::TIMER_DIVIDE, 0xb);
    lapic::set(&mut s.lapic, lapic::TIMER_INITIAL, 1_000_000_000);
    lapic::set(&mut s.lapic, lapic::TIMER_CURRENT, 400_000_000);
    vcpu.set_state(&s).unwrap();
    let back = vcpu.state().unwrap();
    let count = lapic::get(&back.lapic, lapic::TIMER_CURRENT);
    assert!(
        (300_000_000..=400_000_000).contains(&count),
        "the count restarted or stopped: {count}"
    );
    assert_eq!(lapic::get(&back.lapic, lapic::TIMER_INITIAL), 1_000_000_000);

    let mut s = back;
    lapic::set(&mut s.lapic, lapic::LVT_TIMER, 0x5_0040); // masked, TSC-deadline mode
    lapic::set(&mut s.lapic, lapic::TIMER_INITIAL, 0);
    lapic::set(&mut s.lapic, lapic::TIMER_CURRENT, 0);
    let deadline = s.msr(msr::IA32_TSC).unwrap() + 1_000_000_000_000;
    for m in s.msrs.iter_mut() {
        if m.0 == msr::IA32_TSC_DEADLINE {
            m.1 = deadline;
        }
    }
    vcpu.set_state(&s).unwrap();
    let back = vcpu.state().unwrap();
    assert_eq!(back.msr(msr::IA32_TSC_DEADLINE), Some(deadline));
    assert_eq!(lapic::get(&back.lapic, lapic::LVT_TIMER), 0x5_0040);
}

/// Answers port 0x85 reads with 1, 2, 3, ... and kicks the vCPU at the fifth.
#[derive(Default)]
struct InIo {
    reads: AtomicUsize,
    kicker: Mutex<Option<Arc<dyn VcpuKick>>>,
}

impl IoHandler for InIo {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        data.copy_from_slice(&(n as u32).to_le_bytes()[..data.len()]);
        if n == 5 {
            if let Some(k) = self.kicker.lock().unwrap().as_ref() {
                k.kick();
            }
        }
    }
    fn pio_write(&self, _port: u16, _data: &[u8]) {}
    fn mmio_read(&self, _addr: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _addr: u64, _data: &[u8]) {}
}

/// A kick that lands in a port read returns only once KVM has completed the IN: the
/// saved state has the value in EAX and RIP past the instruction, so a restore does
/// not read the device twice.
#[test]
fn a_kick_during_port_input_leaves_a_consistent_state() {
    if !have_kvm() {
        return;
    }
    // 1: in $0x85,%eax; jmp 1b
    let (_vm, mut vcpu) = vm_with_code(&[0xe5, 0x85, 0xeb, 0xfc]);
    let io = InIo::default();
    *io.kicker.lock().unwrap() = Some(vcpu.kicker());
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::Interrupted);
    assert_eq!(io.reads.load(Ordering::SeqCst), 5);
    let s = vcpu.state().unwrap();
    assert_eq!(s.regs.rax & 0xffff_ffff, 5);
    assert_eq!(s.regs.rip, CODE + 2);
}

/// An application processor that has not been started is "waiting for INIT" on
/// both accelerators, and moves as such.
#[test]
fn an_unstarted_ap_moves_between_accelerators() {
    if !have_kvm() {
        return;
    }
    let kvm = KvmVm::new(memory(2 << 20), 2).unwrap();
    let _bsp = kvm.create_vcpu(0).unwrap();
    let mut ap = kvm.create_vcpu(1).unwrap();
    let s = ap.state().unwrap();
    assert_eq!(s.mp_state, MpState::WaitForInit);
    assert_eq!(lapic::get(&s.lapic, lapic::ID) >> 24, 1);
    let emu = EmuVm::new(memory(2 << 20), 2).unwrap();
    let mut eap = emu.create_vcpu(1).unwrap();
    assert_eq!(eap.state().unwrap().mp_state, MpState::WaitForInit);
    eap.set_state(&s).unwrap();
    let moved = eap.state().unwrap();
    assert_eq!(moved.mp_state, MpState::WaitForInit);
    assert_eq!(lapic_regs(&moved), lapic_regs(&s));
    // And back, after the emulated AP got INIT.
    let mut waiting = moved;
    waiting.mp_state = MpState::WaitForSipi;
    ap.set_state(&waiting).unwrap();
    assert_eq!(ap.state().unwrap().mp_state, MpState::WaitForSipi);
}
