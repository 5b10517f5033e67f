//! The root complex: bus 0 with the host bridge at 00:00.0, configuration
//! access through ports 0xCF8/0xCFC and ECAM, and dispatch of BAR accesses by
//! the BAR values the guest currently programs (so a guest that moves a BAR is
//! followed without touching the VMM's buses).
//!
//! Locking: the root's lock is never held while a device's BAR handler runs;
//! configuration writes take the root lock and then the device's lock, and no
//! device takes the root lock, so there is no lock-order cycle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_device::bus::lock;
use vm_device::{BusDevice, BusDeviceSync, Persist, StateError};

use crate::allocator::{AllocError, BarAllocator};
use crate::config::{
    BarDef, BarKind, ConfigSpace, ConfigSpaceState, PciIds, BAR0, CMD_IO, CMD_MEM, COMMAND,
};
use crate::device::{BarRange, PciDevice};
use crate::layout;

/// Host bridge vendor ID (Intel).
pub const HOST_BRIDGE_VENDOR: u16 = 0x8086;
/// Host bridge device ID (the Q35 DRAM controller's, which drivers leave alone).
pub const HOST_BRIDGE_DEVICE: u16 = 0x29c0;

/// Errors of the root complex.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("all {} slots of bus 0 are taken", layout::SLOTS)]
    NoFreeSlot,
    #[error("slot {0} is taken or out of range")]
    SlotTaken(u8),
    #[error("cannot place BAR {bar} of the device in slot {slot}")]
    Alloc {
        slot: u8,
        bar: usize,
        #[source]
        source: AllocError,
    },
}

type Dev = Arc<Mutex<dyn PciDevice>>;

#[derive(Clone, Copy, Debug)]
struct Route {
    end: u64,
    slot: u8,
    bar: u8,
}

struct Inner {
    slots: Vec<Option<Dev>>,
    reserved: Vec<bool>,
    mmio: BTreeMap<u64, Route>,
    io: BTreeMap<u64, Route>,
    alloc: BarAllocator,
}

impl Inner {
    fn rebuild_routes(&mut self) {
        self.mmio.clear();
        self.io.clear();
        for (slot, dev) in self.slots.iter().enumerate() {
            let Some(dev) = dev else { continue };
            for r in lock(dev).decoded_bars() {
                let map = if r.kind == BarKind::Io {
                    &mut self.io
                } else {
                    &mut self.mmio
                };
                let Some(end) = r.base.checked_add(r.size) else {
                    continue;
                };
                // On overlap the first device wins (the guest misprogrammed its BARs).
                let overlaps = map
                    .range(..end)
                    .next_back()
                    .is_some_and(|(_, o)| o.end > r.base);
                if !overlaps {
                    map.insert(
                        r.base,
                        Route {
                            end,
                            slot: slot as u8,
                            bar: r.index,
                        },
                    );
                }
            }
        }
    }

    fn route(&self, io: bool, addr: u64) -> Option<(Dev, u8, u64)> {
        let map = if io { &self.io } else { &self.mmio };
        let (&base, r) = map.range(..=addr).next_back()?;
        if addr >= r.end {
            return None;
        }
        let dev = self.slots[usize::from(r.slot)].clone()?;
        Some((dev, r.bar, addr - base))
    }
}

/// Bus 0 of the PCI hierarchy.
pub struct PciRoot {
    inner: Mutex<Inner>,
    host_bridge: Arc<Mutex<HostBridge>>,
}

impl PciRoot {
    /// A root complex with the host bridge in slot 0, allocating BARs with `alloc`.
    pub fn new(alloc: BarAllocator) -> Arc<Self> {
        let mut slots: Vec<Option<Dev>> = vec![None; usize::from(layout::SLOTS)];
        let host_bridge = Arc::new(Mutex::new(HostBridge::new()));
        slots[0] = Some(host_bridge.clone());
        let mut reserved = vec![false; usize::from(layout::SLOTS)];
        reserved[0] = true;
        Arc::new(Self {
            inner: Mutex::new(Inner {
                slots,
                reserved,
                mmio: BTreeMap::new(),
                io: BTreeMap::new(),
                alloc,
            }),
            host_bridge,
        })
    }

