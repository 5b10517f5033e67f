//! The source side of a migration, run by the VM's control thread.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use vm_memory::{Bytes, GuestAddress};

use super::stream::{self, Kind, PageBatch, StreamError, PAGE};
use super::{Conn, MigrateOptions, MigrationReport, MigrationUri, Offer};
use crate::error::{Error, Result};
use crate::handle::{self, RunState};
use crate::machine::Machine;
use crate::run::ExitReason;
use crate::snapshot::{self, state_file};

/// Below this many dirty pages the last round is never worth another one (unless
/// the caller asked for no downtime at all: then only an empty round converges).
const SMALL_ROUND: u64 = 64;

/// Rounds are at least this far apart: a round of a few pages takes microseconds,
/// too short for the vCPUs (just unparked) to run, so its dirty count would measure
/// the host's scheduler rather than the guest, and parking them thousands of times a
/// second would starve the guest.
const MIN_ROUND: Duration = Duration::from_millis(20);

/// Counts what went over the wire.
#[derive(Default)]
struct Sent {
    pages: u64,
    bytes: u64,
}

fn send_batch(conn: &mut dyn Conn, b: &mut PageBatch, sent: &mut Sent) -> Result<()> {
    if b.is_empty() {
        return Ok(());
    }
    let payload = b.take();
    sent.bytes += payload.len() as u64 + 9;
    stream::write_frame(conn, Kind::Pages, &payload).map_err(io_err)?;
    Ok(())
}

fn io_err(e: impl std::fmt::Display) -> Error {
    Error::Failed(anyhow!("migration: {e}"))
}

/// Sends the pages set in `bitmaps` (one per RAM region), zero pages as markers;
/// with `skip_zero` (the first pass: the destination's memory is zeroed) leaves
/// those out.
fn send_pages(
    m: &Machine,
    conn: &mut dyn Conn,
    pages: impl Iterator<Item = u64>,
    skip_zero: bool,
    sent: &mut Sent,
) -> Result<()> {
    let mut batch = PageBatch::default();
    let mut buf = vec![0u8; PAGE];
    for gpa in pages {
        m.mem
            .read_slice(&mut buf, GuestAddress(gpa))
            .map_err(|e| io_err(format!("reading guest page {gpa:#x}: {e}")))?;
        if skip_zero && buf.iter().all(|&b| b == 0) {
            continue;
        }
        batch.push(gpa, &buf);
        sent.pages += 1;
        if batch.full() {
            send_batch(conn, &mut batch, sent)?;
        }
    }
    send_batch(conn, &mut batch, sent)
}

/// Every page of guest RAM.
fn all_pages(layout: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    layout
        .iter()
        .flat_map(|&(a, l)| (0..l / PAGE as u64).map(move |p| a + p * PAGE as u64))
}

/// The pages set in the log's bitmaps.
fn dirty_pages(layout: &[(u64, u64)], bits: &[Vec<u64>]) -> Vec<u64> {
    let mut v = Vec::new();
    for (&(base, _), words) in layout.iter().zip(bits) {
        for (w, &word) in words.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let b = word.trailing_zeros() as u64;
                word &= word - 1;
                v.push(base + (w as u64 * 64 + b) * PAGE as u64);
            }
        }
    }
    v
}

/// Runs `f` with every vCPU parked: pauses a running VM for it and lets it go on.
fn with_parked<T>(m: &Machine, running: bool, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if running {
        handle::park_all(m)?;
    }
    let r = f();
    if running {
        m.control.resume();
    }
    r
}

/// Migrates the VM to `uri`. On success the VM here has ended (the destination runs
/// it); on failure it is as it was (running, or paused if it was), and the error
/// says why.
pub(crate) fn migrate(
    m: &Machine,
    state: &mut RunState,
    uri: &MigrationUri,
    opts: MigrateOptions,
) -> Result<MigrationReport> {
    if !matches!(*state, RunState::Running | RunState::Paused) {
        return Err(Error::WrongState {
            state: *state,
            action: "a migration",
            needs: "running or paused",
        });
    }
    let running = *state == RunState::Running;
    let t0 = Instant::now();
    let mut conn = uri.connect()?;
    let offer = Offer {
        config: m.config.clone(),
        source_accel: m.accel_name().to_string(),
        cpuid: m.vm.cpuid(),
        memory: snapshot::memory::layout(&m.mem),
    };
    stream::write_header(&mut *conn).map_err(io_err)?;
    let offer = serde_json::to_vec(&offer).expect("offers serialize");
    stream::write_frame(&mut *conn, Kind::Config, &offer).map_err(io_err)?;
    match stream::expect_frame(&mut *conn, Kind::Ready) {
        Ok(_) => {}
        Err(StreamError::Aborted(why)) => {
            return Err(Error::Failed(anyhow!(
                "the destination refused the VM: {why}"
            )))
        }
        Err(e) => return Err(io_err(e)),
    }

    with_parked(m, running, || {
        m.dirty.set_enabled(true);
        m.vm.set_dirty_log(Some(m.dirty.clone()))
            .map_err(|e| Error::Failed(e.into()))
    })?;
    let r = precopy_and_hand_over(m, &mut *conn, running, opts, t0);
    // Whatever happened, this VM no longer logs its writes.
    let _ = with_parked(m, running && r.is_err(), || {
        m.dirty.set_enabled(false);
        m.vm.set_dirty_log(None)
            .map_err(|e| Error::Failed(e.into()))
    });
    match r {
        Ok(mut report) => {
            report.uri = uri.to_string();
            m.control.request(ExitReason::Migrated(uri.to_string()));
            *state = RunState::Stopped;
            Ok(report)
        }
        Err(e) => {
            let _ = stream::write_frame(&mut *conn, Kind::Abort, e.to_string().as_bytes());
            Err(e)
        }
    }
}

