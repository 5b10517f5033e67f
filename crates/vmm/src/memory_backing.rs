//! How guest RAM is backed: `--memory SIZE[,mergeable=on][,hugepages=on|PATH]`.
//! KSM merging (`MADV_MERGEABLE`), transparent huge pages (`MADV_HUGEPAGE`), or
//! hugetlbfs files reserved up front (so a short pool is an error before boot, not
//! a SIGBUS when the guest touches a page).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion};

use crate::config::parse_size;
use accel::GuestMemory;

/// Huge pages for guest RAM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hugepages {
    #[default]
    Off,
    /// Transparent huge pages (`madvise`), where the host's THP mode allows.
    Transparent,
    /// Files in this hugetlbfs mount, reserved when the VM is built.
    Hugetlbfs(PathBuf),
}

/// The options of `--memory` after the size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBacking {
    /// Offer guest RAM to KSM for merging identical pages.
    #[serde(default)]
    pub mergeable: bool,
    #[serde(default)]
    pub hugepages: Hugepages,
}

/// One `--memory`: the size and its backing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySpec {
    pub size: u64,
    pub backing: MemoryBacking,
}

fn on_off(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(format!("--memory: {key}={v}: expected on or off")),
    }
}

impl std::str::FromStr for MemorySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let size = parse_size(parts.next().unwrap_or_default())?;
        let mut backing = MemoryBacking::default();
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("--memory: option '{opt}' is not key=value"))?;
            match k {
                "mergeable" => backing.mergeable = on_off(k, v)?,
                "hugepages" => {
                    backing.hugepages = match v {
                        "on" | "yes" | "true" => Hugepages::Transparent,
                        "off" | "no" | "false" => Hugepages::Off,
                        "" => return Err("--memory: hugepages= needs on, off or a path".into()),
                        path => Hugepages::Hugetlbfs(PathBuf::from(path)),
                    }
                }
                _ => {
                    return Err(format!(
                        "--memory: unknown option '{k}' (known: mergeable, hugepages)"
                    ))
                }
            }
        }
        Ok(MemorySpec { size, backing })
    }
}

/// The huge page size of the hugetlbfs mount at `dir` (its block size).
fn hugetlbfs_page_size(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .context("the hugetlbfs path holds a NUL byte")?;
    // SAFETY: statfs(2) writes only into `st`, which is a plain C struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("hugepages={}", dir.display()));
    }
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
    if st.f_type as i64 != HUGETLBFS_MAGIC {
        bail!(
            "hugepages={}: not a hugetlbfs mount (mount -t hugetlbfs none DIR)",
            dir.display()
        );
    }
    Ok(st.f_bsize as u64)
}

/// An unlinked file of `len` bytes in hugetlbfs `dir`, its huge pages reserved.
fn hugetlbfs_file(dir: &Path, len: usize) -> Result<File> {
    let f = tempfile::tempfile_in(dir)
        .with_context(|| format!("hugepages={}: cannot create a file", dir.display()))?;
    // SAFETY: fallocate(2) on a file descriptor we own; no memory is touched.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "hugepages={}: cannot reserve {} MiB of huge pages (is the pool big \
                 enough? /proc/sys/vm/nr_hugepages)",
                dir.display(),
                len >> 20
            )
        });
    }
    Ok(f)
}

/// Allocates guest RAM for `ranges` as `b` asks.
pub fn allocate(ranges: &[(GuestAddress, usize)], b: &MemoryBacking) -> Result<GuestMemory> {
    let mem = match &b.hugepages {
        Hugepages::Hugetlbfs(dir) => {
            let page = hugetlbfs_page_size(dir)?;
            if let Some(&(_, len)) = ranges.iter().find(|r| r.1 as u64 % page != 0) {
                bail!(
                    "hugepages={}: guest RAM regions must be multiples of the {} KiB huge \
                     page (a region of {len:#x} bytes): choose a memory size that is",
                    dir.display(),
                    page >> 10
                );
            }
            let files = ranges
                .iter()
                .map(|&(a, l)| Ok((a, l, Some(FileOffset::new(hugetlbfs_file(dir, l)?, 0)))))
                .collect::<Result<Vec<_>>>()?;
            GuestMemory::from_ranges_with_files(files)?
        }
        _ => GuestMemory::from_ranges(ranges)?,
    };
    advise(&mem, b)?;
    Ok(mem)
}

