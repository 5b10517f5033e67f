//! The notify hook: with one, a doorbell is checked and handed on, and the work
//! happens in `process_notified` (on a queue worker, in the VMM).

use std::sync::{Arc, Mutex};

use super::core::NotifyHook;
use super::mmio::VirtioMmioDevice;
use crate::rng::Rng;
use crate::status;
use crate::testing::{self, mmio, GuestQueue};
use crate::GuestMemory;

type Rig = (
    VirtioMmioDevice<Rng>,
    GuestMemory,
    GuestQueue,
    Arc<Mutex<Vec<u16>>>,
);

fn hooked() -> Rig {
    let mem = testing::memory();
    let mut dev = VirtioMmioDevice::new(
        Rng::with_source(Box::new(|b: &mut [u8]| {
            b.fill(1);
            Ok(())
        })),
        mem.clone(),
        testing::line(),
    );
    let rung = Arc::new(Mutex::new(Vec::new()));
    let r = rung.clone();
    let hook: NotifyHook = Arc::new(move |q| r.lock().unwrap().push(q));
    dev.set_notify_hook(Some(hook));
    let q = GuestQueue::new(0x1000, 8);
    mmio::init(&mut dev, u64::MAX, &[&q]);
    (dev, mem, q, rung)
}

fn broken(dev: &mut VirtioMmioDevice<Rng>) -> bool {
    mmio::status(dev) & status::DEVICE_NEEDS_RESET != 0
}

#[test]
fn a_doorbell_only_signals_and_process_notified_does_the_work() {
    let (mut dev, mem, mut q, rung) = hooked();
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev, 0);
    assert_eq!(*rung.lock().unwrap(), vec![0]);
    assert!(q.take_used(&mem).is_empty(), "nothing done on the doorbell");
    dev.process_notified(0);
    assert_eq!(q.take_used(&mem), vec![(0, 4)]);
    // A spurious signal (after a resume or a restore) finds nothing to do.
    dev.process_notified(0);
    assert!(q.take_used(&mem).is_empty());
    assert!(!broken(&mut dev));
}

#[test]
fn the_checks_stay_on_the_doorbell() {
    let (mut dev, _mem, _q, rung) = hooked();
    mmio::notify(&mut dev, 7); // no such queue
    assert!(rung.lock().unwrap().is_empty(), "not handed on");
    assert!(broken(&mut dev), "broken at once, as without a hook");
}

#[test]
fn a_reset_before_the_worker_ran_leaves_it_nothing() {
    let (mut dev, mem, mut q, rung) = hooked();
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev, 0);
    mmio::w32(&mut dev, 0x70, 0); // the driver resets the device
    dev.process_notified(0);
    assert!(
        q.take_used(&mem).is_empty(),
        "no queue touched after a reset"
    );
    assert_eq!(rung.lock().unwrap().len(), 1);
    assert_eq!(mmio::status(&mut dev), 0);
    // Out-of-range queues from a worker are ignored, not a panic.
    dev.process_notified(u16::MAX);
}

#[test]
fn a_broken_device_processes_nothing() {
    let (mut dev, mem, mut q, _rung) = hooked();
    // Descriptor 0 chains to itself: a loop, found by the worker.
    q.write_desc(&mem, 0, 0x9000, 4, testing::F_NEXT | testing::F_WRITE, 0);
    q.publish(&mem, 0);
    mmio::notify(&mut dev, 0);
    dev.process_notified(0);
    assert!(broken(&mut dev));
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev, 0);
    dev.process_notified(0);
    assert!(q.take_used(&mem).is_empty());
}

#[test]
fn without_a_hook_the_doorbell_does_the_work() {
    let (mut dev, mem, mut q, rung) = hooked();
    dev.set_notify_hook(None);
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev, 0);
    assert_eq!(q.take_used(&mem), vec![(0, 4)]);
    assert!(rung.lock().unwrap().is_empty());
}