fn precopy_and_hand_over(
    m: &Machine,
    conn: &mut dyn Conn,
    running: bool,
    opts: MigrateOptions,
    t0: Instant,
) -> Result<MigrationReport> {
    let layout = snapshot::memory::layout(&m.mem);
    let mut sent = Sent::default();
    let t = Instant::now();
    send_pages(m, conn, all_pages(&layout), true, &mut sent)?;
    let mut bandwidth = sent.bytes as f64 / t.elapsed().as_secs_f64().max(1e-6);
    let mut rounds = 0u32;
    let mut pending: Vec<u64>;
    let mut round_start = Instant::now();
    loop {
        if let Some(rest) = MIN_ROUND.checked_sub(round_start.elapsed()) {
            std::thread::sleep(rest);
        }
        round_start = Instant::now();
        pending = with_parked(m, running, || {
            m.vm.sync_dirty_log().map_err(|e| Error::Failed(e.into()))?;
            Ok(dirty_pages(&layout, &m.dirty.take()))
        })?;
        let n = pending.len() as u64;
        let estimate = Duration::from_secs_f64((n * PAGE as u64) as f64 / bandwidth);
        let small = n <= SMALL_ROUND && !opts.downtime_limit.is_zero();
        if small || estimate <= opts.downtime_limit {
            break;
        }
        if t0.elapsed() > opts.timeout {
            return Err(Error::Failed(anyhow!(
                "memory did not converge within {} s: {n} pages are written faster than \
                 {:.0} MiB/s carries them under the {} ms downtime limit",
                opts.timeout.as_secs(),
                bandwidth / (1 << 20) as f64,
                opts.downtime_limit.as_millis()
            )));
        }
        let t = Instant::now();
        let before = sent.bytes;
        send_pages(m, conn, pending.iter().copied(), false, &mut sent)?;
        let secs = t.elapsed().as_secs_f64();
        if secs > 0.0 {
            bandwidth = (sent.bytes - before) as f64 / secs;
        }
        rounds += 1;
    }

    // Stop the VM for the last pages and the state.
    let stopped = Instant::now();
    if running {
        handle::park_all(m)?;
    }
    let r = finish(m, conn, &layout, pending, &mut sent);
    if let Err(e) = r {
        if running {
            m.control.resume();
        }
        return Err(e);
    }
    let downtime = stopped.elapsed();
    Ok(MigrationReport {
        uri: String::new(),
        total_ms: t0.elapsed().as_secs_f64() * 1e3,
        downtime_ms: downtime.as_secs_f64() * 1e3,
        rounds,
        pages_sent: sent.pages,
        bytes_sent: sent.bytes,
        bandwidth_mib_s: bandwidth / (1 << 20) as f64,
    })
}

/// With the VM paused: the last dirty pages, the state, and the destination's word
/// that the VM runs there.
fn finish(
    m: &Machine,
    conn: &mut dyn Conn,
    layout: &[(u64, u64)],
    mut pending: Vec<u64>,
    sent: &mut Sent,
) -> Result<()> {
    for (i, d) in m.disks.iter().enumerate() {
        d.flush()
            .map_err(|e| Error::Failed(anyhow!("cannot flush disk {i}: {e}")))?;
    }
    m.vm.sync_dirty_log().map_err(|e| Error::Failed(e.into()))?;
    pending.extend(dirty_pages(layout, &m.dirty.take()));
    pending.sort_unstable();
    pending.dedup();
    send_pages(m, conn, pending.into_iter(), false, sent)?;
    let vcpus = handle::vcpu_states(m)?;
    let state = snapshot::saved_state(m, vcpus)?;
    stream::write_frame(conn, Kind::State, &state_file::encode(&state)).map_err(io_err)?;
    stream::write_frame(conn, Kind::End, &[]).map_err(io_err)?;
    conn.flush().map_err(io_err)?;
    match stream::expect_frame(conn, Kind::Running) {
        Ok(_) => Ok(()),
        Err(StreamError::Aborted(why)) => Err(Error::Failed(anyhow!(
            "the destination could not start the VM: {why}"
        ))),
        Err(e) => Err(io_err(e)),
    }
}
