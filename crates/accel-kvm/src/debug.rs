//! Guest debugging on KVM: `KVM_SET_GUEST_DEBUG` with the four debug registers for
//! hardware breakpoints and watchpoints together, its single-step flag, and
//! `KVM_GUESTDBG_USE_SW_BP` for the `int3`s the debugger writes into guest memory
//! (software breakpoints, as many as it likes).

use accel::{DebugStop, Error, GuestDebug, Result, WatchKind};
use kvm_bindings::{
    kvm_debug_exit_arch, kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};

/// The #BP vector, as KVM reports an `int3` under KVM_GUESTDBG_USE_SW_BP.
pub(crate) const BP_VECTOR: u32 = 3;

/// DR7 R/W field values.
const RW_EXEC: u64 = 0b00;
const RW_WRITE: u64 = 0b01;
const RW_ACCESS: u64 = 0b11;
/// DR6: breakpoint condition bits and single step.
const DR6_B: u64 = 0xf;
const DR6_BS: u64 = 1 << 14;

/// DR7 LEN field for a watched length (1, 2, 4 or 8 bytes, aligned).
fn len_bits(len: u64) -> Option<u64> {
    Some(match len {
        1 => 0b00,
        2 => 0b01,
        4 => 0b11,
        8 => 0b10,
        _ => return None,
    })
}

/// The `kvm_guest_debug` for `d`, and what each debug register watches.
pub(crate) fn to_kvm(d: &GuestDebug) -> Result<(kvm_guest_debug, [Option<Slot>; 4])> {
    let mut g = kvm_guest_debug::default();
    let mut slots = [None; 4];
    if !d.active() {
        return Ok((g, slots));
    }
    g.control = KVM_GUESTDBG_ENABLE;
    if d.single_step {
        g.control |= KVM_GUESTDBG_SINGLESTEP;
    }
    if !d.int3.is_empty() {
        g.control |= KVM_GUESTDBG_USE_SW_BP;
    }
    let wanted = d.breakpoints.len() + d.watchpoints.len();
    if wanted > 4 {
        return Err(Error::Unavailable(format!(
            "KVM has 4 debug registers: {wanted} breakpoints and watchpoints asked"
        )));
    }
    let mut dr7 = 0u64;
    let mut n = 0;
    let mut put = |addr: u64, rw: u64, len: u64, slot: Slot| {
        g.arch.debugreg[n] = addr;
        dr7 |= 1 << (2 * n); // Ln: local enable
        dr7 |= (rw | len << 2) << (16 + 4 * n);
        slots[n] = Some(slot);
        n += 1;
    };
    for &a in &d.breakpoints {
        put(a, RW_EXEC, 0, Slot::Breakpoint);
    }
    for w in &d.watchpoints {
        let len = len_bits(w.len)
            .filter(|_| w.addr % w.len == 0)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "KVM watches 1, 2, 4 or 8 aligned bytes, not {} at {:#x}",
                    w.len, w.addr
                ))
            })?;
        let rw = match w.kind {
            WatchKind::Write => RW_WRITE,
            // x86 debug registers have no read-only condition.
            WatchKind::Read | WatchKind::Access => RW_ACCESS,
        };
        put(w.addr, rw, len, Slot::Watch(w.addr, w.kind));
    }
    if n > 0 {
        g.control |= KVM_GUESTDBG_USE_HW_BP;
    }
    g.arch.debugreg[7] = dr7;
    Ok((g, slots))
}

/// What one debug register was set for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    Breakpoint,
    Watch(u64, WatchKind),
}

/// Why KVM_EXIT_DEBUG happened.
pub(crate) fn stop(exit: &kvm_debug_exit_arch, slots: &[Option<Slot>; 4]) -> DebugStop {
    let hit = (0..4).find(|&i| exit.dr6 & DR6_B & (1 << i) != 0);
    match hit.and_then(|i| slots[i]) {
        Some(Slot::Breakpoint) => DebugStop::Breakpoint,
        Some(Slot::Watch(addr, kind)) => DebugStop::Watchpoint { addr, kind },
        None if exit.dr6 & DR6_BS != 0 => DebugStop::Step,
        None => DebugStop::Step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_registers_for_breakpoints_and_watchpoints() {
        let d = GuestDebug {
            single_step: false,
            breakpoints: vec![0x1000],
            watchpoints: vec![accel::Watchpoint {
                addr: 0x2004,
                len: 4,
                kind: WatchKind::Write,
            }],
            int3: Vec::new(),
        };
        let (g, slots) = to_kvm(&d).unwrap();
        assert_eq!(g.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP);
        assert_eq!(&g.arch.debugreg[..2], &[0x1000, 0x2004]);
        // L0, L1; slot 0 exec/1 byte; slot 1 write/4 bytes.
        assert_eq!(g.arch.debugreg[7], 0b0101 | (0b1101 << 20));
        let mut exit = kvm_debug_exit_arch {
            dr6: 0b10,
            ..Default::default()
        };
        assert_eq!(
            stop(&exit, &slots),
            DebugStop::Watchpoint {
                addr: 0x2004,
                kind: WatchKind::Write
            }
        );
        exit.dr6 = 1;
        assert_eq!(stop(&exit, &slots), DebugStop::Breakpoint);
        let too_many = GuestDebug {
            breakpoints: vec![1, 2, 3, 4, 5],
            ..Default::default()
        };
        assert!(to_kvm(&too_many).is_err());
        let odd = GuestDebug {
            watchpoints: vec![accel::Watchpoint {
                addr: 0x2001,
                len: 3,
                kind: WatchKind::Access,
            }],
            ..Default::default()
        };
        assert!(to_kvm(&odd).is_err());
        // Planted int3s need no debug register.
        let sw = GuestDebug {
            int3: vec![0x5000; 9],
            ..Default::default()
        };
        let (g, _) = to_kvm(&sw).unwrap();
        assert_eq!(g.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP);
    }
}
