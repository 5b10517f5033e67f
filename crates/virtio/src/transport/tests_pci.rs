//! The PCI transport driven like Linux's virtio_pci_modern driver does.

use std::collections::HashMap;
use std::sync::Arc;

use pci::PciDevice;

use super::pci::{VirtioPciArgs, VirtioPciDevice, VirtioPciState, NO_VECTOR};
use crate::rng::Rng;
use crate::status;
use crate::testing::{self, GuestQueue, Line, MsiLog};
use crate::GuestMemory;
use vm_device::Persist;

struct Drv {
    dev: VirtioPciDevice<Rng>,
    /// cfg_type -> offset in BAR 0.
    caps: HashMap<u8, u64>,
    notify_mult: u32,
    msix_cap: u64,
    pci_cfg_cap: u64,
    msi: Arc<MsiLog>,
    line: Arc<Line>,
    mem: GuestMemory,
}

fn source() -> crate::rng::EntropySource {
    Box::new(|b: &mut [u8]| {
        b.fill(0x5a);
        Ok(())
    })
}

impl Drv {
    fn new() -> Self {
        let mem = testing::memory();
        let msi = testing::msi_log();
        let line = testing::line();
        let mut dev = VirtioPciDevice::new(
            Rng::with_source(source()),
            mem.clone(),
            msi.clone(),
            line.clone(),
            17,
        )
        .unwrap();
        dev.set_bar_address(0, 0xc000_0000);
        let mut caps = HashMap::new();
        let (mut notify_mult, mut msix_cap, mut pci_cfg_cap) = (0, 0, 0);
        let mut p = u64::from(cfg8(&mut dev, 0x34));
        while p != 0 {
            match cfg8(&mut dev, p) {
                0x09 => {
                    let ty = cfg8(&mut dev, p + 3);
                    assert_eq!(cfg8(&mut dev, p + 4), 0, "all structures in BAR 0");
                    caps.insert(ty, u64::from(cfg32(&mut dev, p + 8)));
                    if ty == 2 {
                        notify_mult = cfg32(&mut dev, p + 16);
                    }
                    if ty == 5 {
                        pci_cfg_cap = p;
                    }
                }
                0x11 => msix_cap = p,
                other => panic!("unexpected capability {other:#x}"),
            }
            p = u64::from(cfg8(&mut dev, p + 1));
        }
        Self {
            dev,
            caps,
            notify_mult,
            msix_cap,
            pci_cfg_cap,
            msi,
            line,
            mem,
        }
    }

    fn bar_w(&mut self, ty: u8, off: u64, data: &[u8]) {
        let base = self.caps[&ty];
        self.dev.bar_write(0, base + off, data);
    }
    fn bar_r(&mut self, ty: u8, off: u64, n: usize) -> u64 {
        let base = self.caps[&ty];
        let mut b = [0u8; 8];
        self.dev.bar_read(0, base + off, &mut b[..n]);
        u64::from_le_bytes(b)
    }
    fn common_w(&mut self, off: u64, v: u64, n: usize) {
        self.bar_w(1, off, &v.to_le_bytes()[..n]);
    }
    fn status(&mut self) -> u8 {
        self.bar_r(1, 0x14, 1) as u8
    }

    fn enable_msix(&mut self) {
        let c = self.msix_cap + 2;
        self.dev.config_write(c, &0x8000u16.to_le_bytes());
        for v in 0..2u64 {
            let t = 0x4000 + 16 * v;
            self.dev.bar_write(0, t, &0xfee0_0000u32.to_le_bytes());
            self.dev
                .bar_write(0, t + 8, &(0x30 + v as u32).to_le_bytes());
            self.dev.bar_write(0, t + 12, &0u32.to_le_bytes());
        }
    }

