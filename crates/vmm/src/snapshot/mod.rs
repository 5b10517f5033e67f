//! Snapshots: a directory holding the VM's config (`config.json`, editable), its
//! state (`state.bin`: vCPUs, interrupt controllers and clock, devices) and its
//! memory (`memory.bin`, zero pages as holes). Disks are not copied: they are the
//! user's to keep as they were (docs/snapshot.md); they are flushed before the
//! state is taken.

pub mod memory;
pub mod state_file;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use vmm_types::CpuState;

use crate::config::{AccelKind, VmConfig};
use crate::machine::Machine;
pub use memory::{MemoryWritten, RestoreMode};
pub use state_file::{SavedState, StateFileError};

pub const CONFIG_FILE: &str = "config.json";
pub const STATE_FILE: &str = "state.bin";
pub const MEMORY_FILE: &str = "memory.bin";

/// What taking a snapshot did.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    pub dir: PathBuf,
    pub state_bytes: u64,
    pub memory_bytes: u64,
    /// Bytes of memory that were not zero (the rest are holes in the file).
    pub memory_data_bytes: u64,
    /// How long the VM was paused for the snapshot.
    pub paused_ms: f64,
}

/// The state of `m` (paused, vCPU states taken) as a [`SavedState`].
pub(crate) fn saved_state(m: &Machine, vcpus: Vec<CpuState>) -> Result<SavedState> {
    Ok(SavedState {
        build: env!("CARGO_PKG_VERSION").to_string(),
        accel: m.accel_name().to_string(),
        cpuid: m.vm.cpuid(),
        memory: memory::layout(&m.mem),
        vm: m
            .vm
            .save_state()
            .context("cannot save the interrupt controllers and clock")?,
        vcpus,
        devices: m.devices.save(),
    })
}

/// Writes the snapshot of paused machine `m` to `dir`. The state file is written
/// last, under a temporary name renamed into place, so a directory without one is
/// not a snapshot.
pub(crate) fn write(m: &Machine, vcpus: Vec<CpuState>, dir: &Path) -> Result<(u64, MemoryWritten)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create snapshot directory {}", dir.display()))?;
    let state = saved_state(m, vcpus)?;
    let config = serde_json::to_string_pretty(&m.config).expect("configs serialize");
    std::fs::write(dir.join(CONFIG_FILE), config + "\n")
        .with_context(|| format!("cannot write {}", dir.join(CONFIG_FILE).display()))?;
    let mem = memory::write(&m.mem, &dir.join(MEMORY_FILE))
        .with_context(|| format!("cannot write {}", dir.join(MEMORY_FILE).display()))?;
    let bytes = state_file::encode(&state);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, dir.join(STATE_FILE)))
        .with_context(|| format!("cannot write {}", dir.join(STATE_FILE).display()))?;
    Ok((bytes.len() as u64, mem))
}

/// A snapshot read back, ready to build a machine from.
pub struct Snapshot {
    pub config: VmConfig,
    pub state: SavedState,
    pub memory: accel::GuestMemory,
}

/// Reads the snapshot in `dir`; `accel` overrides the accelerator it was saved on.
pub fn load(dir: &Path, accel: Option<AccelKind>, mode: RestoreMode) -> Result<Snapshot> {
    let t = Instant::now();
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let mut config: VmConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a VM config", cfg_path.display()))?;
    if let Some(a) = accel {
        config.accel = a;
    }
    crate::machine::check_host_memory(config.memory)?;
    let state_path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&state_path)
        .with_context(|| format!("cannot read {}", state_path.display()))?;
    let state = state_file::decode(&bytes).with_context(|| format!("{}", state_path.display()))?;
    if state.vcpus.len() != config.cpus as usize {
        bail!(
            "{}: {} vCPU states for a config with {} vCPUs",
            state_path.display(),
            state.vcpus.len(),
            config.cpus
        );
    }
    let ram: u64 = state.memory.iter().map(|r| r.1).sum();
    let expect = boot::guest_ram_ranges(config.memory)
        .iter()
        .map(|r| r.1 as u64)
        .sum::<u64>();
    if ram != expect {
        bail!(
            "{}: the state holds {} MiB of RAM, the config asks for {} MiB",
            dir.display(),
            ram >> 20,
            config.memory >> 20
        );
    }
    let memory = memory::load(&dir.join(MEMORY_FILE), &state.memory, mode)
        .context("cannot load the guest's memory")?;
    tracing::debug!("snapshot read in {:?}", t.elapsed());
    Ok(Snapshot {
        config,
        state,
        memory,
    })
}
