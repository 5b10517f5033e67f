use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use block::{Disk, DiskError};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::testing::{self, mmio, GuestQueue};
use crate::transport::mmio::VirtioMmioArgs;
use crate::transport::VirtioMmioDevice;
use crate::{status, GuestMemory};

/// An in-memory disk.
struct MemDisk {
    data: Mutex<Vec<u8>>,
    ro: bool,
    flushes: AtomicUsize,
    can_discard: bool,
}

impl MemDisk {
    fn new(sectors: usize, ro: bool) -> Arc<Self> {
        let data = (0..sectors * 512)
            .map(|i| (i / 512) as u8 ^ (i as u8))
            .collect();
        Arc::new(Self {
            data: Mutex::new(data),
            ro,
            flushes: AtomicUsize::new(0),
            can_discard: true,
        })
    }
    fn bytes(&self, off: usize, len: usize) -> Vec<u8> {
        self.data.lock().unwrap()[off..off + len].to_vec()
    }
}

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn read_only(&self) -> bool {
        self.ro
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> block::disk::Result<()> {
        let d = self.data.lock().unwrap();
        let o = offset as usize;
        buf.copy_from_slice(d.get(o..o + buf.len()).ok_or(DiskError::OutOfRange {
            offset,
            len: buf.len() as u64,
            size: d.len() as u64,
        })?);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> block::disk::Result<()> {
        if self.ro {
            return Err(DiskError::ReadOnly);
        }
        let o = offset as usize;
        self.data.lock().unwrap()[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> block::disk::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> block::disk::Result<()> {
        if !self.can_discard {
            return Err(DiskError::Unsupported("discard"));
        }
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> block::disk::Result<()> {
        self.data.lock().unwrap()[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn resize(&self, _new_size: u64) -> block::disk::Result<()> {
        Err(DiskError::Unsupported("resize"))
    }
}

const HDR: u64 = 0x8000;
const DATA: u64 = 0x10000;
const STATUS: u64 = 0x9000;

struct Rig {
    dev: VirtioMmioDevice<Blk>,
    mem: GuestMemory,
    q: GuestQueue,
    disk: Arc<MemDisk>,
}

fn rig_with(disk: Arc<MemDisk>) -> Rig {
    let mem = testing::memory();
    let mut dev = VirtioMmioDevice::new(
        Blk::new(disk.clone(), "hako-disk-1"),
        mem.clone(),
        testing::line(),
    );
    let q = GuestQueue::new(0x1000, 16);
    mmio::init(&mut dev, u64::MAX, &[&q]);
    Rig { dev, mem, q, disk }
}

fn rig() -> Rig {
    rig_with(MemDisk::new(64, false))
}

impl Rig {
    fn header(&self, ty: u32, sector: u64) {
        self.mem.write_obj(ty, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }
    /// Submits a chain, returns (used len, status byte).
    fn submit(&mut self, bufs: &[(u64, u32, bool)]) -> (u32, u8) {
        self.q.add_chain(&self.mem, bufs);
        mmio::notify(&mut self.dev, 0);
        let used = self.q.take_used(&self.mem);
        assert_eq!(used.len(), 1, "one request completed");
        (used[0].1, self.mem.read_obj(GuestAddress(STATUS)).unwrap())
    }
    fn broken(&mut self) -> bool {
        mmio::status(&mut self.dev) & status::DEVICE_NEEDS_RESET != 0
    }
}

#[test]
fn config_space_and_features() {
    let mut r = rig();
    assert_eq!(mmio::r32(&mut r.dev, 0x100), 64, "capacity in sectors");
    assert_eq!(mmio::r32(&mut r.dev, 0x100 + 12), SEG_MAX);
    assert_eq!(mmio::r32(&mut r.dev, 0x100 + 20), 512);
    assert_eq!(mmio::r32(&mut r.dev, 0x100 + 40), MAX_DISCARD_SEG);
    mmio::w32(&mut r.dev, 0x14, 0);
    let f = u64::from(mmio::r32(&mut r.dev, 0x10));
    assert_ne!(f & feature::FLUSH, 0);
    assert_ne!(f & feature::DISCARD, 0);
    assert_eq!(f & feature::RO, 0);
    let ro = Blk::new(MemDisk::new(8, true), "");
    assert_ne!(ro.features() & feature::RO, 0);
    assert_eq!(ro.features() & feature::DISCARD, 0);
}

#[test]
fn read_spans_descriptors() {
    let mut r = rig();
    r.header(0, 3);
    let (len, st) = r.submit(&[
        (HDR, 16, false),
        (DATA, 700, true),
        (DATA + 0x1000, 324, true),
        (STATUS, 1, true),
    ]);
    assert_eq!((len, st), (1025, 0));
    let mut a = vec![0u8; 700];
    let mut b = vec![0u8; 324];
    r.mem.read_slice(&mut a, GuestAddress(DATA)).unwrap();
    r.mem
        .read_slice(&mut b, GuestAddress(DATA + 0x1000))
        .unwrap();
    a.extend(b);
    assert_eq!(a, r.disk.bytes(3 * 512, 1024));
}

#[test]
fn write_then_flush_reaches_disk() {
    let mut r = rig();
    r.header(1, 5);
    r.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]),
        (1, 0)
    );
    assert_eq!(r.disk.bytes(5 * 512, 512), vec![0xab; 512]);
    r.header(4, 0);
    assert_eq!(r.submit(&[(HDR, 16, false), (STATUS, 1, true)]), (1, 0));
    assert_eq!(r.disk.flushes.load(Ordering::SeqCst), 1);
}

#[test]
fn header_and_data_may_share_descriptors() {
    let mut r = rig();
    r.header(1, 1);
    r.mem
        .write_slice(&[0x11; 512], GuestAddress(HDR + 16))
        .unwrap();
    assert_eq!(
        r.submit(&[
            (HDR, 8, false),
            (HDR + 8, 8 + 512, false),
            (STATUS, 1, true)
        ]),
        (1, 0)
    );
    assert_eq!(r.disk.bytes(512, 512), vec![0x11; 512]);
}

#[test]
fn get_id_returns_serial_padded() {
    let mut r = rig();
    r.header(8, 0);
    r.mem.write_slice(&[0xee; 20], GuestAddress(DATA)).unwrap();
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]),
        (21, 0)
    );
    let mut id = [0u8; 20];
    r.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..11], b"hako-disk-1");
    assert_eq!(&id[11..], &[0; 9]);
}

