//! The `hako run` processes: starting one for a VM, following its console, and
//! talking to its control API.
//!
//! A VM's process writes its console (stdout and stderr) straight into
//! `run/NAME.log`, not into a pipe to the daemon: it then outlives the daemon (a
//! crash or an upgrade of the daemon does not stop the VMs) and a later daemon
//! finds the whole console in the file. The daemon follows the file into the VM's
//! in-memory buffer. Each VM process is the leader of a process group of its own,
//! so a Ctrl-C meant for a daemon in a terminal does not reach the guests.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::api::types::ExitInfo;
use crate::error::{Error, Result};
use crate::ring::LogRing;
use crate::store::{write_atomic, StateDir};
use crate::vm::{lock, Proc, TailEnd};

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
pub(crate) const SUN_PATH_MAX: usize = 107;

/// A freshly started process and the handle to wait for it.
pub(crate) struct Spawned {
    pub proc: Proc,
    pub child: tokio::process::Child,
    pub exit_tx: watch::Sender<Option<ExitInfo>>,
}

/// What a VM process boots from.
#[derive(Debug, Clone)]
pub(crate) enum Boot {
    /// The definition's configuration (`--config run/NAME.config.json`).
    Config,
    /// A snapshot directory (`--restore DIR`).
    Restore(PathBuf),
    /// A migration stream it waits for (`--incoming URI`).
    Incoming(String),
}

/// Starts `hako run --config run/NAME.config.json --api-socket run/NAME.api` for
/// `def` (or `--restore`, `--incoming`, as `boot` says), its console into
/// `run/NAME.log` (the last run's log becomes `NAME.log.1`), its stdin from the
/// FIFO `run/NAME.in` (the console input) and its pid into `run/NAME.pid`.
pub(crate) fn spawn(
    sd: &StateDir,
    exe: &Path,
    def: &crate::definition::Definition,
    boot: &Boot,
    generation: u64,
    log: &Arc<Mutex<LogRing>>,
) -> Result<Spawned> {
    let name = &def.name;
    let api = sd.api_socket(name);
    if api.as_os_str().len() > SUN_PATH_MAX {
        return Err(Error::Failed(format!(
            "the VM's API socket {} is longer than a Unix socket path may be: use a \
             shorter --state-dir or VM name",
            api.display()
        )));
    }
    let config = sd.run_config(name);
    let json = serde_json::to_vec_pretty(&def.config).map_err(|e| Error::Failed(e.to_string()))?;
    write_atomic(&config, &json)
        .map_err(Error::io(format!("cannot write {}", config.display())))?;
    // A socket left by a VM that was killed: `hako run` would replace it, but the
    // start must not take the old file for the new VM's socket.
    let _ = fs::remove_file(&api);
    let _ = fs::remove_file(sd.exit(name));
    let log_path = sd.log(name);
    if log_path.exists() {
        let _ = fs::rename(&log_path, log_path.with_extension("log.1"));
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(Error::io(format!("cannot open {}", log_path.display())))?;
    let err = out
        .try_clone()
        .map_err(Error::io("cannot duplicate the log file"))?;
    // The console input: a FIFO the daemon writes to (see console::fifo). Without
    // it the VM runs all the same, with no input.
    let in_path = sd.console_in(name);
    let (stdin, input) = match crate::console::fifo::open_for_child(&in_path) {
        Ok((r, w)) => (Stdio::from(r), Some(Arc::new(w))),
        Err(e) => {
            tracing::warn!("{name}: no console input: {}: {e}", in_path.display());
            (Stdio::null(), None)
        }
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("run");
    match boot {
        Boot::Config => cmd.arg("--config").arg(&config),
        Boot::Restore(dir) => cmd.arg("--restore").arg(dir),
        Boot::Incoming(uri) => cmd.arg("--incoming").arg(uri),
    };
    // The sandbox of `hako run` lets the VM write where the daemon keeps its
    // snapshots (crate::snapshots) and nowhere else but its disks and sockets.
    let snapshots = sd.snapshots(name);
    fs::create_dir_all(&snapshots)
        .map_err(Error::io(format!("cannot create {}", snapshots.display())))?;
    cmd.arg("--sandbox-allow").arg(&snapshots);
    if let Some(ra) = def.run_as {
        run_as(&mut cmd, def, ra, &[&config, &snapshots])?;
    }
    cmd.arg("--api-socket")
        .arg(&api)
        .stdin(stdin)
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    // The VM's own log level: HAKO_VM_LOG, not the daemon's HAKO_LOG (its lines
    // go into the console log).
    match std::env::var_os("HAKO_VM_LOG") {
        Some(level) => cmd.env("HAKO_LOG", level),
        None => cmd.env_remove("HAKO_LOG"),
    };
    let child = cmd
        .spawn()
        .map_err(Error::io(format!("cannot start {}", exe.display())))?;
    let pid = child.id().unwrap_or(0);
    let pid_path = sd.pid(name);
    if let Err(e) = write_atomic(&pid_path, format!("{pid}\n").as_bytes()) {
        tracing::warn!("{name}: cannot write {}: {e}", pid_path.display());
    }
    lock(log).push(format!("[hakod] {name} started (pid {pid})\n").as_bytes());
    let tail_end: TailEnd = Arc::default();
    follow_log(name, log_path, 0, log.clone(), tail_end.clone());
    let (exit_tx, exited) = watch::channel(None);
    Ok(Spawned {
        proc: Proc {
            pid,
            generation,
            started: SystemTime::now(),
            paused: false,
            adopted: false,
            exited,
            tail_end,
            input,
        },
        child,
        exit_tx,
    })
}

/// Makes `cmd` run as `ra` (setgroups to none, setgid, setuid: std's order), and
/// gives that user the files it writes: `own` (its configuration, its snapshot
/// directory) and the VM's writable disk images. The kernel, initrds and backing
/// files must be readable by it (docs/sandbox.md).
fn run_as(
    cmd: &mut tokio::process::Command,
    def: &crate::definition::Definition,
    ra: crate::definition::RunAs,
    own: &[&Path],
) -> Result<()> {
    let name = &def.name;
    if !crate::paths::is_root() {
        return Err(Error::Conflict(format!(
            "'{name}' has run_as (uid {}, gid {}): only a daemon running as root can \
             start a VM as another user",
            ra.uid, ra.gid
        )));
    }
    let disks = def.config.disks.iter().filter(|d| !d.read_only);
    for p in own.iter().copied().chain(disks.map(|d| d.path.as_path())) {
        std::os::unix::fs::chown(p, Some(ra.uid), Some(ra.gid)).map_err(Error::io(format!(
            "cannot give {} to uid {} (run_as of '{name}')",
            p.display(),
            ra.uid
        )))?;
    }
    cmd.uid(ra.uid).gid(ra.gid);
    Ok(())
}

/// How a child ended, from its wait status.
pub(crate) fn exit_info(st: std::io::Result<std::process::ExitStatus>) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    match st {
        Ok(st) => ExitInfo {
            code: st.code(),
            signal: st.signal(),
        },
        Err(_) => ExitInfo::default(),
    }
}

/// Follows the log file `path` from `offset` into `ring` on a thread of its own,
/// until `end` holds a line: then it reads what is left, appends that line, and
/// ends. (The file is read, not watched: a read finds what was written, and the
/// thread sleeps 100 ms when there is nothing new.)
pub(crate) fn follow_log(
    name: &str,
    path: PathBuf,
    offset: u64,
    ring: Arc<Mutex<LogRing>>,
    end: TailEnd,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("log-{name}"))
        .spawn(move || {
            let mut f = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("cannot follow {}: {e}", path.display());
                    end.set_done();
                    return;
                }
            };
            if f.seek(SeekFrom::Start(offset)).is_err() {
                end.set_done();
                return;
            }
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let finishing = end.ending();
                let mut got = 0;
                while let Ok(n @ 1..) = f.read(&mut buf) {
                    lock(&ring).push(&buf[..n]);
                    got += n;
                }
                if let Some(line) = finishing {
                    lock(&ring).push(format!("[hakod] {line}\n").as_bytes());
                    end.set_done();
                    return;
                }
                if got == 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a log thread: {e}");
    }
}

