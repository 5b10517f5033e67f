//! EmuVm/EmuVcpu state: the full CpuState and VmState round trip, a move between
//! two emulated VMs with a running LAPIC timer, restored pending events, and the
//! CPUID check.

mod common;

use accel::{Vcpu, VcpuExit, Vm};
use accel_emu::EmuVm;
use common::{memory, Ports, CODE, IDT};
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_types::{lapic, msr, CpuState, ExceptionEvent, InterruptShadow, MpState};

/// Points IDT gate `vector` at `target`.
fn gate(mem: &GuestMemoryMmap<()>, vector: u64, target: u64) {
    let lo = (target & 0xffff) | (8 << 16) | (0x8e00u64 << 32) | ((target >> 16) & 0xffff) << 48;
    mem.write_obj(lo, GuestAddress(IDT + 16 * vector)).unwrap();
    mem.write_obj(target >> 32, GuestAddress(IDT + 16 * vector + 8))
        .unwrap();
}

fn vm_at(mem: &GuestMemoryMmap<()>, s: &CpuState) -> (EmuVm, Box<dyn Vcpu>) {
    let vm = EmuVm::new(mem.clone(), 1).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.set_state(s).unwrap();
    (vm, vcpu)
}

fn tsc(s: &CpuState) -> u64 {
    s.msr(msr::IA32_TSC).unwrap()
}

#[test]
fn full_state_round_trips() {
    let (mem, entry) = memory(|a| {
        a.jmp(CODE).unwrap();
    });
    let (_vm, mut vcpu) = vm_at(&mem, &entry);
    let mut s = vcpu.state().unwrap();
    assert_eq!(s.lapic.len(), lapic::PAGE_SIZE);
    assert_eq!(s.xsave.len(), vmm_types::xsave::MIN_SIZE);
    assert_eq!(s.xcr0, 1);
    assert_eq!(
        s.msrs.iter().map(|m| m.0).collect::<Vec<_>>(),
        msr::STATE.to_vec(),
        "exactly the contract's MSRs"
    );
    s.regs.rbx = 0x1234;
    s.fpu.xmm[3] = [0x33; 16];
    s.fpu.fpr[0][..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 0x80, 0xff, 0x3f]);
    s.debug.db = [0x1000, 0x2000, 0x3000, 0x4000];
    s.debug.dr7 = 0x403;
    s.events.interrupt_shadow = InterruptShadow::Sti;
    s.events.nmi_pending = true;
    s.events.exception = Some(ExceptionEvent {
        vector: 14,
        error_code: Some(2),
        injected: true,
    });
    s.mp_state = MpState::Halted;
    lapic::set(&mut s.lapic, lapic::SVR, 0x1ff);
    lapic::set(&mut s.lapic, lapic::TPR, 0x30);
    lapic::set(&mut s.lapic, lapic::PPR, 0x30); // derived from TPR,
    lapic::set(&mut s.lapic, lapic::APR, 0x30); // as is APR
    lapic::set(&mut s.lapic, lapic::LVT_TIMER, 0x2_0040); // periodic, vector 0x40
    lapic::set(&mut s.lapic, lapic::TIMER_INITIAL, 4_000_000_000);
    lapic::set(&mut s.lapic, lapic::TIMER_CURRENT, 3_000_000_000);
    lapic::set(&mut s.lapic, lapic::TIMER_DIVIDE, 0xb);
    s.sregs.cr8 = 3;
    for m in s.msrs.iter_mut() {
        if m.0 == msr::IA32_LSTAR {
            m.1 = 0xffff_ffff_8100_0000;
        }
    }
    s.xsave = vmm_types::xsave::canonical(&s.fpu, &s.xsave, s.xcr0);
    vcpu.set_state(&s).unwrap();
    let mut back = vcpu.state().unwrap();
    // Time ran on between the calls: the TSC and the timer's count moved a little.
    let ran = tsc(&back) - tsc(&s);
    assert!(ran < 1_000_000_000, "{ran} ns");
    let count = lapic::get(&back.lapic, lapic::TIMER_CURRENT);
    assert!(count <= 3_000_000_000 && 3_000_000_000 - count <= ran as u32 + 1);
    lapic::set(&mut back.lapic, lapic::TIMER_CURRENT, 3_000_000_000);
    for m in back.msrs.iter_mut() {
        if m.0 == msr::IA32_TSC {
            m.1 = tsc(&s);
        }
    }
    assert_eq!(back, s);
    // And through JSON, as a snapshot file holds it.
    let j = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<CpuState>(&j).unwrap(), s);
}

