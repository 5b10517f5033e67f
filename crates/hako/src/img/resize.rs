//! `hako img resize`.

use super::{human_size, parse_format, parse_size};
use anyhow::{bail, Context};
use block::{BackingPolicy, ImageFormat, OpenOptions};
use std::path::PathBuf;

/// `resize [-f FMT] [--shrink] [-q] FILE [+|-]SIZE`.
#[derive(clap::Args, Debug)]
pub struct ResizeArgs {
    /// Image format (probed if not given).
    #[arg(short = 'f', value_parser = parse_format)]
    format: Option<ImageFormat>,
    /// Allow making the image smaller (data past the new end is lost).
    #[arg(long)]
    shrink: bool,
    /// Quiet.
    #[arg(short = 'q')]
    quiet: bool,
    /// The image.
    file: PathBuf,
    /// New size, or a change with + or -.
    #[arg(allow_hyphen_values = true)]
    size: String,
}

pub fn run(a: ResizeArgs) -> anyhow::Result<i32> {
    // Resizing touches metadata only; backing files are never opened.
    let d = block::open(
        &a.file,
        &OpenOptions {
            format: a.format,
            read_only: false,
            backing: BackingPolicy::Ignore,
            ..Default::default()
        },
    )?;
    let old = d.size();
    let new = if let Some(delta) = a.size.strip_prefix('+') {
        old.checked_add(parse_size(delta)?)
            .context("size overflows")?
    } else if let Some(delta) = a.size.strip_prefix('-') {
        old.checked_sub(parse_size(delta)?)
            .context("the image is smaller than that")?
    } else {
        parse_size(&a.size)?
    };
    if new < old && !a.shrink {
        bail!(
            "use the --shrink option to shrink '{}' from {} to {} (data past the new end is lost)",
            a.file.display(),
            human_size(old),
            human_size(new)
        );
    }
    d.resize(new)?;
    d.flush()?;
    if !a.quiet {
        println!("Image resized.");
    }
    Ok(0)
}
