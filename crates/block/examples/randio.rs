//! 4 KiB strided "random" I/O through the block layer, the access pattern of
//! `qemu-img bench -s 4k -S STEP` (request i at `i * STEP mod size`), so the two can be
//! compared on the same image. Runs COUNT requests ("first": the L2 cache fills), then
//! COUNT more ("second": steady state), and prints both rates. With L2_TABLES the L2
//! cache holds only that many tables (2: nearly every request misses). Used by
//! `bench/img.sh`.
//!
//! usage: randio IMAGE read|write COUNT STEP [L2_TABLES]

use block::storage::FileStorage;
use block::{BackingPolicy, Disk, ImageFormat, OpenOptions, Qcow2Disk};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: randio IMAGE read|write COUNT STEP [L2_CACHE_MIB]");
        std::process::exit(2);
    }
    let write = a[2] == "write";
    let count: u64 = a[3].parse()?;
    let step: u64 = a[4].parse()?;
    let path = std::path::Path::new(&a[1]);
    let d: Box<dyn Disk> = match a.get(5) {
        Some(tables) => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(path)?;
            let s = Box::new(FileStorage::new(f));
            Box::new(Qcow2Disk::open_with_l2_tables(
                s,
                &a[1],
                !write,
                tables.parse()?,
            )?)
        }
        None => block::open(
            path,
            &OpenOptions {
                format: Some(ImageFormat::Qcow2),
                read_only: !write,
                backing: BackingPolicy::Strict,
                ..Default::default()
            },
        )?,
    };
    let size = d.size();
    let mut buf = vec![0xa5u8; 4096];
    let mut offset = 0u64;
    for phase in ["first", "second"] {
        let t = Instant::now();
        for _ in 0..count {
            if write {
                d.write_at(&buf, offset)?;
            } else {
                d.read_at(&mut buf, offset)?;
            }
            offset = (offset + step) % size;
        }
        // Timed like `qemu-img bench`: requests only, the final flush is not counted.
        let secs = t.elapsed().as_secs_f64();
        if write {
            d.flush()?;
        }
        println!("{phase} {:.0}", count as f64 / secs);
    }
    Ok(())
}
