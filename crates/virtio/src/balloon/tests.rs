use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::testing::{self, mmio, GuestQueue};
use crate::transport::VirtioMmioDevice;
use crate::{status, GuestMemory};

const ALL: u64 = u64::MAX;

fn queues() -> Vec<GuestQueue> {
    (0..4)
        .map(|i| GuestQueue::new(0x1000 + i * 0x2000, 16))
        .collect()
}

fn setup(
    want: u64,
) -> (
    GuestMemory,
    VirtioMmioDevice<Balloon>,
    Vec<GuestQueue>,
    BalloonHandle,
) {
    let mem = testing::memory();
    let h = BalloonHandle::new(0);
    let mut dev = VirtioMmioDevice::new(Balloon::new(h.clone()), mem.clone(), testing::line());
    let qs = queues();
    let refs: Vec<&GuestQueue> = qs.iter().collect();
    mmio::init(&mut dev, want, &refs);
    (mem, dev, qs, h)
}

fn fill(mem: &GuestMemory, addr: u64, len: usize) {
    mem.write_slice(&vec![0xa5; len], GuestAddress(addr))
        .unwrap();
}

fn is_zero(mem: &GuestMemory, addr: u64, len: usize) -> bool {
    let mut b = vec![1u8; len];
    mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
    b.iter().all(|&x| x == 0)
}

fn pfn_buffer(mem: &GuestMemory, at: u64, pfns: &[u32]) -> (u64, u32, bool) {
    let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(at)).unwrap();
    (at, bytes.len() as u32, false)
}

#[test]
fn inflated_pages_are_discarded_and_deflated_ones_kept() {
    let (mem, mut dev, mut qs, h) = setup(ALL);
    fill(&mem, 0x40000, 0x3000);
    let buf = pfn_buffer(&mem, 0x9000, &[0x40, 0x42]);
    let head = qs[0].add_chain(&mem, &[buf]);
    mmio::notify(&mut dev, 0);
    assert_eq!(qs[0].take_used(&mem), vec![(u32::from(head), 0)]);
    assert!(is_zero(&mem, 0x40000, 0x1000));
    assert!(
        !is_zero(&mem, 0x41000, 0x1000),
        "a page not named was discarded"
    );
    assert!(is_zero(&mem, 0x42000, 0x1000));
    assert_eq!(h.info().inflated_pages, 2);
    // Deflating discards nothing.
    fill(&mem, 0x40000, 0x1000);
    let buf = pfn_buffer(&mem, 0x9000, &[0x40]);
    qs[1].add_chain(&mem, &[buf]);
    mmio::notify(&mut dev, 1);
    assert_eq!(qs[1].take_used(&mem).len(), 1);
    assert!(!is_zero(&mem, 0x40000, 0x1000));
    assert_eq!(h.info().inflated_pages, 2);
}

#[test]
fn reported_free_ranges_are_discarded_on_the_queue_the_features_give() {
    // All features: reporting is queue 3.
    let (mem, mut dev, mut qs, h) = setup(ALL);
    fill(&mem, 0x50000, 0x4000);
    qs[3].add_chain(&mem, &[(0x50000, 0x2000, true), (0x53000, 0x1000, true)]);
    mmio::notify(&mut dev, 3);
    assert_eq!(qs[3].take_used(&mem).len(), 1);
    assert!(is_zero(&mem, 0x50000, 0x2000));
    assert!(!is_zero(&mem, 0x52000, 0x1000));
    assert!(is_zero(&mem, 0x53000, 0x1000));
    assert_eq!(h.info().reported_bytes, 0x3000);

    // Without the statistics queue, reporting moves to queue 2.
    let (mem, mut dev, mut qs, h) = setup(ALL & !feature::STATS_VQ);
    fill(&mem, 0x50000, 0x1000);
    qs[2].add_chain(&mem, &[(0x50000, 0x1000, true)]);
    mmio::notify(&mut dev, 2);
    assert!(is_zero(&mem, 0x50000, 0x1000));
    assert_eq!(h.info().reported_bytes, 0x1000);
}

#[test]
fn ranges_outside_ram_or_unaligned_break_only_the_balloon() {
    for case in 0..3 {
        let (mem, mut dev, mut qs, h) = setup(ALL);
        fill(&mem, 0x40000, 0x1000);
        match case {
            // A PFN past the end of RAM (1 MiB), next to a good one.
            0 => {
                let buf = pfn_buffer(&mem, 0x9000, &[0x40, 0x100]);
                qs[0].add_chain(&mem, &[buf]);
                mmio::notify(&mut dev, 0);
            }
            // A reported range running past the end of RAM.
            1 => {
                qs[3].add_chain(&mem, &[(0x40000, 0x1000, true), (0xff000, 0x1000, true)]);
                // The second buffer is in RAM; make it cross the end.
                qs[3].write_desc(&mem, 1, 0xff000, 0x2000, crate::testing::F_WRITE, 0);
                mmio::notify(&mut dev, 3);
            }
            // An unaligned reported range.
            _ => {
                qs[3].add_chain(&mem, &[(0x40000, 0x1000, true), (0x41800, 0x1000, true)]);
                mmio::notify(&mut dev, 3);
            }
        }
        assert_ne!(
            mmio::status(&mut dev) & status::DEVICE_NEEDS_RESET,
            0,
            "case {case}"
        );
        // Nothing of the hostile request was applied.
        assert!(!is_zero(&mem, 0x40000, 0x1000), "case {case}");
        assert_eq!(h.info().inflated_pages, 0);
        assert_eq!(h.info().reported_bytes, 0);
    }
}