/// The last line of `text` that is not empty and not the daemon's own.
pub(crate) fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("[hakod]"))
        .unwrap_or("")
        .to_string()
}

/// One request to a VM's own control API (blocking; call it off the runtime).
fn vm_api(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<control_api::client::Response> {
    control_api::client::request(socket, method, path, body, timeout)
        .map_err(|e| Error::Failed(format!("the VM's API on {}: {e:#}", socket.display())))
}

/// [`vm_api`] on the blocking pool.
pub(crate) async fn vm_api_async(
    socket: PathBuf,
    method: &'static str,
    path: &'static str,
    timeout: Duration,
) -> Result<control_api::client::Response> {
    on_blocking_pool(move || vm_api(&socket, method, path, None, timeout)).await
}

/// [`vm_api`] with a JSON body, on the blocking pool.
pub(crate) async fn vm_api_json(
    socket: PathBuf,
    method: &'static str,
    path: &'static str,
    body: serde_json::Value,
    timeout: Duration,
) -> Result<control_api::client::Response> {
    on_blocking_pool(move || vm_api(&socket, method, path, Some(&body), timeout)).await
}

/// Runs blocking work (a request, file copies) on tokio's blocking pool.
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill9(pid: u32) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill has no memory effects; the pid is a VM process the caller has
    // just checked (for adopted ones: by its command line) or our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_growing_file_and_finishes() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.log");
        fs::write(&p, "abc").unwrap();
        let ring = Arc::new(Mutex::new(LogRing::new(1 << 10)));
        let end: TailEnd = Arc::default();
        follow_log("x", p.clone(), 1, ring.clone(), end.clone());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"def\n").unwrap();
        end.finish("ended".into());
        let want = b"bcdef\n[hakod] ended\n".to_vec();
        for _ in 0..100 {
            if lock(&ring).all() == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("got {:?}", String::from_utf8_lossy(&lock(&ring).all()));
    }

    #[test]
    fn last_lines() {
        assert_eq!(
            last_line("a\nhako: error: no kernel\n\n[hakod] x\n"),
            "hako: error: no kernel"
        );
        assert_eq!(last_line(""), "");
    }
}
