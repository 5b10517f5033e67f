//! `hako img import`: turns an OVF appliance (an `.ova` archive, or an `.ovf`
//! descriptor with its disk files beside it) into a VM definition: every disk converted
//! to qcow2 (through `convert`'s own code path) and a `vm.json` that `hako run --config`
//! boots.
//!
//! Order of work, so that a bad appliance leaves nothing behind: the descriptor is
//! parsed first (the first member of an OVA), every archive member is checked for a
//! safe name (no absolute paths, no `..`, no links) and bounded size, the disk files are
//! unpacked into a hidden staging folder while they are hashed, the manifest (when there
//! is one) is checked against those hashes, and only then are the disks converted and
//! `vm.json` written. Any error removes what was written.

use super::convert::ConvertArgs;
use super::create::create_image;
use super::{human_size, progress_bar};
use anyhow::{bail, Context};
use block::ovf::{parse_manifest, parse_ovf, Algo, Manifest, Ovf};
use block::ImageFormat;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use vmm::config::{AccelKind, DiskSpec, VmConfig};

/// The largest OVF descriptor read.
const MAX_DESCRIPTOR: u64 = 16 << 20;
/// The largest manifest read.
const MAX_MANIFEST: u64 = 1 << 20;
/// The largest disk file unpacked from an archive.
const MAX_DISK_FILE: u64 = 16 << 40;
/// The most members an archive may hold.
const MAX_MEMBERS: usize = 10_000;

/// `import APPLIANCE.ova|APPLIANCE.ovf [--to DIR] [--kernel PATH] [--initrd PATH]
/// [--cmdline STR] [--accel kvm|emu]`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The appliance: an OVA archive, or an OVF descriptor with its files beside it.
    appliance: PathBuf,
    /// Directory for the qcow2 disks and vm.json (default: one named after the
    /// appliance, next to it). Created if missing; existing files are never replaced.
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    /// Guest kernel for vm.json (only direct kernel boot is supported; without it,
    /// vm.json has an empty kernel to fill in).
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk for vm.json.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line for vm.json.
    #[arg(long, value_name = "STR", default_value = "console=ttyS0")]
    cmdline: String,
    /// Accelerator recorded in vm.json (default: what this host supports best;
    /// `hako run --config --accel` overrides it).
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
    /// Show progress bars even when stderr is not a terminal.
    #[arg(short = 'p')]
    progress: bool,
    /// Quiet: no progress bars.
    #[arg(short = 'q')]
    quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum AccelArg {
    Kvm,
    Emu,
}

/// `convert`'s arguments, parsed as the command line `hako img convert` gets.
#[derive(clap::Parser, Debug)]
#[command(name = "convert")]
struct ConvertCommand {
    #[command(flatten)]
    args: ConvertArgs,
}

// ---------------------------------------------------------------------------------
// Digests (the descriptor and manifest parsers are block::ovf).

