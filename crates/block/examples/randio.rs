//! 4 KiB strided "random" I/O through the block layer, the access pattern of
//! `qemu-img bench -s 4k -S STEP` (request i at `i * STEP mod size`), so the two can be
//! compared on the same image. Runs COUNT requests on a freshly opened image (cold L2
//! cache), then COUNT more (warm), and prints both rates. Used by `bench/img.sh`.
//!
//! usage: randio IMAGE read|write COUNT STEP [L2_CACHE_MIB]

use block::{BackingPolicy, ImageFormat, OpenOptions};
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
    let mut opts = OpenOptions {
        format: Some(ImageFormat::Qcow2),
        read_only: !write,
        backing: BackingPolicy::Default,
        ..Default::default()
    };
    if let Some(mib) = a.get(5) {
        opts.l2_cache_bytes = mib.parse::<u64>()? << 20;
    }
    let d = block::open(std::path::Path::new(&a[1]), &opts)?;
    let size = d.size();
    let mut buf = vec![0xa5u8; 4096];
    let mut offset = 0u64;
    for phase in ["cold", "warm"] {
        let t = Instant::now();
        for _ in 0..count {
            if write {
                d.write_at(&buf, offset)?;
            } else {
                d.read_at(&mut buf, offset)?;
            }
            offset = (offset + step) % size;
        }
        if write {
            d.flush()?;
        }
        let secs = t.elapsed().as_secs_f64();
        println!("{phase} {:.0}", count as f64 / secs);
    }
    Ok(())
}