#[test]
fn vm_state_round_trips_and_the_clock_continues() {
    let (mem, entry) = memory(|a| {
        a.jmp(CODE).unwrap();
    });
    let (vm, _vcpu) = vm_at(&mem, &entry);
    let mut s = vm.save_state().unwrap();
    s.pic.master.vector_base = 0x20;
    s.pic.master.imr = 0xfb;
    s.pic.master.icw3 = 4;
    s.pic.slave.vector_base = 0x28;
    s.pic.slave.elcr = 0x0c;
    s.ioapic.redirection[4] = 0x41;
    s.ioapic.id = 2;
    s.ioapic.ioregsel = 0x18;
    s.pit.channels[0].mode = 2;
    s.pit.channels[0].count = 11932;
    s.pit.channels[0].elapsed_ns = Some(1_000_000);
    s.pit.port61 = 1;
    s.pit.channels[2].gate = true;
    s.clock_ns = 123_000_000_000;
    let other = EmuVm::new(mem, 1).unwrap();
    other.restore_state(&s).unwrap();
    let back = other.save_state().unwrap();
    assert!(back.clock_ns >= s.clock_ns && back.clock_ns - s.clock_ns < 1_000_000_000);
    assert_eq!((back.pic, &back.ioapic), (s.pic, &s.ioapic));
    let ran = back.clock_ns - s.clock_ns;
    let e = back.pit.channels[0].elapsed_ns.unwrap();
    // Within one PIT tick (838 ns) plus the time between the calls.
    assert!(e + 1000 >= 1_000_000 && e <= 1_000_000 + ran + 1000, "{e}");
    let mut back = back;
    back.pit.channels[0].elapsed_ns = s.pit.channels[0].elapsed_ns;
    assert_eq!(back.pit, s.pit);
    let short = vmm_types::VmState {
        ioapic: vmm_types::IoApicState {
            redirection: vec![0; 3],
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(other.restore_state(&short).is_err());
}

/// A guest whose LAPIC timer is counting moves to another VM: the count goes on
/// from where it was, the interrupt arrives, and the TSC did not jump back.
#[test]
fn a_counting_lapic_timer_survives_a_move() {
    let (mem, entry) = memory(|a| {
        let mut handler = a.create_label();
        let mut idle = a.create_label();
        a.mov(rdi, 0xfee0_0000u64).unwrap();
        a.mov(dword_ptr(rdi + 0xf0), 0x1ffu32).unwrap(); // SVR: enable
        a.mov(dword_ptr(rdi + 0x3e0), 0xbu32).unwrap(); // divide by 1
        a.mov(dword_ptr(rdi + 0x320), 0x40u32).unwrap(); // one-shot, vector 0x40
        a.mov(dword_ptr(rdi + 0x380), 200_000_000u32).unwrap(); // 200 ms
        a.mov(al, 1u32).unwrap();
        a.out(0x80, al).unwrap();
        a.set_label(&mut idle).unwrap();
        a.sti().unwrap();
        a.hlt().unwrap();
        a.jmp(idle).unwrap();
        a.set_label(&mut handler).unwrap();
        a.mov(al, 0x40u32).unwrap();
        a.out(0x80, al).unwrap();
        a.cli().unwrap();
        a.hlt().unwrap();
        a.zero_bytes().unwrap();
        // The handler's address is CODE + its offset; patch the gate below.
        let _ = handler;
    });
    // Find the handler: the `mov al,0x40` after the loop (b0 40 e6 80).
    let mut code = vec![0u8; 256];
    mem.read_slice(&mut code, GuestAddress(CODE)).unwrap();
    let off = code
        .windows(4)
        .position(|w| w == [0xb0, 0x40, 0xe6, 0x80])
        .unwrap();
    gate(&mem, 0x40, CODE + off as u64);
    let (vm, mut vcpu) = vm_at(&mem, &entry);
    let io = Ports::default();
    // Run until the guest halts waiting for the timer, then take it away.
    let kicker = vcpu.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(30));
        kicker.kick();
    });
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::Interrupted);
    t.join().unwrap();
    assert_eq!(*io.out.lock().unwrap(), vec![(0x80, 1)]);
    let vm_state = vm.save_state().unwrap();
    let s = vcpu.state().unwrap();
    assert_eq!(s.mp_state, MpState::Halted);
    let count = lapic::get(&s.lapic, lapic::TIMER_CURRENT);
    assert!(count > 0 && count < 200_000_000, "{count}");
    drop((vm, vcpu));
    let other = EmuVm::new(mem, 1).unwrap();
    other.restore_state(&vm_state).unwrap();
    let mut v = other.create_vcpu(0).unwrap();
    v.set_state(&s).unwrap();
    let arrived = v.state().unwrap();
    assert!(tsc(&arrived) >= tsc(&s));
    assert!(lapic::get(&arrived.lapic, lapic::TIMER_CURRENT) <= count);
    let started = std::time::Instant::now();
    assert_eq!(v.run(&io).unwrap(), VcpuExit::HaltedForever);
    assert_eq!(*io.out.lock().unwrap(), vec![(0x80, 1), (0x80, 0x40)]);
    // It fired after the remaining count, not a whole new 200 ms (generous bound).
    assert!(started.elapsed().as_nanos() < u128::from(count) + 150_000_000);
}

