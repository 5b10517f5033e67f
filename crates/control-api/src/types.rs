//! What the API exchanges, as JSON. These mirror `vmm`'s types so that the OpenAPI
//! document describes them without `vmm` depending on the documentation crate.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error: what went wrong, in one line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// The VM's life: created (started paused, never run), running, paused, stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Paused,
    Stopped,
}

/// `GET /v1/vm`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    pub state: State,
    /// `kvm` or `emu`.
    pub accel: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Milliseconds since the VM was started.
    pub uptime_ms: u64,
    /// The VM's configuration, as a snapshot's `config.json` holds it.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// `PUT /v1/vm/snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The directory to write (created if missing; its snapshot files are replaced).
    pub dir: String,
    /// Leave the VM paused afterwards (default: it resumes if it was running).
    #[serde(default)]
    pub stay_paused: bool,
}

/// What a snapshot wrote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotReport {
    pub dir: String,
    pub state_bytes: u64,
    pub memory_bytes: u64,
    /// Memory bytes that were not zero (the rest are holes in the memory file).
    pub memory_data_bytes: u64,
    /// How long the VM was paused for it, in milliseconds.
    pub paused_ms: f64,
}

/// `PUT /v1/vm/migrate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// Where `hako run --incoming` waits: `tcp:HOST:PORT` or `unix:PATH`.
    pub uri: String,
    /// The longest the VM may be stopped, in milliseconds (default 300).
    #[serde(default)]
    pub downtime_ms: Option<u64>,
    /// Give up, the VM running on here, if memory has not converged after this many
    /// seconds (default 120).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// What a migration did, as the source measured it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MigrationReport {
    pub uri: String,
    pub total_ms: f64,
    /// From pausing the VM here to the destination's word that it runs there.
    pub downtime_ms: f64,
    /// Rounds of dirty pages after the first pass over memory.
    pub rounds: u32,
    pub pages_sent: u64,
    pub bytes_sent: u64,
    pub bandwidth_mib_s: f64,
}

impl From<vmm::migration::MigrationReport> for MigrationReport {
    fn from(r: vmm::migration::MigrationReport) -> Self {
        MigrationReport {
            uri: r.uri,
            total_ms: r.total_ms,
            downtime_ms: r.downtime_ms,
            rounds: r.rounds,
            pages_sent: r.pages_sent,
            bytes_sent: r.bytes_sent,
            bandwidth_mib_s: r.bandwidth_mib_s,
        }
    }
}

impl From<vmm::VmInfo> for VmInfo {
    fn from(i: vmm::VmInfo) -> Self {
        VmInfo {
            state: match i.state {
                vmm::RunState::Created => State::Created,
                vmm::RunState::Running => State::Running,
                vmm::RunState::Paused => State::Paused,
                vmm::RunState::Stopped => State::Stopped,
            },
            accel: i.accel.to_string(),
            vcpus: i.vcpus,
            memory_bytes: i.memory_bytes,
            uptime_ms: i.uptime_ms,
            config: serde_json::to_value(&i.config).expect("configs serialize"),
        }
    }
}

impl From<vmm::snapshot::SnapshotReport> for SnapshotReport {
    fn from(r: vmm::snapshot::SnapshotReport) -> Self {
        SnapshotReport {
            dir: r.dir.display().to_string(),
            state_bytes: r.state_bytes,
            memory_bytes: r.memory_bytes,
            memory_data_bytes: r.memory_data_bytes,
            paused_ms: r.paused_ms,
        }
    }
}

/// `PUT /v1/vm/balloon`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BalloonRequest {
    /// Memory the guest should give back to the host, in bytes (0 deflates fully).
    pub target_bytes: u64,
}

/// The guest's memory figures as its balloon driver last reported them (bytes or
/// counts; absent when the driver does not report one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct GuestMemoryStats {
    pub swap_in: Option<u64>,
    pub swap_out: Option<u64>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    pub free_memory: Option<u64>,
    pub total_memory: Option<u64>,
    pub available_memory: Option<u64>,
    pub disk_caches: Option<u64>,
}

/// `GET` and `PUT /v1/vm/balloon`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BalloonInfo {
    /// Memory the host asked the guest to give back, in bytes.
    pub target_bytes: u64,
    /// Memory the guest has given back, in bytes.
    pub actual_bytes: u64,
    /// 4 KiB pages discarded through inflation since the VM started.
    pub inflated_pages: u64,
    /// Bytes the guest reported free (free page reporting) and the host discarded.
    pub reported_bytes: u64,
    pub stats: Option<GuestMemoryStats>,
    /// When the statistics came, in seconds since the Unix epoch.
    pub stats_time: Option<u64>,
}

impl From<vmm::BalloonInfo> for BalloonInfo {
    fn from(b: vmm::BalloonInfo) -> Self {
        BalloonInfo {
            target_bytes: b.target_bytes,
            actual_bytes: b.actual_bytes,
            inflated_pages: b.inflated_pages,
            reported_bytes: b.reported_bytes,
            stats: b.stats.map(|s| GuestMemoryStats {
                swap_in: s.swap_in,
                swap_out: s.swap_out,
                major_faults: s.major_faults,
                minor_faults: s.minor_faults,
                free_memory: s.free_memory,
                total_memory: s.total_memory,
                available_memory: s.available_memory,
                disk_caches: s.disk_caches,
            }),
            stats_time: b.stats_time,
        }
    }
}
