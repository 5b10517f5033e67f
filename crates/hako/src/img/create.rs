//! `hako img create`.

use super::{human_size, parse_format, parse_options, parse_size};
use anyhow::{bail, Context};
use block::storage::FileStorage;
use block::{ImageFormat, ImageWriter, OpenOptions, Qcow2Disk};
use std::path::{Path, PathBuf};

/// `create -f raw|qcow2|vpc|vhdx [-b BACKING -F FMT] [-o OPTS] FILE [SIZE]`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Image format.
    #[arg(short = 'f', value_parser = parse_format, default_value = "raw")]
    format: ImageFormat,
    /// Backing file (stored as given; relative names are relative to FILE's directory).
    #[arg(short = 'b')]
    backing: Option<String>,
    /// Backing file format.
    #[arg(short = 'F', value_parser = parse_format)]
    backing_format: Option<ImageFormat>,
    /// Format options: cluster_size, compat (1.1|0.10), compression_type (zlib|zstd),
    /// refcount_bits, backing_file, backing_fmt (qcow2); subformat (dynamic|fixed),
    /// force_size (vpc), block_size (vhdx).
    #[arg(short = 'o')]
    options: Vec<String>,
    /// Quiet.
    #[arg(short = 'q')]
    quiet: bool,
    /// The image to create.
    file: PathBuf,
    /// Virtual size (e.g. 10G); defaults to the backing file's size.
    size: Option<String>,
}

pub fn run(a: CreateArgs) -> anyhow::Result<i32> {
    let opts = parse_options(&a.options)?;
    let backing = a.backing.clone().or(opts.backing_file.clone());
    let mut backing_fmt = a
        .backing_format
        .map(|f| f.to_string())
        .or(opts.backing_fmt.clone());
    let path_str = a.file.display().to_string();
    if a.format != ImageFormat::Qcow2 && backing.is_some() {
        bail!(
            "{} images cannot have a backing file (use -f qcow2)",
            a.format
        );
    }
    let mut size = a.size.as_deref().map(parse_size).transpose()?;
    if let Some(b) = &backing {
        let bpath = block::open::resolve_backing(&a.file, b);
        let given = backing_fmt
            .as_deref()
            .map(|f| f.parse::<ImageFormat>())
            .transpose();
        let given = given.map_err(anyhow::Error::msg)?;
        // The user names the backing file here, so opening it (even probed) is theirs
        // to vouch for; what gets recorded is an explicit backing format.
        let fmt = match given {
            Some(f) => f,
            None => {
                let f = block::probe(&bpath)
                    .with_context(|| format!("backing file '{}'", bpath.display()))?;
                eprintln!("hako: backing format not given (-F); detected {f} and recorded it");
                f
            }
        };
        backing_fmt = Some(fmt.to_string());
        if size.is_none() {
            let d = block::open(
                &bpath,
                &OpenOptions {
                    format: Some(fmt),
                    read_only: true,
                    backing: block::BackingPolicy::Ignore,
                    ..Default::default()
                },
            )
            .with_context(|| format!("opening backing file '{}'", bpath.display()))?;
            size = Some(d.size());
        }
    }
    let Some(size) = size else {
        bail!("image size required (e.g. 10G)");
    };
    create_image(&a.file, a.format, size, backing, backing_fmt, &opts)?;
    if !a.quiet {
        println!(
            "Formatting '{path_str}', fmt={} size={size} ({})",
            a.format,
            human_size(size)
        );
    }
    Ok(0)
}

/// Creates (or truncates) `path` as an empty image of `size` bytes.
pub(super) fn create_image(
    path: &Path,
    format: ImageFormat,
    size: u64,
    backing: Option<String>,
    backing_fmt: Option<String>,
    opts: &super::FormatOptions,
) -> anyhow::Result<()> {
    opts.check_for(format)?;
    let written = matches!(format, ImageFormat::Vpc | ImageFormat::Vhdx);
    match opts.subformat.as_deref() {
        None => {}
        Some("dynamic" | "fixed") if written => {}
        Some(sub) => bail!("unsupported option 'subformat={sub}' for {format} images"),
    }
    if !format.writable() && !written {
        bail!(
            "{format} images can be read (info, check, convert from them) but not created; \
             use raw, qcow2, vpc or vhdx"
        );
    }
    if backing.is_some() && format != ImageFormat::Qcow2 {
        bail!("{format} images cannot have a backing file (use -f qcow2)");
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    match format {
        ImageFormat::Raw => {
            // Whole 512-byte sectors, as qemu-img.
            f.set_len(size.div_ceil(512) * 512)
                .with_context(|| format!("sizing {}", path.display()))?;
        }
        ImageFormat::Qcow2 => {
            let mut c = opts.qcow2(size, &path.display().to_string())?;
            c.backing_file = backing;
            c.backing_format = backing_fmt;
            Qcow2Disk::create(&block::storage::FileStorage::new(f), &c)?;
        }
        _ => image_writer(format, f, &path.display().to_string(), size, opts)?.finish()?,
    }
    Ok(())
}

/// A VHD or VHDX writer on the empty file `f` (shown as `path`): what `create` and
/// `convert -O vpc|vhdx` write.
pub(super) fn image_writer(
    format: ImageFormat,
    f: std::fs::File,
    path: &str,
    size: u64,
    opts: &super::FormatOptions,
) -> anyhow::Result<Box<dyn ImageWriter>> {
    let storage = Box::new(FileStorage::new(f));
    let fixed = opts.subformat.as_deref() == Some("fixed");
    Ok(match format {
        ImageFormat::Vpc => Box::new(block::VpcWriter::create(
            storage,
            path,
            size,
            block::vpc::VpcWriterOptions {
                fixed,
                force_size: opts.force_size.unwrap_or(false),
            },
        )?),
        ImageFormat::Vhdx => Box::new(block::VhdxWriter::create(
            storage,
            path,
            size,
            block::vhdx::VhdxWriterOptions {
                fixed,
                block_size: opts.block_size,
            },
        )?),
        f => bail!("{f} output is not supported (convert to raw, qcow2, vpc, vhdx or vmdk)"),
    })
}
