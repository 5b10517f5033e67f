//! The test guests on KVM, driven directly through accel-kvm.

mod common;

use common::{boot, have_kvm, Outcome};

/// The ALU loop of guests/hello.c, computed natively.
fn hello_checksum() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut carries: u32 = 0;
    for i in 0u64..4096 {
        let prev = h;
        h ^= i;
        h = h.wrapping_mul(0x100000001b3);
        h = h.rotate_left(13);
        h = h.wrapping_add(prev);
        carries += (h < prev) as u32;
        if i % 7 == 3 {
            h ^= h / (i | 1);
        }
        h = h.wrapping_sub((prev >> 58) * 0x9e37);
    }
    h ^ u64::from(carries)
}

#[test]
fn hello_prints_cmdline_and_checksum_then_resets() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, _) = boot("hello", "console=ttyS0 hello=world", 1);
    let expected = format!(
        "hello: cmdline=\"console=ttyS0 hello=world\"\nhello: checksum=0x{:016x}\nhello: resetting\n",
        hello_checksum()
    );
    assert_eq!(out, expected);
    assert_eq!(outcome, Outcome::Reset);
}

#[test]
fn triple_fault_is_a_shutdown() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, _) = boot("triple", "", 1);
    assert_eq!(out, "triple: faulting\n");
    assert_eq!(outcome, Outcome::Shutdown);
}

#[test]
fn smp_starts_every_ap_through_the_lapic() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, _) = boot("smp", "cpus=3", 3);
    assert_eq!(
        out,
        "smp: BSP 0, starting 2 APs\n\
         smp: AP 1 up, ticket 0\n\
         smp: AP 2 up, ticket 1\n\
         smp: total=3 CPUs\n"
    );
    assert_eq!(outcome, Outcome::Reset);
}

#[test]
fn outloop_exits_once_per_out() {
    if !have_kvm() {
        return;
    }
    let (outcome, out, io) = boot("outloop", "count=2500", 1);
    assert_eq!(out, "outloop: count=2500\noutloop: done\n");
    assert_eq!(outcome, Outcome::Reset);
    assert_eq!(
        io.port80_writes.load(std::sync::atomic::Ordering::Relaxed),
        2500
    );
}
