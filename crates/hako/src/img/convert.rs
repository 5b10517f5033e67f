//! `hako img convert`: copies an image's guest view into a new image, skipping zeroes
//! (sparse output), optionally compressing qcow2 clusters, with a progress bar.

use super::create::create_image;
use super::{parse_format, parse_options, parse_size};
use anyhow::{bail, Context};
use block::storage::FileStorage;
use block::vmdk::StreamWriter;
use block::{BackingPolicy, BlockStatus, Disk, ImageFormat, OpenOptions, Qcow2Disk, RawDisk};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

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
    /// Let a VMDK descriptor name extent files outside its own directory (absolute
    /// paths, `..`); refused by default.
    #[arg(long)]
    allow_any_extent_path: bool,
    /// Input image.
    input: PathBuf,
    /// Output image (created or truncated).
    output: PathBuf,
}

enum Out {
    Raw(RawDisk),
    Qcow2(Box<Qcow2Disk>),
    /// streamOptimized VMDK: grains appended in order (`None` once finished).
    VmdkStream(Mutex<Option<StreamWriter>>),
}

impl Out {
    fn disk(&self) -> Option<&dyn Disk> {
        match self {
            Out::Raw(d) => Some(d),
            Out::Qcow2(d) => Some(d.as_ref()),
            Out::VmdkStream(_) => None,
        }
    }
}

/// Whether `-O FMT -o subformat=...` is an output this can write.
fn check_output(format: ImageFormat, subformat: Option<&str>) -> anyhow::Result<()> {
    match (format, subformat) {
        (ImageFormat::Vmdk, Some("streamOptimized")) => Ok(()),
        (ImageFormat::Vmdk, _) => bail!(
            "vmdk output is written as streamOptimized only: give -o subformat=streamOptimized"
        ),
        (f, Some(sub)) => bail!("unsupported option 'subformat={sub}' for {f} output"),
        (f, None) if f.writable() => Ok(()),
        (f, None) => bail!("{f} output is not supported (convert to raw, qcow2 or vmdk)"),
    }
}

fn progress_bar(a: &ConvertArgs, len: u64) -> ProgressBar {
    let show = !a.quiet && (a.progress || std::io::stderr().is_terminal());
    let target = if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_bar} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style);
    }
    pb
}

pub fn run(a: ConvertArgs) -> anyhow::Result<i32> {
    let opts = parse_options(&a.options)?;
    check_output(a.output_format, opts.subformat.as_deref())?;
    if a.compress && a.output_format != ImageFormat::Qcow2 {
        bail!("compression (-c) needs an output format that supports it (-O qcow2)");
    }
    let sparse = parse_size(&a.sparse_size)?;
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
    if a.output_format != ImageFormat::Vmdk {
        create_image(&a.output, a.output_format, size, None, None, &opts)?;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(a.output_format == ImageFormat::Vmdk)
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
        f => bail!("{f} output is not supported (convert to raw or qcow2)"),
    };
    // Granule: what one write allocates in the output.
    let gran = match &out {
        Out::Raw(_) => sparse.clamp(512, 1 << 20),
        Out::Qcow2(d) => d.header().cluster_size(),
        Out::VmdkStream(w) => lock(w).as_ref().map_or(1 << 16, |w| w.grain_bytes()),
    };
    let chunk = (2u64 << 20).max(gran) / gran * gran;
    let pb = progress_bar(&a, size);
    // Raw output takes parallel writers (disjoint ranges); qcow2 and VMDK output one
    // writer, so clusters and grains are laid out in guest order.
    let writers = match &out {
        Out::Raw(_) => 2,
        Out::Qcow2(_) | Out::VmdkStream(_) => 1,
    };
    pipeline(
        input.as_ref(),
        &out,
        size,
        chunk,
        gran,
        a.compress,
        writers,
        &pb,
    )?;
    match &out {
        Out::VmdkStream(w) => {
            if let Some(w) = lock(w).take() {
                w.finish()?;
            }
        }
        _ => {
            if let Some(d) = out.disk() {
                d.flush()?;
            }
        }
    }
    pb.finish_and_clear();
    Ok(0)
}

/// Copies `size` bytes: one thread reads chunks (skipping what the input knows is
/// zero), `writers` threads write their non-zero parts, overlapping input and output.
#[allow(clippy::too_many_arguments)]
fn pipeline(
    input: &dyn Disk,
    out: &Out,
    size: u64,
    chunk: u64,
    gran: u64,
    compress: bool,
    writers: usize,
    pb: &ProgressBar,
) -> anyhow::Result<()> {
    type Chunk = (u64, Vec<u8>);
    let (tx, rx) = mpsc::sync_channel::<Chunk>(2 * writers);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    let rx = Mutex::new(rx);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let failed_r = &failed;
        let reader = s.spawn(move || -> anyhow::Result<()> {
            let mut pos = 0u64;
            while pos < size && !failed_r.load(Ordering::Relaxed) {
                let n = chunk.min(size - pos);
                let (st, run) = input.block_status(pos, n)?;
                if st == BlockStatus::Zero && run == n {
                    pos += n;
                    pb.inc(n);
                    continue;
                }
                let mut b = back_rx.try_recv().unwrap_or_default();
                b.resize(n as usize, 0);
                input.read_at(&mut b, pos)?;
                if tx.send((pos, b)).is_err() {
                    break; // a writer failed; its error is reported below
                }
                pos += n;
            }
            Ok(())
        });
        let mut handles = Vec::new();
        for _ in 0..writers {
            let (rx, back_tx) = (&rx, back_tx.clone());
            let failed = &failed;
            handles.push(s.spawn(move || -> anyhow::Result<()> {
                let mut result = Ok(());
                // On error keep draining (discarding) so the reader never blocks.
                while let Ok((pos, b)) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                    if result.is_ok() {
                        result = copy_chunk(out, &b, pos, gran, compress);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        pb.inc(b.len() as u64);
                    }
                    let _ = back_tx.send(b);
                }
                result
            }));
        }
        drop(back_tx);
        let r = reader
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("reader thread panicked")));
        let mut result = Ok(());
        for h in handles {
            let w = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("writer thread panicked")));
            result = result.and(w);
        }
        result.and(r)
    })
}

/// Writes the non-zero granules of `b` (guest offset `pos`), merging neighbours.
fn copy_chunk(out: &Out, b: &[u8], pos: u64, gran: u64, compress: bool) -> anyhow::Result<()> {
    let Some(disk) = out.disk() else {
        return copy_stream(out, b, pos, gran);
    };
    let mut run_start: Option<usize> = None;
    let g = gran as usize;
    let mut i = 0usize;
    while i < b.len() {
        let end = (i + g).min(b.len());
        let zero = is_zero(&b[i..end]);
        if compress {
            if let (false, Out::Qcow2(d)) = (zero, out) {
                d.write_compressed(pos + i as u64, &b[i..end])?;
            }
        } else if zero {
            if let Some(s) = run_start.take() {
                disk.write_at(&b[s..i], pos + s as u64)?;
            }
        } else if run_start.is_none() {
            run_start = Some(i);
        }
        i = end;
    }
    if let Some(s) = run_start {
        disk.write_at(&b[s..], pos + s as u64)?;
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