    /// The host bridge (00:00.0), for snapshots.
    pub fn host_bridge(&self) -> &Arc<Mutex<HostBridge>> {
        &self.host_bridge
    }

    /// Re-reads every device's BARs after their config spaces were restored.
    pub fn refresh_routes(&self) {
        lock(&self.inner).rebuild_routes();
    }

    /// Reserves the next free slot, so the caller can wire the device's INTx
    /// ([`layout::intx_gsi`]) before building it.
    pub fn reserve_slot(&self) -> Result<u8, PciError> {
        let mut g = lock(&self.inner);
        let slot = g
            .reserved
            .iter()
            .position(|r| !r)
            .ok_or(PciError::NoFreeSlot)?;
        g.reserved[slot] = true;
        Ok(slot as u8)
    }

    /// Plugs `dev` into `slot` (reserved or free), assigns its BARs and enables
    /// memory and I/O decoding, as firmware would.
    pub fn add_device(&self, slot: u8, dev: Dev) -> Result<(), PciError> {
        let mut g = lock(&self.inner);
        let s = usize::from(slot);
        if s >= g.slots.len() || g.slots[s].is_some() {
            return Err(PciError::SlotTaken(slot));
        }
        {
            let mut d = lock(&dev);
            let defs: Vec<(usize, BarDef)> = d.bar_defs();
            for (bar, def) in defs {
                let addr = g.alloc.allocate(def).map_err(|source| PciError::Alloc {
                    slot,
                    bar,
                    source,
                })?;
                d.set_bar_address(bar, addr);
            }
            let mut cmd = [0u8; 2];
            d.config_read(COMMAND as u64, &mut cmd);
            let cmd = u16::from_le_bytes(cmd) | CMD_MEM | CMD_IO;
            d.config_write(COMMAND as u64, &cmd.to_le_bytes());
        }
        g.reserved[s] = true;
        g.slots[s] = Some(dev);
        g.rebuild_routes();
        Ok(())
    }

    fn device(&self, bus: u8, dev: u8, func: u8) -> Option<Dev> {
        if bus != 0 || func != 0 {
            return None;
        }
        lock(&self.inner).slots.get(usize::from(dev))?.clone()
    }

