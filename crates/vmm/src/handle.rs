//! The lifecycle core: a started VM is driven through a [`VmHandle`], whose commands
//! go over a channel to one control thread, so pause, resume, snapshot and stop
//! never race each other. States: Created (started paused, never run) → Running ⇄
//! Paused → Stopped (docs/snapshot.md).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use vm_device::bus::lock;

use crate::config::VmConfig;
use crate::control::{Control, VcpuReply, VcpuRequest};
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::migration::{MigrateOptions, MigrationReport, MigrationUri};
use crate::platform::InputSink;
use crate::run::ExitReason;
use crate::snapshot::{self, SnapshotReport};
use vmm_types::CpuState;

/// How long the vCPUs get to reach a pause point.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Started paused (restored or waiting for a migration) and not yet run.
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunState::Created => "created",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Stopped => "stopped",
        })
    }
}

/// What `info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct VmInfo {
    pub state: RunState,
    pub accel: &'static str,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Since the VM was started (paused time included).
    pub uptime_ms: u64,
    pub config: VmConfig,
}

/// A lifecycle command.
pub(crate) enum Command {
    Info,
    Pause,
    Resume,
    PowerButton,
    Stop,
    Snapshot {
        dir: PathBuf,
        stay_paused: bool,
    },
    Migrate {
        uri: MigrationUri,
        opts: MigrateOptions,
    },
}

pub(crate) enum Reply {
    Info(Box<VmInfo>),
    Snapshot(SnapshotReport),
    Migrated(MigrationReport),
    Done,
}

type Envelope = (Command, mpsc::Sender<Result<Reply>>);

struct Shared {
    control: Arc<Control>,
    input: InputSink,
    /// For the GDB server: guest memory, vCPU count, accelerator.
    mem: accel::GuestMemory,
    ncpus: usize,
    accel: &'static str,
    /// The vCPU threads and the control thread, joined by `wait`, which then drops
    /// the machine (closing its disks and flushing its consoles) as soon as the VM
    /// has ended, whoever still holds a handle.
    threads: Mutex<Vec<JoinHandle<()>>>,
    balloon: Option<crate::balloon::BalloonCtl>,
    memory: u64,
}

/// Drives a started VM. Cheap to clone; every clone talks to the same VM.
#[derive(Clone)]
pub struct VmHandle {
    tx: mpsc::Sender<Envelope>,
    shared: Arc<Shared>,
}

impl VmHandle {
    pub(crate) fn new(
        machine: Arc<Machine>,
        threads: Vec<JoinHandle<()>>,
        initial: RunState,
    ) -> VmHandle {
        let (tx, rx) = mpsc::channel::<Envelope>();
        let control = machine.control.clone();
        let input = machine.input.clone();
        let mem = machine.mem.clone();
        let ncpus = machine.config.cpus as usize;
        let accel = machine.accel_name();
        let balloon = machine.balloon.clone();
        let memory = machine.config.memory;
        let mut threads = threads;
        // If the control thread cannot start, commands answer "stopped"; the VM
        // itself still runs and ends as usual.
        if let Ok(t) = thread::Builder::new()
            .name("vm-control".into())
            .spawn(move || {
                sandbox::enter(sandbox::ThreadKind::Main);
                control_loop(machine, rx, initial)
            })
        {
            threads.push(t);
        }
        VmHandle {
            tx,
            shared: Arc::new(Shared {
                control,
                input,
                mem,
                ncpus,
                accel,
                balloon,
                memory,
                threads: Mutex::new(threads),
            }),
        }
    }

    fn call(&self, cmd: Command) -> Result<Reply> {
        let (rtx, rrx) = mpsc::channel();
        let stopped = || Error::WrongState {
            state: RunState::Stopped,
            action: "this",
            needs: "running or paused",
        };
        self.tx.send((cmd, rtx)).map_err(|_| stopped())?;
        rrx.recv().map_err(|_| stopped())?
    }

    pub fn info(&self) -> Result<VmInfo> {
        match self.call(Command::Info)? {
            Reply::Info(i) => Ok(*i),
            _ => unreachable!("info answers with info"),
        }
    }

    /// Writes a snapshot to `dir` (running or paused). A running VM is paused for it
    /// and resumes afterwards unless `stay_paused`.
    pub fn snapshot(&self, dir: &Path, stay_paused: bool) -> Result<SnapshotReport> {
        let cmd = Command::Snapshot {
            dir: dir.to_path_buf(),
            stay_paused,
        };
        match self.call(cmd) {
            Ok(Reply::Snapshot(r)) => Ok(r),
            Ok(_) => unreachable!("snapshot answers with a report"),
            Err(Error::Failed(e)) => Err(Error::Failed(sandbox_hint(e, dir))),
            Err(e) => Err(e),
        }
    }

