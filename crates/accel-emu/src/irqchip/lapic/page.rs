//! The local APIC as the 1 KiB xAPIC register page of the neutral CPU state
//! ([`vmm_types::lapic`]): what `Vcpu::state` saves and `set_state` loads, and
//! what KVM_GET_LAPIC/KVM_SET_LAPIC exchange on the other accelerator.
//!
//! The timer's position travels as the current count (TMCCT): loading a page
//! restarts a one-shot or periodic count so that it reads that value now and
//! expires after that many counts. The TSC deadline is an MSR and is set
//! separately ([`Lapic::set_tsc_deadline_ns`]). ESR errors latched since the last
//! ESR write (not yet visible in ESR) are not part of the page and are lost.

use vmm_types::lapic as page;

use super::{reg, Lapic, ICR_LOW_WRITABLE, LVT_TIMER, LVT_WRITABLE, VERSION};

impl Lapic {
    /// The register page at `now_ns`, as the guest would read it (TMCCT the current
    /// count). Call [`Lapic::advance`] first so an expiry that is due is in IRR.
    pub fn to_page(&self, now_ns: u64) -> Vec<u8> {
        let s = &self.s;
        let mut p = vec![0u8; page::PAGE_SIZE];
        page::set(&mut p, page::ID, s.apic_id << 24);
        page::set(&mut p, page::VERSION, VERSION);
        page::set(&mut p, page::TPR, u32::from(s.tpr));
        page::set(&mut p, page::APR, self.read(reg::APR, now_ns));
        page::set(&mut p, page::PPR, u32::from(self.ppr()));
        page::set(&mut p, page::LDR, s.ldr);
        page::set(&mut p, page::DFR, s.dfr);
        page::set(&mut p, page::SVR, s.svr);
        page::set256(&mut p, page::ISR, &s.isr);
        page::set256(&mut p, page::TMR, &s.tmr);
        page::set256(&mut p, page::IRR, &s.irr);
        page::set(&mut p, page::ESR, s.esr);
        page::set(&mut p, page::ICR_LOW, s.icr_low);
        page::set(&mut p, page::ICR_HIGH, s.icr_high);
        for (i, lvt) in s.lvt.iter().enumerate() {
            page::set(&mut p, page::LVT_TIMER + 16 * i, *lvt);
        }
        page::set(&mut p, page::TIMER_INITIAL, s.timer_initial);
        page::set(
            &mut p,
            page::TIMER_CURRENT,
            self.timer_current_count(now_ns),
        );
        page::set(&mut p, page::TIMER_DIVIDE, s.timer_divide);
        p
    }

    /// Loads a register page at `now_ns`. IA32_APIC_BASE, the TSC deadline and the
    /// latched NMI/INIT/SIPI are not part of the page and stay as they are. Bits
    /// a guest could not have written are dropped, as a register write drops them.
    pub fn load_page(&mut self, p: &[u8], now_ns: u64) -> Result<(), String> {
        if p.len() != page::PAGE_SIZE {
            return Err(format!(
                "the local APIC page has {} bytes, not {}",
                p.len(),
                page::PAGE_SIZE
            ));
        }
        let s = &mut self.s;
        s.apic_id = page::get(p, page::ID) >> 24;
        s.tpr = page::get(p, page::TPR) as u8;
        s.ldr = page::get(p, page::LDR) & 0xff00_0000;
        s.dfr = page::get(p, page::DFR) | 0x0fff_ffff;
        s.svr = page::get(p, page::SVR) & 0x3ff;
        s.isr = page::get256(p, page::ISR);
        s.tmr = page::get256(p, page::TMR);
        s.irr = page::get256(p, page::IRR);
        s.esr = page::get(p, page::ESR);
        s.esr_pending = 0;
        s.icr_low = page::get(p, page::ICR_LOW) & ICR_LOW_WRITABLE;
        s.icr_high = page::get(p, page::ICR_HIGH) & 0xff00_0000;
        for (i, lvt) in s.lvt.iter_mut().enumerate() {
            *lvt = page::get(p, page::LVT_TIMER + 16 * i) & LVT_WRITABLE[i];
        }
        if (s.lvt[LVT_TIMER] >> 17) & 3 == 3 {
            s.lvt[LVT_TIMER] &= !(3 << 17);
        }
        s.timer_initial = page::get(p, page::TIMER_INITIAL);
        s.timer_divide = page::get(p, page::TIMER_DIVIDE) & 0xb;
        s.tsc_deadline_ns = None;
        let current = page::get(p, page::TIMER_CURRENT).min(s.timer_initial);
        let ns_per_count = self.timer_divisor() * super::BUS_NS_PER_TICK;
        let deadline_mode = self.timer_mode() == super::timer::TimerMode::TscDeadline;
        let s = &mut self.s;
        if deadline_mode || current == 0 {
            s.timer_start_ns = now_ns;
            s.timer_next_ns = None;
        } else {
            let done = u64::from(s.timer_initial - current) * ns_per_count;
            s.timer_start_ns = now_ns.wrapping_sub(done);
            s.timer_next_ns = now_ns.checked_add(u64::from(current) * ns_per_count);
        }
        Ok(())
    }

