//! Where the daemon listens and keeps its state when not told otherwise.
//!
//! As root: `/run/hako/hako.sock` (mode 0660, for the members of the socket's
//! group: the systemd unit runs the daemon with `Group=hako`) and `/var/lib/hako`.
//! As another user: `$XDG_RUNTIME_DIR/hako/hako.sock` (mode 0600) and
//! `$XDG_DATA_HOME/hako` (or `~/.local/share/hako`).

use std::path::PathBuf;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// An environment variable that is set to an absolute path.
fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// The daemon's socket when `--socket` (or `--connect`, `HAKO_SOCKET`) is not given.
pub fn default_socket() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/hako/hako.sock");
    }
    let runtime = env_dir("XDG_RUNTIME_DIR").unwrap_or_else(|| {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        std::env::temp_dir().join(format!("hako-{uid}"))
    });
    runtime.join("hako").join("hako.sock")
}

/// The state directory when `--state-dir` is not given.
pub fn default_state_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/hako");
    }
    if let Some(d) = env_dir("XDG_DATA_HOME") {
        return d.join("hako");
    }
    let home = env_dir("HOME").unwrap_or_else(|| PathBuf::from("/"));
    home.join(".local/share/hako")
}

/// The mode of the daemon's socket: group access for root (the `hako` group),
/// owner only otherwise.
pub fn socket_mode() -> u32 {
    if is_root() {
        0o660
    } else {
        0o600
    }
}