fn segment(r: &Rig, i: u64, sector: u64, num: u32, flags: u32) {
    let a = DATA + 16 * i;
    r.mem.write_obj(sector, GuestAddress(a)).unwrap();
    r.mem.write_obj(num, GuestAddress(a + 8)).unwrap();
    r.mem.write_obj(flags, GuestAddress(a + 12)).unwrap();
}

#[test]
fn discard_and_write_zeroes() {
    let mut r = rig();
    r.header(11, 0);
    segment(&r, 0, 2, 2, 0);
    segment(&r, 1, 10, 1, 0);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 32, false), (STATUS, 1, true)]),
        (1, 0)
    );
    assert_eq!(r.disk.bytes(2 * 512, 1024), vec![0; 1024]);
    assert_eq!(r.disk.bytes(10 * 512, 512), vec![0; 512]);
    assert_ne!(r.disk.bytes(4 * 512, 512), vec![0; 512]);
    r.header(13, 0);
    segment(&r, 0, 20, 1, 1); // UNMAP allowed for write-zeroes
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .1,
        0
    );
    assert_eq!(r.disk.bytes(20 * 512, 512), vec![0; 512]);
    r.header(11, 0);
    segment(&r, 0, 30, 1, 1); // but not for discard
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .1,
        2
    );
    segment(&r, 0, 63, 2, 0); // past the end
    r.header(11, 0);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .1,
        1
    );
}

