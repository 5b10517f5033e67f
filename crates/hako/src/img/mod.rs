//! `hako img`: create, inspect, check, compare, map, convert and resize disk images
//! and import OVF appliances,
//! with qemu-img's argument conventions (`-f`, `-O`, `-b`/`-F`, `-o key=value,...`,
//! `--output json`, sizes like `10G`), exit statuses (check: 0 clean, 2 corrupt, 3
//! leaks, 1 could not check, 63 format without checks; compare: 0 identical, 1
//! different, 2 could not open, 3/4 allocation/read errors) and qemu-img's probing rule
//! ([`block::BackingPolicy::QemuImg`]): the images are named by the user, so a probed
//! image opens its backing chain.

mod check;
mod compare;
mod convert;
mod create;
mod import;
mod info;
mod map;
mod resize;

use anyhow::{bail, Context};
use block::ImageFormat;

/// Arguments of `hako img`.
#[derive(clap::Args, Debug)]
pub struct ImgArgs {
    #[command(subcommand)]
    cmd: ImgCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ImgCommand {
    /// Create an image: `create -f raw|qcow2|vpc|vhdx [-b BACKING -F FMT] [-o OPTS] FILE [SIZE]`.
    Create(create::CreateArgs),
    /// Show format, sizes, cluster size and backing chain.
    Info(info::InfoArgs),
    /// Check an image for leaks and corruption (exit 0 clean, 2 corrupt, 3 leaks).
    Check(check::CheckArgs),
    /// Compare two images' contents (exit 0 identical, 1 different, 2 open failed).
    Compare(compare::CompareArgs),
    /// Show where each range of the disk is stored.
    Map(map::MapArgs),
    /// Copy an image into a new one, possibly of another format; sparse output.
    Convert(convert::ConvertArgs),
    /// Change the virtual size: `resize FILE [+|-]SIZE`.
    Resize(resize::ResizeArgs),
    /// Import an OVF appliance (.ova or .ovf): verify its manifest, convert its disks
    /// to qcow2 and write a VM definition (vm.json) for `hako run --config`.
    Import(import::ImportArgs),
}

/// Output format of `info` and `check`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Output {
    #[default]
    Human,
    Json,
}

/// Runs `hako img`; returns the exit status.
pub fn run(args: ImgArgs) -> anyhow::Result<i32> {
    match args.cmd {
        ImgCommand::Create(a) => create::run(a),
        ImgCommand::Info(a) => info::run(a),
        ImgCommand::Check(a) => check::run(a),
        ImgCommand::Compare(a) => compare::run(a),
        ImgCommand::Map(a) => map::run(a),
        ImgCommand::Convert(a) => convert::run(a),
        ImgCommand::Resize(a) => resize::run(a),
        ImgCommand::Import(a) => import::run(a),
    }
}

fn parse_format(s: &str) -> Result<ImageFormat, String> {
    s.parse()
}

/// Parses a size the way qemu-img does: bytes, or a number (may be fractional) with a
/// binary suffix k/K, M, G, T, P, E (`b`/`B` for bytes).
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        bail!("invalid size '{s}'");
    }
    let mult: u64 = match suffix {
        "" | "b" | "B" => 1,
        "k" | "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" => 1 << 50,
        "E" => 1 << 60,
        _ => bail!("invalid size suffix in '{s}' (use k, M, G, T, P or E)"),
    };
    let bytes = if num.contains('.') {
        let v: f64 = num.parse().with_context(|| format!("invalid size '{s}'"))?;
        let b = v * mult as f64;
        if !b.is_finite() || b >= u64::MAX as f64 {
            bail!("size '{s}' is too large");
        }
        b as u64
    } else {
        let v: u64 = num.parse().with_context(|| format!("invalid size '{s}'"))?;
        v.checked_mul(mult)
            .with_context(|| format!("size '{s}' is too large"))?
    };
    Ok(bytes)
}

/// `-o key=value,key=value` creation options for qcow2.
#[derive(Debug, Default)]
struct FormatOptions {
    cluster_size: Option<u64>,
    compat: Option<u32>,
    compression_type: Option<block::qcow2::Compression>,
    refcount_bits: Option<u32>,
    backing_file: Option<String>,
    backing_fmt: Option<String>,
    /// `subformat` (convert -O vmdk: `streamOptimized`; -O vpc, vhdx: `dynamic`,
    /// `fixed`).
    subformat: Option<String>,
    /// `force_size` (vpc): keep the size exactly rather than rounding it up to a CHS
    /// geometry.
    force_size: Option<bool>,
    /// `block_size` (vhdx).
    block_size: Option<u64>,
}