    /// Whether an NMI is latched.
    pub fn nmi_pending(&self) -> bool {
        self.s.pending_nmi
    }

    /// Latches or clears an NMI (restoring a saved state).
    pub fn set_nmi_pending(&mut self, pending: bool) {
        self.s.pending_nmi = pending;
    }

    /// Drops latched INIT and SIPI (a restored state has none, or names them itself).
    pub fn clear_init_sipi(&mut self) {
        self.s.pending_init = false;
        self.s.pending_sipi = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programmed() -> Lapic {
        let mut l = Lapic::new(3);
        l.write(reg::SVR, 0x1ff, 0);
        l.write(reg::TPR, 0x20, 0);
        l.write(reg::LDR, 0x0400_0000, 0);
        l.write(reg::TIMER_DIVIDE, 0x0, 0); // divide by 2
        l.write(reg::LVT_TIMER, 0x2_0040, 0); // periodic, vector 0x40
        l.write(reg::TIMER_INITIAL, 1000, 100);
        l.accept_interrupt(0x51, true);
        l.acknowledge();
        l.accept_interrupt(0x62, false);
        l
    }

    #[test]
    fn page_has_the_xapic_layout() {
        let l = programmed();
        // 300 ns after the start at 100, at 2 ns per count: 150 counts done.
        let p = l.to_page(400);
        assert_eq!(page::get(&p, page::ID), 3 << 24);
        assert_eq!(page::get(&p, page::VERSION), VERSION);
        assert_eq!(page::get(&p, page::TPR), 0x20);
        assert_eq!(page::get(&p, page::PPR), 0x50);
        assert_eq!(page::get(&p, page::SVR), 0x1ff);
        assert_eq!(page::get(&p, page::ISR + 0x20), 1 << (0x51 - 0x40));
        assert_eq!(page::get(&p, page::TMR + 0x20), 1 << (0x51 - 0x40));
        assert_eq!(page::get(&p, page::IRR + 0x30), 1 << (0x62 - 0x60));
        assert_eq!(page::get(&p, page::LVT_TIMER), 0x2_0040);
        assert_eq!(page::get(&p, page::TIMER_INITIAL), 1000);
        assert_eq!(page::get(&p, page::TIMER_CURRENT), 850);
    }

    #[test]
    fn loading_a_page_continues_the_count() {
        let l = programmed();
        let p = l.to_page(400);
        // Load on another clock: at 1_000_000 the count reads 850 and expires 1700 ns on.
        let mut m = Lapic::new(0);
        m.load_page(&p, 1_000_000).unwrap();
        assert_eq!(m.read(reg::TIMER_CURRENT, 1_000_000), 850);
        assert_eq!(m.next_timer_deadline(), Some(1_001_700));
        assert_eq!(m.to_page(1_000_000), p);
        assert_eq!(m.apic_id(), 3);
        // 0x62 is a class above the in-service 0x51: deliverable.
        assert_eq!(m.pending_vector(), Some(0x62));
    }

    #[test]
    fn short_pages_are_refused() {
        let mut l = Lapic::new(0);
        assert!(l.load_page(&[0; 16], 0).unwrap_err().contains("16 bytes"));
    }
}
