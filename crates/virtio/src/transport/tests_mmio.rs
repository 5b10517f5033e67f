//! The MMIO transport, and hostile descriptor chains (which break only the
//! device that received them).

use vm_device::BusDevice;

use super::mmio::{VirtioMmioArgs, VirtioMmioDevice};
use crate::rng::Rng;
use crate::status;
use crate::testing::{self, mmio, GuestQueue, F_INDIRECT, F_NEXT, F_WRITE};
use crate::GuestMemory;
use vm_device::Persist;

fn setup() -> (
    VirtioMmioDevice<Rng>,
    GuestMemory,
    GuestQueue,
    std::sync::Arc<testing::Line>,
) {
    let mem = testing::memory();
    let line = testing::line();
    let mut dev = VirtioMmioDevice::new(
        Rng::with_source(Box::new(|b: &mut [u8]| {
            b.fill(1);
            Ok(())
        })),
        mem.clone(),
        line.clone(),
    );
    let q = GuestQueue::new(0x1000, 8);
    mmio::init(&mut dev, u64::MAX, &[&q]);
    (dev, mem, q, line)
}

fn broken(dev: &mut VirtioMmioDevice<Rng>) -> bool {
    mmio::status(dev) & status::DEVICE_NEEDS_RESET != 0
}

#[test]
fn identification_registers() {
    let (mut dev, ..) = setup();
    assert_eq!(mmio::r32(&mut dev, 0), 0x7472_6976);
    assert_eq!(mmio::r32(&mut dev, 4), 2);
    assert_eq!(mmio::r32(&mut dev, 8), 4);
    assert_eq!(mmio::r32(&mut dev, 0x70), 0xf);
    mmio::w32(&mut dev, 0x30, 0);
    assert_eq!(mmio::r32(&mut dev, 0x34), 256);
    assert_eq!(mmio::r32(&mut dev, 0x38), 8);
    assert_eq!(mmio::r32(&mut dev, 0x44), 1);
}

#[test]
fn interrupt_status_and_ack() {
    let (mut dev, mem, mut q, line) = setup();
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev, 0);
    assert_eq!(q.take_used(&mem), vec![(0, 4)]);
    assert_eq!(mmio::r32(&mut dev, 0x60), 1);
    assert!(line.level());
    mmio::w32(&mut dev, 0x64, 1);
    assert_eq!(mmio::r32(&mut dev, 0x60), 0);
    assert!(!line.level());
}

/// The device broke: NEEDS_RESET, a configuration interrupt, nothing used,
/// and later doorbells are ignored until a reset.
fn assert_broken_then_recovers(
    mut dev: VirtioMmioDevice<Rng>,
    mem: &GuestMemory,
    q: &mut GuestQueue,
) {
    assert!(broken(&mut dev));
    assert_ne!(mmio::r32(&mut dev, 0x60) & 2, 0, "configuration interrupt");
    assert!(q.take_used(mem).is_empty());
    mmio::notify(&mut dev, 0);
    assert!(q.take_used(mem).is_empty());
    let mut fresh = GuestQueue::new(0x4000, 8);
    mmio::init(&mut dev, u64::MAX, &[&fresh]);
    assert!(!broken(&mut dev));
    fresh.add_chain(mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev, 0);
    assert_eq!(fresh.take_used(mem), vec![(0, 4)]);
}

#[test]
fn looping_chain_breaks_device() {
    let (mut dev, mem, mut q, _) = setup();
    q.write_desc(&mem, 0, 0x9000, 4, F_WRITE | F_NEXT, 1);
    q.write_desc(&mem, 1, 0x9100, 4, F_WRITE | F_NEXT, 0);
    q.publish(&mem, 0);
    mmio::notify(&mut dev, 0);
    assert_broken_then_recovers(dev, &mem, &mut q);
}

#[test]
fn next_index_out_of_range_breaks_device() {
    let (mut dev, mem, mut q, _) = setup();
    q.write_desc(&mem, 0, 0x9000, 4, F_WRITE | F_NEXT, 200);
    q.publish(&mem, 0);
    mmio::notify(&mut dev, 0);
    assert_broken_then_recovers(dev, &mem, &mut q);
}