    /// A configuration read of bus/device/function at `offset` (all ones if absent).
    pub fn config_read(&self, bus: u8, dev: u8, func: u8, offset: u64, data: &mut [u8]) {
        match self.device(bus, dev, func) {
            Some(d) => lock(&d).config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// A configuration write; BAR or command changes re-route BAR accesses.
    pub fn config_write(&self, bus: u8, dev: u8, func: u8, offset: u64, data: &[u8]) {
        let Some(d) = self.device(bus, dev, func) else {
            return;
        };
        lock(&d).config_write(offset, data);
        let end = offset + data.len() as u64;
        let touches_cmd = offset < (COMMAND as u64 + 2) && end > COMMAND as u64;
        let touches_bar = offset < (BAR0 as u64 + 24) && end > BAR0 as u64;
        if touches_cmd || touches_bar {
            lock(&self.inner).rebuild_routes();
        }
    }

    /// Dispatches a BAR access; returns false (reads all ones) if no BAR claims `addr`.
    pub fn bar_read(&self, io: bool, addr: u64, data: &mut [u8]) -> bool {
        let r = lock(&self.inner).route(io, addr);
        match r {
            Some((dev, bar, off)) => {
                lock(&dev).bar_read(bar, off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a BAR write; returns false if no BAR claims `addr`.
    pub fn bar_write(&self, io: bool, addr: u64, data: &[u8]) -> bool {
        let r = lock(&self.inner).route(io, addr);
        match r {
            Some((dev, bar, off)) => {
                lock(&dev).bar_write(bar, off, data);
                true
            }
            None => false,
        }
    }

    /// The BARs currently decoded by the device in `slot`.
    pub fn decoded_bars(&self, slot: u8) -> Vec<BarRange> {
        let d = lock(&self.inner)
            .slots
            .get(usize::from(slot))
            .cloned()
            .flatten();
        d.map(|d| lock(&d).decoded_bars()).unwrap_or_default()
    }
}

/// Config mechanism #1: a port-I/O [`BusDevice`] for ports 0xCF8..=0xCFF
/// (register it at [`layout::PCI_CONFIG_IO_BASE`], length [`layout::PCI_CONFIG_IO_LEN`]).
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    address: u32,
}

/// The configuration address latched at 0xCF8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciConfigIoState {
    pub address: u32,
}

impl Persist for PciConfigIo {
    type State = PciConfigIoState;
    type Args = Arc<PciRoot>;

    fn save(&self) -> PciConfigIoState {
        PciConfigIoState {
            address: self.address,
        }
    }

    fn restore(root: Arc<PciRoot>, s: &PciConfigIoState) -> Result<Self, StateError> {
        Ok(PciConfigIo {
            root,
            address: s.address,
        })
    }
}

impl PciConfigIo {
    /// The port device for `root`.
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self { root, address: 0 }
    }

    fn target(&self, data_offset: u64) -> Option<(u8, u8, u8, u64)> {
        let a = self.address;
        (a & 0x8000_0000 != 0).then(|| {
            let reg = u64::from(a & 0xfc) | ((u64::from(a) >> 16) & 0xf00);
            (
                (a >> 16) as u8,
                ((a >> 11) & 0x1f) as u8,
                ((a >> 8) & 7) as u8,
                reg + data_offset,
            )
        })
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < 4 {
            let b = self.address.to_le_bytes();
            for (i, d) in data.iter_mut().enumerate() {
                *d = b.get(offset as usize + i).copied().unwrap_or(0xff);
            }
            return;
        }
        match self.target(offset - 4) {
            Some((bus, dev, func, reg)) => self.root.config_read(bus, dev, func, reg, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.len() == 4 {
            self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        } else if offset >= 4 {
            if let Some((bus, dev, func, reg)) = self.target(offset - 4) {
                self.root.config_write(bus, dev, func, reg, data);
            }
        }
        // Narrow writes to 0xCF8..0xCFB are not configuration addresses: ignored.
    }
}

/// ECAM: an MMIO [`BusDevice`] for [`layout::ECAM_BASE`], length [`layout::ECAM_SIZE`].
pub struct PciEcam {
    root: Arc<PciRoot>,
}

impl PciEcam {
    /// The ECAM device for `root`.
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self { root }
    }
}

fn ecam_decode(offset: u64) -> (u8, u8, u8, u64) {
    (
        (offset >> 20) as u8,
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 7) as u8,
        offset & 0xfff,
    )
}

/// The root locks what it routes to: insert it with `Bus::insert_sync`.
impl BusDeviceSync for PciEcam {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let (b, d, f, r) = ecam_decode(offset);
        self.root.config_read(b, d, f, r, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (b, d, f, r) = ecam_decode(offset);
        self.root.config_write(b, d, f, r, data);
    }
}

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        BusDeviceSync::read(self, offset, data)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        BusDeviceSync::write(self, offset, data)
    }
}

/// A window of BAR space (MMIO or I/O ports) routed by current BAR values.
/// Register one per window: 32-bit MMIO ([`layout::MMIO32_BASE`]), 64-bit MMIO
/// ([`layout::mmio64_base`]) on the MMIO bus, and [`layout::IO_BASE`] on the PIO bus.
pub struct PciBarWindow {
    root: Arc<PciRoot>,
    base: u64,
    io: bool,
}

impl PciBarWindow {
    /// A window starting at guest address (or port) `base`.
    pub fn new(root: Arc<PciRoot>, base: u64, io: bool) -> Self {
        Self { root, base, io }
    }
}

/// Only the device a BAR access reaches is locked: insert the window with
/// `Bus::insert_sync`, so accesses to different devices run in parallel.
impl BusDeviceSync for PciBarWindow {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.root.bar_read(self.io, self.base + offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.root.bar_write(self.io, self.base + offset, data);
    }
}

impl BusDevice for PciBarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        BusDeviceSync::read(self, offset, data)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        BusDeviceSync::write(self, offset, data)
    }
}

