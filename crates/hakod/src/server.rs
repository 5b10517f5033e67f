//! Running the daemon: the socket, the runtime, the signals that end it.
//!
//! Ending the daemon (SIGTERM, SIGINT, or a crash) leaves the VMs running: each is
//! a process of its own, with its console going to its log file. The next daemon
//! on the same state directory adopts them.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};

use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// What `hako daemon` is asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The socket to serve the API on.
    pub socket: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The `hako` binary to run VMs with (`hako run`).
    pub exe: PathBuf,
    /// Also serve the API and the web console on this TCP address (loopback only:
    /// see [`crate::web::guard`]).
    pub http: Option<std::net::SocketAddr>,
    /// A file holding the token every request on the TCP listener must carry;
    /// with it the listener may bind any address (see [`crate::web::guard`]).
    pub http_token: Option<PathBuf>,
}

/// Binds `path` with `mode`, refusing a socket another process serves. A stale
/// socket file (nobody listening) is replaced; any other file is left alone.
fn bind(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let dir_mode = if mode & 0o070 != 0 { 0o750 } else { 0o700 };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(dir)
            .map_err(Error::io(format!("cannot create {}", dir.display())))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::Failed(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Failed(format!(
                "{} is in use: a daemon runs there already",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(Error::io(format!(
            "cannot remove stale socket {}",
            path.display()
        )))?;
    }
    // The socket file gets the umask's mode at bind: set it so from the start, so
    // nobody else can connect before a chmod would have run.
    let mask = 0o777 & !mode;
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let l = l.map_err(Error::io(format!("cannot listen on {}", path.display())))?;
    l.set_nonblocking(true)
        .map_err(Error::io("cannot make the socket non-blocking"))?;
    Ok(l)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(opts: Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hakod")
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the daemon's runtime"))?;
    rt.block_on(serve(opts, ended()))
}

/// Serves the daemon on the current tokio runtime until `until` resolves.
pub async fn serve(
    opts: Options,
    until: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // The state directory first: its lock tells a second daemon to go away before
    // it touches the socket of the first.
    let token = match (&opts.http_token, &opts.http) {
        (Some(f), Some(_)) => Some(crate::web::guard::load_token(f)?),
        (Some(_), None) => {
            return Err(Error::BadRequest(
                "--http-token-file is for the TCP listener: give --http ADDR:PORT too".into(),
            ))
        }
        (None, _) => None,
    };
    if let Some(addr) = &opts.http {
        crate::web::guard::check_addr(addr, token.is_some())?;
    }
    let access = crate::web::guard::Access::new(token);
    let daemon = Daemon::open(&opts.state_dir, opts.exe.clone()).await?;
    let listener = bind(&opts.socket, crate::paths::socket_mode())?;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(Error::io("cannot use the socket"))?;
    tracing::info!(
        "hako daemon: serving {} (state in {})",
        opts.socket.display(),
        daemon.sd.root().display()
    );
    let http = match opts.http {
        Some(addr) => Some(bind_http(addr).await?),
        None => None,
    };
    daemon.start_boot_vms();
    let events = daemon.events.clone();
    let app = crate::api::router(daemon);
    // Both listeners end together, and the event streams (which never end by
    // themselves) end first, so the graceful shutdown has no request to wait for.
    let (end_tx, end_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        until.await;
        events.close();
        let _ = end_tx.send(true);
    });
    let ended = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|e| *e).await;
    };
    let tcp = http.map(|l| {
        let app = app.clone().layer(axum::middleware::from_fn_with_state(
            access,
            crate::web::guard::check,
        ));
        let server = axum::serve(l, app).with_graceful_shutdown(ended(end_rx.clone()));
        tokio::spawn(std::future::IntoFuture::into_future(server))
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(ended(end_rx));
    let r = server.await;
    let _ = std::fs::remove_file(&opts.socket);
    if let Some(t) = tcp {
        if let Ok(Err(e)) = t.await {
            tracing::warn!("the HTTP listener failed: {e}");
        }
    }
    r.map_err(Error::io("the API server failed"))
}

/// Binds the loopback TCP listener of `--http` and says where it is (the port
/// the system chose, for port 0).
async fn bind_http(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Error::io(format!("cannot listen on {addr}")))?;
    let at = l
        .local_addr()
        .map_err(Error::io("cannot read the HTTP listener's address"))?;
    // Said on stderr whatever the log level: with port 0 this is where to go.
    eprintln!("hako daemon: web console on http://{at}/");
    Ok(l)
}

/// Resolves on SIGTERM or SIGINT.
async fn ended() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot handle SIGTERM/SIGINT: the daemon ends only when killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("hako daemon: ending (the VMs keep running)");
}