#[test]
fn target_changes_raise_a_config_interrupt_and_actual_is_the_drivers() {
    let mem = testing::memory();
    let line = testing::line();
    let h = BalloonHandle::new(8 << 20);
    let mut dev = VirtioMmioDevice::new(Balloon::new(h.clone()), mem.clone(), line.clone());
    let qs = queues();
    let refs: Vec<&GuestQueue> = qs.iter().collect();
    mmio::init(&mut dev, ALL, &refs);
    assert_eq!(mmio::r32(&mut dev, 0x100), 2048, "num_pages of 8 MiB");
    assert!(!line.level());
    h.set_target_bytes(16 << 20);
    dev.process_event();
    assert_eq!(mmio::r32(&mut dev, 0x100), 4096);
    assert!(line.level());
    assert_eq!(mmio::r32(&mut dev, 0x60) & 2, 2, "configuration change");
    mmio::w32(&mut dev, 0x104, 4096);
    assert_eq!(h.info().actual_bytes, 16 << 20);
    // num_pages is not the driver's to write.
    mmio::w32(&mut dev, 0x100, 1);
    assert_eq!(mmio::r32(&mut dev, 0x100), 4096);
}

#[test]
fn statistics_are_read_and_their_buffer_returned_on_request() {
    let (mem, mut dev, mut qs, h) = setup(ALL);
    let mut entries = Vec::new();
    for (tag, val) in [(4u16, 100u64 << 20), (5, 512 << 20), (99, 7)] {
        entries.extend_from_slice(&tag.to_le_bytes());
        entries.extend_from_slice(&val.to_le_bytes());
    }
    mem.write_slice(&entries, GuestAddress(0x9000)).unwrap();
    let head = qs[2].add_chain(&mem, &[(0x9000, entries.len() as u32, false)]);
    mmio::notify(&mut dev, 2);
    // The device keeps the buffer.
    assert!(qs[2].take_used(&mem).is_empty());
    let s = h.info().stats.unwrap();
    assert_eq!(s.free_memory, Some(100 << 20));
    assert_eq!(s.total_memory, Some(512 << 20));
    assert_eq!(s.swap_in, None);
    h.request_stats();
    dev.process_event();
    assert_eq!(qs[2].take_used(&mem), vec![(u32::from(head), 0)]);
    // Asking again with no buffer held does nothing.
    h.request_stats();
    dev.process_event();
    assert!(qs[2].take_used(&mem).is_empty());
}

#[test]
fn discarded_pages_are_logged_for_migration() {
    let mem = testing::memory();
    let log = std::sync::Arc::new(vmm_types::dirty::DirtyLog::new(&[(0, 0x10_0000)]));
    log.set_enabled(true);
    let h = BalloonHandle::new(0);
    let mut dev = VirtioMmioDevice::new(Balloon::new(h), mem.clone(), testing::line());
    dev.set_dirty_log(Some(log.clone()));
    let mut qs = queues();
    let refs: Vec<&GuestQueue> = qs.iter().collect();
    mmio::init(&mut dev, ALL, &refs);
    let buf = pfn_buffer(&mem, 0x9000, &[0x40]);
    qs[0].add_chain(&mem, &[buf]);
    mmio::notify(&mut dev, 0);
    let bits = log.take()[0][0x40 / 64];
    assert_ne!(bits & (1 << (0x40 % 64)), 0, "the discarded page is dirty");
}

#[test]
fn state_round_trip_and_refusals() {
    let h = BalloonHandle::new(4 << 20);
    let mut b = Balloon::new(h.clone());
    b.activate(features::RING | feature::STATS_VQ, &[]).unwrap();
    b.write_config(4, &7u32.to_le_bytes());
    b.stats_head = Some(3);
    let s = b.save();
    let r = Balloon::restore(BalloonHandle::new(0), &s).unwrap();
    assert_eq!(r.save(), s);
    let mut bad = s.clone();
    bad.acked_features |= 1 << 40;
    assert!(Balloon::restore(BalloonHandle::new(0), &bad).is_err());
    let mut bad = s;
    bad.stats_head = Some(QUEUE_SIZE);
    assert!(Balloon::restore(BalloonHandle::new(0), &bad).is_err());
}

#[test]
fn a_statistics_buffer_posted_before_driver_ok_is_found_on_request() {
    let (mem, mut dev, mut qs, h) = setup(ALL);
    let mut entry = 4u16.to_le_bytes().to_vec();
    entry.extend_from_slice(&(64u64 << 20).to_le_bytes());
    mem.write_slice(&entry, GuestAddress(0x9000)).unwrap();
    // Published, never notified (as Linux does during probe).
    let head = qs[2].add_chain(&mem, &[(0x9000, 10, false)]);
    assert!(h.info().stats.is_none());
    h.request_stats();
    dev.process_event();
    assert_eq!(h.info().stats.unwrap().free_memory, Some(64 << 20));
    assert_eq!(qs[2].take_used(&mem), vec![(u32::from(head), 0)]);
}