/// Applies the madvise(2) hints of `b` to every region of `mem` (also to memory a
/// snapshot or a migration brought, which is never hugetlbfs-backed).
pub fn advise(mem: &GuestMemory, b: &MemoryBacking) -> Result<()> {
    let hints = [
        (
            b.mergeable,
            libc::MADV_MERGEABLE,
            "mergeable=on: this kernel has no KSM",
        ),
        (
            b.hugepages == Hugepages::Transparent,
            libc::MADV_HUGEPAGE,
            "hugepages=on: this kernel has no transparent huge pages",
        ),
    ];
    for r in mem.iter() {
        let addr = r.as_ptr() as *mut libc::c_void;
        for &(want, advice, what) in &hints {
            if !want {
                continue;
            }
            // SAFETY: `addr..addr+len` is exactly one mapping vm-memory made for
            // this region and keeps alive as long as `mem`; these hints change no
            // contents, only how the kernel backs the pages.
            if unsafe { libc::madvise(addr, r.len() as usize, advice) } != 0 {
                return Err(std::io::Error::last_os_error()).context(what);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_options_parse() {
        let m: MemorySpec = "2G,mergeable=on,hugepages=on".parse().unwrap();
        assert_eq!(m.size, 2 << 30);
        assert!(m.backing.mergeable);
        assert_eq!(m.backing.hugepages, Hugepages::Transparent);
        let m: MemorySpec = "512M,hugepages=/dev/hugepages".parse().unwrap();
        assert_eq!(
            m.backing.hugepages,
            Hugepages::Hugetlbfs("/dev/hugepages".into())
        );
        assert_eq!(
            "512M".parse::<MemorySpec>().unwrap().backing,
            MemoryBacking::default()
        );
        for bad in [
            "512M,ksm=on",
            "512M,mergeable=maybe",
            "512M,hugepages=",
            "512M,x",
        ] {
            assert!(bad.parse::<MemorySpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn advice_applies_to_every_region() {
        let ranges = [(GuestAddress(0), 4 << 20), (GuestAddress(1 << 32), 4 << 20)];
        let b = MemoryBacking {
            mergeable: std::path::Path::new("/sys/kernel/mm/ksm").exists(),
            hugepages: Hugepages::Transparent,
        };
        let mem = allocate(&ranges, &b).unwrap();
        assert_eq!(mem.num_regions(), 2);
        // THP hint: smaps marks the mapping "hg" (VM_HUGEPAGE) in VmFlags.
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let addr = mem.iter().next().unwrap().as_ptr() as u64;
        let contains = |l: &str| {
            let Some((range, _)) = l.split_once(' ') else {
                return false;
            };
            let Some((a, b)) = range.split_once('-') else {
                return false;
            };
            match (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                (Ok(a), Ok(b)) => a <= addr && addr < b,
                _ => false,
            }
        };
        let flags = smaps
            .lines()
            .skip_while(|l| !contains(l))
            .find(|l| l.starts_with("VmFlags:"))
            .unwrap();
        assert!(flags.contains(" hg"), "{flags}");
        if b.mergeable {
            assert!(flags.contains(" mg"), "{flags}");
        }
    }

    #[test]
    fn a_hugetlbfs_path_that_is_not_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let b = MemoryBacking {
            mergeable: false,
            hugepages: Hugepages::Hugetlbfs(d.path().into()),
        };
        let e = allocate(&[(GuestAddress(0), 2 << 20)], &b).unwrap_err();
        assert!(format!("{e:#}").contains("not a hugetlbfs mount"), "{e:#}");
    }
}
