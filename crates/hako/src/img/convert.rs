//! `hako img convert`: copies an image's guest view into a new image, skipping zeroes
//! (sparse output), optionally compressing qcow2 clusters, with a progress bar.

use super::create::create_image;
use super::{parse_format, parse_options, parse_size};
use anyhow::{bail, Context};
use block::storage::FileStorage;
use block::{BlockStatus, Disk, ImageFormat, OpenOptions, Qcow2Disk, RawDisk};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

/// `convert [-f FMT] [-O FMT] [-c] [-o OPTS] [-p] [-q] [-S SIZE] IN OUT`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Input format (probed if not given; a probed image's backing file is not opened).
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
    /// Zero runs at least this long are left unallocated in raw output (default 4k).
    #[arg(short = 'S', default_value = "4k")]
    sparse_size: String,
    /// Input image.
    input: PathBuf,
    /// Output image (created or truncated).
    output: PathBuf,
}

enum Out {
    Raw(RawDisk),
    Qcow2(Box<Qcow2Disk>),
}

impl Out {
    fn disk(&self) -> &dyn Disk {
        match self {
            Out::Raw(d) => d,
            Out::Qcow2(d) => d.as_ref(),
        }
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
    if a.compress && a.output_format != ImageFormat::Qcow2 {
        bail!("compression (-c) needs an output format that supports it (-O qcow2)");
    }
    let sparse = parse_size(&a.sparse_size)?;
    let input = block::open(
        &a.input,
        &OpenOptions {
            format: a.format,
            read_only: true,
            ..Default::default()
        },
    )?;
    let size = input.size();
    if std::fs::canonicalize(&a.input).ok() == std::fs::canonicalize(&a.output).ok() {
        bail!("input and output are the same file");
    }
    create_image(&a.output, a.output_format, size, None, None, &opts)?;
    let shown = a.output.display().to_string();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a.output)
        .with_context(|| format!("opening {shown}"))?;
    let out = match a.output_format {
        ImageFormat::Raw => Out::Raw(RawDisk::new(Box::new(FileStorage::new(f)), &shown, false)?),
        ImageFormat::Qcow2 => Out::Qcow2(Box::new(Qcow2Disk::open(
            Box::new(FileStorage::new(f)),
            &shown,
            false,
        )?)),
    };
    // Granule: what one write allocates in the output.
    let gran = match &out {
        Out::Raw(_) => sparse.clamp(512, 1 << 20),
        Out::Qcow2(d) => d.header().cluster_size(),
    };
    let chunk = (2u64 << 20).max(gran) / gran * gran;
    let pb = progress_bar(&a, size);
    let mut buf = vec![0u8; chunk as usize];
    let mut pos = 0u64;
    while pos < size {
        let n = chunk.min(size - pos);
        let (st, run) = input.block_status(pos, n)?;
        if st == BlockStatus::Zero && run == n {
            pos += n;
            pb.inc(n);
            continue;
        }
        let b = &mut buf[..n as usize];
        input.read_at(b, pos)?;
        copy_chunk(&out, b, pos, gran, a.compress)?;
        pos += n;
        pb.inc(n);
    }
    out.disk().flush()?;
    pb.finish_and_clear();
    Ok(0)
}

/// Writes the non-zero granules of `b` (guest offset `pos`), merging neighbours.
fn copy_chunk(out: &Out, b: &[u8], pos: u64, gran: u64, compress: bool) -> anyhow::Result<()> {
    let mut run_start: Option<usize> = None;
    let g = gran as usize;
    let mut i = 0usize;
    while i < b.len() {
        let end = (i + g).min(b.len());
        let zero = b[i..end].iter().all(|&x| x == 0);
        if compress {
            if let (false, Out::Qcow2(d)) = (zero, out) {
                d.write_compressed(pos + i as u64, &b[i..end])?;
            }
        } else if zero {
            if let Some(s) = run_start.take() {
                out.disk().write_at(&b[s..i], pos + s as u64)?;
            }
        } else if run_start.is_none() {
            run_start = Some(i);
        }
        i = end;
    }
    if let Some(s) = run_start {
        out.disk().write_at(&b[s..], pos + s as u64)?;
    }
    Ok(())
}
