//! Which local APICs receive an interrupt message or IPI.

use super::lapic::{Ipi, Shorthand};
use super::{dest_matches, Delivery, DeliveryMode};

/// The addressing registers of one local APIC, as routing sees them
/// (get them from [`super::lapic::Lapic::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApicTarget {
    /// APIC ID.
    pub apic_id: u32,
    /// Logical destination register.
    pub ldr: u32,
    /// Destination format register.
    pub dfr: u32,
    /// Globally enabled (IA32_APIC_BASE bit 11); disabled APICs receive nothing.
    pub enabled: bool,
    /// Task priority, for lowest-priority arbitration.
    pub tpr: u8,
}

/// Indices into `targets` of the APICs that receive `d`. A lowest-priority
/// message goes to the matching APIC with the lowest TPR (as the chipset
/// arbitrates on Pentium 4 and later, SDM 10.6.2.4), the first one on a tie.
pub fn route(d: &Delivery, targets: &[ApicTarget]) -> Vec<usize> {
    let out: Vec<usize> = targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.enabled && dest_matches(d.dest, d.logical, t.apic_id, t.ldr, t.dfr))
        .map(|(i, _)| i)
        .collect();
    if d.delivery_mode == DeliveryMode::LowestPriority {
        if let Some(&best) = out.iter().min_by_key(|&&i| targets[i].tpr) {
            return vec![best];
        }
    }
    out
}

/// Indices into `targets` of the APICs that receive `ipi`, sent by the APIC at
/// index `sender`. Shorthands override the destination field; an INIT level
/// de-assert reaches no one; lowest priority picks the first match.
pub fn route_ipi(ipi: &Ipi, sender: usize, targets: &[ApicTarget]) -> Vec<usize> {
    if ipi.is_init_deassert() {
        return Vec::new();
    }
    let enabled = |i: &usize| targets[*i].enabled;
    let all = 0..targets.len();
    match ipi.shorthand {
        Shorthand::SelfOnly => all.filter(|&i| i == sender).filter(enabled).collect(),
        Shorthand::AllIncludingSelf => all.filter(enabled).collect(),
        Shorthand::AllExcludingSelf => all.filter(|&i| i != sender).filter(enabled).collect(),
        Shorthand::None => route(
            &Delivery {
                vector: ipi.vector,
                delivery_mode: ipi.delivery_mode,
                dest: ipi.dest,
                logical: ipi.logical,
                level_triggered: ipi.level_triggered,
            },
            targets,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus() -> Vec<ApicTarget> {
        (0..4)
            .map(|i| ApicTarget {
                apic_id: i,
                ldr: (1 << i) << 24,
                dfr: 0xffff_ffff,
                enabled: true,
                tpr: 0,
            })
            .collect()
    }

    fn delivery(dest: u32, logical: bool, mode: DeliveryMode) -> Delivery {
        Delivery {
            vector: 0x40,
            delivery_mode: mode,
            dest,
            logical,
            level_triggered: false,
        }
    }

    #[test]
    fn physical_and_broadcast() {
        let t = cpus();
        assert_eq!(route(&delivery(2, false, DeliveryMode::Fixed), &t), vec![2]);
        assert_eq!(
            route(&delivery(9, false, DeliveryMode::Fixed), &t),
            Vec::<usize>::new()
        );
        assert_eq!(
            route(&delivery(0xff, false, DeliveryMode::Fixed), &t),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn logical_flat_multicast_and_lowest_priority() {
        let t = cpus();
        assert_eq!(
            route(&delivery(0x0a, true, DeliveryMode::Fixed), &t),
            vec![1, 3]
        );
        assert_eq!(
            route(&delivery(0x0a, true, DeliveryMode::LowestPriority), &t),
            vec![1]
        );
        let mut busy = t.clone();
        busy[1].tpr = 0x20;
        assert_eq!(
            route(&delivery(0x0a, true, DeliveryMode::LowestPriority), &busy),
            vec![3]
        );
        assert_eq!(
            route(&delivery(0x0e, true, DeliveryMode::LowestPriority), &busy),
            vec![2]
        );
        assert_eq!(
            route(&delivery(0xff, true, DeliveryMode::Fixed), &t),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn disabled_apics_receive_nothing() {
        let mut t = cpus();
        t[1].enabled = false;
        assert_eq!(
            route(&delivery(0xff, false, DeliveryMode::Fixed), &t),
            vec![0, 2, 3]
        );
        assert_eq!(
            route(&delivery(1, false, DeliveryMode::Fixed), &t),
            Vec::<usize>::new()
        );
    }

    fn ipi(shorthand: Shorthand, mode: DeliveryMode, level: bool, level_triggered: bool) -> Ipi {
        Ipi {
            vector: 0x9a,
            delivery_mode: mode,
            dest: 3,
            logical: false,
            shorthand,
            level,
            level_triggered,
        }
    }

    #[test]
    fn ipi_shorthands() {
        let t = cpus();
        assert_eq!(
            route_ipi(
                &ipi(Shorthand::None, DeliveryMode::Fixed, true, false),
                0,
                &t
            ),
            vec![3]
        );
        assert_eq!(
            route_ipi(
                &ipi(Shorthand::SelfOnly, DeliveryMode::Fixed, true, false),
                1,
                &t
            ),
            vec![1]
        );
        assert_eq!(
            route_ipi(
                &ipi(
                    Shorthand::AllIncludingSelf,
                    DeliveryMode::Fixed,
                    true,
                    false
                ),
                1,
                &t
            ),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            route_ipi(
                &ipi(Shorthand::AllExcludingSelf, DeliveryMode::Init, true, false),
                1,
                &t
            ),
            vec![0, 2, 3]
        );
    }

    #[test]
    fn init_deassert_goes_nowhere() {
        let t = cpus();
        assert!(route_ipi(
            &ipi(Shorthand::AllExcludingSelf, DeliveryMode::Init, false, true),
            0,
            &t
        )
        .is_empty());
        // INIT assert (level-triggered, level 1) is delivered.
        assert_eq!(
            route_ipi(&ipi(Shorthand::None, DeliveryMode::Init, true, true), 0, &t),
            vec![3]
        );
    }
}