/// The host bridge (00:00.0): identification only.
pub struct HostBridge {
    config: ConfigSpace,
}

impl Persist for HostBridge {
    type State = ConfigSpaceState;
    type Args = ();

    fn save(&self) -> ConfigSpaceState {
        self.config.state()
    }

    fn restore(_: (), s: &ConfigSpaceState) -> Result<Self, StateError> {
        let mut b = HostBridge::new();
        b.config.load(s)?;
        Ok(b)
    }
}

impl HostBridge {
    fn new() -> Self {
        Self {
            config: ConfigSpace::new(PciIds {
                vendor: HOST_BRIDGE_VENDOR,
                device: HOST_BRIDGE_DEVICE,
                class: (0x06, 0x00, 0x00),
                subsystem_vendor: HOST_BRIDGE_VENDOR,
                subsystem: HOST_BRIDGE_DEVICE,
                revision: 0,
            }),
        }
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data)
    }
    fn config_write(&mut self, offset: u64, data: &[u8]) {
        self.config.write(offset, data)
    }
    fn bar_defs(&self) -> Vec<(usize, BarDef)> {
        Vec::new()
    }
    fn set_bar_address(&mut self, _index: usize, _addr: u64) {}
    fn decoded_bars(&self) -> Vec<BarRange> {
        Vec::new()
    }
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff)
    }
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function with one 4 KiB memory BAR that stores what is written.
    struct Scratch {
        config: ConfigSpace,
        mem: Vec<u8>,
    }
    impl PciDevice for Scratch {
        fn config_read(&mut self, o: u64, d: &mut [u8]) {
            self.config.read(o, d)
        }
        fn config_write(&mut self, o: u64, d: &[u8]) {
            self.config.write(o, d)
        }
        fn bar_defs(&self) -> Vec<(usize, BarDef)> {
            self.config.bar_defs()
        }
        fn set_bar_address(&mut self, i: usize, a: u64) {
            self.config.set_bar_address(i, a)
        }
        fn decoded_bars(&self) -> Vec<BarRange> {
            self.config.decoded_bars()
        }
        fn bar_read(&mut self, _b: u8, o: u64, d: &mut [u8]) {
            d.copy_from_slice(&self.mem[o as usize..o as usize + d.len()])
        }
        fn bar_write(&mut self, _b: u8, o: u64, d: &[u8]) {
            self.mem[o as usize..o as usize + d.len()].copy_from_slice(d)
        }
    }

    fn root_with_scratch() -> (Arc<PciRoot>, u8) {
        let root = PciRoot::new(BarAllocator::new(layout::mmio64_base(1 << 30)));
        let mut config = ConfigSpace::new(PciIds {
            vendor: 0x1234,
            device: 0x11,
            ..Default::default()
        });
        config
            .add_bar(
                0,
                BarDef {
                    kind: BarKind::Mem32,
                    size: 0x1000,
                    prefetchable: false,
                },
            )
            .unwrap();
        let slot = root.reserve_slot().unwrap();
        root.add_device(
            slot,
            Arc::new(Mutex::new(Scratch {
                config,
                mem: vec![0; 0x1000],
            })),
        )
        .unwrap();
        (root, slot)
    }

    /// A function with one 4 KiB memory BAR whose reads wait for a go-ahead.
    struct Gate {
        config: ConfigSpace,
        go: std::sync::mpsc::Receiver<()>,
    }
    impl PciDevice for Gate {
        fn config_read(&mut self, o: u64, d: &mut [u8]) {
            self.config.read(o, d)
        }
        fn config_write(&mut self, o: u64, d: &[u8]) {
            self.config.write(o, d)
        }
        fn bar_defs(&self) -> Vec<(usize, BarDef)> {
            self.config.bar_defs()
        }
        fn set_bar_address(&mut self, i: usize, a: u64) {
            self.config.set_bar_address(i, a)
        }
        fn decoded_bars(&self) -> Vec<BarRange> {
            self.config.decoded_bars()
        }
        fn bar_read(&mut self, _b: u8, _o: u64, d: &mut [u8]) {
            let _ = self.go.recv_timeout(std::time::Duration::from_secs(30));
            d.fill(0x66);
        }
        fn bar_write(&mut self, _b: u8, _o: u64, _d: &[u8]) {}
    }

    #[test]
    fn a_slow_device_does_not_hold_up_another_behind_the_same_window() {
        let (root, slot) = root_with_scratch();
        let mut config = ConfigSpace::new(PciIds {
            vendor: 0x1234,
            device: 0x12,
            ..Default::default()
        });
        let bar = BarDef {
            kind: BarKind::Mem32,
            size: 0x1000,
            prefetchable: false,
        };
        config.add_bar(0, bar).unwrap();
        let (go, rx) = std::sync::mpsc::channel();
        let gate_slot = root.reserve_slot().unwrap();
        root.add_device(gate_slot, Arc::new(Mutex::new(Gate { config, go: rx })))
            .unwrap();
        let scratch = root.decoded_bars(slot)[0].base;
        let gate = root.decoded_bars(gate_slot)[0].base;
        let mut bus = vm_device::Bus::new();
        bus.insert_sync(
            layout::MMIO32_BASE,
            layout::MMIO32_SIZE,
            Arc::new(PciBarWindow::new(root.clone(), layout::MMIO32_BASE, false)),
        )
        .unwrap();
        let bus = Arc::new(bus);
        // One vCPU waits inside the gate device's BAR read...
        let b = bus.clone();
        let slow = std::thread::spawn(move || {
            let mut d = [0u8; 4];
            b.read(gate, &mut d);
            d
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // ...while another reaches the scratch device through the same window.
        let (done, finished) = std::sync::mpsc::channel();
        let b = bus.clone();
        std::thread::spawn(move || {
            b.write(scratch + 4, &[7]);
            let mut d = [0u8; 1];
            b.read(scratch + 4, &mut d);
            let _ = done.send(d[0]);
        });
        let got = finished.recv_timeout(std::time::Duration::from_secs(5));
        assert!(!slow.is_finished(), "the gate let its reader go early");
        go.send(()).unwrap();
        assert_eq!(slow.join().unwrap(), [0x66; 4]);
        assert_eq!(got, Ok(7), "the other device waited for the slow one");
    }

    fn cf8_read(io: &mut PciConfigIo, dev: u8, reg: u32) -> u32 {
        io.write(0, &(0x8000_0000 | u32::from(dev) << 11 | reg).to_le_bytes());
        let mut b = [0u8; 4];
        io.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn config_mechanism_one_and_ecam_agree() {
        let (root, slot) = root_with_scratch();
        assert_eq!(slot, 1);
        let mut io = PciConfigIo::new(root.clone());
        assert_eq!(
            cf8_read(&mut io, 0, 0),
            u32::from(HOST_BRIDGE_DEVICE) << 16 | u32::from(HOST_BRIDGE_VENDOR)
        );
        assert_eq!(cf8_read(&mut io, 1, 0), 0x0011_1234);
        assert_eq!(
            cf8_read(&mut io, 2, 0),
            0xffff_ffff,
            "empty slot reads all ones"
        );
        let ecam = PciEcam::new(root.clone());
        let mut b = [0u8; 4];
        ecam.read(1 << 15, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0011_1234);
        ecam.read((1 << 20) | (1 << 15), &mut b);
        assert_eq!(b, [0xff; 4], "bus 1 does not exist");
        // Byte-wide data access at 0xCFE reads the upper half of the dword.
        io.write(0, &(0x8000_0000u32 | 1 << 11).to_le_bytes());
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0011);
    }

    #[test]
    fn bar_accesses_follow_guest_reprogramming() {
        let (root, slot) = root_with_scratch();
        let bar = root.decoded_bars(slot)[0];
        assert_eq!(bar.base, layout::MMIO32_BASE);
        let win = PciBarWindow::new(root.clone(), layout::MMIO32_BASE, false);
        win.write(8, &[0xab]);
        let mut b = [0u8; 1];
        win.read(8, &mut b);
        assert_eq!(b[0], 0xab);
        // The guest sizes the BAR (decoding off), then moves it.
        let ecam = PciEcam::new(root.clone());
        let dev = u64::from(slot) << 15;
        ecam.write(dev + 4, &[0, 0]);
        ecam.write(dev + 0x10, &[0xff; 4]);
        let mut m = [0u8; 4];
        ecam.read(dev + 0x10, &mut m);
        assert_eq!(u32::from_le_bytes(m), 0xffff_f000);
        ecam.write(dev + 0x10, &0xc010_0000u32.to_le_bytes());
        assert!(
            !root.bar_read(false, layout::MMIO32_BASE + 8, &mut b),
            "decoding disabled"
        );
        ecam.write(dev + 4, &[CMD_MEM as u8, 0]);
        assert!(
            !root.bar_read(false, layout::MMIO32_BASE + 8, &mut b),
            "old address no longer decodes"
        );
        win.read(0x10_0008, &mut b);
        assert_eq!(b[0], 0xab);
    }

    #[test]
    fn disabled_address_register_and_bad_slots() {
        let (root, slot) = root_with_scratch();
        let mut io = PciConfigIo::new(root.clone());
        io.write(0, &0x0000_0800u32.to_le_bytes()); // enable bit clear
        let mut b = [0u8; 4];
        io.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert!(matches!(
            root.add_device(slot, Arc::new(Mutex::new(HostBridge::new()))),
            Err(PciError::SlotTaken(1))
        ));
        assert!(matches!(
            root.add_device(40, Arc::new(Mutex::new(HostBridge::new()))),
            Err(PciError::SlotTaken(40))
        ));
    }

    #[test]
    fn latch_and_host_bridge_round_trip() {
        let (root, _) = root_with_scratch();
        let mut io = PciConfigIo::new(root.clone());
        io.write(0, &(0x8000_0000u32 | 1 << 11 | 0x10).to_le_bytes());
        let (a, b) = vm_device::persist::round_trip(&io, root.clone()).unwrap();
        assert_eq!(a, b);
        let mut back = PciConfigIo::restore(root.clone(), &io.save()).unwrap();
        let mut v = [0u8; 4];
        back.read(4, &mut v);
        assert_eq!(
            u32::from_le_bytes(v),
            layout::MMIO32_BASE as u32,
            "latched BAR0"
        );

        // The guest writes the bridge's command register; the state carries it.
        let ecam = PciEcam::new(root.clone());
        ecam.write(4, &[0x06, 0]);
        let hb = lock(root.host_bridge()).save();
        let (a, b) = vm_device::persist::round_trip(&*lock(root.host_bridge()), ()).unwrap();
        assert_eq!(a, b);
        assert_eq!(&hb.regs[4..6], &[0x06, 0]);
    }
}
