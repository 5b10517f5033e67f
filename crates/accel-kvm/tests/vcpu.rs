//! KvmVcpu behaviour on raw machine code: string port I/O, MMIO, kicks, state.

mod common;

use std::sync::Arc;
use std::time::Duration;

use accel::{VcpuExit, Vm};
use accel_kvm::KvmVm;
use common::{
    boot_code, have_kvm, memory, vm_with_code, vm_with_code_and_handlers, Outcome, TestIo, CODE,
};
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
fn string_port_input_fills_every_element() {
    if !have_kvm() {
        return;
    }
    let mut code = vec![
        0x66, 0xba, 0xfd, 0x03, // mov $0x3fd,%dx (LSR: reads 0x60 in TestIo)
        0x48, 0x8d, 0x3d, 21, 0, 0, 0, // lea buf(%rip),%rdi
        0xb9, 0x03, 0x00, 0x00, 0x00, // mov $3,%ecx
        0xf3, 0x6c, // rep insb
        0x8b, 0x05, 8, 0, 0, 0, // mov buf(%rip),%eax
        0xe7, 0x80, // out %eax,$0x80
    ];
    code.extend_from_slice(RESET);
    assert_eq!(code.len(), 32);
    code.extend_from_slice(&[0; 4]); // buf
    let (outcome, _, io) = boot_code(&code);
    assert_eq!(outcome, Outcome::Reset);
    assert_eq!(
        *io.port80_log.lock().unwrap(),
        vec![vec![0x60, 0x60, 0x60, 0x00]]
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

/// An MSI (KVM_SIGNAL_MSI) and an IOAPIC line (KVM_IRQ_LINE) reach a guest halted
/// in the kernel with interrupts on, through the in-kernel LAPIC and IOAPIC.
#[test]
fn msi_and_ioapic_interrupts_reach_the_guest() {
    if !have_kvm() {
        return;
    }
    #[rustfmt::skip]
    let main = [
        0xb8, 0xf0, 0x00, 0xe0, 0xfe,       // mov $0xfee000f0,%eax (LAPIC SVR)
        0xc7, 0x00, 0xff, 0x01, 0x00, 0x00, // movl $0x1ff,(%rax): software-enable
        // LINT0 is ExtINT and unmasked as a BIOS leaves it, so mask the 8259s
        // (reset vector base 0) before unmasking interrupts: out 0xff to 0x21, 0xa1.
        0xb0, 0xff, 0xe6, 0x21, 0xe6, 0xa1,
        0xb8, 0x00, 0x00, 0xc0, 0xfe,       // mov $0xfec00000,%eax (IOAPIC)
        0xc7, 0x00, 0x18, 0x00, 0x00, 0x00, // movl $0x18,(%rax): select redirection 4 (low)
        0xc7, 0x40, 0x10, 0x41, 0x00, 0x00, 0x00, // movl $0x41,0x10(%rax): vector 0x41, unmasked
        0xb0, 0x01, 0xe6, 0x80,             // out 1 to port 0x80: ready
        0xfb,                               // sti
        0xf4,                               // 1: hlt
        0xeb, 0xfd,                         // jmp 1b
    ];
    #[rustfmt::skip]
    let msi_handler = [
        0xb0, 0x40, 0xe6, 0x80,             // out 0x40 to port 0x80
        0xb8, 0xb0, 0x00, 0xe0, 0xfe,       // mov $0xfee000b0,%eax (LAPIC EOI)
        0xc7, 0x00, 0x00, 0x00, 0x00, 0x00, // movl $0,(%rax)
        0x48, 0xcf,                         // iretq
    ];
    let mut line_handler = vec![0xb0, 0x41, 0xe6, 0x80]; // out 0x41 to port 0x80
    line_handler.extend_from_slice(RESET);
    let (vm, vcpu) = vm_with_code_and_handlers(
        &main,
        &[(0x40, &msi_handler[..]), (0x41, &line_handler[..])],
    );
    let vm = Arc::new(vm);
    let io = Arc::new(TestIo::default());
    let driver = {
        let (vm, io) = (vm.clone(), io.clone());
        std::thread::spawn(move || {
            let seen = |b: u8| io.port80_log.lock().unwrap().contains(&vec![b]);
            let wait = |b: u8| {
                while !seen(b) && !io.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            wait(1);
            vm.signal_msi(0xfee0_0000, 0x40).unwrap();
            wait(0x40);
            vm.set_irq_line(4, true).unwrap();
            vm.set_irq_line(4, false).unwrap();
        })
    };
    let (outcome, _) = common::run(&vm, vec![vcpu], io.clone());
    driver.join().unwrap();
    assert_eq!(outcome, Outcome::Reset);
    assert_eq!(
        *io.port80_log.lock().unwrap(),
        vec![vec![1], vec![0x40], vec![0x41]]
    );
}

/// A legacy interrupt through the in-kernel 8259 reaches the CPU through LINT0, which
/// is set up in ExtINT (virtual wire) mode as a BIOS leaves it.
#[test]
fn pic_interrupt_arrives_through_lint0_extint() {
    if !have_kvm() {
        return;
    }
    #[rustfmt::skip]
    let main = [
        0xb0, 0x11, 0xe6, 0x20,             // ICW1: edge, cascade, ICW4 follows
        0xb0, 0x20, 0xe6, 0x21,             // ICW2: vector base 0x20
        0xb0, 0x04, 0xe6, 0x21,             // ICW3: slave on IRQ2
        0xb0, 0x01, 0xe6, 0x21,             // ICW4: 8086 mode
        0xb0, 0xef, 0xe6, 0x21,             // OCW1: only IRQ4 unmasked
        0xb0, 0x01, 0xe6, 0x80,             // out 1 to port 0x80: ready
        0xfb,                               // sti
        0xf4,                               // 1: hlt
        0xeb, 0xfd,                         // jmp 1b
    ];
    let mut handler = vec![0xb0, 0x24, 0xe6, 0x80]; // out 0x24 to port 0x80
    handler.extend_from_slice(RESET);
    let (vm, vcpu) = vm_with_code_and_handlers(&main, &[(0x24, &handler[..])]);
    let vm = Arc::new(vm);
    let io = Arc::new(TestIo::default());
    let driver = {
        let (vm, io) = (vm.clone(), io.clone());
        std::thread::spawn(move || {
            while io.port80_log.lock().unwrap().is_empty()
                && !io.stop.load(std::sync::atomic::Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            vm.set_irq_line(4, true).unwrap();
            vm.set_irq_line(4, false).unwrap();
        })
    };
    let (outcome, _) = common::run(&vm, vec![vcpu], io.clone());
    driver.join().unwrap();
    assert_eq!(outcome, Outcome::Reset);
    assert_eq!(*io.port80_log.lock().unwrap(), vec![vec![1], vec![0x24]]);
}
