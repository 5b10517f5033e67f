//! One VM in the daemon's table: its definition, whether a process runs it, and
//! the lock that puts the requests on it in a row.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::api::types::{ExitInfo, VmState, VmStatus};
use crate::definition::Definition;
use crate::events::EventsRef;
use crate::ring::{LogRing, LOG_CAPACITY};

/// Locks `m`, a poisoned lock included (no code here leaves the state half-changed
/// across a panic point).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the console follower of a run is told to finish (the line it appends to
/// the buffer once it has read everything the process wrote), and says it has.
#[derive(Default)]
pub(crate) struct Tail {
    end: Mutex<Option<String>>,
    done: AtomicBool,
}

pub(crate) type TailEnd = Arc<Tail>;

impl Tail {
    /// Tells the follower the process has ended, with its last line.
    pub fn finish(&self, line: String) {
        *lock(&self.end) = Some(line);
    }

    /// The last line, once the process has ended.
    pub fn ending(&self) -> Option<String> {
        lock(&self.end).clone()
    }

    pub fn set_done(&self) {
        self.done.store(true, Ordering::Release);
    }

    /// Waits (at most `limit`) for the follower to have read everything, so the
    /// next run's lines come after this one's.
    pub async fn wait_done(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.done.load(Ordering::Acquire) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A VM's entry.
pub(crate) struct Slot {
    pub name: String,
    /// Held by every request on this VM for its whole duration (and by the exit
    /// handling), so they happen one after another; other VMs are not held up.
    pub op: tokio::sync::Mutex<()>,
    pub inner: Mutex<Inner>,
    /// The last [`LOG_CAPACITY`] bytes of its console, over all its runs.
    pub log: Arc<Mutex<LogRing>>,
    /// Which console viewer may type.
    pub console: Arc<crate::console::Typist>,
    /// Where its state changes are published (see [`InnerGuard`]).
    events: EventsRef,
}

pub(crate) struct Inner {
    pub def: Definition,
    pub phase: Phase,
    pub last_exit: Option<ExitInfo>,
    pub note: Option<String>,
    /// When the restart policy started it again (the last minute's are kept).
    pub restarts: VecDeque<Instant>,
    /// Undefined: requests that were waiting for `op` find it gone.
    pub removed: bool,
    /// The console follower of the last run that ended.
    pub last_tail: Option<TailEnd>,
    next_generation: u64,
}

pub(crate) enum Phase {
    Defined,
    Crashed,
    Running(Proc),
}

/// A `hako run` process of the VM.
pub(crate) struct Proc {
    pub pid: u32,
    /// Tells this run from the ones before and after it (for late exit reports).
    pub generation: u64,
    pub started: SystemTime,
    pub paused: bool,
    /// Started by an earlier daemon: not our child, watched through /proc.
    pub adopted: bool,
    /// The exit, once the watcher has seen it.
    pub exited: watch::Receiver<Option<ExitInfo>>,
    pub tail_end: TailEnd,
    /// The write end of its console input FIFO (`run/NAME.in`), if it has one.
    pub input: Option<Arc<std::fs::File>>,
}

impl Slot {
    pub fn new(def: Definition, events: EventsRef) -> Arc<Slot> {
        Arc::new(Slot {
            name: def.name.clone(),
            op: tokio::sync::Mutex::new(()),
            inner: Mutex::new(Inner {
                def,
                phase: Phase::Defined,
                last_exit: None,
                note: None,
                restarts: VecDeque::new(),
                removed: false,
                last_tail: None,
                next_generation: 1,
            }),
            log: Arc::new(Mutex::new(LogRing::new(LOG_CAPACITY))),
            console: Arc::default(),
            events,
        })
    }

    /// The VM's state, locked; a change of its state is published when the
    /// guard is dropped.
    pub fn inner(&self) -> InnerGuard<'_> {
        let g = lock(&self.inner);
        let before = g.event_state();
        InnerGuard {
            g,
            before,
            slot: self,
        }
    }

    /// Publishes that the VM is new (`define`, or found at start).
    pub fn publish_defined(&self) {
        let state = lock(&self.inner).event_state();
        self.events.publish(&self.name, "new", state);
    }
}

/// [`Slot::inner`]'s guard: publishes the state change it saw when dropped.
pub(crate) struct InnerGuard<'a> {
    g: MutexGuard<'a, Inner>,
    before: &'static str,
    slot: &'a Slot,
}

impl std::ops::Deref for InnerGuard<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.g
    }
}

impl std::ops::DerefMut for InnerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.g
    }
}

impl Drop for InnerGuard<'_> {
    fn drop(&mut self) {
        let after = self.g.event_state();
        if after != self.before {
            self.slot
                .events
                .publish(&self.slot.name, self.before, after);
        }
    }
}

impl Slot {
    /// Appends a line of the daemon's own to the console buffer.
    pub fn note_in_log(&self, line: &str) {
        lock(&self.log).push(format!("[hakod] {line}\n").as_bytes());
    }
}

impl Inner {
    pub fn take_generation(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

    pub fn running(&self) -> Option<&Proc> {
        match &self.phase {
            Phase::Running(p) => Some(p),
            _ => None,
        }
    }

    pub fn running_mut(&mut self) -> Option<&mut Proc> {
        match &mut self.phase {
            Phase::Running(p) => Some(p),
            _ => None,
        }
    }

    /// The state as events name it: `undefined` once removed.
    fn event_state(&self) -> &'static str {
        if self.removed {
            "undefined"
        } else {
            self.state().name()
        }
    }

    pub fn state(&self) -> VmState {
        match &self.phase {
            Phase::Defined => VmState::Defined,
            Phase::Crashed => VmState::Crashed,
            Phase::Running(p) if p.paused => VmState::Paused,
            Phase::Running(_) => VmState::Running,
        }
    }

    /// Drops the restart times older than a minute; returns how many are left.
    pub fn recent_restarts(&mut self) -> usize {
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t).as_secs() >= 60)
        {
            self.restarts.pop_front();
        }
        self.restarts.len()
    }

    pub fn status(&mut self) -> VmStatus {
        let restarts = self.recent_restarts() as u32;
        let (pid, uptime_s) = match self.running() {
            Some(p) => (
                Some(p.pid),
                Some(
                    SystemTime::now()
                        .duration_since(p.started)
                        .unwrap_or_default()
                        .as_secs(),
                ),
            ),
            None => (None, None),
        };
        let c = &self.def.config;
        VmStatus {
            name: self.def.name.clone(),
            uuid: self.def.uuid.to_string(),
            state: self.state(),
            pid,
            uptime_s,
            autostart: self.def.autostart,
            restart_policy: self.def.restart_policy,
            accel: c.accel.name().to_string(),
            vcpus: c.cpus,
            memory_bytes: c.memory,
            last_exit: self.last_exit,
            restarts_last_minute: restarts,
            note: self.note.clone(),
        }
    }
}
