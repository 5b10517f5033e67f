//! `hako img convert`: copies an image's guest view into a new image (raw, qcow2, VHD,
//! VHDX or streamOptimized VMDK), skipping zeroes (sparse output, zero blocks never
//! allocated), optionally compressing qcow2 clusters, with a progress bar.
//!
//! As `qemu-img convert`, the copy runs as `-m N` parallel streams (default 8, 1..16):
//! each takes the next chunk of the input, reads it, compresses its clusters (`-c`)
//! and writes it. Without `-W` the writes happen in guest order (a stream waits for
//! its turn after reading and compressing), so the output is laid out exactly as with
//! one stream: a `-c` conversion gives the same bytes whatever `-m` is. `-W` lets
//! streams write as soon as they are ready (streamOptimized VMDK output, which must be
//! appended in order, is always written in order).

use super::create::{create_image, image_writer};
use super::{parse_format, parse_options, parse_size, progress_bar};
use anyhow::{bail, Context};
use block::storage::FileStorage;
use block::vmdk::StreamWriter;
use block::{
    BackingPolicy, BlockStatus, Disk, ImageFormat, ImageWriter, OpenOptions, Qcow2Disk, RawDisk,
};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// `convert [-f FMT] [-O FMT] [-c] [-o OPTS] [-p] [-q] [-S SIZE] IN OUT`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Input format (probed if not given).
    #[arg(short = 'f', value_parser = parse_format)]
    format: Option<ImageFormat>,
    /// Output format.
    #[arg(short = 'O', value_parser = parse_format, default_value = "raw")]
    output_format: ImageFormat,
    /// Compress the output (qcow2 only).
    #[arg(short = 'c')]
    compress: bool,
    /// Output format options (see `create`).
    #[arg(short = 'o')]
    options: Vec<String>,
    /// Show a progress bar even when stderr is not a terminal.
    #[arg(short = 'p')]
    progress: bool,
    /// Quiet: no progress bar.
    #[arg(short = 'q')]
    quiet: bool,
    /// Zero runs at least this long are left unallocated in raw output.
    #[arg(short = 'S', default_value = "4k")]
    sparse_size: String,
    /// Number of parallel streams (qemu-img's coroutines) copying, 1 to 16.
    #[arg(short = 'm', default_value = "8", allow_hyphen_values = true)]
    streams: String,
    /// Allow writes to the output out of guest order (faster; the layout of qcow2
    /// output then depends on timing).
    #[arg(short = 'W')]
    out_of_order: bool,
    /// Let a VMDK descriptor name extent files outside its own directory (absolute
    /// paths, `..`); refused by default.
    #[arg(long)]
    allow_any_extent_path: bool,
    /// Input image.
    input: PathBuf,
    /// Output image (created or truncated).
    output: PathBuf,
}

/// Most parallel streams `-m` allows (qemu-img's `MAX_COROUTINES`).
const MAX_STREAMS: usize = 16;

/// `-m`: a number as C's `strtol(s, NULL, 0)` reads it (decimal, `0x` hex, `0`
/// octal), 1 to 16, with qemu-img's message otherwise (and its exit status 1).
fn parse_streams(s: &str) -> anyhow::Result<usize> {
    let t = s.trim_start();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let n = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse::<u64>().ok()
    };
    match n {
        Some(n) if !neg && (1..=MAX_STREAMS as u64).contains(&n) => Ok(n as usize),
        _ => bail!(
            "Invalid number of coroutines. Allowed number of coroutines is between 1 and {MAX_STREAMS}"
        ),
    }
}

enum Out {
    Raw(RawDisk),
    Qcow2(Box<Qcow2Disk>),
    /// streamOptimized VMDK: grains appended in order (`None` once finished).
    VmdkStream(Mutex<Option<StreamWriter>>),
    /// VHD or VHDX: blocks allocated on first write, tables written at the end.
    Writer(Box<dyn ImageWriter>),
}

impl Out {
    fn disk(&self) -> Option<&dyn Disk> {
        match self {
            Out::Raw(d) => Some(d),
            Out::Qcow2(d) => Some(d.as_ref()),
            Out::VmdkStream(_) | Out::Writer(_) => None,
        }
    }

    /// Writes guest data (not for the VMDK stream, which takes whole grains).
    fn write_at(&self, b: &[u8], pos: u64) -> anyhow::Result<()> {
        match (self.disk(), self) {
            (Some(d), _) => d.write_at(b, pos)?,
            (None, Out::Writer(w)) => w.write_at(b, pos)?,
            _ => bail!("internal error: a stream output written by offset"),
        }
        Ok(())
    }
}

/// Whether `-O FMT -o subformat=...` is an output this can write.
fn check_output(format: ImageFormat, subformat: Option<&str>) -> anyhow::Result<()> {
    match (format, subformat) {
        (ImageFormat::Vmdk, Some("streamOptimized")) => Ok(()),
        (ImageFormat::Vmdk, _) => bail!(
            "vmdk output is written as streamOptimized only: give -o subformat=streamOptimized"
        ),
        (ImageFormat::Vpc | ImageFormat::Vhdx, None | Some("dynamic" | "fixed")) => Ok(()),
        (f, Some(sub)) => bail!("unsupported option 'subformat={sub}' for {f} output"),
        (f, None) if f.writable() => Ok(()),
        (f, None) => {
            bail!("{f} output is not supported (convert to raw, qcow2, vpc, vhdx or vmdk)")
        }
    }
}

