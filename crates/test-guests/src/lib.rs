//! Builds the freestanding test guests in the repository's `guests/` folder with the
//! host's gcc, for tests and benchmarks of every accelerator.
//!
//! Each guest is `guests/<name>.c` (or `.S`) linked with the shared runtime in
//! `guests/common/` into an ELF file that boots both by the Linux 64-bit boot
//! protocol (its `e_entry`) and by the Xen PVH note (QEMU's `-kernel`). Builds are
//! cached under the Cargo target directory and redone when a source is newer.
//!
//! ```no_run
//! let elf = test_guests::build("hello").unwrap();
//! assert!(elf.exists());
//! ```

pub mod elf;
pub mod expected;
pub mod multiboot;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The guests this crate knows about (each has a `guests/<name>.c`).
pub const GUESTS: &[&str] = &[
    "hello",
    "triple",
    "smp",
    "outloop",
    "virtio_hostile",
    "echo",
    "xmodify",
    "jitcheck",
    "migrate",
];

/// The repository's `guests/` folder.
pub fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests")
}

/// The runtime every guest links with, relative to [`guests_dir`].
const COMMON: &[&str] = &[
    "common/entry.S",
    "common/lib.c",
    "common/guest.h",
    "common/guest.ld",
    "common/pci.h",
    "common/virtio.h",
    "common/smp.h",
];

/// Compiler and linker flags: freestanding, no SSE (the guests never enable it),
/// no red zone (interrupt-safe), linked at 1 MiB by `guest.ld`.
const CFLAGS: &[&str] = &[
    "-m64",
    "-O2",
    "-ffreestanding",
    "-fno-pic",
    "-no-pie",
    "-nostdlib",
    "-static",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--build-id=none",
    "-Wl,--no-warn-rwx-segments",
    "-Wl,-z,noexecstack",
];

/// Where built guests go: `<cargo target dir>/test-guests/`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("test-guests");
    }
    // Test binaries run from <target>/<profile>/deps/; cargo marks <target> with
    // CACHEDIR.TAG.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe
            .ancestors()
            .skip(1)
            .find(|d| d.join("CACHEDIR.TAG").exists())
        {
            return target.join("test-guests");
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-guests")
}

fn mtime(p: &Path) -> io::Result<SystemTime> {
    std::fs::metadata(p)?.modified()
}

/// Builds guest `name` (if its ELF is missing or older than a source) and returns
/// the ELF's path.
pub fn build(name: &str) -> io::Result<PathBuf> {
    build_in(name, &cache_dir())
}

/// Like [`build`], with an explicit output folder.
pub fn build_in(name: &str, out_dir: &Path) -> io::Result<PathBuf> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad guest name {name:?}"),
        ));
    }
    let dir = guests_dir();
    let main = ["c", "S"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no guest source {name}.c or {name}.S in {}", dir.display()),
            )
        })?;
    let out = out_dir.join(format!("{name}.elf"));
    let sources: Vec<PathBuf> = COMMON
        .iter()
        .map(|c| dir.join(c))
        .chain(std::iter::once(main.clone()))
        .collect();
    let mut args: Vec<std::ffi::OsString> = CFLAGS.iter().map(Into::into).collect();
    args.push("-I".into());
    args.push(dir.clone().into());
    args.push(format!("-Wl,-T,{}", dir.join("common/guest.ld").display()).into());
    args.push(dir.join("common/entry.S").into());
    args.push(dir.join("common/lib.c").into());
    args.push(main.into());
    gcc_cached(name, &out, &sources, &args)
}

/// Links `out` with `gcc ARGS -o out` unless it is newer than every file in
/// `sources`. Parallel tests may build the same guest: gcc writes a private name
/// that is then renamed (atomic), so a reader never sees a half-written file.
pub(crate) fn gcc_cached(
    name: &str,
    out: &Path,
    sources: &[PathBuf],
    args: &[std::ffi::OsString],
) -> io::Result<PathBuf> {
    if let Ok(built) = mtime(out) {
        let mut newest = SystemTime::UNIX_EPOCH;
        for s in sources {
            newest = newest.max(mtime(s)?);
        }
        if built >= newest {
            return Ok(out.to_owned());
        }
    }
    let out_dir = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(out_dir)?;
    let tmp = format!(
        "{}.{}.{:?}.tmp",
        out.display(),
        std::process::id(),
        std::thread::current().id()
    )
    .replace(['(', ')'], "");
    let output = Command::new("gcc")
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running gcc: {e}")))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::other(format!(
            "gcc failed building guest {name}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    std::fs::rename(&tmp, out)?;
    Ok(out.to_owned())
}