#[test]
fn unsupported_discard_reports_unsupp() {
    let disk = Arc::new(MemDisk {
        can_discard: false,
        ..Arc::try_unwrap(MemDisk::new(8, false)).ok().unwrap()
    });
    let mut r = rig_with(disk);
    r.header(11, 0);
    segment(&r, 0, 0, 1, 0);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .1,
        2
    );
}

#[test]
fn errors_reported_in_status_keep_device_working() {
    let mut r = rig();
    r.header(0, 63);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)])
            .1,
        1,
        "beyond capacity"
    );
    r.header(0, u64::MAX);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)])
            .1,
        1,
        "overflowing sector"
    );
    r.header(0, 0);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 100, true), (STATUS, 1, true)])
            .1,
        1,
        "partial sector"
    );
    r.header(99, 0);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (STATUS, 1, true)]).1,
        2,
        "unknown type"
    );
    assert!(!r.broken());
}

#[test]
fn read_only_disk_rejects_writes() {
    let mut r = rig_with(MemDisk::new(8, true));
    r.header(1, 0);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)])
            .1,
        1
    );
    assert_ne!(r.disk.bytes(0, 512), vec![0; 512]);
}

fn assert_breaks(bufs: &[(u64, u32, bool)], ty: u32) {
    let mut r = rig();
    r.header(ty, 0);
    r.q.add_chain(&r.mem, bufs);
    mmio::notify(&mut r.dev, 0);
    assert!(r.broken(), "{bufs:?}");
    assert!(r.q.take_used(&r.mem).is_empty());
}

#[test]
fn malformed_requests_break_the_device() {
    assert_breaks(&[(HDR, 16, false), (DATA, 512, false)], 1); // no status byte
    assert_breaks(&[(HDR, 8, false), (STATUS, 1, true)], 0); // short header
    assert_breaks(
        &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        0,
    ); // read with readable data
    assert_breaks(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)], 1);
    // write with writable data
}

#[test]
fn state_round_trip() {
    let mut r = rig();
    r.header(4, 0);
    r.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
    let json = serde_json::to_string(&r.dev.save()).unwrap();
    let args = |disk| VirtioMmioArgs {
        device: BlkArgs {
            disk,
            serial: "hako-disk-1".into(),
        },
        mem: r.mem.clone(),
        line: testing::line(),
        dirty: None,
    };
    let saved = serde_json::from_str(&json).unwrap();
    // A disk of another size than the guest saw is refused.
    let small: Arc<dyn Disk> = MemDisk::new(8, false);
    let e = VirtioMmioDevice::<Blk>::restore(args(small), &saved)
        .err()
        .unwrap();
    assert!(e.to_string().contains("sectors"), "{e}");
    let dev2 = VirtioMmioDevice::<Blk>::restore(args(r.disk.clone()), &saved).unwrap();
    assert_eq!(serde_json::to_string(&dev2.save()).unwrap(), json);
    assert_ne!(dev2.device().save().acked_features & features::VERSION_1, 0);
    r.dev = dev2;
    r.header(0, 1);
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]),
        (513, 0)
    );
}

#[test]
fn device_writes_are_logged_for_migration() {
    let mut r = rig();
    let log = Arc::new(vmm_types::dirty::DirtyLog::new(&[(0, 0x10_0000)]));
    r.dev.set_dirty_log(Some(log.clone()));
    r.header(0, 1); // a read: the device writes DATA and STATUS
    assert_eq!(
        r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]),
        (513, 0)
    );
    assert!(
        log.take()[0].iter().all(|&w| w == 0),
        "logging off: nothing logged"
    );
    log.set_enabled(true);
    r.header(0, 2);
    r.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    let bits = log.take()[0][0];
    let pages: Vec<u32> = (0..64).filter(|p| bits & (1 << p) != 0).collect();
    // The used ring (page 1), the data buffer (page 0x10), the status byte (page 9);
    // not the header the device only read (page 8).
    assert_eq!(pages, vec![1, 9, 0x10]);
}
