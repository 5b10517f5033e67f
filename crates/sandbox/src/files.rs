//! The Landlock rules: which files and directories a confined VM may reach.
//!
//! Landlock restricts the thread that asks and the threads it starts afterwards,
//! not the others, so the ruleset is kept: every thread that enters the sandbox
//! after it exists restricts itself with it too (`crate::enter`).

use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, BitFlags, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, ABI,
};

use crate::Error;

/// The newest Landlock ABI whose rights the rules are written for: files (1),
/// renames across directories (2), truncation (3), device ioctls (5). On an older
/// kernel the rights it lacks are simply not enforced (best effort).
const ABI_USED: ABI = ABI::V5;

/// Files every VM may need: the accelerator, TAP devices, randomness (image UUIDs),
/// the null device; its own /proc entries and memory figures; what user-mode
/// networking reads to forward DNS.
const DEVICES_RW: &[&str] = &["/dev/kvm", "/dev/net/tun", "/dev/null"];
const SYSTEM_READ: &[&str] = &[
    "/dev/urandom",
    "/dev/random",
    "/proc/self",
    "/proc/thread-self",
    "/proc/meminfo",
    "/etc/resolv.conf",
    "/etc/hosts",
];

/// The paths a confined VM may reach, and how.
#[derive(Clone, Debug, Default)]
pub struct FileRules {
    read: Vec<PathBuf>,
    read_write: Vec<PathBuf>,
    sockets: Vec<PathBuf>,
}

impl FileRules {
    pub fn new() -> FileRules {
        FileRules::default()
    }

    /// Reading `path` (a file, or a directory and everything beneath it).
    pub fn read(&mut self, path: &Path) {
        self.read.push(path.to_path_buf());
    }

    /// Reading and writing `path`; for a directory, also creating, renaming and
    /// removing what is beneath it.
    pub fn read_write(&mut self, path: &Path) {
        self.read_write.push(path.to_path_buf());
    }

    /// Creating and removing Unix sockets in directory `dir` (connecting to one is
    /// not restricted by the Landlock rights used here).
    pub fn socket_dir(&mut self, dir: &Path) {
        self.sockets.push(dir.to_path_buf());
    }

    /// A `--sandbox-allow DIR`: read-write, and it must be an existing directory.
    pub fn allow_dir(&mut self, dir: &Path) -> Result<(), Error> {
        let shown = dir.display().to_string();
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                self.read_write(dir);
                Ok(())
            }
            Ok(_) => Err(Error::Allow(
                shown,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
            )),
            Err(e) => Err(Error::Allow(shown, e)),
        }
    }

    /// The ruleset, or None where the kernel has no Landlock (with a warning).
    pub(crate) fn create(&self) -> Result<Option<RulesetCreated>, Error> {
        let abi = kernel_abi();
        if abi <= 0 {
            tracing::warn!(
                "sandbox: this kernel has no usable Landlock: file access is not confined \
                 (the seccomp filters still apply)"
            );
            return Ok(None);
        }
        tracing::debug!(
            "sandbox: Landlock ABI {abi} in the kernel; rules written for ABI {} (best effort)",
            ABI_USED as i32
        );
        let all = AccessFs::from_all(ABI_USED) & !AccessFs::Execute;
        let read = AccessFs::ReadFile | AccessFs::ReadDir;
        let sockets: BitFlags<AccessFs> =
            AccessFs::MakeSock | AccessFs::RemoveFile | AccessFs::ReadDir;
        let read_paths: Vec<PathBuf> = self
            .read
            .iter()
            .cloned()
            .chain(SYSTEM_READ.iter().map(PathBuf::from))
            .collect();
        let rw_paths: Vec<PathBuf> = self
            .read_write
            .iter()
            .cloned()
            .chain(DEVICES_RW.iter().map(PathBuf::from))
            .collect();
        let created = Ruleset::default()
            .handle_access(AccessFs::from_all(ABI_USED))?
            .create()?
            // Paths that do not exist are left out (path_beneath_rules skips them).
            .add_rules(path_beneath_rules(&read_paths, read))?
            .add_rules(path_beneath_rules(&rw_paths, all))?
            .add_rules(path_beneath_rules(&self.sockets, sockets))?;
        Ok(Some(created))
    }
}

/// Restricts the calling thread with (a copy of) `r`.
pub(crate) fn restrict_thread(r: &RulesetCreated) -> Result<(), Error> {
    let copy = r
        .try_clone()
        .map_err(|e| Error::Other(format!("cannot copy the Landlock ruleset: {e}")))?;
    copy.restrict_self()?;
    Ok(())
}

/// The Landlock ABI of the running kernel (0: none).
fn kernel_abi() -> i64 {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION
    // flag only returns the ABI version (or an error); it reads no memory.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    }
}

/// From linux/landlock.h.
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;

/// Whether `e`, met writing to `path`, is the sandbox's refusal: then the message
/// that says how to allow it.
pub fn write_refused(e: &std::io::Error, path: &Path) -> Option<String> {
    if e.kind() != std::io::ErrorKind::PermissionDenied || !crate::files_confined() {
        return None;
    }
    Some(format!(
        "the sandbox lets this VM write only to its disks, its API socket's directory \
         and the directories given with --sandbox-allow; start it with --sandbox-allow \
         DIR to let it write to {} (or with --sandbox off)",
        path.display()
    ))
}