pub fn run(a: ConvertArgs) -> anyhow::Result<i32> {
    let opts = parse_options(&a.options)?;
    check_output(a.output_format, opts.subformat.as_deref())?;
    opts.check_for(a.output_format)?;
    if a.compress && a.output_format != ImageFormat::Qcow2 {
        bail!("compression (-c) needs an output format that supports it (-O qcow2)");
    }
    let sparse = parse_size(&a.sparse_size)?;
    let streams = parse_streams(&a.streams)?;
    let input = block::open(
        &a.input,
        &OpenOptions {
            format: a.format,
            read_only: true,
            backing: BackingPolicy::QemuImg,
            any_extent_path: a.allow_any_extent_path,
            ..Default::default()
        },
    )?;
    let size = input.size();
    if std::fs::canonicalize(&a.input).ok() == std::fs::canonicalize(&a.output).ok() {
        bail!("input and output are the same file");
    }
    let shown = a.output.display().to_string();
    // Raw and qcow2 outputs are created as `create` makes them; the others are
    // written from scratch by their writers.
    let created = matches!(a.output_format, ImageFormat::Raw | ImageFormat::Qcow2);
    if created {
        create_image(&a.output, a.output_format, size, None, None, &opts)?;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(!created)
        .open(&a.output)
        .with_context(|| format!("opening {shown}"))?;
    let out = match a.output_format {
        ImageFormat::Vmdk => {
            let name = a
                .output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Out::VmdkStream(Mutex::new(Some(StreamWriter::create(
                Box::new(FileStorage::new(f)),
                &shown,
                size,
                &name,
            )?)))
        }
        ImageFormat::Raw => Out::Raw(RawDisk::new(Box::new(FileStorage::new(f)), &shown, false)?),
        ImageFormat::Qcow2 => Out::Qcow2(Box::new(Qcow2Disk::open(
            Box::new(FileStorage::new(f)),
            &shown,
            false,
        )?)),
        fmt => Out::Writer(image_writer(fmt, f, &shown, size, &opts)?),
    };
    // Granule: what one write allocates in the output.
    let gran = match &out {
        Out::Raw(_) => sparse.clamp(512, 1 << 20),
        Out::Qcow2(d) => d.header().cluster_size(),
        Out::VmdkStream(w) => lock(w).as_ref().map_or(1 << 16, |w| w.grain_bytes()),
        // Blocks are allocated by the first write into them; zero runs of a granule
        // inside an allocated block stay holes in the file.
        Out::Writer(_) => 64 << 10,
    };
    let chunk = (2u64 << 20).max(gran) / gran * gran;
    let pb = progress_bar(
        a.quiet,
        a.progress,
        size,
        "{wide_bar} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    );
    // A stream is appended grain after grain: always in order.
    let in_order = !a.out_of_order || matches!(out, Out::VmdkStream(_));
    let p = Pipeline {
        input: input.as_ref(),
        out: &out,
        size,
        chunk,
        gran,
        compress: a.compress,
        in_order,
        pb: &pb,
        cursor: Mutex::new(Cursor::default()),
        turn: Mutex::new(0),
        turn_cv: Condvar::new(),
        failed: AtomicBool::new(false),
    };
    p.run(streams)?;
    match &out {
        Out::VmdkStream(w) => {
            if let Some(w) = lock(w).take() {
                w.finish()?;
            }
        }
        Out::Writer(w) => w.finish()?,
        _ => {
            if let Some(d) = out.disk() {
                d.flush()?;
            }
        }
    }
    pb.finish_and_clear();
    Ok(0)
}

/// Where the next stream starts: input position and the number of data chunks handed
/// out so far (a chunk's ticket orders its write).
#[derive(Default)]
struct Cursor {
    pos: u64,
    tickets: u64,
}

/// The copy: `size` bytes in chunks of `chunk`, shared by the streams.
struct Pipeline<'a> {
    input: &'a dyn Disk,
    out: &'a Out,
    size: u64,
    chunk: u64,
    gran: u64,
    compress: bool,
    in_order: bool,
    pb: &'a ProgressBar,
    cursor: Mutex<Cursor>,
    /// The ticket whose chunk may be written next (in-order mode).
    turn: Mutex<u64>,
    turn_cv: Condvar,
    failed: AtomicBool,
}

impl Pipeline<'_> {
    /// Runs `streams` threads until the input is copied or one fails.
    fn run(&self, streams: usize) -> anyhow::Result<()> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..streams.max(1))
                .map(|_| {
                    s.spawn(|| {
                        let r = self.stream();
                        if r.is_err() {
                            // Wake streams waiting for a turn that will never come.
                            self.failed.store(true, Ordering::SeqCst);
                            let _g = lock(&self.turn);
                            self.turn_cv.notify_all();
                        }
                        r
                    })
                })
                .collect();
            let mut result = Ok(());
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("convert thread panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }

    /// The next chunk holding data (skipping what the input knows is zero), with its
    /// ticket; `None` at the end.
    fn claim(&self) -> anyhow::Result<Option<(u64, u64, u64)>> {
        let mut c = lock(&self.cursor);
        while c.pos < self.size {
            let pos = c.pos;
            let n = self.chunk.min(self.size - pos);
            let (st, run) = self.input.block_status(pos, n)?;
            c.pos += n;
            if st == BlockStatus::Zero && run == n {
                self.pb.inc(n);
                continue;
            }
            let t = c.tickets;
            c.tickets += 1;
            return Ok(Some((t, pos, n)));
        }
        Ok(None)
    }

    /// One stream: claim, read, compress, wait for the turn, write; until the end.
    fn stream(&self) -> anyhow::Result<()> {
        let mut b = Vec::new();
        while !self.failed.load(Ordering::Relaxed) {
            let Some((ticket, pos, n)) = self.claim()? else {
                return Ok(());
            };
            b.resize(n as usize, 0);
            self.input.read_at(&mut b, pos)?;
            let packed = self.prepare(&b)?;
            if self.in_order {
                let mut turn = lock(&self.turn);
                while *turn != ticket {
                    if self.failed.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    turn = self.turn_cv.wait(turn).unwrap_or_else(|e| e.into_inner());
                }
            }
            copy_chunk(self.out, &b, pos, self.gran, packed.as_deref())?;
            if self.in_order {
                *lock(&self.turn) += 1;
                self.turn_cv.notify_all();
            }
            self.pb.inc(n);
        }
        Ok(())
    }

    /// With `-c`, each granule (cluster) of the chunk compressed: `None` for zero
    /// granules and those that do not compress. `None` without `-c`.
    fn prepare(&self, b: &[u8]) -> anyhow::Result<Option<Vec<Option<Vec<u8>>>>> {
        let Out::Qcow2(d) = self.out else {
            return Ok(None);
        };
        if !self.compress {
            return Ok(None);
        }
        b.chunks(self.gran as usize)
            .map(|g| {
                if is_zero(g) {
                    Ok(None)
                } else {
                    Ok(d.compress_cluster(g)?)
                }
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some)
    }
}

/// Writes the non-zero granules of `b` (guest offset `pos`), merging neighbours; with
/// `packed` (compressed output), each granule as compressed beforehand.
fn copy_chunk(
    out: &Out,
    b: &[u8],
    pos: u64,
    gran: u64,
    packed: Option<&[Option<Vec<u8>>]>,
) -> anyhow::Result<()> {
    if let Out::VmdkStream(_) = out {
        return copy_stream(out, b, pos, gran);
    }
    let mut run_start: Option<usize> = None;
    let g = gran as usize;
    let mut i = 0usize;
    while i < b.len() {
        let end = (i + g).min(b.len());
        let zero = is_zero(&b[i..end]);
        if let Some(packed) = packed {
            if let (false, Out::Qcow2(d)) = (zero, out) {
                let p = packed.get(i / g).and_then(|p| p.as_deref());
                d.write_compressed_with(pos + i as u64, &b[i..end], p)?;
            }
        } else if zero {
            if let Some(s) = run_start.take() {
                out.write_at(&b[s..i], pos + s as u64)?;
            }
        } else if run_start.is_none() {
            run_start = Some(i);
        }
        i = end;
    }
    if let Some(s) = run_start {
        out.write_at(&b[s..], pos + s as u64)?;
    }
    Ok(())
}

/// Appends the non-zero grains of `b` (guest offset `pos`, grain-aligned) to a stream.
fn copy_stream(out: &Out, b: &[u8], pos: u64, gran: u64) -> anyhow::Result<()> {
    let Out::VmdkStream(w) = out else {
        return Ok(());
    };
    let mut w = lock(w);
    let Some(w) = w.as_mut() else {
        bail!("the VMDK stream is already finished");
    };
    for (k, g) in b.chunks(gran as usize).enumerate() {
        if !is_zero(g) {
            w.write_grain(pos / gran + k as u64, g)?;
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a buffer is all zeroes (word at a time).
fn is_zero(b: &[u8]) -> bool {
    let words = b.chunks_exact(16);
    let tail = words.remainder();
    words
        .map(|w| u128::from_ne_bytes(w.try_into().expect("16 bytes")))
        .all(|w| w == 0)
        && tail.iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::parse_streams;

    #[test]
    fn streams_parse_like_strtol() {
        assert_eq!(parse_streams("8").unwrap(), 8);
        assert_eq!(parse_streams("0x10").unwrap(), 16);
        assert_eq!(parse_streams("010").unwrap(), 8);
        assert_eq!(parse_streams(" 3").unwrap(), 3);
        for bad in ["0", "17", "-1", "abc", "", "8x"] {
            let e = parse_streams(bad).unwrap_err().to_string();
            assert!(e.contains("between 1 and 16"), "{bad}: {e}");
        }
    }
}