/// Running digests of one file.
#[derive(Default)]
struct Hashes {
    sha1: Option<Sha1>,
    sha256: Option<Sha256>,
    sha512: Option<Sha512>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Hashes {
    fn new(algos: &[Algo]) -> Hashes {
        let mut h = Hashes::default();
        for a in algos {
            match a {
                Algo::Sha1 => h.sha1 = Some(Sha1::new()),
                Algo::Sha256 => h.sha256 = Some(Sha256::new()),
                Algo::Sha512 => h.sha512 = Some(Sha512::new()),
            }
        }
        h
    }
    fn update(&mut self, b: &[u8]) {
        if let Some(h) = &mut self.sha1 {
            h.update(b);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(b);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(b);
        }
    }
    fn finish(self) -> HashMap<Algo, String> {
        let mut m = HashMap::new();
        if let Some(h) = self.sha1 {
            m.insert(Algo::Sha1, hex(&h.finalize()));
        }
        if let Some(h) = self.sha256 {
            m.insert(Algo::Sha256, hex(&h.finalize()));
        }
        if let Some(h) = self.sha512 {
            m.insert(Algo::Sha512, hex(&h.finalize()));
        }
        m
    }
}

/// Copies everything written to `inner` into the digests.
struct HashWriter<W> {
    inner: W,
    hashes: Hashes,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hashes.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Which digests to compute for `name`: the manifest's, or all when it is not known yet.
fn algos_for(manifest: Option<&Manifest>, name: &str) -> Vec<Algo> {
    match manifest {
        Some(m) => m.get(name).map(|(a, _)| vec![*a]).unwrap_or_default(),
        None => vec![Algo::Sha1, Algo::Sha256, Algo::Sha512],
    }
}

/// Checks every manifest entry against the digests computed, and that every disk
/// file is listed.
fn verify_manifest(
    manifest: &Manifest,
    what: &str,
    digests: &HashMap<String, HashMap<Algo, String>>,
    disk_files: &[String],
) -> anyhow::Result<()> {
    for (name, (algo, want)) in manifest {
        let Some(got) = digests.get(name) else {
            bail!("manifest {what} lists '{name}', which the appliance does not hold");
        };
        let got = got
            .get(algo)
            .with_context(|| format!("no {} digest computed for '{name}'", algo.name()))?;
        if got != want {
            bail!(
                "'{name}' does not match the manifest {what}: its {} is {got}, the manifest says {want}",
                algo.name()
            );
        }
    }
    for f in disk_files {
        if !manifest.contains_key(f) {
            bail!("manifest {what} does not list disk file '{f}'; refusing an unverified disk");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Names and paths.

/// A member or `ovf:href` name as a plain relative path (`./` dropped); absolute
/// names, `..` and URLs are refused.
fn safe_name(name: &Path, what: &str) -> anyhow::Result<String> {
    let s = name.to_string_lossy();
    if s.contains("://") {
        bail!("{what} '{s}' is a URL; only files inside the appliance are imported");
    }
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .with_context(|| format!("{what} '{s}' is not UTF-8"))?
                    .to_string(),
            ),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                bail!("{what} '{s}' has an absolute path or '..'; refusing it")
            }
        }
    }
    if parts.is_empty() {
        bail!("{what} '{s}' is empty");
    }
    Ok(parts.join("/"))
}

/// Output names `<stem>.qcow2`, unique and made of safe characters.
fn output_names(ovf: &Ovf) -> Vec<String> {
    let mut used = HashSet::new();
    let mut out = Vec::new();
    for (i, d) in ovf.disks.iter().enumerate() {
        let stem = d
            .file_ref
            .as_ref()
            .and_then(|r| ovf.files.get(r))
            .and_then(|f| {
                Path::new(&f.href)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| format!("disk{}", i + 1));
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let stem = stem.trim_start_matches('.');
        let stem = if stem.is_empty() { "disk" } else { stem };
        let mut name = format!("{stem}.qcow2");
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!("{stem}-{n}.qcow2");
            n += 1;
        }
        out.push(name);
    }
    out
}

/// Removes what an import wrote unless it finished.
#[derive(Default)]
struct Undo {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    done: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn make_dir(dir: &Path, undo: &mut Undo) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // Create the missing ancestors one by one, so each can be undone.
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    for d in missing.into_iter().rev() {
        std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
        undo.dirs.push(d);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Reading the appliance.

/// The appliance after reading and verification: its descriptor and where each disk
/// file is now.
struct Appliance {
    ovf: Ovf,
    /// `ovf:id` of a file -> where it can be read.
    sources: HashMap<String, PathBuf>,
    /// The descriptor's text, kept in DIR for an OVA.
    descriptor: Option<(String, String)>,
}

/// The hrefs of the files the disks use.
fn disk_hrefs(ovf: &Ovf) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for d in &ovf.disks {
        if let Some(r) = &d.file_ref {
            if !v.iter().any(|(id, _)| id == r) {
                v.push((r.clone(), ovf.files[r].href.clone()));
            }
        }
    }
    v
}

/// Reads a `.ova`: unpacks the disk files into `staging` (created on first use).
fn read_ova(
    a: &ImportArgs,
    dir: &Path,
    staging: &Path,
    names: &mut Option<Vec<String>>,
    undo: &mut Undo,
) -> anyhow::Result<Appliance> {
    let path = &a.appliance;
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let pb = progress_bar(
        a.quiet,
        a.progress,
        len,
        "unpacking {wide_bar} {percent:>3}% {binary_bytes}/{binary_total_bytes} eta {eta}",
    );
    let mut archive = tar::Archive::new(std::io::BufReader::new(pb.wrap_read(f)));
    let shown = path.display().to_string();
    let mut ovf: Option<Ovf> = None;
    let mut descriptor = None;
    let mut manifest: Option<(String, Manifest)> = None;
    let mut wanted: HashMap<String, (String, Option<u64>)> = HashMap::new(); // href -> (id, size)
    let mut sources = HashMap::new();
    let mut digests: HashMap<String, HashMap<Algo, String>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut members = 0usize;
    let entries = archive
        .entries()
        .with_context(|| format!("{shown} is not a tar archive (OVA)"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading the OVA archive {shown}"))?;
        members += 1;
        if members > MAX_MEMBERS {
            bail!("{shown} holds more than {MAX_MEMBERS} members; refusing it");
        }
        let raw = entry
            .path()
            .with_context(|| format!("a member of {shown} has an unreadable name"))?
            .into_owned();
        let name = safe_name(&raw, "archive member")?;
        let ty = entry.header().entry_type();
        if ty.is_dir() || ty.is_pax_global_extensions() {
            continue;
        }
        if ty.is_symlink() || ty.is_hard_link() {
            bail!("archive member '{name}' is a link; refusing the archive");
        }
        if !(ty.is_file() || ty.is_gnu_sparse() || ty.is_contiguous()) {
            bail!("archive member '{name}' is not a regular file; refusing the archive");
        }
        if !seen.insert(name.clone()) {
            bail!("archive member '{name}' appears twice; refusing the archive");
        }
        let size = entry.size();
        let lower = name.to_ascii_lowercase();
        if ovf.is_none() {
            if !lower.ends_with(".ovf") {
                bail!("the first member of an OVA must be its .ovf descriptor, not '{name}'");
            }
            if size > MAX_DESCRIPTOR {
                bail!("the OVF descriptor '{name}' is {size} bytes; more than {MAX_DESCRIPTOR} is refused");
            }
            let mut b = Vec::new();
            (&mut entry).take(MAX_DESCRIPTOR).read_to_end(&mut b)?;
            let mut h = Hashes::new(&[Algo::Sha1, Algo::Sha256, Algo::Sha512]);
            h.update(&b);
            digests.insert(name.clone(), h.finish());
            let text = String::from_utf8(b)
                .map_err(|_| anyhow::anyhow!("the OVF descriptor '{name}' is not UTF-8 text"))?;
            let o = parse_ovf(&text, &format!("'{name}'"))?;
            for (id, href) in disk_hrefs(&o) {
                let href = safe_name(Path::new(&href), "ovf:href")?;
                wanted.insert(href, (id.clone(), o.files[&id].size));
            }
            let n = output_names(&o);
            check_free(dir, &n, Some(&name))?;
            *names = Some(n);
            descriptor = Some((name.clone(), text));
            ovf = Some(o);
            continue;
        }
        if lower.ends_with(".mf") && manifest.is_none() && !wanted.contains_key(&name) {
            if size > MAX_MANIFEST {
                bail!("the manifest '{name}' is {size} bytes; more than {MAX_MANIFEST} is refused");
            }
            let mut text = String::new();
            (&mut entry)
                .take(MAX_MANIFEST)
                .read_to_string(&mut text)
                .with_context(|| format!("the manifest '{name}' is not UTF-8 text"))?;
            manifest = Some((name.clone(), parse_manifest(&text, &format!("'{name}'"))?));
            continue;
        }
        let algos = algos_for(manifest.as_ref().map(|m| &m.1), &name);
        if let Some((id, want_size)) = wanted.get(&name) {
            if size > MAX_DISK_FILE {
                bail!("disk file '{name}' is {size} bytes; more than {MAX_DISK_FILE} is refused");
            }
            if let Some(w) = want_size.filter(|w| *w != size) {
                bail!("disk file '{name}' is {size} bytes, but the OVF descriptor says {w}");
            }
            if !staging.exists() {
                make_dir(dir, undo)?;
                std::fs::create_dir(staging)
                    .with_context(|| format!("creating {}", staging.display()))?;
                undo.dirs.push(staging.to_path_buf());
            }
            let out_path = staging.join(format!("{}.src", sources.len()));
            let out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out_path)
                .with_context(|| format!("creating {}", out_path.display()))?;
            let mut w = HashWriter {
                inner: std::io::BufWriter::with_capacity(1 << 20, out),
                hashes: Hashes::new(&algos),
            };
            let n = std::io::copy(&mut (&mut entry).take(size), &mut w)
                .with_context(|| format!("unpacking '{name}'"))?;
            w.flush()?;
            if n != size {
                bail!("archive member '{name}' is truncated ({n} of {size} bytes)");
            }
            digests.insert(name.clone(), w.hashes.finish());
            sources.insert(id.clone(), out_path);
        } else if !algos.is_empty() {
            let mut w = HashWriter {
                inner: std::io::sink(),
                hashes: Hashes::new(&algos),
            };
            std::io::copy(&mut entry, &mut w).with_context(|| format!("reading '{name}'"))?;
            digests.insert(name.clone(), w.hashes.finish());
        }
    }
    pb.finish_and_clear();
    let Some(ovf) = ovf else {
        bail!("{shown} holds no OVF descriptor");
    };
    for (href, (id, _)) in &wanted {
        if !sources.contains_key(id) {
            bail!(
                "the OVF descriptor references disk file '{href}', which the archive does not hold"
            );
        }
    }
    match &manifest {
        Some((mf, m)) => {
            let disks: Vec<String> = wanted.keys().cloned().collect();
            verify_manifest(m, &format!("'{mf}'"), &digests, &disks)?;
        }
        None => println!("  note: the archive has no manifest (.mf); its disks are not verified"),
    }
    Ok(Appliance {
        ovf,
        sources,
        descriptor,
    })
}

/// Hashes a file with the given digests.
fn hash_file(path: &Path, algos: &[Algo]) -> anyhow::Result<HashMap<Algo, String>> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut w = HashWriter {
        inner: std::io::sink(),
        hashes: Hashes::new(algos),
    };
    std::io::copy(&mut f, &mut w).with_context(|| format!("reading {}", path.display()))?;
    Ok(w.hashes.finish())
}

/// Reads an `.ovf` descriptor and checks the files beside it (and its `.mf`).
fn read_ovf_dir(a: &ImportArgs) -> anyhow::Result<Appliance> {
    let path = &a.appliance;
    let shown = path.display().to_string();
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let mut b = Vec::new();
    f.take(MAX_DESCRIPTOR + 1)
        .read_to_end(&mut b)
        .with_context(|| format!("reading {shown}"))?;
    if b.len() as u64 > MAX_DESCRIPTOR {
        bail!("the OVF descriptor {shown} is larger than {MAX_DESCRIPTOR} bytes; refusing it");
    }
    let text = String::from_utf8(b)
        .map_err(|_| anyhow::anyhow!("the OVF descriptor {shown} is not UTF-8 text"))?;
    let ovf = parse_ovf(&text, &shown)?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut sources = HashMap::new();
    let mut disks = Vec::new();
    for (id, href) in disk_hrefs(&ovf) {
        let href = safe_name(Path::new(&href), "ovf:href")?;
        let p = base.join(&href);
        let meta = std::fs::metadata(&p).map_err(|_| {
            anyhow::anyhow!(
                "the OVF descriptor references disk file '{href}', which is not in {}",
                if base.as_os_str().is_empty() {
                    ".".to_string()
                } else {
                    base.display().to_string()
                }
            )
        })?;
        if let Some(w) = ovf.files[&id].size.filter(|w| *w != meta.len()) {
            bail!(
                "disk file '{href}' is {} bytes, but the OVF descriptor says {w}",
                meta.len()
            );
        }
        sources.insert(id, p);
        disks.push(href);
    }
    let mf = path.with_extension("mf");
    if mf.is_file() {
        let mfshown = mf.display().to_string();
        let mut text = String::new();
        std::fs::File::open(&mf)
            .with_context(|| format!("cannot open {mfshown}"))?
            .take(MAX_MANIFEST + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("the manifest {mfshown} is not UTF-8 text"))?;
        if text.len() as u64 > MAX_MANIFEST {
            bail!("the manifest {mfshown} is larger than {MAX_MANIFEST} bytes; refusing it");
        }
        let m = parse_manifest(&text, &mfshown)?;
        let mut digests = HashMap::new();
        for (name, (algo, _)) in &m {
            let name_path = Path::new(name);
            let safe = safe_name(name_path, "manifest entry")?;
            let p = base.join(&safe);
            if p.is_file() {
                digests.insert(name.clone(), hash_file(&p, &[*algo])?);
            }
        }
        verify_manifest(&m, &mfshown, &digests, &disks)?;
    } else {
        println!(
            "  note: no manifest {} beside the descriptor; its disks are not verified",
            mf.display()
        );
    }
    Ok(Appliance {
        ovf,
        sources,
        descriptor: None,
    })
}

/// Refuses to import over existing files in `dir`.
fn check_free(dir: &Path, names: &[String], descriptor: Option<&str>) -> anyhow::Result<()> {
    let desc = descriptor.and_then(|d| Path::new(d).file_name().map(|n| n.to_os_string()));
    let all = names
        .iter()
        .map(OsString::from)
        .chain(std::iter::once(OsString::from("vm.json")))
        .chain(desc);
    for n in all {
        let p = dir.join(&n);
        if p.exists() || p.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; remove it or import --to another directory",
                p.display()
            );
        }
    }
    Ok(())
}

