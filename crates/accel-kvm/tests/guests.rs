//! The test guests on KVM, driven directly through accel-kvm.

mod common;

use common::{boot, have_kvm, Outcome};
use test_guests::expected;

#[test]
fn hello_prints_cmdline_and_checksum_then_resets() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, _) = boot("hello", "console=ttyS0 hello=world", 1);
    assert_eq!(out, expected::hello("console=ttyS0 hello=world"));
    assert_eq!(outcome, Outcome::Reset);
}

#[test]
fn triple_fault_is_a_shutdown() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, _) = boot("triple", "", 1);
    assert_eq!(out, expected::triple());
    assert_eq!(outcome, Outcome::Shutdown);
}

#[test]
fn smp_starts_every_ap_through_the_lapic() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, _) = boot("smp", "cpus=3", 3);
    assert_eq!(out, expected::smp(3));
    assert_eq!(outcome, Outcome::Reset);
}

#[test]
fn outloop_exits_once_per_out() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, io) = boot("outloop", "count=2500", 1);
    assert_eq!(out, expected::outloop(2500));
    assert_eq!(outcome, Outcome::Reset);
    assert_eq!(
        io.port80_writes.load(std::sync::atomic::Ordering::Relaxed),
        2500
    );
}

#[test]
fn smp_with_one_cpu_and_with_four() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, _) = boot("smp", "cpus=1", 1);
    assert_eq!(out, expected::smp(1));
    assert_eq!(outcome, Outcome::Reset);
    let (outcome, out, _) = boot("smp", "cpus=4", 4);
    assert_eq!(out, expected::smp(4));
    assert_eq!(outcome, Outcome::Reset);
}
