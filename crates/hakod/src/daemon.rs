//! The daemon's table of VMs: loading it (and finding the VMs that still run),
//! defining, changing and undefining VMs, and what the API reads of them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::watch;

use crate::api::types::{ExitInfo, HostInfo, Undefined, VmInfo, VmState, VmStatus};
use crate::definition::{Definition, RestartPolicy};
use crate::error::{Error, Result};
use crate::events::{Events, EventsRef};
use crate::ring::LOG_CAPACITY;
use crate::store::{write_atomic, LoadProblem, StateDir};
use crate::vm::{lock, Phase, Proc, Slot, TailEnd};
use crate::{process, procfs};

/// The daemon: its state directory and its VMs.
pub struct Daemon {
    pub(crate) sd: StateDir,
    /// The `hako` binary the VMs run (`hako run`) and `GET /v1/host` asks.
    pub(crate) exe: PathBuf,
    vms: Mutex<BTreeMap<String, Arc<Slot>>>,
    problems: Vec<LoadProblem>,
    /// The VMs' state changes (`GET /v1/events`).
    pub(crate) events: EventsRef,
    /// The open, locked `hakod.lock`: a second daemon on the same directory fails.
    _lock: fs::File,
}

impl Daemon {
    /// Opens the state directory `dir` (created if missing), locks it, loads the
    /// definitions and finds out what became of the VMs that ran: a live `hako run`
    /// named in `run/NAME.pid` is adopted, a dead one leaves its VM crashed. Must
    /// be called on the tokio runtime (it starts the watchers of adopted VMs).
    pub async fn open(dir: &Path, exe: PathBuf) -> Result<Arc<Daemon>> {
        let sd = StateDir::open(dir).map_err(Error::io(format!(
            "cannot use the state directory {}",
            dir.display()
        )))?;
        let lock_path = sd.lock();
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io(format!("cannot open {}", lock_path.display())))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(Error::Failed(format!(
                "another daemon manages {} (it holds {})",
                sd.root().display(),
                lock_path.display()
            )));
        }
        let (defs, problems) = sd
            .load_all()
            .map_err(Error::io(format!("cannot read {}", sd.vms_dir().display())))?;
        for p in &problems {
            tracing::warn!("skipping {}: {}", p.path.display(), p.reason);
        }
        let d = Arc::new(Daemon {
            sd,
            exe,
            vms: Mutex::new(BTreeMap::new()),
            problems,
            events: Events::new(),
            _lock: lock_file,
        });
        for def in defs {
            let slot = Slot::new(def, d.events.clone());
            lock(&d.vms).insert(slot.name.clone(), slot.clone());
            d.recover(&slot).await;
        }
        Ok(d)
    }

    /// Starts, each on a task of its own, the VMs that should run now the daemon
    /// does: those with autostart, and those with restart policy on-failure that
    /// died while no daemon watched them.
    pub fn start_boot_vms(self: &Arc<Self>) {
        for slot in self.slots() {
            let d = self.clone();
            tokio::spawn(async move {
                let _g = slot.op.lock().await;
                let restart = {
                    let mut g = slot.inner();
                    let crashed = matches!(g.phase, Phase::Crashed);
                    let restart = crashed && g.def.restart_policy == RestartPolicy::OnFailure;
                    let go = !g.removed && g.running().is_none() && (g.def.autostart || restart);
                    if !go {
                        return;
                    }
                    if restart && !g.def.autostart {
                        g.restarts.push_back(std::time::Instant::now());
                    }
                    restart
                };
                let why = if restart {
                    "restart policy"
                } else {
                    "autostart"
                };
                if let Err(e) = d.start_locked(&slot).await {
                    tracing::warn!("{}: {why}: {e}", slot.name);
                    slot.inner().note = Some(format!("{why} failed: {e}"));
                }
            });
        }
    }

    /// What became of `slot`'s VM while no daemon watched it.
    async fn recover(self: &Arc<Self>, slot: &Arc<Slot>) {
        let name = slot.name.clone();
        let api = self.sd.api_socket(&name);
        let pid_path = self.sd.pid(&name);
        let pid: Option<u32> = fs::read_to_string(&pid_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let log_path = self.sd.log(&name);
        let log_len = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let from = log_len.saturating_sub(LOG_CAPACITY as u64);
        // The pid file's process, or one found by its command line (a daemon
        // killed right after starting it wrote no pid file).
        let live = pid
            .filter(|&p| procfs::is_vm_process(p, &api))
            .or_else(|| procfs::find_vm_process(&api));
        if let Some(found) = live.filter(|&p| Some(p) != pid) {
            let _ = write_atomic(&pid_path, format!("{found}\n").as_bytes());
        }
        match live {
            Some(pid) => {
                let paused =
                    process::vm_api_async(api.clone(), "GET", "/v1/vm", Duration::from_secs(3))
                        .await
                        .ok()
                        .and_then(|r| r.json().ok())
                        .is_some_and(|v| v["state"] == "paused");
                let (exit_tx, exited) = watch::channel(None);
                let tail_end: TailEnd = Arc::default();
                // Its console input, if the daemon that started it gave it the FIFO.
                let input = crate::console::fifo::open_writer(&self.sd.console_in(&name))
                    .map(Arc::new)
                    .map_err(|e| tracing::info!("{name}: no console input: {e}"))
                    .ok();
                let generation = {
                    let mut g = slot.inner();
                    let generation = g.take_generation();
                    g.phase = Phase::Running(Proc {
                        pid,
                        generation,
                        started: procfs::start_time(pid).unwrap_or_else(SystemTime::now),
                        paused,
                        adopted: true,
                        exited,
                        tail_end: tail_end.clone(),
                        input,
                    });
                    generation
                };
                process::follow_log(&name, log_path, from, slot.log.clone(), tail_end);
                // The log thread reads the old output first; this line comes after
                // it only approximately, which is fine for a remark.
                tracing::info!("{name}: adopted its running process {pid}");
                self.watch_adopted(slot.clone(), generation, pid, exit_tx);
            }
            None => {
                let dead = pid;
                load_log_tail(&log_path, from, slot);
                let exit_path = self.sd.exit(&name);
                let recorded: Option<ExitInfo> = fs::read(&exit_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                let mut g = slot.inner();
                if dead.is_some() {
                    // It ended while no daemon watched: how is not known (unless a
                    // daemon recorded it).
                    let info = recorded.unwrap_or_default();
                    let _ = fs::remove_file(&pid_path);
                    if let Ok(json) = serde_json::to_vec(&info) {
                        let _ = write_atomic(&exit_path, &json);
                    }
                    g.phase = Phase::Crashed;
                    g.last_exit = Some(info);
                    g.note = Some("its process ended while no daemon watched it".into());
                    tracing::warn!("{name}: its process ended while no daemon watched it");
                } else if let Some(info) = recorded {
                    g.phase = Phase::Crashed;
                    g.last_exit = Some(info);
                }
            }
        }
    }

    pub(crate) fn slots(&self) -> Vec<Arc<Slot>> {
        lock(&self.vms).values().cloned().collect()
    }

    pub(crate) fn slot(&self, name: &str) -> Result<Arc<Slot>> {
        lock(&self.vms)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// After taking `slot.op`: a VM undefined meanwhile is not found.
    pub(crate) fn check_present(slot: &Slot) -> Result<()> {
        if slot.inner().removed {
            return Err(Error::NotFound(slot.name.clone()));
        }
        Ok(())
    }

    /// `POST /v1/vms`.
    pub fn define(&self, body: Value) -> Result<VmInfo> {
        let def = Definition::from_value(body, None)?;
        let mut table = lock(&self.vms);
        if table.contains_key(&def.name) {
            return Err(Error::Conflict(format!(
                "a VM named '{}' is defined already",
                def.name
            )));
        }
        if let Some(other) = table.values().find(|s| s.inner().def.uuid == def.uuid) {
            return Err(Error::Conflict(format!(
                "the VM '{}' has the uuid {} already",
                other.name, def.uuid
            )));
        }
        self.sd.save(&def).map_err(Error::io(format!(
            "cannot write {}",
            self.sd.definition(&def.name).display()
        )))?;
        let slot = Slot::new(def, self.events.clone());
        table.insert(slot.name.clone(), slot.clone());
        drop(table);
        slot.publish_defined();
        Ok(info_of(&slot))
    }

    /// `PUT /v1/vms/{name}`: a new definition. The configuration of a running VM
    /// does not change (its autostart and restart policy may); name and uuid never
    /// do (they may be left out).
    pub async fn update(&self, name: &str, mut body: Value) -> Result<VmInfo> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let uuid = slot.inner().def.uuid;
        if let Value::Object(m) = &mut body {
            m.entry("name").or_insert_with(|| Value::from(name));
            m.entry("uuid")
                .or_insert_with(|| Value::from(uuid.to_string()));
        }
        let def = Definition::from_value(body, None)?;
        if def.name != name {
            return Err(Error::BadRequest(format!(
                "the definition names '{}': a VM is not renamed (undefine it and define the new name)",
                def.name
            )));
        }
        if def.uuid != uuid {
            return Err(Error::BadRequest(format!(
                "the uuid of '{name}' is {uuid} and does not change"
            )));
        }
        let mut g = slot.inner();
        if g.running().is_some() && g.def.config != def.config {
            return Err(Error::Conflict(format!(
                "'{name}' is running: stop it before changing its configuration"
            )));
        }
        self.sd.save(&def).map_err(Error::io(format!(
            "cannot write {}",
            self.sd.definition(name).display()
        )))?;
        g.def = def;
        drop(g);
        Ok(info_of(&slot))
    }

    /// `DELETE /v1/vms/{name}`: forgets a VM that is not running (its definition
    /// file and its files in `run/`).
    pub async fn undefine(&self, name: &str) -> Result<Undefined> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let snapshots = self.snapshot_count(name);
        if snapshots > 0 {
            return Err(Error::Conflict(format!(
                "'{name}' has {snapshots} snapshot(s): delete them first (hako snapshot-delete)"
            )));
        }
        if slot.inner().running().is_some() {
            return Err(Error::Conflict(format!(
                "'{name}' is running: destroy or shut it down before undefining it"
            )));
        }
        let definition = self.remove_vm(&slot)?;
        Ok(Undefined { definition })
    }

    /// Forgets `slot`'s VM (not running; the caller holds `op`): its definition
    /// file, its entry and its files in `run/`.
    pub(crate) fn remove_vm(&self, slot: &Slot) -> Result<Definition> {
        let name = slot.name.as_str();
        self.sd.remove(name).map_err(Error::io(format!(
            "cannot remove {}",
            self.sd.definition(name).display()
        )))?;
        let mut g = slot.inner();
        g.removed = true;
        let definition = g.def.clone();
        drop(g);
        lock(&self.vms).remove(name);
        let sd = &self.sd;
        let log = sd.log(name);
        for f in [
            sd.run_config(name),
            sd.pid(name),
            sd.exit(name),
            sd.api_socket(name),
            sd.console_in(name),
            log.with_extension("log.1"),
            log,
        ] {
            let _ = fs::remove_file(f);
        }
        Ok(definition)
    }

    /// For an incoming migration: defines `def`, or takes it over for the VM of
    /// that name and uuid when it is not running. Whether it was made new.
    pub(crate) fn take_incoming_definition(&self, def: Definition) -> Result<(Arc<Slot>, bool)> {
        let existing = lock(&self.vms).get(&def.name).cloned();
        let Some(slot) = existing else {
            let name = def.name.clone();
            let v = serde_json::to_value(&def).map_err(|e| Error::Failed(e.to_string()))?;
            self.define(v)?;
            return Ok((self.slot(&name)?, true));
        };
        let mut g = slot.inner();
        if g.def.uuid != def.uuid {
            return Err(Error::Conflict(format!(
                "a VM named '{}' with another uuid ({}) is defined here",
                def.name, g.def.uuid
            )));
        }
        if g.running().is_some() {
            return Err(Error::Conflict(format!("'{}' runs here already", def.name)));
        }
        self.sd.save(&def).map_err(Error::io(format!(
            "cannot write {}",
            self.sd.definition(&def.name).display()
        )))?;
        g.def = def;
        drop(g);
        Ok((slot, false))
    }

    /// `GET /v1/vms`.
    pub fn list(&self) -> Vec<VmStatus> {
        self.slots().iter().map(|s| s.inner().status()).collect()
    }

    /// `GET /v1/vms/{name}`.
    pub fn info(&self, name: &str) -> Result<VmInfo> {
        let slot = self.slot(name)?;
        Ok(info_of(&slot))
    }

    /// `GET /v1/vms/{name}/log`: the console buffer from `offset` (the offset it
    /// starts at, the bytes, and where they end).
    pub fn log(&self, name: &str, offset: u64) -> Result<(u64, Vec<u8>)> {
        let slot = self.slot(name)?;
        let ring = lock(&slot.log);
        Ok(ring.since(offset))
    }

    /// `GET /v1/host`: what `hako host --json` prints, and the VMs' share.
    pub async fn host(&self) -> Result<HostInfo> {
        let exe = self.exe.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&exe)
                .args(["host", "--json"])
                .stdin(std::process::Stdio::null())
                .output()
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
        .map_err(Error::io(format!("cannot run {} host", self.exe.display())))?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "`hako host --json` failed: {}",
                process::last_line(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        let host: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Failed(format!("`hako host --json` printed no JSON: {e}")))?;
        let statuses = self.list();
        let running: Vec<&VmStatus> = statuses
            .iter()
            .filter(|s| matches!(s.state, VmState::Running | VmState::Paused))
            .collect();
        Ok(HostInfo {
            host,
            defined_vms: statuses.len() as u32,
            running_vms: running.len() as u32,
            committed_memory_bytes: running.iter().map(|s| s.memory_bytes).sum(),
            broken_definitions: self
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.path.display(), p.reason))
                .collect(),
        })
    }
}

fn info_of(slot: &Slot) -> VmInfo {
    let mut g = slot.inner();
    VmInfo {
        definition: g.def.clone(),
        status: g.status(),
    }
}

/// Puts the end of an old console log (from `from`) into the VM's buffer.
fn load_log_tail(path: &Path, from: u64, slot: &Slot) {
    let Ok(mut f) = fs::File::open(path) else {
        return;
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_ok() && f.read_to_end(&mut buf).is_ok() {
        lock(&slot.log).push(&buf);
    }
}
