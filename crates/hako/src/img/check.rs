//! `hako img check`.

use super::{parse_format, Output};
use block::qcow2::CheckReport;
use block::storage::FileStorage;
use block::{ImageFormat, Qcow2Disk};
use serde_json::json;
use std::path::PathBuf;

/// What `-r` repairs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Repair {
    /// Lower refcounts of leaked clusters.
    Leaks,
    /// Everything repairable (currently: leaks).
    All,
}

/// `check [-f FMT] [--output human|json] [-r leaks|all] [-q] FILE`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Image format (probed if not given).
    #[arg(short = 'f', value_parser = parse_format)]
    format: Option<ImageFormat>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
    /// Repair what was found.
    #[arg(short = 'r', value_enum)]
    repair: Option<Repair>,
    /// Quiet.
    #[arg(short = 'q')]
    quiet: bool,
    /// The image.
    file: PathBuf,
}

/// Exit statuses, as qemu-img.
const CLEAN: i32 = 0;
const CHECK_FAILED: i32 = 1;
const CORRUPT: i32 = 2;
const LEAKS: i32 = 3;
const NOT_SUPPORTED: i32 = 63;

fn status(r: &CheckReport) -> i32 {
    if r.corruptions > 0 {
        CORRUPT
    } else if !r.leaks.is_empty() {
        LEAKS
    } else {
        CLEAN
    }
}

fn print_human(r: &CheckReport) {
    for m in &r.messages {
        println!("ERROR {m}");
    }
    if r.corruptions as usize > r.messages.len() {
        println!(
            "ERROR ... and {} more",
            r.corruptions as usize - r.messages.len()
        );
    }
    for (c, stored, real) in r.leaks.iter().take(100) {
        println!("Leaked cluster {c} refcount={stored} reference={real}");
    }
    if r.corruptions > 0 {
        println!(
            "\n{} errors were found on the image.\nData may be corrupted, or further writes \
             to the image may corrupt it.",
            r.corruptions
        );
    }
    if !r.leaks.is_empty() {
        println!(
            "\n{} leaked clusters were found on the image.\nThis means waste of disk space, \
             but no harm to data.",
            r.leaks.len()
        );
    }
    if r.corruptions == 0 && r.leaks.is_empty() {
        println!("No errors were found on the image.");
    }
    if r.total_clusters > 0 {
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                n as f64 * 100.0 / of as f64
            }
        };
        println!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
            r.data_clusters,
            r.total_clusters,
            pct(r.data_clusters, r.total_clusters),
            pct(r.fragmented_clusters, r.data_clusters),
            pct(r.compressed_clusters, r.data_clusters)
        );
    }
    println!("Image end offset: {}", r.image_end_offset);
}

fn print_json(r: &CheckReport, file: &str) -> anyhow::Result<()> {
    let v = json!({
        "filename": file,
        "format": "qcow2",
        "check-errors": 0,
        "corruptions": r.corruptions,
        "leaks": r.leaks.len(),
        "image-end-offset": r.image_end_offset,
        "total-clusters": r.total_clusters,
        "allocated-clusters": r.data_clusters,
        "fragmented-clusters": r.fragmented_clusters,
        "compressed-clusters": r.compressed_clusters,
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub fn run(a: CheckArgs) -> anyhow::Result<i32> {
    let path = a.file.display().to_string();
    let format = match a.format {
        Some(f) => f,
        None => block::probe(&a.file)?,
    };
    match format {
        ImageFormat::Qcow2 => {}
        ImageFormat::Vdi | ImageFormat::Vpc | ImageFormat::Vhdx | ImageFormat::Vmdk => {
            return check_structure(&a, format)
        }
        ImageFormat::Raw => {
            eprintln!("hako: this image format ({format}) does not support checks");
            return Ok(NOT_SUPPORTED);
        }
    }
    let writable = a.repair.is_some();
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(&a.file)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hako: could not open '{path}': {e}");
            return Ok(CHECK_FAILED);
        }
    };
    // Checking reads metadata only: the backing file is never opened.
    let d = match Qcow2Disk::open(Box::new(FileStorage::new(f)), &path, !writable) {
        Ok(d) => d.without_backing(),
        Err(e) => {
            eprintln!("hako: {e}");
            return Ok(CHECK_FAILED);
        }
    };
    let mut r = match d.check() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hako: check of '{path}' failed: {e}");
            return Ok(CHECK_FAILED);
        }
    };
    if a.repair.is_some() && !r.leaks.is_empty() {
        let fixed = d.repair_leaks(&r)?;
        if !a.quiet && a.output == Output::Human {
            println!(
                "The following inconsistencies were found and repaired:\n\n    {fixed} leaked \
                 clusters\n    0 corruptions\n\nDouble checking the fixed image now..."
            );
        }
        r = d.check()?;
    }
    if !a.quiet {
        match a.output {
            Output::Human => print_human(&r),
            Output::Json => print_json(&r, &path)?,
        }
    }
    Ok(status(&r))
}