#[test]
fn head_index_out_of_range_breaks_device() {
    let (mut dev, mem, mut q, _) = setup();
    q.publish(&mem, 9);
    mmio::notify(&mut dev, 0);
    assert_broken_then_recovers(dev, &mem, &mut q);
}

#[test]
fn buffer_outside_guest_memory_breaks_device() {
    let (mut dev, mem, mut q, _) = setup();
    q.add_chain(&mem, &[(0xff000, 0x2000, true)]);
    mmio::notify(&mut dev, 0);
    assert_broken_then_recovers(dev, &mem, &mut q);
}

#[test]
fn readable_after_writable_breaks_device() {
    let (mut dev, mem, mut q, _) = setup();
    q.add_chain(&mem, &[(0x9000, 4, true), (0x9100, 4, false)]);
    mmio::notify(&mut dev, 0);
    assert_broken_then_recovers(dev, &mem, &mut q);
}

#[test]
fn avail_index_beyond_queue_size_breaks_device() {
    let (mut dev, mem, mut q, _) = setup();
    q.set_avail_idx(&mem, 100);
    mmio::notify(&mut dev, 0);
    assert_broken_then_recovers(dev, &mem, &mut q);
}

#[test]
fn indirect_table_outside_memory_breaks_device() {
    let (mut dev, mem, mut q, _) = setup();
    q.write_desc(&mem, 0, 0x7000_0000, 32, F_INDIRECT, 0);
    q.publish(&mem, 0);
    mmio::notify(&mut dev, 0);
    assert_broken_then_recovers(dev, &mem, &mut q);
}

#[test]
fn indirect_chain_is_processed() {
    let (mut dev, mem, mut q, _) = setup();
    // Indirect table at 0xa000 with two writable descriptors.
    let t = GuestQueue::new(0xa000, 2);
    t.write_desc(&mem, 0, 0x9000, 3, F_WRITE | F_NEXT, 1);
    t.write_desc(&mem, 1, 0x9100, 2, F_WRITE, 0);
    q.write_desc(&mem, 0, 0xa000, 32, F_INDIRECT, 0);
    q.publish(&mem, 0);
    mmio::notify(&mut dev, 0);
    assert!(!broken(&mut dev));
    assert_eq!(q.take_used(&mem), vec![(0, 5)]);
}

#[test]
fn notify_before_driver_ok_is_ignored() {
    let mem = testing::memory();
    let mut dev = VirtioMmioDevice::new(Rng::new(), mem, testing::line());
    mmio::w32(&mut dev, 0x70, 3);
    mmio::notify(&mut dev, 0);
    assert!(!broken(&mut dev));
}

#[test]
fn narrow_register_access_is_harmless() {
    let (mut dev, ..) = setup();
    let mut b = [0xaau8; 2];
    dev.read(0, &mut b);
    assert_eq!(b, [0, 0]);
    dev.write(0x70, &[0]);
    assert_eq!(
        mmio::r32(&mut dev, 0x70),
        0xf,
        "byte write to status ignored"
    );
}

#[test]
fn state_round_trip() {
    let (mut dev, mem, mut q, _) = setup();
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev, 0);
    q.take_used(&mem);
    let json = serde_json::to_string(&dev.save()).unwrap();
    let line = testing::line();
    let args = VirtioMmioArgs {
        device: Box::new(crate::rng::host_getrandom) as crate::rng::EntropySource,
        mem: mem.clone(),
        line: line.clone(),
        dirty: None,
    };
    let mut dev2 =
        VirtioMmioDevice::<Rng>::restore(args, &serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(serde_json::to_string(&dev2.save()).unwrap(), json);
    assert!(line.level(), "pending interrupt re-asserted");
    q.add_chain(&mem, &[(0x9000, 4, true)]);
    mmio::notify(&mut dev2, 0);
    assert_eq!(q.take_used(&mem), vec![(1, 4)]);
}

#[test]
fn notify_of_queue_never_enabled_breaks_device() {
    let mem = testing::memory();
    let mut dev = VirtioMmioDevice::new(Rng::new(), mem, testing::line());
    mmio::init(&mut dev, u64::MAX, &[]); // DRIVER_OK with queue 0 left disabled
    assert!(!broken(&mut dev));
    mmio::notify(&mut dev, 0);
    assert!(broken(&mut dev));
    assert_ne!(mmio::r32(&mut dev, 0x60) & 2, 0, "configuration interrupt");
}