    /// Linux's order: reset, ACK, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
    fn init(&mut self, want: u64, q: &GuestQueue, msix: bool) {
        self.common_w(0x14, 0, 1);
        self.common_w(0x14, 3, 1);
        self.common_w(0x00, 0, 4);
        let lo = self.bar_r(1, 0x04, 4);
        self.common_w(0x00, 1, 4);
        let hi = self.bar_r(1, 0x04, 4);
        let f = (hi << 32 | lo) & want;
        self.common_w(0x08, 0, 4);
        self.common_w(0x0c, f & 0xffff_ffff, 4);
        self.common_w(0x08, 1, 4);
        self.common_w(0x0c, f >> 32, 4);
        self.common_w(0x14, 0xb, 1);
        assert_eq!(self.status() & status::FEATURES_OK, status::FEATURES_OK);
        if msix {
            self.enable_msix();
            self.common_w(0x10, 0, 2);
        }
        self.common_w(0x16, 0, 2);
        self.common_w(0x18, u64::from(q.size), 2);
        if msix {
            self.common_w(0x1a, 1, 2);
        }
        // Two-part 64-bit writes, as vp_iowrite64_twopart does.
        for (off, a) in [(0x20, q.desc), (0x28, q.avail), (0x30, q.used)] {
            self.common_w(off, a & 0xffff_ffff, 4);
            self.common_w(off + 4, a >> 32, 4);
        }
        self.common_w(0x1c, 1, 2);
        self.common_w(0x14, 0xf, 1);
    }

    fn notify(&mut self, q: u16) {
        let off = u64::from(q) * u64::from(self.notify_mult);
        self.bar_w(2, off, &q.to_le_bytes());
    }

    fn msgs(&self) -> Vec<(u64, u32)> {
        self.msi.0.lock().unwrap().clone()
    }
}