    /// Live-migrates the VM to a `hako run --incoming` at `uri`. On success the VM
    /// here has ended (its `wait` returns [`ExitReason::Migrated`]); on failure it
    /// runs on (or stays paused) and the error says why.
    pub fn migrate(&self, uri: MigrationUri, opts: MigrateOptions) -> Result<MigrationReport> {
        match self.call(Command::Migrate { uri, opts })? {
            Reply::Migrated(r) => Ok(r),
            _ => unreachable!("migrate answers with a report"),
        }
    }

    /// Stops every vCPU at an instruction boundary; device work from the host
    /// (console input) waits until `resume`.
    pub fn pause(&self) -> Result<()> {
        self.call(Command::Pause).map(drop)
    }

    pub fn resume(&self) -> Result<()> {
        self.call(Command::Resume).map(drop)
    }

    /// Presses the ACPI power button: the guest shuts itself down if it listens.
    pub fn power_button(&self) -> Result<()> {
        self.call(Command::PowerButton).map(drop)
    }

    /// Ends the VM now (no guest shutdown).
    pub fn stop(&self) -> Result<()> {
        self.call(Command::Stop).map(drop)
    }

    /// Sets the balloon's target (bytes the guest should give back) when given, and
    /// reports the balloon with the guest's latest statistics. A paused VM gets the
    /// new target when it resumes.
    pub fn balloon(&self, target: Option<u64>) -> Result<virtio::balloon::BalloonInfo> {
        if self.ended() {
            return Err(Error::WrongState {
                state: RunState::Stopped,
                action: "the balloon",
                needs: "running or paused",
            });
        }
        match &self.shared.balloon {
            Some(b) => b.update(target, self.shared.memory),
            None => Err(Error::BadRequest(
                "this VM has no balloon (start it with --balloon SIZE)".into(),
            )),
        }
    }

    /// Ends the VM for `reason` (signals, the console's quit sequence), in any state.
    pub fn end(&self, reason: ExitReason) {
        self.shared.control.request(reason);
    }

    /// Where console input for the guest goes. While the VM is paused it takes
    /// nothing (returns 0), so the input waits with the host.
    pub fn input(&self) -> InputSink {
        let control = self.shared.control.clone();
        let input = self.shared.input.clone();
        Arc::new(move |b: &[u8]| {
            if control.pausing() || control.reason().is_some() {
                0
            } else {
                input(b)
            }
        })
    }

    /// What the GDB server drives the VM through.
    pub(crate) fn debug_parts(&self) -> (Arc<Control>, accel::GuestMemory, usize, &'static str) {
        let s = &self.shared;
        (s.control.clone(), s.mem.clone(), s.ncpus, s.accel)
    }

    /// Whether the VM has ended.
    pub fn ended(&self) -> bool {
        self.shared.control.reason().is_some()
    }

    /// Waits until the VM ends and its threads are gone (the machine with them);
    /// returns why it ended.
    pub fn wait(&self) -> ExitReason {
        let reason = self.shared.control.wait_exit();
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        let mut panicked = false;
        for t in threads {
            panicked |= t.join().is_err();
        }
        if panicked {
            return ExitReason::Error("a VM thread panicked".into());
        }
        reason
    }
}

/// Parks every vCPU; on failure the VM keeps running (or has ended).
fn pause(m: &Machine, state: &mut RunState) -> Result<()> {
    if let Err(e) = park_all(m) {
        if m.control.reason().is_some() {
            *state = RunState::Stopped;
        }
        return Err(e);
    }
    *state = RunState::Paused;
    Ok(())
}

/// Parks every vCPU (within [`PAUSE_TIMEOUT`]); when they do not all park, lets
/// them run on and says why: the VM ended, or the timeout passed.
pub(crate) fn park_all(m: &Machine) -> Result<()> {
    if m.control.pause(PAUSE_TIMEOUT) {
        return Ok(());
    }
    m.control.resume();
    if m.control.reason().is_some() {
        return Err(wrong(RunState::Stopped, "pause", "running"));
    }
    Err(Error::PauseTimeout(PAUSE_TIMEOUT.as_millis() as u64))
}

