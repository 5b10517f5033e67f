use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::testing::{self, mmio, GuestQueue};
use crate::transport::VirtioMmioDevice;

fn counting_source() -> EntropySource {
    let mut n = 0u8;
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            n = n.wrapping_add(1);
            *b = n;
        }
        Ok(())
    })
}

#[test]
fn fills_writable_buffers_across_descriptors() {
    let mem = testing::memory();
    let line = testing::line();
    let mut dev = VirtioMmioDevice::new(
        Rng::with_source(counting_source()),
        mem.clone(),
        line.clone(),
    );
    let mut q = GuestQueue::new(0x1000, 16);
    mmio::init(&mut dev, u64::MAX, &[&q]);
    let head = q.add_chain(&mem, &[(0x8000, 3, true), (0x9000, 5, true)]);
    mmio::notify(&mut dev, 0);
    assert_eq!(q.take_used(&mem), vec![(u32::from(head), 8)]);
    let mut a = [0u8; 3];
    let mut b = [0u8; 5];
    mem.read_slice(&mut a, GuestAddress(0x8000)).unwrap();
    mem.read_slice(&mut b, GuestAddress(0x9000)).unwrap();
    assert_eq!(a, [1, 2, 3]);
    assert_eq!(b, [4, 5, 6, 7, 8]);
    assert!(line.level());
}

#[test]
fn host_getrandom_produces_varied_bytes() {
    let mut a = [0u8; 64];
    let mut b = [0u8; 64];
    host_getrandom(&mut a).unwrap();
    host_getrandom(&mut b).unwrap();
    assert_ne!(a, b);
}

#[test]
fn large_requests_are_capped() {
    let mem = testing::memory();
    let mut dev = VirtioMmioDevice::new(
        Rng::with_source(counting_source()),
        mem.clone(),
        testing::line(),
    );
    let mut q = GuestQueue::new(0x1000, 16);
    mmio::init(&mut dev, u64::MAX, &[&q]);
    q.add_chain(&mem, &[(0x20000, 0x30000, true)]);
    mmio::notify(&mut dev, 0);
    assert_eq!(q.take_used(&mem)[0].1 as u64, MAX_REQUEST);
}

#[test]
fn state_round_trip() {
    let mut d = Rng::with_source(counting_source());
    let acked = crate::features::RING | crate::features::VERSION_1;
    d.activate(acked, &[]).unwrap();
    let (a, b) = vm_device::persist::round_trip(&d, counting_source()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, format!("{{\"acked_features\":{acked}}}"));
    let bad = RngState {
        acked_features: 1 << 0,
    };
    assert!(Rng::restore(counting_source(), &bad).is_err());
}
