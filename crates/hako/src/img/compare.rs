//! `hako img compare`: whether two images show the guest the same contents, with
//! qemu-img's messages and exit statuses.

use super::parse_format;
use block::{BackingPolicy, Disk, ImageFormat, OpenOptions};
use std::path::{Path, PathBuf};

/// `compare [-f FMT] [-F FMT] [-s] [-q] [-p] A B`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Format of the first image (probed if not given).
    #[arg(short = 'f', value_parser = parse_format)]
    format_a: Option<ImageFormat>,
    /// Format of the second image (probed if not given).
    #[arg(short = 'F', value_parser = parse_format)]
    format_b: Option<ImageFormat>,
    /// Strict: images of different sizes differ, and so do ranges allocated in one
    /// image but not in the other.
    #[arg(short = 's')]
    strict: bool,
    /// Quiet: print nothing, tell by the exit status only.
    #[arg(short = 'q')]
    quiet: bool,
    /// Accepted for qemu-img compatibility (no progress bar is shown).
    #[arg(short = 'p')]
    progress: bool,
    /// First image.
    a: PathBuf,
    /// Second image.
    b: PathBuf,
}

/// Exit statuses, as qemu-img.
const IDENTICAL: i32 = 0;
const DIFFERENT: i32 = 1;
const OPEN_FAILED: i32 = 2;
const STATUS_FAILED: i32 = 3;
const READ_FAILED: i32 = 4;

/// How far one comparison step reads at most.
const CHUNK: u64 = 2 << 20;

/// The outcome of a comparison: an exit status and the message for stdout.
struct Outcome(i32, Option<String>);

fn open(path: &Path, format: Option<ImageFormat>) -> Result<Box<dyn Disk>, block::DiskError> {
    block::open(
        path,
        &OpenOptions {
            format,
            read_only: true,
            backing: BackingPolicy::QemuImg,
            ..Default::default()
        },
    )
}

pub fn run(a: CompareArgs) -> anyhow::Result<i32> {
    let _ = a.progress;
    let (da, db) = match (open(&a.a, a.format_a), open(&a.b, a.format_b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("hako: could not open: {e}");
            return Ok(OPEN_FAILED);
        }
    };
    let Outcome(code, msg) = compare(da.as_ref(), db.as_ref(), a.strict, a.quiet);
    if let (Some(m), false) = (msg, a.quiet) {
        println!("{m}");
    }
    Ok(code)
}

fn compare(a: &dyn Disk, b: &dyn Disk, strict: bool, quiet: bool) -> Outcome {
    let (sa, sb) = (a.size(), b.size());
    if sa != sb && strict {
        return Outcome(DIFFERENT, Some("Strict mode: Image size mismatch!".into()));
    }
    let common = sa.min(sb);
    let mut pos = 0;
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    while pos < common {
        let n = CHUNK.min(common - pos);
        if strict {
            match first_presence_mismatch(a, b, pos, n) {
                Err(e) => return status_failed(e),
                Ok(Some(off)) => {
                    return Outcome(
                        DIFFERENT,
                        Some(format!("Strict mode: Offset {off} block status mismatch!")),
                    )
                }
                Ok(None) => {}
            }
        }
        let (st_a, ra) = match a.block_status(pos, n) {
            Ok(x) => x,
            Err(e) => return status_failed(e),
        };
        let (st_b, rb) = match b.block_status(pos, n) {
            Ok(x) => x,
            Err(e) => return status_failed(e),
        };
        let step = ra.min(rb).max(1);
        let zero = block::BlockStatus::Zero;
        if st_a == zero && st_b == zero {
            pos += step;
            continue;
        }
        ba.resize(step as usize, 0);
        bb.resize(step as usize, 0);
        if let Err(e) = a
            .read_at(&mut ba, pos)
            .and_then(|_| b.read_at(&mut bb, pos))
        {
            return read_failed(e);
        }
        if let Some(i) = ba.iter().zip(&bb).position(|(x, y)| x != y) {
            return mismatch(pos + i as u64);
        }
        pos += step;
    }
    // The longer image's rest must read as zeroes (qemu-img warns only once the
    // common part matched).
    if sa != sb && !quiet {
        println!("Warning: Image size mismatch!");
    }
    let longer = if sa > sb { a } else { b };
    let size = longer.size();
    while pos < size {
        let n = CHUNK.min(size - pos);
        let (st, run) = match longer.block_status(pos, n) {
            Ok(x) => x,
            Err(e) => return status_failed(e),
        };
        let run = run.max(1);
        if st == block::BlockStatus::Data {
            ba.resize(run as usize, 0);
            if let Err(e) = longer.read_at(&mut ba, pos) {
                return read_failed(e);
            }
            if let Some(i) = ba.iter().position(|&x| x != 0) {
                return mismatch(pos + i as u64);
            }
        }
        pos += run;
    }
    Outcome(IDENTICAL, Some("Images are identical.".into()))
}

/// qemu-img reports the 512-byte sector holding the first difference.
fn mismatch(off: u64) -> Outcome {
    Outcome(
        DIFFERENT,
        Some(format!("Content mismatch at offset {}!", off / 512 * 512)),
    )
}

fn status_failed(e: block::DiskError) -> Outcome {
    eprintln!("hako: error while checking the allocation status: {e}");
    Outcome(STATUS_FAILED, None)
}

fn read_failed(e: block::DiskError) -> Outcome {
    eprintln!("hako: error while reading: {e}");
    Outcome(READ_FAILED, None)
}

/// Where in `pos..pos + n` one image stores data and the other does not.
fn first_presence_mismatch(
    a: &dyn Disk,
    b: &dyn Disk,
    mut pos: u64,
    n: u64,
) -> Result<Option<u64>, block::DiskError> {
    let end = pos + n;
    while pos < end {
        let ea = a.map_extent(pos, end - pos)?;
        let eb = b.map_extent(pos, end - pos)?;
        if ea.present != eb.present {
            return Ok(Some(pos));
        }
        pos += ea.len.min(eb.len).max(1);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use block::storage::MemStorage;
    use block::RawDisk;

    fn raw(data: Vec<u8>) -> RawDisk {
        RawDisk::new(Box::new(MemStorage::new(data, 1 << 30)), "m", true).unwrap()
    }

    #[test]
    fn compare_finds_the_sector_of_the_first_difference() {
        let mut x = vec![7u8; 1 << 20];
        let a = raw(x.clone());
        x[700_000] = 8;
        let b = raw(x.clone());
        let Outcome(c, m) = compare(&a, &b, false, true);
        assert_eq!(
            (c, m.as_deref()),
            (1, Some("Content mismatch at offset 699904!"))
        );
        let Outcome(c, _) = compare(&a, &a, true, true);
        assert_eq!(c, 0);
        // Longer by zeroes: identical unless strict; longer by data: a mismatch there.
        let mut y = vec![7u8; 1 << 20];
        y.resize(3 << 20, 0);
        let longer = raw(y.clone());
        assert_eq!(compare(&a, &longer, false, true).0, 0);
        assert_eq!(compare(&longer, &a, true, true).0, 1);
        y[(2 << 20) + 5] = 1;
        let Outcome(c, m) = compare(&a, &raw(y), false, true);
        assert_eq!(
            (c, m.as_deref()),
            (1, Some("Content mismatch at offset 2097152!"))
        );
    }
}