/// `on`/`off` (and qemu's other spellings of a boolean option).
fn parse_bool(k: &str, v: &str) -> anyhow::Result<bool> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => bail!("option '{k}' takes on or off, not '{v}'"),
    }
}

fn parse_options(list: &[String]) -> anyhow::Result<FormatOptions> {
    let mut o = FormatOptions::default();
    for item in list
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("option '{item}' is not key=value"))?;
        match k {
            "cluster_size" => o.cluster_size = Some(parse_size(v)?),
            "compat" => {
                o.compat = Some(match v {
                    "1.1" | "v3" => 3,
                    "0.10" | "v2" => 2,
                    _ => bail!("invalid compat '{v}' (use 1.1 or 0.10)"),
                })
            }
            "compression_type" => {
                o.compression_type = Some(match v {
                    "zlib" => block::qcow2::Compression::Zlib,
                    "zstd" => block::qcow2::Compression::Zstd,
                    _ => bail!("invalid compression_type '{v}' (use zlib or zstd)"),
                })
            }
            "refcount_bits" => o.refcount_bits = Some(v.parse().context("refcount_bits")?),
            "backing_file" => o.backing_file = Some(v.to_string()),
            "backing_fmt" => o.backing_fmt = Some(v.to_string()),
            "subformat" => o.subformat = Some(v.to_string()),
            "force_size" => o.force_size = Some(parse_bool(k, v)?),
            "block_size" => o.block_size = Some(parse_size(v)?),
            "preallocation" if v == "off" => {}
            "lazy_refcounts" if v == "off" => {}
            _ => bail!("unsupported option '{k}={v}'"),
        }
    }
    Ok(o)
}

impl FormatOptions {
    /// Fails on options that `format` does not take.
    fn check_for(&self, format: ImageFormat) -> anyhow::Result<()> {
        if self.force_size.is_some() && format != ImageFormat::Vpc {
            bail!("option 'force_size' is for vpc images, not {format}");
        }
        if self.block_size.is_some() && format != ImageFormat::Vhdx {
            bail!("option 'block_size' is for vhdx images, not {format}");
        }
        Ok(())
    }

    /// qcow2 creation options for an image of `size` bytes.
    fn qcow2(&self, size: u64, path: &str) -> anyhow::Result<block::qcow2::CreateOptions> {
        let mut c = block::qcow2::CreateOptions {
            size,
            path: path.to_string(),
            ..Default::default()
        };
        if let Some(cs) = self.cluster_size {
            if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
                bail!("cluster size must be a power of two between 512 and 2M, not {cs}");
            }
            c.cluster_bits = cs.trailing_zeros();
        }
        if let Some(v) = self.compat {
            c.version = v;
        }
        if let Some(t) = self.compression_type {
            c.compression = t;
        }
        if let Some(b) = self.refcount_bits {
            if !b.is_power_of_two() || b > 64 {
                bail!("refcount_bits must be a power of two up to 64, not {b}");
            }
            c.refcount_order = b.trailing_zeros();
        }
        Ok(c)
    }
}

/// Human-readable binary size, like qemu-img ("20 MiB").
fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        let num = format!("{v:.3}");
        let num = num.trim_end_matches('0').trim_end_matches('.');
        format!("{num} {}", UNITS[u])
    }
}

/// A progress bar with `template`, drawn on stderr when asked for (`-p`) or when
/// stderr is a terminal, never with `-q`.
pub(crate) fn progress_bar(
    quiet: bool,
    progress: bool,
    len: u64,
    template: &str,
) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let show = !quiet && (progress || std::io::stderr().is_terminal());
    let target = if show {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let pb = indicatif::ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_qemu_img() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert!(parse_size("10X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("20E").is_err());
        assert_eq!(human_size(20 << 20), "20 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(100), "100 B");
    }

    #[test]
    fn options_parse() {
        let o = parse_options(&[
            "cluster_size=4k,compat=0.10".into(),
            "refcount_bits=8".into(),
        ])
        .unwrap();
        let c = o.qcow2(1 << 20, "x").unwrap();
        assert_eq!((c.cluster_bits, c.version, c.refcount_order), (12, 2, 3));
        assert!(parse_options(&["bogus=1".into()]).is_err());
        assert!(parse_options(&["cluster_size=3000".into()])
            .unwrap()
            .qcow2(1, "x")
            .is_err());
    }
}
