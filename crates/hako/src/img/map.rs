//! `hako img map`: where each range of the guest-visible disk comes from, as
//! `qemu-img map` prints it.

use super::{parse_format, Output};
use block::{BackingPolicy, Extent, ImageFormat, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

/// `map [-f FMT] [--output human|json] FILE`.
#[derive(clap::Args, Debug)]
pub struct MapArgs {
    /// Image format (probed if not given).
    #[arg(short = 'f', value_parser = parse_format)]
    format: Option<ImageFormat>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
    /// The image.
    file: PathBuf,
}

/// One merged extent and where it starts.
struct Run {
    start: u64,
    e: Extent,
}

fn hex(n: u64) -> String {
    if n == 0 {
        "0".into()
    } else {
        format!("{n:#x}")
    }
}

/// One extent as qemu-img (10.x) prints it. Data the image holds but at no plain
/// file offset is stored compressed (qcow2 compressed clusters, streamOptimized
/// VMDK grains): that is what qemu-img's `compressed` says.
fn json_line(r: &Run) -> String {
    let e = &r.e;
    let compressed = e.data && !e.zero && e.offset.is_none();
    let mut s = format!(
        "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {compressed}",
        r.start, e.len, e.depth, e.present, e.zero, e.data
    );
    if let Some(o) = e.offset {
        s.push_str(&format!(", \"offset\": {o}"));
    }
    s.push('}');
    s
}

pub fn run(a: MapArgs) -> anyhow::Result<i32> {
    let d = block::open(
        &a.file,
        &OpenOptions {
            format: a.format,
            read_only: true,
            backing: BackingPolicy::QemuImg,
            ..Default::default()
        },
    )?;
    let size = d.size();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut first = true;
    let mut emit = |r: &Run, out: &mut dyn Write| -> std::io::Result<()> {
        match a.output {
            Output::Json => {
                let sep = if first { "[" } else { ",\n" };
                write!(out, "{sep}{}", json_line(r))?;
            }
            Output::Human => {
                if first {
                    writeln!(
                        out,
                        "{:<16}{:<16}{:<16}File",
                        "Offset", "Length", "Mapped to"
                    )?;
                }
                if let (true, false, Some(o)) = (r.e.data, r.e.zero, r.e.offset) {
                    writeln!(
                        out,
                        "{:<16}{:<16}{:<16}{}",
                        hex(r.start),
                        hex(r.e.len),
                        hex(o),
                        r.e.file
                    )?;
                }
            }
        }
        first = false;
        Ok(())
    };
    let mut cur: Option<Run> = None;
    let mut pos = 0;
    while pos < size {
        let e = d.map_extent(pos, size - pos)?;
        let n = e.len.max(1);
        match &mut cur {
            Some(c) if c.e.continues(&e) => c.e.len += e.len,
            _ => {
                if let Some(c) = cur.take() {
                    emit(&c, &mut out)?;
                }
                cur = Some(Run { start: pos, e });
            }
        }
        pos += n;
    }
    if let Some(c) = cur.take() {
        emit(&c, &mut out)?;
    }
    match a.output {
        Output::Json if first => writeln!(out, "[]")?,
        Output::Json => writeln!(out, "]")?,
        Output::Human if first => writeln!(
            out,
            "{:<16}{:<16}{:<16}File",
            "Offset", "Length", "Mapped to"
        )?,
        Output::Human => {}
    }
    out.flush()?;
    Ok(0)
}
