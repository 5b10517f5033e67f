//! Helpers shared by the block integration tests.
#![allow(dead_code)]

use block::qcow2::CreateOptions;
use block::storage::{MemStorage, Storage};
use block::{Disk, Qcow2Disk};
use std::io;
use std::sync::{Arc, Mutex};

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Creates an in-memory qcow2 image and opens it read-write.
pub fn mem_qcow2(opts: CreateOptions) -> (Arc<MemStorage>, Qcow2Disk) {
    let s = Arc::new(MemStorage::new(Vec::new(), 1 << 30));
    Qcow2Disk::create(s.as_ref(), &opts).unwrap();
    let d = Qcow2Disk::open(Box::new(s.clone()), "mem.qcow2", false).unwrap();
    (s, d)
}

/// Applies random writes, discards and zeroes to `d` and to a flat model.
pub fn random_ops(d: &dyn Disk, model: &mut [u8], rng: &mut Rng, n: usize, max_len: u64) {
    let size = model.len() as u64;
    for i in 0..n {
        let len = 1 + rng.below(max_len);
        let off = rng.below(size - len.min(size));
        let len = len.min(size - off);
        match rng.below(10) {
            0 => {
                d.discard(off, len).unwrap();
                // Discard is advisory: resync the model from what the disk says.
                d.read_at(&mut model[off as usize..(off + len) as usize], off)
                    .unwrap();
            }
            1 => {
                d.write_zeroes(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            _ => {
                let fill = (i as u8).wrapping_mul(31).wrapping_add(1);
                let data: Vec<u8> = (0..len).map(|k| fill ^ (k as u8)).collect();
                d.write_at(&data, off).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
        }
    }
}

/// Asserts the disk reads exactly like the model.
pub fn assert_same(d: &dyn Disk, model: &[u8]) {
    let mut got = vec![0u8; model.len()];
    d.read_at(&mut got, 0).unwrap();
    if got != model {
        let first = got.iter().zip(model).position(|(a, b)| a != b).unwrap();
        panic!("content differs first at byte {first:#x}");
    }
}

/// One operation a format did on its storage.
#[derive(Clone, Debug)]
pub enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
    Sync,
}

/// Storage that records every write and sync, for crash simulation.
#[derive(Default)]
pub struct Recorder {
    pub inner: MemStorage,
    pub log: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new(initial: Vec<u8>) -> Self {
        Recorder {
            inner: MemStorage::new(initial, 1 << 30),
            log: Mutex::new(Vec::new()),
        }
    }
}

impl Storage for Recorder {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(Op::Write(offset, buf.to_vec()));
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.log.lock().unwrap().push(Op::SetLen(len));
        self.inner.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.log.lock().unwrap().push(Op::Sync);
        Ok(())
    }
    fn punch_hole(&self, _offset: u64, _len: u64) -> io::Result<()> {
        // A hole is an optimisation; keeping the data is also a valid outcome.
        Ok(())
    }
    fn allocated_bytes(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// Applies recorded operations to an image.
pub fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(off, data) => {
            let end = *off as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*off as usize..end].copy_from_slice(data);
        }
        Op::SetLen(l) => image.resize(*l as usize, 0),
        Op::Sync => {}
    }
}
