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
    /// Also serve the API and the web console (GET /) on this TCP address, for a
    /// browser or remote clients (port 0 picks one). Without --http-token-file:
    /// loopback only (127.0.0.1:PORT or [::1]:PORT).
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<std::net::SocketAddr>,
    /// A file (mode 0600) whose first line is the token every request on the
    /// --http listener must carry (`Authorization: Bearer TOKEN`; a browser opens
    /// /?token=TOKEN once). With it --http may bind any address.
    #[arg(long, value_name = "FILE", requires = "http")]
    http_token_file: Option<PathBuf>,
}

pub fn run(a: DaemonArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("cannot find the hako binary")?;
    let opts = hakod::Options {
        socket: a.socket.unwrap_or_else(hakod::paths::default_socket),
        state_dir: a.state_dir.unwrap_or_else(hakod::paths::default_state_dir),
        exe,
        http: a.http,
        http_token: a.http_token_file,
    };
    hakod::run(opts)?;
    Ok(0)
}