/// `check` of a read-only format: structural validation of its tables.
fn check_structure(a: &CheckArgs, format: ImageFormat) -> anyhow::Result<i32> {
    let path = a.file.display().to_string();
    if a.repair.is_some() && format == ImageFormat::Vhdx {
        // As qemu-img: opening a VHDX for repair replays its log into the file.
        match replay_vhdx_log(a, &path) {
            Ok(()) => {}
            Err(code) => return Ok(code),
        }
    } else if a.repair.is_some() {
        eprintln!("hako: {format} images are read-only here; -r cannot repair them");
        return Ok(CHECK_FAILED);
    }
    let f = match std::fs::File::open(&a.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hako: could not open '{path}': {e}");
            return Ok(CHECK_FAILED);
        }
    };
    let storage = Box::new(FileStorage::new(f));
    let opened = match format {
        ImageFormat::Vdi => block::VdiDisk::open(storage, &path, true).map(|d| (d.check(), 0)),
        ImageFormat::Vhdx => block::VhdxDisk::open(storage, &path, true)
            .map(|d| (d.check(), d.replayed_log_entries())),
        ImageFormat::Vmdk => {
            block::vmdk::open_vmdk(&a.file, storage, block::vmdk::ExtentPaths::Contained)
                .map(|d| (d.check(), 0))
        }
        _ => block::VpcDisk::open(storage, &path, true).map(|d| (d.check(), 0)),
    };
    let (r, pending) = match opened {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hako: {e}");
            return Ok(CHECK_FAILED);
        }
    };
    if pending > 0 && !a.quiet {
        eprintln!(
            "hako: {path}: the VHDX log holds {pending} entries not yet applied; they were \
             applied in memory for this check (`hako img check -r all` writes them into the \
             file)"
        );
    }
    if !a.quiet {
        match a.output {
            Output::Human => {
                for m in &r.errors {
                    println!("ERROR {m}");
                }
                if r.corruptions > r.errors.len() as u64 {
                    println!(
                        "ERROR ... and {} more",
                        r.corruptions - r.errors.len() as u64
                    );
                }
                if r.corruptions > 0 {
                    println!(
                        "\n{} errors were found on the image.\nData may be corrupted, or \
                         further writes to the image may corrupt it.",
                        r.corruptions
                    );
                } else {
                    println!("No errors were found on the image.");
                }
                if r.total_blocks > 0 {
                    println!(
                        "{}/{} = {:.2}% allocated blocks",
                        r.allocated_blocks,
                        r.total_blocks,
                        r.allocated_blocks as f64 * 100.0 / r.total_blocks as f64
                    );
                }
                println!("Image end offset: {}", r.image_end_offset);
            }
            Output::Json => {
                let v = json!({
                    "filename": path,
                    "format": format.to_string(),
                    "check-errors": 0,
                    "corruptions": r.corruptions,
                    "image-end-offset": r.image_end_offset,
                    "total-clusters": r.total_blocks,
                    "allocated-clusters": r.allocated_blocks,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
    }
    Ok(if r.corruptions > 0 { CORRUPT } else { CLEAN })
}

/// `check -r` of a VHDX: replays a pending log into the file (reporting it as
/// repaired), or fails with the exit status to return.
fn replay_vhdx_log(a: &CheckArgs, path: &str) -> Result<(), i32> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a.file)
        .map_err(|e| {
            eprintln!("hako: could not open '{path}' for writing: {e}");
            CHECK_FAILED
        })?;
    let n = block::vhdx::replay_in_place(&FileStorage::new(f), path).map_err(|e| {
        eprintln!("hako: {e}");
        CHECK_FAILED
    })?;
    if n > 0 && !a.quiet && a.output == Output::Human {
        println!(
            "The following inconsistencies were found and repaired:\n\n    {n} VHDX log \
             entries replayed\n    0 corruptions\n\nDouble checking the fixed image now..."
        );
    }
    Ok(())
}
