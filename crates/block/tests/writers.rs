//! The VHD and VHDX writers (`convert -O vpc|vhdx`) round-trip through hako's own
//! readers: random writes in random order (unaligned, across blocks, from several
//! threads at once), sizes that are not a whole number of blocks, dynamic and fixed
//! disks; the result passes the structural check, allocates only blocks that were
//! written, and reads back exactly what was written.

mod common;

use block::storage::{MemStorage, Storage};
use block::vhdx::{VhdxKind, VhdxWriterOptions};
use block::vpc::{VpcKind, VpcWriterOptions};
use block::{Disk, ImageWriter, VhdxDisk, VhdxWriter, VpcDisk, VpcWriter};
use common::Rng;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn storage() -> Arc<MemStorage> {
    Arc::new(MemStorage::new(Vec::new(), 256 * MIB))
}

/// Writes random runs into `w` and a model; returns the model (the writer's size).
fn fill(w: &dyn ImageWriter, rng: &mut Rng, writes: usize, max_len: u64) -> Vec<u8> {
    let size = w.size();
    let mut model = vec![0u8; size as usize];
    for _ in 0..writes {
        let len = 1 + rng.below(max_len.min(size));
        let off = rng.below(size - len + 1);
        let byte = rng.next() as u8 | 1;
        let buf = vec![byte; len as usize];
        w.write_at(&buf, off).unwrap();
        model[off as usize..(off + len) as usize].fill(byte);
    }
    model
}

fn read_all(d: &dyn Disk) -> Vec<u8> {
    let mut v = vec![0u8; d.size() as usize];
    d.read_at(&mut v, 0).unwrap();
    v
}

