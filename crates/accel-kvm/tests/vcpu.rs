//! KvmVcpu behaviour on raw machine code: string port I/O, MMIO, kicks, state.

mod common;

use std::sync::Arc;
use std::time::Duration;

use accel::{VcpuExit, Vm};
use accel_kvm::KvmVm;
use common::{boot_code, have_kvm, memory, vm_with_code, Outcome, TestIo, CODE};
use vmm_types::msr;

/// `mov $0xfe,%al; out %al,$0x64` (reset) then `jmp .`
const RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe];

#[test]
fn string_port_io_is_split_per_element() {
    if !have_kvm() {
        return;
    }
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, // mov $0x3f8,%dx
        0x48, 0x8d, 0x35, 0, 0, 0, 0, // lea msg(%rip),%rsi (patched below)
        0xb9, 0x05, 0x00, 0x00, 0x00, // mov $5,%ecx
        0xf3, 0x6e, // rep outsb
        0x66, 0xba, 0x80, 0x00, // mov $0x80,%dx
        0xb9, 0x02, 0x00, 0x00, 0x00, // mov $2,%ecx
        0x66, 0xf3, 0x6f, // rep outsw (the two words after "hello")
    ];
    code.extend_from_slice(RESET);
    let msg_at = code.len();
    let rel = (msg_at - 11) as u32;
    code[7..11].copy_from_slice(&rel.to_le_bytes());
    code.extend_from_slice(b"hello\x34\x12\x78\x56");
    let (outcome, out, io) = boot_code(&code);
    assert_eq!(outcome, Outcome::Reset);
    assert_eq!(out, "hello");
    assert_eq!(
        *io.port80_log.lock().unwrap(),
        vec![vec![0x34, 0x12], vec![0x78, 0x56]]
    );
}

#[test]
fn mmio_reads_and_writes_reach_the_handler() {
    if !have_kvm() {
        return;
    }
    let mut code = vec![
        0xc7, 0x04, 0x25, 0x00, 0x00, 0x00, 0x30, 0x78, 0x56, 0x34,
        0x12, // movl $0x12345678,0x30000000
        0x8b, 0x04, 0x25, 0x10, 0x00, 0x00, 0x30, // mov 0x30000010,%eax
        0xe7, 0x80, // out %eax,$0x80
    ];
    code.extend_from_slice(RESET);
    let (outcome, _, io) = boot_code(&code);
    assert_eq!(outcome, Outcome::Reset);
    assert_eq!(
        *io.mmio_log.lock().unwrap(),
        vec![(0x3000_0000, vec![0x78, 0x56, 0x34, 0x12])]
    );
    assert_eq!(
        *io.port80_log.lock().unwrap(),
        vec![vec![0x10, 0x11, 0x12, 0x13]]
    );
}

#[test]
fn kick_before_run_is_not_lost() {
    if !have_kvm() {
        return;
    }
    let (_vm, mut vcpu) = vm_with_code(&[0xeb, 0xfe]);
    vcpu.kicker().kick();
    let io = TestIo::default();
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::Interrupted);
    // The kick was consumed: the state is still readable and the guest at its start.
    assert_eq!(vcpu.state().unwrap().regs.rip, CODE);
}

#[test]
fn kick_interrupts_a_spinning_guest() {
    if !have_kvm() {
        return;
    }
    let (_vm, mut vcpu) = vm_with_code(&[0xeb, 0xfe]); // jmp .
    let kicker = vcpu.kicker();
    let io = Arc::new(TestIo::default());
    let t = std::thread::spawn(move || {
        let r = vcpu.run(&*io);
        (r.map_err(|e| e.to_string()), vcpu)
    });
    std::thread::sleep(Duration::from_millis(200));
    kicker.kick();
    let (r, mut vcpu) = t.join().unwrap();
    assert_eq!(r.unwrap(), VcpuExit::Interrupted);
    assert_eq!(vcpu.state().unwrap().regs.rip, CODE);
    // A kick after run returned leaves the next run interrupted at once, too.
    kicker.kick();
    assert_eq!(vcpu.run(&TestIo::default()).unwrap(), VcpuExit::Interrupted);
}

#[test]
fn state_round_trips_through_kvm() {
    if !have_kvm() {
        return;
    }
    let (_vm, mut vcpu) = vm_with_code(&[0xeb, 0xfe]);
    let mut s = vcpu.state().unwrap();
    assert_eq!(s.regs.rip, CODE);
    assert_eq!(s.fpu.fcw, 0x37f);
    assert_eq!(s.fpu.mxcsr, 0x1f80);
    let get = |s: &vmm_types::CpuState, i| s.msrs.iter().find(|m| m.0 == i).map(|m| m.1);
    assert_eq!(get(&s, msr::IA32_MISC_ENABLE).map(|v| v & 1), Some(1));
    assert_eq!(get(&s, msr::IA32_PAT), Some(msr::PAT_RESET));

    s.regs.rax = 0x1122_3344_5566_7788;
    s.regs.r15 = 0xdead_beef;
    s.regs.rip = CODE + 0x10;
    s.sregs.cr2 = 0x4242_4000;
    s.sregs.fs.base = 0x7f00_1234_0000;
    s.fpu.xmm[7] = [0x5a; 16];
    s.fpu.mxcsr = 0x1fa0;
    for m in s.msrs.iter_mut() {
        if m.0 == msr::IA32_LSTAR {
            m.1 = 0xffff_ffff_8123_4560;
        }
    }
    vcpu.set_state(&s).unwrap();
    let back = vcpu.state().unwrap();
    assert_eq!(back.regs, s.regs);
    assert_eq!(back.sregs.cr2, s.sregs.cr2);
    assert_eq!(back.sregs.fs.base, s.sregs.fs.base);
    assert_eq!(back.sregs.cs, s.sregs.cs);
    assert_eq!(back.sregs.efer, s.sregs.efer);
    assert_eq!(back.fpu.xmm[7], [0x5a; 16]);
    assert_eq!(back.fpu.mxcsr, 0x1fa0);
    assert_eq!(get(&back, msr::IA32_LSTAR), Some(0xffff_ffff_8123_4560));
}

#[test]
fn bad_vcpu_ids_and_counts_are_errors() {
    if !have_kvm() {
        return;
    }
    let vm = KvmVm::new(memory(2 << 20), 2).unwrap();
    assert_eq!(vm.accel_name(), "kvm");
    assert!(matches!(
        vm.create_vcpu(2),
        Err(accel::Error::InvalidState(_))
    ));
    assert!(vm.create_vcpu(1).is_ok());
    let e = KvmVm::new(memory(2 << 20), 0)
        .err()
        .expect("0 vCPUs must fail");
    assert!(e.to_string().contains("0 vCPUs"), "{e}");
    let e = KvmVm::new(memory(2 << 20), 100_000)
        .err()
        .expect("too many vCPUs must fail");
    assert!(matches!(e, accel::Error::InvalidState(_)), "{e}");
}

#[test]
fn irq_lines_and_msis_are_accepted() {
    if !have_kvm() {
        return;
    }
    let vm = KvmVm::new(memory(2 << 20), 1).unwrap();
    let _vcpu = vm.create_vcpu(0).unwrap();
    vm.set_irq_line(4, true).unwrap();
    vm.set_irq_line(4, false).unwrap();
    vm.signal_msi(0xfee0_0000, 0x30).unwrap();
}
