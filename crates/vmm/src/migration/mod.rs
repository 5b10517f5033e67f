//! Live migration: pre-copy of guest memory while the VM runs, rounds of the pages
//! written meanwhile until the rest fits the downtime limit at the measured
//! bandwidth, then a pause, the last pages and the state, and the destination
//! resumes. The stream (stream.rs) is versioned and checksummed; any failure before
//! the destination confirms leaves the source running.

pub mod send;
pub mod stream;
pub mod uri;

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};
use vmm_types::CpuidEntry;

use crate::config::{AccelKind, VmConfig};
use crate::machine::Machine;
use crate::run::Start;
use crate::snapshot::state_file;
use stream::{Kind, StreamError};
pub use uri::MigrationUri;

/// What the destination needs before any memory arrives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Offer {
    pub config: VmConfig,
    pub source_accel: String,
    pub cpuid: Vec<CpuidEntry>,
    pub memory: Vec<(u64, u64)>,
}

/// How a migration is to be done.
#[derive(Debug, Clone, Copy)]
pub struct MigrateOptions {
    /// The longest the VM may be stopped (QEMU's default: 300 ms).
    pub downtime_limit: Duration,
    /// Give up (the source keeps running) if memory has not converged by then.
    pub timeout: Duration,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            downtime_limit: Duration::from_millis(300),
            timeout: Duration::from_secs(120),
        }
    }
}

/// What a migration did, as the source measured it.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub uri: String,
    pub total_ms: f64,
    /// From pausing the VM here to the destination's confirmation that it runs.
    pub downtime_ms: f64,
    /// Pre-copy rounds after the first full pass.
    pub rounds: u32,
    pub pages_sent: u64,
    pub bytes_sent: u64,
    /// Measured throughput in MiB/s.
    pub bandwidth_mib_s: f64,
}

/// A stream in both directions.
pub(crate) trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// The destination: waits for one migration on `uri`, builds the machine the
/// source describes (on `accel` when given), loads its memory and state, and starts
/// it. Returns the started VM's handle; the source is told only once it runs.
/// `built` learns what ends the VM once its machine exists, before it starts.
pub fn receive(
    uri: &MigrationUri,
    accel: Option<AccelKind>,
    out: Box<dyn Write + Send>,
    built: &dyn Fn(crate::Ender),
) -> Result<crate::VmHandle> {
    let mut conn = uri
        .accept()
        .with_context(|| format!("cannot wait for a migration on {uri}"))?;
    match receive_on(&mut *conn, accel, out, built) {
        Ok(vm) => Ok(vm),
        Err(e) => {
            // Best effort: the source is told why and keeps running.
            let _ = stream::write_frame(&mut *conn, Kind::Abort, format!("{e:#}").as_bytes());
            Err(e)
        }
    }
}

fn receive_on(
    conn: &mut dyn Conn,
    accel: Option<AccelKind>,
    out: Box<dyn Write + Send>,
    built: &dyn Fn(crate::Ender),
) -> Result<crate::VmHandle> {
    stream::read_header(conn)?;
    let offer: Offer = serde_json::from_slice(&stream::expect_frame(conn, Kind::Config)?)
        .map_err(|e| StreamError::Corrupt(format!("the offer does not parse: {e}")))?;
    let mut config = offer.config;
    if let Some(a) = accel {
        config.accel = a;
    }
    let mem = crate::snapshot::memory::fresh(&offer.memory)
        .context("cannot allocate the guest's memory")?;
    let machine = Machine::incoming(config, out, mem)?;
    machine
        .vm
        .check_cpuid(&offer.cpuid)
        .with_context(|| format!("cannot run the {} guest here", offer.source_accel))?;
    stream::write_frame(conn, Kind::Ready, &[])?;
    let mut pages = 0u64;
    let state = loop {
        let (kind, payload) = stream::read_frame(conn)?;
        match kind {
            Kind::Pages => stream::for_each_page(&payload, |gpa, data| {
                let zero = [0u8; stream::PAGE];
                machine
                    .mem
                    .write_slice(data.unwrap_or(&zero), GuestAddress(gpa))
                    .map_err(|_| StreamError::Corrupt(format!("page {gpa:#x} is not guest RAM")))?;
                pages += 1;
                Ok(())
            })?,
            Kind::State => break state_file::decode(&payload).context("the migrated state")?,
            k => bail!(StreamError::Corrupt(format!("unexpected {k:?} frame"))),
        }
    };
    stream::expect_frame(conn, Kind::End)?;
    tracing::info!("migration: {pages} pages received");
    machine
        .devices
        .restore(&state.devices)
        .context("cannot restore the devices")?;
    let start = Start::Restored {
        vm: Box::new(state.vm),
        vcpus: state.vcpus,
    };
    built(machine.ender());
    let vm = machine.start(start, false)?;
    if let Err(e) = stream::write_frame(conn, Kind::Running, &[]) {
        // The source cannot know the VM runs here: it will resume its own copy, so
        // this one must not run on.
        vm.end(crate::ExitReason::Error(format!(
            "the migration source went away before it learned the VM runs here: {e}"
        )));
        let _ = vm.wait();
        bail!("the migration source went away at the end: {e}");
    }
    Ok(vm)
}