fn cfg8(d: &mut VirtioPciDevice<Rng>, off: u64) -> u8 {
    let mut b = [0u8; 1];
    d.config_read(off, &mut b);
    b[0]
}
fn cfg32(d: &mut VirtioPciDevice<Rng>, off: u64) -> u32 {
    let mut b = [0u8; 4];
    d.config_read(off, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn identification_bar_and_capabilities() {
    let mut d = Drv::new();
    assert_eq!(cfg32(&mut d.dev, 0), 0x1044_1af4);
    assert_eq!(cfg8(&mut d.dev, 0x08), 1, "revision");
    assert_eq!(cfg8(&mut d.dev, 0x3d), 1, "INTA");
    assert_eq!(cfg8(&mut d.dev, 0x3c), 17, "interrupt line = GSI");
    for ty in 1..=4 {
        assert!(d.caps.contains_key(&ty), "capability type {ty}");
    }
    assert_eq!(d.notify_mult, 4);
    assert_ne!(d.msix_cap, 0);
    d.dev.config_write(0x10, &[0xff; 4]);
    d.dev.config_write(0x14, &[0xff; 4]);
    assert_eq!(cfg32(&mut d.dev, 0x10), 0xffff_8004, "32 KiB 64-bit BAR");
    assert_eq!(d.bar_r(1, 0x12, 2), 1, "num_queues");
}

#[test]
fn request_completes_with_msix_vector_of_the_queue() {
    let mut d = Drv::new();
    let mut q = GuestQueue::new(0x1000, 8);
    d.init(u64::MAX, &q, true);
    assert_eq!(d.status(), 0xf);
    let mem = d.mem.clone();
    q.add_chain(&mem, &[(0x9000, 16, true)]);
    d.notify(0);
    assert_eq!(q.take_used(&mem), vec![(0, 16)]);
    assert_eq!(d.msgs(), vec![(0xfee0_0000, 0x31)]);
    assert!(!d.line.level(), "no INTx while MSI-X is on");
}

#[test]
fn intx_is_held_until_isr_is_read() {
    let mut d = Drv::new();
    let mut q = GuestQueue::new(0x1000, 8);
    d.init(u64::MAX, &q, false);
    let mem = d.mem.clone();
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    d.notify(0);
    assert!(d.line.level());
    assert_eq!(d.bar_r(3, 0, 1), 1);
    assert!(!d.line.level());
    assert_eq!(d.bar_r(3, 0, 1), 0, "ISR clears on read");
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let mut d = Drv::new();
    let mut q = GuestQueue::new(0x1000, 8);
    d.init(u64::MAX, &q, true);
    let mem = d.mem.clone();
    q.set_used_event(&mem, 1); // interrupt when used idx passes 1
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    d.notify(0);
    assert!(
        d.msgs().is_empty(),
        "used idx 1 has not passed used_event 1"
    );
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    d.notify(0);
    assert_eq!(d.msgs().len(), 1);
    assert_eq!(q.take_used(&mem).len(), 2);
}

#[test]
fn unoffered_features_are_refused() {
    let mut d = Drv::new();
    d.common_w(0x14, 3, 1);
    d.common_w(0x08, 0, 4);
    d.common_w(0x0c, 1 << 0, 4); // a bit the device does not offer
    d.common_w(0x08, 1, 4);
    d.common_w(0x0c, 1, 4);
    d.common_w(0x14, 0xb, 1);
    assert_eq!(d.status() & status::FEATURES_OK, 0);
}

#[test]
fn bad_queue_size_sets_needs_reset_and_reset_clears_it() {
    let mut d = Drv::new();
    d.common_w(0x14, 3, 1);
    d.common_w(0x16, 0, 2);
    d.common_w(0x18, 3, 2);
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    d.common_w(0x14, 0, 1);
    assert_eq!(d.status(), 0);
    let mut q = GuestQueue::new(0x1000, 8);
    d.init(u64::MAX, &q, true);
    let mem = d.mem.clone();
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    d.notify(0);
    assert_eq!(q.take_used(&mem).len(), 1, "works again after reset");
}

#[test]
fn notify_of_missing_queue_breaks_device_with_config_interrupt() {
    let mut d = Drv::new();
    let mut q = GuestQueue::new(0x1000, 8);
    d.init(u64::MAX, &q, true);
    d.notify(3);
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(d.msgs(), vec![(0xfee0_0000, 0x30)], "config vector");
    let mem = d.mem.clone();
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    d.notify(0);
    assert!(
        q.take_used(&mem).is_empty(),
        "a broken device ignores its queues"
    );
}

#[test]
fn rings_outside_memory_fail_at_driver_ok() {
    let mut d = Drv::new();
    let q = GuestQueue::new(0x7fff_0000, 8);
    d.init(u64::MAX, &q, false);
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn misaligned_ring_fails_queue_enable() {
    let mut d = Drv::new();
    let mut q = GuestQueue::new(0x1000, 8);
    q.used += 2;
    d.init(u64::MAX, &q, false);
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn pci_cfg_capability_reaches_bar0() {
    let mut d = Drv::new();
    let c = d.pci_cfg_cap;
    d.dev.config_write(c + 4, &[0]);
    d.dev.config_write(c + 8, &0x12u32.to_le_bytes()); // common cfg num_queues
    d.dev.config_write(c + 12, &2u32.to_le_bytes());
    assert_eq!(cfg32(&mut d.dev, c + 16) & 0xffff, 1);
    d.dev.config_write(c + 8, &0x16u32.to_le_bytes()); // queue_select
    d.dev.config_write(c + 16, &0u16.to_le_bytes());
    assert_eq!(
        d.bar_r(1, 0x18, 2),
        256,
        "queue 0 size via pci_cfg-selected queue"
    );
}

#[test]
fn msix_vector_registers_reject_out_of_range_vectors() {
    let mut d = Drv::new();
    d.common_w(0x10, 7, 2);
    assert_eq!(d.bar_r(1, 0x10, 2), u64::from(NO_VECTOR));
    d.common_w(0x10, 1, 2);
    assert_eq!(d.bar_r(1, 0x10, 2), 1);
}

#[test]
fn state_round_trip_continues_the_ring() {
    let mut d = Drv::new();
    let mut q = GuestQueue::new(0x1000, 8);
    d.init(u64::MAX, &q, true);
    let mem = d.mem.clone();
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    d.notify(0);
    assert_eq!(q.take_used(&mem).len(), 1);
    let json = serde_json::to_string(&d.dev.save()).unwrap();

    let mut e = Drv::new();
    e.mem = mem.clone();
    let args = || VirtioPciArgs {
        device: source(),
        mem: mem.clone(),
        msi: e.msi.clone(),
        intx: e.line.clone(),
        intx_gsi: 17,
        dirty: None,
    };
    let saved: VirtioPciState<_> = serde_json::from_str(&json).unwrap();
    // A state naming an MSI-X vector the function does not have is refused.
    let mut bad = saved.clone();
    bad.queue_vectors[0] = 99;
    assert!(VirtioPciDevice::<Rng>::restore(args(), &bad).is_err());
    let dev = VirtioPciDevice::<Rng>::restore(args(), &saved).unwrap();
    e.dev = dev;
    assert_eq!(serde_json::to_string(&e.dev.save()).unwrap(), json);
    assert_eq!(e.status(), 0xf);
    q.set_used_event(&mem, 1); // EVENT_IDX was negotiated: ask for the next interrupt
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    e.notify(0);
    assert_eq!(q.take_used(&mem), vec![(1, 4)], "ring position survived");
    assert_eq!(e.msgs(), vec![(0xfee0_0000, 0x31)], "MSI-X table survived");
}
