//! `hako daemon`: the management daemon (crates/hakod; see docs/daemon.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
#[command(
    after_help = "The VMs keep running when the daemon ends (SIGTERM, Ctrl-C, a crash): \
the next daemon on the same state directory finds them again. `hako define`, `hako start`, \
`hako list` and the other verbs talk to it; see docs/daemon.md."
)]
pub struct DaemonArgs {
    /// The Unix socket to serve the API on (default: /run/hako/hako.sock as root,
    /// mode 0660; else $XDG_RUNTIME_DIR/hako/hako.sock, mode 0600).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Where definitions (vms/NAME.json) and the files of running VMs (run/) live
    /// (default: /var/lib/hako as root, else $XDG_DATA_HOME/hako or
    /// ~/.local/share/hako).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub fn run(a: DaemonArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("cannot find the hako binary")?;
    let opts = hakod::Options {
        socket: a.socket.unwrap_or_else(hakod::paths::default_socket),
        state_dir: a.state_dir.unwrap_or_else(hakod::paths::default_state_dir),
        exe,
    };
    hakod::run(opts)?;
    Ok(0)
}