/// Whether the appliance is an archive: by extension, else by the tar magic.
fn is_ova(path: &Path) -> bool {
    match path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .as_deref()
    {
        Some("ova") => true,
        Some("ovf") => false,
        _ => {
            let mut head = [0u8; 263];
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut head))
                .is_ok()
                && &head[257..262] == b"ustar"
        }
    }
}

fn absolute(p: &Path, what: &str) -> anyhow::Result<PathBuf> {
    if !p.is_file() {
        bail!("{what} {} is not a readable file", p.display());
    }
    std::path::absolute(p).with_context(|| format!("{what} {}", p.display()))
}

// ---------------------------------------------------------------------------------

pub fn run(a: ImportArgs) -> anyhow::Result<i32> {
    let ova = is_ova(&a.appliance);
    let stem = a
        .appliance
        .file_stem()
        .map(|s| s.to_os_string())
        .with_context(|| format!("{} names no file", a.appliance.display()))?;
    let dir = match &a.to {
        Some(d) => d.clone(),
        None => a.appliance.parent().unwrap_or(Path::new("")).join(&stem),
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    if dir.exists() && !dir.is_dir() {
        bail!("{} exists and is not a directory", dir.display());
    }
    let kernel = a
        .kernel
        .as_deref()
        .map(|k| absolute(k, "kernel"))
        .transpose()?;
    let initrd = a
        .initrd
        .as_deref()
        .map(|i| absolute(i, "initrd"))
        .transpose()?;
    let accel = match a.accel {
        Some(AccelArg::Kvm) => AccelKind::Kvm,
        Some(AccelArg::Emu) => AccelKind::Emu,
        None => crate::host::auto_accel(),
    };
    let mut undo = Undo::default();
    let staging = dir.join(format!(".hako-import-{}", std::process::id()));
    let mut names = None;
    let app = if ova {
        read_ova(&a, &dir, &staging, &mut names, &mut undo)?
    } else {
        read_ovf_dir(&a)?
    };
    let ovf = &app.ovf;
    let names = match names {
        Some(n) => n,
        None => {
            let n = output_names(ovf);
            check_free(&dir, &n, None)?;
            n
        }
    };
    let cpus = ovf.cpus.unwrap_or(1);
    if cpus == 0 || cpus > 255 {
        bail!("the appliance asks for {cpus} CPUs; hako runs 1 to 255");
    }
    let memory = ovf.memory.unwrap_or(512 << 20).div_ceil(1 << 20) << 20;
    if memory < 16 << 20 {
        bail!(
            "the appliance asks for {} of memory; hako needs at least 16 MiB",
            human_size(memory)
        );
    }
    let title = if ovf.name.is_empty() {
        stem.to_string_lossy().into_owned()
    } else {
        ovf.name.clone()
    };
    println!(
        "Importing '{title}' (OVF {}): {cpus} CPU{}, {} memory, {} disk{}, firmware {}",
        ovf.version.map_or("1.x".to_string(), |v| format!("{v}.x")),
        if cpus == 1 { "" } else { "s" },
        human_size(memory),
        ovf.disks.len(),
        if ovf.disks.len() == 1 { "" } else { "s" },
        ovf.firmware.as_deref().unwrap_or("bios (not stated)"),
    );
    if ovf.cpus.is_none() {
        println!("  the descriptor gives no CPU count; using 1");
    }
    if ovf.memory.is_none() {
        println!("  the descriptor gives no memory size; using 512 MiB");
    }
    make_dir(&dir, &mut undo)?;
    let mut disks = Vec::new();
    for (d, name) in ovf.disks.iter().zip(&names) {
        let out = dir.join(name);
        undo.files.push(out.clone());
        match &d.file_ref {
            None => {
                if d.capacity == 0 {
                    bail!("disk '{}' has neither a file nor a capacity", d.id);
                }
                create_image(
                    &out,
                    ImageFormat::Qcow2,
                    d.capacity,
                    None,
                    None,
                    &super::FormatOptions::default(),
                )?;
                println!("  {name}: new empty disk of {}", human_size(d.capacity));
            }
            Some(r) => {
                let href = &ovf.files[r].href;
                let src = &app.sources[r];
                let info = block::info::inspect(src, None)
                    .with_context(|| format!("disk file '{href}'"))?;
                if let Some(b) = &info.backing_filename {
                    bail!("disk file '{href}' names a backing file ('{b}'); refusing it");
                }
                if d.capacity != 0 && d.capacity != info.virtual_size {
                    println!(
                        "  note: '{href}' holds {} but the descriptor says {}; using the image's size",
                        human_size(info.virtual_size),
                        human_size(d.capacity)
                    );
                }
                let mut argv: Vec<OsString> =
                    ["convert", "-f", &info.format.to_string(), "-O", "qcow2"]
                        .map(OsString::from)
                        .into();
                if a.progress {
                    argv.push("-p".into());
                }
                if a.quiet {
                    argv.push("-q".into());
                }
                argv.extend(["--".into(), src.clone().into(), out.clone().into()]);
                let c = <ConvertCommand as clap::Parser>::try_parse_from(argv)
                    .context("internal error: convert arguments")?;
                super::convert::run(c.args).with_context(|| format!("converting '{href}'"))?;
                println!(
                    "  {href} ({}, {}) -> {name}",
                    info.format,
                    human_size(info.virtual_size)
                );
            }
        }
        disks.push(DiskSpec {
            path: PathBuf::from(name),
            format: Some(ImageFormat::Qcow2),
            read_only: false,
            serial: None,
        });
    }
    for n in &ovf.notes {
        println!("  note: {n}");
    }
    if let Some((name, text)) = &app.descriptor {
        if let Some(file) = Path::new(name).file_name() {
            let p = dir.join(file);
            undo.files.push(p.clone());
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    let mut cfg = VmConfig::new(kernel.clone().unwrap_or_default(), accel);
    cfg.initrds = initrd.into_iter().collect();
    cfg.cmdline = a.cmdline.clone();
    cfg.cpus = cpus;
    cfg.memory = memory;
    cfg.disks = disks;
    let json = serde_json::to_string_pretty(&cfg).context("encoding vm.json")?;
    let vm = dir.join("vm.json");
    let tmp = dir.join(".vm.json.tmp");
    undo.files.push(tmp.clone());
    undo.files.push(vm.clone());
    std::fs::write(&tmp, json + "\n").with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &vm).with_context(|| format!("writing {}", vm.display()))?;
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    undo.done = true;
    println!("Wrote {}", vm.display());
    let fw = ovf.firmware.as_deref().unwrap_or("bios");
    println!(
        "Note: only direct kernel boot is supported now; the appliance's own {fw} boot is not."
    );
    if kernel.is_none() {
        println!(
            "vm.json has no kernel: set \"kernel\" (and \"initrds\", \"cmdline\") in it, or import again with --kernel, before `hako run --config {}`",
            vm.display()
        );
    } else {
        println!("Boot it with: hako run --config {}", vm.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(safe_name(Path::new("./a/b.vmdk"), "m").unwrap(), "a/b.vmdk");
        assert!(safe_name(Path::new("../x"), "m").is_err());
        assert!(safe_name(Path::new("/etc/passwd"), "m").is_err());
        assert!(safe_name(Path::new("http://x/y"), "m").is_err());
    }

    #[test]
    fn output_names_are_unique_and_safe() {
        let ovf = parse_ovf(
            r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="f1" ovf:href="a-disk1.vmdk"/><File ovf:id="f2" ovf:href="x/a-disk1.vmdk"/></References>
  <DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f1"/><Disk ovf:diskId="d2" ovf:fileRef="f2"/><Disk ovf:diskId="d3"/></DiskSection>
  <VirtualSystem ovf:id="vm"><VirtualHardwareSection/></VirtualSystem>
</Envelope>"#,
            "t",
        )
        .unwrap();
        assert_eq!(
            output_names(&ovf),
            ["a-disk1.qcow2", "a-disk1-2.qcow2", "disk3.qcow2"]
        );
    }
}
