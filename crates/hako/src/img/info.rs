//! `hako img info`.

use super::{human_size, parse_format, Output};
use block::info::{inspect_chain_with, ImageInfo};
use block::{BackingPolicy, ImageFormat};
use serde_json::{json, Value};
use std::path::PathBuf;

/// `info [-f FMT] [--output human|json] [--backing-chain] FILE`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Image format (probed if not given).
    #[arg(short = 'f', value_parser = parse_format)]
    format: Option<ImageFormat>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
    /// Show every image of the backing chain.
    #[arg(long)]
    backing_chain: bool,
    /// Ignored (qemu-img's "force share"; hako never locks images for info).
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
    /// The image.
    file: PathBuf,
}

fn to_json(i: &ImageInfo) -> Value {
    let mut v = json!({
        "filename": i.filename,
        "format": i.format.to_string(),
        "virtual-size": i.virtual_size,
        "actual-size": i.actual_size,
        "dirty-flag": i.qcow2.as_ref().is_some_and(|q| q.dirty) || i.pending_log_entries > 0,
    });
    let m = v.as_object_mut().expect("object");
    if let Some(cs) = i.cluster_size {
        m.insert("cluster-size".into(), json!(cs));
    }
    if let Some(b) = &i.backing_filename {
        m.insert("backing-filename".into(), json!(b));
        m.insert(
            "full-backing-filename".into(),
            json!(i.full_backing_filename),
        );
    }
    if let Some(f) = &i.backing_format {
        m.insert("backing-filename-format".into(), json!(f));
    }
    if let Some(sub) = i.subformat {
        m.insert(
            "format-specific".into(),
            // qemu-img's key for VMDK; the others have no format-specific data there.
            if i.format == ImageFormat::Vmdk {
                json!({"type": "vmdk", "data": {"create-type": sub}})
            } else if i.pending_log_entries > 0 {
                json!({"type": i.format.to_string(), "data": {
                    "subformat": sub,
                    "pending-log-entries": i.pending_log_entries,
                }})
            } else {
                json!({"type": i.format.to_string(), "data": {"subformat": sub}})
            },
        );
    }
    if let Some(q) = &i.qcow2 {
        m.insert(
            "format-specific".into(),
            json!({"type": "qcow2", "data": {
                "compat": q.compat,
                "compression-type": q.compression_type,
                "lazy-refcounts": q.lazy_refcounts,
                "refcount-bits": q.refcount_bits,
                "corrupt": q.corrupt,
                "extended-l2": false,
            }}),
        );
    }
    v
}

fn print_human(i: &ImageInfo) {
    println!("image: {}", i.filename);
    println!("file format: {}", i.format);
    println!(
        "virtual size: {} ({} bytes)",
        human_size(i.virtual_size),
        i.virtual_size
    );
    println!("disk size: {}", human_size(i.actual_size));
    if let Some(cs) = i.cluster_size {
        println!("cluster_size: {cs}");
    }
    if let Some(b) = &i.backing_filename {
        match &i.full_backing_filename {
            Some(full) if full != b => println!("backing file: {b} (actual path: {full})"),
            _ => println!("backing file: {b}"),
        }
    }
    if let Some(f) = &i.backing_format {
        println!("backing file format: {f}");
    }
    if let Some(sub) = i.subformat {
        println!("Format specific information:");
        if i.format == ImageFormat::Vmdk {
            println!("    create type: {sub}");
        } else {
            println!("    subformat: {sub}");
        }
        if i.pending_log_entries > 0 {
            println!(
                "    log: {} entries not yet applied (read replayed in memory; \
                 `hako img check -r all` writes them into the file)",
                i.pending_log_entries
            );
        }
    }
    if let Some(q) = &i.qcow2 {
        println!("Format specific information:");
        println!("    compat: {}", q.compat);
        println!("    compression type: {}", q.compression_type);
        println!("    lazy refcounts: {}", q.lazy_refcounts);
        println!("    refcount bits: {}", q.refcount_bits);
        println!("    corrupt: {}", q.corrupt);
        if q.snapshots > 0 {
            println!("    internal snapshots: {}", q.snapshots);
        }
    }
}

pub fn run(a: InfoArgs) -> anyhow::Result<i32> {
    let _ = a.force_share;
    let policy = if a.backing_chain {
        BackingPolicy::QemuImg
    } else {
        BackingPolicy::Ignore
    };
    let (mut chain, note) = inspect_chain_with(&a.file, a.format, policy)?;
    if !a.backing_chain {
        chain.truncate(1);
    }
    match a.output {
        Output::Json => {
            let v = if a.backing_chain {
                Value::Array(chain.iter().map(to_json).collect())
            } else {
                to_json(&chain[0])
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Human => {
            for (k, i) in chain.iter().enumerate() {
                if k > 0 {
                    println!();
                }
                print_human(i);
            }
        }
    }
    if a.backing_chain {
        if let Some(n) = note {
            eprintln!("hako: {n}");
        }
    }
    Ok(0)
}