/// An exception a state carries as injected is delivered before the next instruction.
#[test]
fn a_restored_exception_is_delivered_first() {
    let (mem, mut entry) = memory(|a| {
        a.mov(al, 1u32).unwrap(); // never reached before the handler
        a.out(0x80, al).unwrap();
        a.cli().unwrap();
        a.hlt().unwrap();
        for _ in 0..16 {
            a.nop().unwrap();
        }
        // handler at CODE + 22: pop the error code, report it, stop.
        a.pop(rax).unwrap();
        a.out(0x81, al).unwrap();
        a.cli().unwrap();
        a.hlt().unwrap();
    });
    gate(&mem, 13, CODE + 22);
    entry.events.exception = Some(ExceptionEvent {
        vector: 13,
        error_code: Some(0x42),
        injected: true,
    });
    let (_vm, mut vcpu) = vm_at(&mem, &entry);
    let io = Ports::default();
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::HaltedForever);
    assert_eq!(*io.out.lock().unwrap(), vec![(0x81, 0x42)]);
}

#[test]
fn the_cpuid_check_names_what_emu_lacks() {
    let (mem, _) = memory(|a| {
        a.nop().unwrap();
    });
    let vm = EmuVm::new(mem, 2).unwrap();
    let own = vm.cpuid();
    vm.check_cpuid(&own).unwrap();
    let mut saved = own.clone();
    let l1 = saved.iter_mut().find(|e| e.function == 1).unwrap();
    l1.ecx |= 1 << 28; // AVX
    let e = vm.check_cpuid(&saved).unwrap_err();
    assert!(e.to_string().contains("`avx`"), "{e}");
    let mut saved = own.clone();
    let l7 = saved.iter_mut().find(|e| e.function == 7).unwrap();
    l7.ebx |= 1 << 5; // AVX2
    let e = vm.check_cpuid(&saved).unwrap_err();
    assert!(e.to_string().contains("`avx2`"), "{e}");
}

#[test]
fn states_emu_cannot_hold_are_refused() {
    let (mem, mut entry) = memory(|a| {
        a.nop().unwrap();
    });
    let vm = EmuVm::new(mem, 1).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    entry.xcr0 = 0b111;
    let e = vcpu.set_state(&entry).unwrap_err();
    assert!(e.to_string().contains("XCR0 0x7"), "{e}");
    entry.xcr0 = 1;
    entry.lapic = vec![0; 10];
    let e = vcpu.set_state(&entry).unwrap_err();
    assert!(e.to_string().contains("10 bytes"), "{e}");
}

/// A guest whose TSC was restored far from emu's clock (as from KVM) arms the
/// TSC-deadline timer in its own TSC units, and it fires when that TSC is reached.
#[test]
fn tsc_deadline_is_in_guest_tsc_units_after_a_restore() {
    let (mem, mut entry) = memory(|a| {
        let mut idle = a.create_label();
        a.mov(rdi, 0xfee0_0000u64).unwrap();
        a.mov(dword_ptr(rdi + 0xf0), 0x1ffu32).unwrap(); // SVR: enable
        a.mov(dword_ptr(rdi + 0x320), 0x4_0040u32).unwrap(); // TSC-deadline, vector 0x40
        a.rdtsc().unwrap();
        a.shl(rdx, 32).unwrap();
        a.or(rax, rdx).unwrap();
        a.add(rax, 2_000_000i32).unwrap(); // 2 ms on
        a.mov(rdx, rax).unwrap();
        a.shr(rdx, 32).unwrap();
        a.mov(ecx, 0x6e0u32).unwrap();
        a.wrmsr().unwrap();
        a.set_label(&mut idle).unwrap();
        a.sti().unwrap();
        a.hlt().unwrap();
        a.jmp(idle).unwrap();
        for _ in 0..8 {
            a.nop().unwrap();
        }
        a.mov(al, 0x40u32).unwrap();
        a.out(0x80, al).unwrap();
        a.cli().unwrap();
        a.hlt().unwrap();
    });
    let mut code = vec![0u8; 256];
    mem.read_slice(&mut code, GuestAddress(CODE)).unwrap();
    let off = code
        .windows(4)
        .position(|w| w == [0xb0, 0x40, 0xe6, 0x80])
        .unwrap();
    gate(&mem, 0x40, CODE + off as u64);
    entry.msrs = vec![(msr::IA32_TSC, 1 << 50)];
    let (_vm, mut vcpu) = vm_at(&mem, &entry);
    let kicker = vcpu.kicker();
    let guard = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        kicker.kick();
    });
    let io = Ports::default();
    assert_eq!(
        vcpu.run(&io).unwrap(),
        VcpuExit::HaltedForever,
        "the deadline never fired"
    );
    assert_eq!(*io.out.lock().unwrap(), vec![(0x80, 0x40)]);
    drop(guard);
}
