//! virtio-blk behind the notify hook, with a worker thread per device as the VMM
//! runs it: a slow flush on one disk holds neither the thread that rang the doorbell
//! nor another disk, and its used entry appears only once the flush is done.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use block::Disk;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::testing::{self, mmio, GuestQueue};
use crate::transport::{NotifyHook, VirtioMmioDevice};
use crate::GuestMemory;

/// A zero-filled disk whose flush waits until the test opens its gate.
struct GatedDisk {
    gate: Mutex<(bool, usize)>,
    cv: Condvar,
}

impl GatedDisk {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            gate: Mutex::new((false, 0)),
            cv: Condvar::new(),
        })
    }
    fn open(&self) {
        self.gate.lock().unwrap().0 = true;
        self.cv.notify_all();
    }
    /// Waits until a flush has started.
    fn wait_flushing(&self) {
        let g = self.gate.lock().unwrap();
        let (_g, t) = self
            .cv
            .wait_timeout_while(g, Duration::from_secs(10), |g| g.1 == 0)
            .unwrap();
        assert!(!t.timed_out(), "the worker never started the flush");
    }
}

impl Disk for GatedDisk {
    fn size(&self) -> u64 {
        64 * 512
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> block::disk::Result<()> {
        buf.fill(0x5a);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> block::disk::Result<()> {
        Ok(())
    }
    fn flush(&self) -> block::disk::Result<()> {
        let mut g = self.gate.lock().unwrap();
        g.1 += 1;
        self.cv.notify_all();
        while !g.0 {
            g = self.cv.wait(g).unwrap();
        }
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> block::disk::Result<()> {
        Ok(())
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> block::disk::Result<()> {
        Ok(())
    }
    fn resize(&self, _new_size: u64) -> block::disk::Result<()> {
        Err(block::DiskError::Unsupported("resize"))
    }
}

type Shared = Arc<Mutex<VirtioMmioDevice<Blk>>>;

/// A device on `mem` with its rings at `base`, and a worker thread that processes
/// what its doorbell hands on.
fn device(mem: &GuestMemory, disk: Arc<dyn Disk>, base: u64) -> (Shared, GuestQueue) {
    let mut dev = VirtioMmioDevice::new(Blk::new(disk, "d"), mem.clone(), testing::line());
    let (tx, rx) = mpsc::channel::<u16>();
    let tx = Mutex::new(tx);
    let hook: NotifyHook = Arc::new(move |q| {
        tx.lock().unwrap().send(q).ok();
    });
    dev.set_notify_hook(Some(hook));
    let q = GuestQueue::new(base, 16);
    mmio::init(&mut dev, u64::MAX, &[&q]);
    let dev = Arc::new(Mutex::new(dev));
    let d = Arc::downgrade(&dev);
    std::thread::spawn(move || {
        for q in rx {
            let Some(d) = d.upgrade() else { return };
            d.lock().unwrap().process_notified(q);
        }
    });
    (dev, q)
}

/// Writes a request header of type `ty` at `hdr` and a 0xff status byte at `status`.
fn header(mem: &GuestMemory, hdr: u64, status: u64, ty: u32) {
    mem.write_obj(ty, GuestAddress(hdr)).unwrap();
    mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
    mem.write_obj(0u64, GuestAddress(hdr + 8)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
}

fn wait_used(mem: &GuestMemory, q: &mut GuestQueue) -> Vec<(u32, u32)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = q.take_used(mem);
        if !u.is_empty() || Instant::now() > deadline {
            return u;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_slow_flush_blocks_neither_the_doorbell_nor_another_disk() {
    let mem = testing::memory();
    let slow = GatedDisk::new();
    let (a, mut qa) = device(&mem, slow.clone(), 0x1000);
    let (b, mut qb) = device(&mem, Arc::new(block_zero()), 0x4000);

    // Disk A: a flush, whose doorbell returns although the flush cannot finish.
    header(&mem, 0x8000, 0x9000, 4);
    qa.add_chain(&mem, &[(0x8000, 16, false), (0x9000, 1, true)]);
    let t = Instant::now();
    mmio::notify(&mut *a.lock().unwrap(), 0);
    assert!(t.elapsed() < Duration::from_secs(1), "the doorbell waited");
    slow.wait_flushing();

    // Disk B: a read completes while A's flush is in progress.
    header(&mem, 0xa000, 0xb000, 0);
    qb.add_chain(
        &mem,
        &[(0xa000, 16, false), (0xc000, 512, true), (0xb000, 1, true)],
    );
    mmio::notify(&mut *b.lock().unwrap(), 0);
    assert_eq!(wait_used(&mem, &mut qb), vec![(0, 513)]);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0xb000)).unwrap(), 0);

    // A's request is not used, its status untouched, until the flush returned.
    std::thread::sleep(Duration::from_millis(50));
    assert!(qa.take_used(&mem).is_empty(), "used before the flush ended");
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x9000)).unwrap(), 0xff);
    slow.open();
    assert_eq!(wait_used(&mem, &mut qa), vec![(0, 1)]);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x9000)).unwrap(), 0);
}

#[test]
fn requests_complete_in_order_on_one_queue() {
    let mem = testing::memory();
    let slow = GatedDisk::new();
    let (a, mut qa) = device(&mem, slow.clone(), 0x1000);
    // A flush then a read: the read is not used before the flush.
    header(&mem, 0x8000, 0x9000, 4);
    qa.add_chain(&mem, &[(0x8000, 16, false), (0x9000, 1, true)]);
    mmio::notify(&mut *a.lock().unwrap(), 0);
    slow.wait_flushing();
    header(&mem, 0xa000, 0xb000, 0);
    qa.add_chain(
        &mem,
        &[(0xa000, 16, false), (0xc000, 512, true), (0xb000, 1, true)],
    );
    // The worker holds the transport while it flushes: ring from another thread.
    let a2 = a.clone();
    let ringer = std::thread::spawn(move || mmio::notify(&mut *a2.lock().unwrap(), 0));
    std::thread::sleep(Duration::from_millis(50));
    assert!(qa.take_used(&mem).is_empty());
    slow.open();
    ringer.join().unwrap();
    let mut used = wait_used(&mem, &mut qa);
    if used.len() < 2 {
        used.extend(wait_used(&mem, &mut qa));
    }
    assert_eq!(used, vec![(0, 1), (2, 513)]);
}

/// A disk of zeros that does everything at once.
fn block_zero() -> impl Disk {
    let d = GatedDisk::new();
    d.open();
    Arc::into_inner(d).unwrap()
}
