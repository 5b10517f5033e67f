//! What the daemon's API exchanges, as JSON.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::definition::{Definition, RestartPolicy};

/// A VM's state as the daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Defined, not running (never started, or stopped by request or by the guest).
    Defined,
    /// Its `hako run` process runs the guest.
    Running,
    /// Its process runs, the vCPUs are paused (`suspend`).
    Paused,
    /// Its process ended without being asked to, with a failure status or a
    /// signal, or while no daemon watched it.
    Crashed,
}

impl VmState {
    pub fn name(self) -> &'static str {
        match self {
            VmState::Defined => "defined",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Crashed => "crashed",
        }
    }
}

/// How a VM process ended: its exit code, or the signal that killed it; neither
/// when no daemon saw it end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// An exit with status 0.
    pub fn is_clean(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "exit status unknown".into(),
        }
    }
}

/// One VM in `GET /v1/vms`, and what every lifecycle action answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmStatus {
    pub name: String,
    pub uuid: String,
    pub state: VmState,
    /// The `hako run` process, while there is one.
    pub pid: Option<u32>,
    /// Seconds since the process started, while there is one.
    pub uptime_s: Option<u64>,
    pub autostart: bool,
    pub restart_policy: RestartPolicy,
    /// `kvm` or `emu`.
    pub accel: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// How the last run ended, if it has.
    pub last_exit: Option<ExitInfo>,
    /// Restarts by the restart policy in the last minute.
    pub restarts_last_minute: u32,
    /// A remark, e.g. why a crashed VM was not restarted.
    pub note: Option<String>,
}

/// `GET /v1/vms/{name}`: the definition and the state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    pub definition: Definition,
    pub status: VmStatus,
}

/// `GET /v1/vms/{name}/log?offset=N`: console output from an offset, for readers
/// that follow it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    /// The offset of the first byte of `data` (later than asked when older bytes
    /// have left the 1 MiB buffer).
    pub start: u64,
    /// The offset to ask for next.
    pub next: u64,
    /// The output, as text (bytes that are not UTF-8 are replaced).
    pub data: String,
}

/// Query of `GET /v1/vms/{name}/log`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Answer a `LogChunk` with the output from this offset (without it: the
    /// whole buffer as text/plain).
    pub offset: Option<u64>,
}

/// Query of `PUT /v1/vms/{name}/shutdown` and `/reboot`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// shutdown: wait up to this many seconds for the guest to power off (default
    /// 0: answer once the button is pressed). reboot: how long the guest has to
    /// power off before it is destroyed (default 30).
    pub wait_s: Option<u64>,
    /// reboot: destroy at once instead of pressing the power button first.
    pub force: Option<bool>,
}

/// `GET /v1/host`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    /// What `hako host --json` reports.
    #[schema(value_type = Object)]
    pub host: serde_json::Value,
    pub defined_vms: u32,
    pub running_vms: u32,
    /// The guest memory of the running (and paused) VMs, in bytes.
    pub committed_memory_bytes: u64,
    /// Definition files the daemon skipped when it started ("PATH: reason"); they
    /// are left on disk as they are.
    pub broken_definitions: Vec<String>,
}

/// `DELETE /v1/vms/{name}`: what was removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Undefined {
    pub definition: Definition,
}