/// Blocks of `block` bytes holding a non-zero byte of `model`.
fn touched(model: &[u8], block: u64) -> u64 {
    model
        .chunks(block as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64
}

#[test]
fn vhd_round_trips_dynamic_and_fixed() {
    let mut rng = Rng(0x5eed_0001);
    // Not multiples of the 2 MiB block; the geometry rounds them up further.
    for (size, fixed) in [
        (7 * MIB + 20 * 1024 + 512, false),
        (5 * MIB - 512, true),
        (1000, false),
        (64 * MIB + 3, false),
    ] {
        let s = storage();
        let w = VpcWriter::create(
            Box::new(s.clone()),
            "w.vhd",
            size,
            VpcWriterOptions {
                fixed,
                force_size: false,
            },
        )
        .unwrap();
        assert!(w.size() >= size && w.size() % 512 == 0, "{size}");
        let model = fill(&w, &mut rng, 12, 3 * MIB);
        // Writes past the end are refused.
        assert!(w.write_at(&[1], w.size()).is_err());
        w.finish().unwrap();
        let n = s.len().unwrap();
        let d = VpcDisk::open(Box::new(s.clone()), "w.vhd", true).unwrap();
        assert_eq!(d.size(), w.size());
        assert_eq!(
            d.kind(),
            if fixed {
                VpcKind::Fixed
            } else {
                VpcKind::Dynamic
            }
        );
        assert!(read_all(&d) == model, "{size} {fixed}");
        let r = d.check();
        assert_eq!(r.corruptions, 0, "{:?}", r.errors);
        if fixed {
            assert_eq!(n, w.size() + 512);
        } else {
            assert_eq!(r.allocated_blocks, touched(&model, 2 * MIB), "{size}");
            assert_eq!(r.image_end_offset + 512, n);
            // Probed as a VHD from its footer copy.
            let head = s.contents();
            assert_eq!(
                block::open::probe_bytes(&head[..512], &head[head.len() - 512..]),
                block::ImageFormat::Vpc
            );
        }
    }
}

#[test]
fn vhd_force_size_keeps_the_size() {
    let s = storage();
    let size = 3 * MIB + 4096;
    let w = VpcWriter::create(
        Box::new(s.clone()),
        "f.vhd",
        size,
        VpcWriterOptions {
            fixed: false,
            force_size: true,
        },
    )
    .unwrap();
    assert_eq!(w.size(), size);
    w.write_at(&[7; 4096], size - 4096).unwrap();
    w.finish().unwrap();
    let d = VpcDisk::open(Box::new(s), "f.vhd", true).unwrap();
    assert_eq!(d.size(), size);
    let v = read_all(&d);
    assert!(v[..(size - 4096) as usize].iter().all(|&b| b == 0));
    assert!(v[(size - 4096) as usize..].iter().all(|&b| b == 7));
}

#[test]
fn vhdx_round_trips_dynamic_and_fixed() {
    let mut rng = Rng(0x5eed_0002);
    for (size, fixed, bs) in [
        (7 * MIB + 20 * 1024 + 512, false, Some(MIB)),
        (3 * MIB + 512, true, Some(2 * MIB)),
        (9 * MIB + 1000, false, None),
        (4096, false, None),
    ] {
        let s = storage();
        let w = VhdxWriter::create(
            Box::new(s.clone()),
            "w.vhdx",
            size,
            VhdxWriterOptions {
                fixed,
                block_size: bs,
            },
        )
        .unwrap();
        assert_eq!(w.size(), size.next_multiple_of(512));
        let block = w.block_size();
        assert_eq!(block, bs.unwrap_or(8 * MIB));
        let model = fill(&w, &mut rng, 10, 3 * MIB);
        w.finish().unwrap();
        let d = VhdxDisk::open(Box::new(s.clone()), "w.vhdx", true).unwrap();
        assert_eq!(d.size(), w.size());
        assert_eq!(d.block_size(), block);
        assert_eq!(d.sector_sizes(), (512, 4096));
        assert_eq!(
            d.kind(),
            if fixed {
                VhdxKind::Fixed
            } else {
                VhdxKind::Dynamic
            }
        );
        assert!(read_all(&d) == model, "{size} {fixed}");
        let r = d.check();
        assert_eq!(r.corruptions, 0, "{:?}", r.errors);
        let want = if fixed {
            size.div_ceil(block)
        } else {
            touched(&model, block)
        };
        assert_eq!(r.allocated_blocks, want, "{size} {fixed}");
        // Whole blocks lie in the file, the last one too.
        let end = 4 * MIB + want * block;
        assert_eq!(s.len().unwrap(), end, "{size} {fixed}");
    }
}

#[test]
fn concurrent_writes_land_where_they_belong() {
    let size = 40 * MIB + 512;
    for vhdx in [false, true] {
        let s = storage();
        let w: Arc<dyn ImageWriter> = if vhdx {
            Arc::new(
                VhdxWriter::create(
                    Box::new(s.clone()),
                    "c",
                    size,
                    VhdxWriterOptions {
                        fixed: false,
                        block_size: Some(MIB),
                    },
                )
                .unwrap(),
            )
        } else {
            Arc::new(VpcWriter::create(Box::new(s.clone()), "c", size, Default::default()).unwrap())
        };
        let chunk = 192 * 1024u64;
        let chunks = size / chunk;
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for c in (t..chunks).step_by(4).collect::<Vec<_>>().into_iter().rev() {
                        w.write_at(&vec![(c % 251) as u8 + 1; chunk as usize], c * chunk)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        w.finish().unwrap();
        let d: Box<dyn Disk> = if vhdx {
            Box::new(VhdxDisk::open(Box::new(s), "c", true).unwrap())
        } else {
            Box::new(VpcDisk::open(Box::new(s), "c", true).unwrap())
        };
        let v = read_all(d.as_ref());
        for c in 0..chunks {
            let at = (c * chunk) as usize;
            assert!(
                v[at..at + chunk as usize]
                    .iter()
                    .all(|&b| b == (c % 251) as u8 + 1),
                "vhdx={vhdx} chunk {c}"
            );
        }
        assert!(v[(chunks * chunk) as usize..].iter().all(|&b| b == 0));
    }
}

#[test]
fn impossible_sizes_are_refused() {
    let e = VpcWriter::create(
        Box::new(storage()),
        "big.vhd",
        2041 << 30,
        Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.starts_with("big.vhd: ") && e.contains("at most 2040 GiB"),
        "{e}"
    );
    let e = VhdxWriter::create(
        Box::new(storage()),
        "big.vhdx",
        (64 << 40) + 512,
        Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("at most 64 TiB"), "{e}");
    for bs in [3 * MIB, 512 * 1024, 512 * MIB] {
        let e = VhdxWriter::create(
            Box::new(storage()),
            "b.vhdx",
            MIB,
            VhdxWriterOptions {
                fixed: false,
                block_size: Some(bs),
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("not a power of two from 1 MiB to 256 MiB"),
            "{e}"
        );
    }
    // A BAT too large to read back is refused when writing too.
    let e = VhdxWriter::create(
        Box::new(storage()),
        "b.vhdx",
        64 << 40,
        VhdxWriterOptions {
            fixed: false,
            block_size: Some(MIB),
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("use a larger block_size"), "{e}");
}