/// The vCPUs' states, each taken on its own (parked) thread.
pub(crate) fn vcpu_states(m: &Machine) -> Result<Vec<CpuState>> {
    (0..m.config.cpus as usize)
        .map(|i| match m.control.on_vcpu(i, VcpuRequest::Save) {
            Some(VcpuReply::Saved(Ok(s))) => Ok(*s),
            Some(VcpuReply::Saved(Err(e))) => {
                Err(anyhow::anyhow!("cannot save vCPU {i}: {e}").into())
            }
            Some(VcpuReply::Done(_)) => unreachable!("a save is answered with a state"),
            None => Err(wrong(RunState::Stopped, "saving the vCPUs", "paused")),
        })
        .collect()
}

fn take_snapshot(m: &Machine, dir: &Path, paused_at: Instant) -> Result<SnapshotReport> {
    for (i, d) in m.disks.iter().enumerate() {
        d.flush()
            .map_err(|e| anyhow::anyhow!("cannot flush disk {i} before the snapshot: {e}"))?;
    }
    let vcpus = vcpu_states(m)?;
    let (state_bytes, mem) = snapshot::write(m, vcpus, dir)?;
    Ok(SnapshotReport {
        dir: dir.to_path_buf(),
        state_bytes,
        memory_bytes: mem.total_bytes,
        memory_data_bytes: mem.data_bytes,
        paused_ms: paused_at.elapsed().as_secs_f64() * 1e3,
    })
}

fn wrong(state: RunState, action: &'static str, needs: &'static str) -> Error {
    Error::WrongState {
        state,
        action,
        needs,
    }
}

/// Serves commands until the VM ends; then drops the machine (the vCPU threads
/// hold the only other references, and `wait` joins them).
fn control_loop(m: Arc<Machine>, rx: mpsc::Receiver<Envelope>, initial: RunState) {
    let started = Instant::now();
    let mut state = initial;
    loop {
        if m.control.reason().is_some() {
            // Commands already queued learn that the VM has stopped.
            while let Ok((_, reply)) = rx.try_recv() {
                let _ = reply.send(Err(wrong(RunState::Stopped, "this", "running or paused")));
            }
            return;
        }
        let (cmd, reply) = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(e) => e,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let r = execute(&m, cmd, &mut state, started);
        let _ = reply.send(r);
    }
}

fn execute(m: &Machine, cmd: Command, state: &mut RunState, started: Instant) -> Result<Reply> {
    let s = *state;
    match cmd {
        Command::Info => Ok(Reply::Info(Box::new(VmInfo {
            state: s,
            accel: m.accel_name(),
            vcpus: m.config.cpus,
            memory_bytes: m.config.memory,
            uptime_ms: started.elapsed().as_millis() as u64,
            config: m.config.clone(),
        }))),
        Command::Pause => {
            if s != RunState::Running {
                return Err(wrong(s, "pause", "running"));
            }
            pause(m, state).map(|_| Reply::Done)
        }
        Command::Resume => {
            if !matches!(s, RunState::Paused | RunState::Created) {
                return Err(wrong(s, "resume", "paused"));
            }
            m.control.resume();
            *state = RunState::Running;
            Ok(Reply::Done)
        }
        Command::PowerButton => {
            if s != RunState::Running {
                return Err(wrong(s, "the power button", "running"));
            }
            lock(&m.pm).press_power_button();
            Ok(Reply::Done)
        }
        Command::Snapshot { dir, stay_paused } => {
            if !matches!(s, RunState::Running | RunState::Paused) {
                return Err(wrong(s, "a snapshot", "running or paused"));
            }
            let t = Instant::now();
            if s == RunState::Running {
                pause(m, state)?;
            }
            let r = take_snapshot(m, &dir, t);
            if s == RunState::Running && !stay_paused {
                m.control.resume();
                *state = RunState::Running;
            }
            r.map(Reply::Snapshot)
        }
        Command::Migrate { uri, opts } => {
            crate::migration::send::migrate(m, state, &uri, opts).map(Reply::Migrated)
        }
        Command::Stop => {
            if s == RunState::Stopped {
                return Err(wrong(s, "stop", "running or paused"));
            }
            m.control.request(ExitReason::Stopped);
            *state = RunState::Stopped;
            Ok(Reply::Done)
        }
    }
}

/// `e` with how to allow `dir`, when it is the sandbox's refusal to write there.
fn sandbox_hint(e: anyhow::Error, dir: &Path) -> anyhow::Error {
    let hint = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(|io| sandbox::write_refused(io, dir));
    match hint {
        Some(h) => anyhow::anyhow!("{e:#}; {h}"),
        None => e,
    }
}
