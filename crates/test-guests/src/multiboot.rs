//! Builds the Multiboot v1 test kernels in `guests/multiboot/`: 32-bit ELF files
//! (QEMU's `-kernel` takes Multiboot kernels only as ELF32), linked at 1 MiB by
//! `guests/multiboot/mb.ld`, entered in 32-bit protected mode with paging off.
//!
//! ```no_run
//! use test_guests::multiboot::{build, Placement};
//! let elf = build("mbinfo", Placement::ProgramHeaders).unwrap();
//! assert!(elf.exists());
//! ```

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use crate::{cache_dir, gcc_cached, guests_dir};

/// The Multiboot kernels (each has a `guests/multiboot/<name>.c`).
pub const KERNELS: &[&str] = &["mbinfo", "testdev"];

/// How the kernel tells the loader where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Header flags 0x3: by the ELF program headers' physical addresses.
    ProgramHeaders,
    /// Header flags 0x10003: by the header's address fields (bit 16).
    AddressFields,
    /// The [`Placement::ProgramHeaders`] kernel converted to an ELF64 file (x86-64,
    /// the same 32-bit code and physical addresses): what a 64-bit kernel with a
    /// 32-bit Multiboot entry looks like. QEMU refuses it; `hako` loads it.
    Elf64,
}

/// Flags for a freestanding i386 kernel: no SSE, no libgcc (no 64-bit division).
const CFLAGS: &[&str] = &[
    "-m32",
    "-O2",
    "-ffreestanding",
    "-fno-pic",
    "-no-pie",
    "-nostdlib",
    "-static",
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

/// Builds kernel `name` with `placement` (if missing or stale) into the cache
/// folder and returns its path.
pub fn build(name: &str, placement: Placement) -> io::Result<PathBuf> {
    if !KERNELS.contains(&name) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no Multiboot kernel {name:?} (known: {KERNELS:?})"),
        ));
    }
    if placement == Placement::Elf64 {
        let elf32 = build(name, Placement::ProgramHeaders)?;
        return objcopy_elf64(name, &elf32);
    }
    let dir = guests_dir().join("multiboot");
    let main = dir.join(format!("{name}.c"));
    let (suffix, define) = match placement {
        Placement::ProgramHeaders => ("", None),
        Placement::AddressFields => ("-addr", Some("-DMB_ADDRESS_FIELDS")),
        Placement::Elf64 => unreachable!("handled above"),
    };
    let out = cache_dir().join(format!("multiboot-{name}{suffix}.elf"));
    let sources = vec![dir.join("entry.S"), dir.join("mb.ld"), main.clone()];
    let mut args: Vec<OsString> = CFLAGS.iter().map(Into::into).collect();
    args.extend(define.map(Into::into));
    args.push(format!("-Wl,-T,{}", dir.join("mb.ld").display()).into());
    args.push(dir.join("entry.S").into());
    args.push(main.into());
    gcc_cached(name, &out, &sources, &args)
}

/// `objcopy -O elf64-x86-64` of `elf32`, cached next to it like the gcc builds.
fn objcopy_elf64(name: &str, elf32: &std::path::Path) -> io::Result<PathBuf> {
    let out = cache_dir().join(format!("multiboot-{name}-elf64.elf"));
    let fresh = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified());
    if let (Ok(built), Ok(src)) = (fresh(&out), fresh(elf32)) {
        if built >= src {
            return Ok(out);
        }
    }
    let tmp = format!(
        "{}.{}.{:?}.tmp",
        out.display(),
        std::process::id(),
        std::thread::current().id()
    )
    .replace(['(', ')'], "");
    let o = std::process::Command::new("objcopy")
        .args(["-O", "elf64-x86-64"])
        .arg(elf32)
        .arg(&tmp)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running objcopy: {e}")))?;
    if !o.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::other(format!(
            "objcopy failed converting {name} to ELF64:\n{}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}
