//! A virtio-pci function plugged into the root complex, reached the way a
//! guest does: config mechanism #1 to find it, ECAM to move its BAR, the
//! 32-bit window to reach its registers.

use std::sync::{Arc, Mutex};

use pci::{layout, BarAllocator, PciBarWindow, PciConfigIo, PciEcam, PciRoot};
use vm_device::{BusDevice, IrqLine, MsiSink};
use vm_memory::GuestAddress;

struct NoMsi;
impl MsiSink for NoMsi {
    fn signal_msi(&self, _addr: u64, _data: u32) {}
}
struct NoLine;
impl IrqLine for NoLine {
    fn set_level(&self, _level: bool) {}
}

fn cf8(io: &mut PciConfigIo, slot: u8, reg: u32) -> u32 {
    io.write(
        0,
        &(0x8000_0000 | u32::from(slot) << 11 | reg).to_le_bytes(),
    );
    let mut b = [0u8; 4];
    io.read(4, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn guest_finds_device_and_follows_bar_moves() {
    let mem = virtio::GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let root = PciRoot::new(BarAllocator::new(layout::mmio64_base(0x10_0000)));
    let slot = root.reserve_slot().unwrap();
    let dev = virtio::transport::VirtioPciDevice::new(
        virtio::rng::Rng::new(),
        mem,
        Arc::new(NoMsi),
        Arc::new(NoLine),
        layout::intx_gsi(slot, 0),
    )
    .unwrap();
    root.add_device(slot, Arc::new(Mutex::new(dev))).unwrap();

    let mut io = PciConfigIo::new(root.clone());
    let found: Vec<u8> = (0..32)
        .filter(|&s| cf8(&mut io, s, 0) == 0x1044_1af4)
        .collect();
    assert_eq!(found, vec![slot]);
    let bar =
        u64::from(cf8(&mut io, slot, 0x10) & !0xf) | u64::from(cf8(&mut io, slot, 0x14)) << 32;
    assert_eq!(bar, layout::MMIO32_BASE);

    let mut window = PciBarWindow::new(root.clone(), layout::MMIO32_BASE, false);
    let num_queues = |w: &mut PciBarWindow, bar: u64| {
        let mut b = [0u8; 2];
        w.read(bar - layout::MMIO32_BASE + 0x12, &mut b);
        u16::from_le_bytes(b)
    };
    assert_eq!(num_queues(&mut window, bar), 1);

    // Move BAR 0 by 1 MiB through ECAM.
    let mut ecam = PciEcam::new(root.clone());
    let f = u64::from(slot) << 15;
    ecam.write(f + 0x10, &((bar as u32) + 0x10_0000).to_le_bytes());
    assert_eq!(num_queues(&mut window, bar + 0x10_0000), 1);
    assert_eq!(
        num_queues(&mut window, bar),
        0xffff,
        "old range no longer decodes"
    );
}
