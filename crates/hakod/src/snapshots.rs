//! Snapshots of a running VM, kept by the daemon under `snapshots/VM/SNAP/`.
//!
//! A snapshot is what `hako run`'s own API writes (`PUT /v1/vm/snapshot`:
//! `config.json`, `state.bin`, `memory.bin`) plus a copy of every writable disk
//! (`disks/N.img`, the data extents only) taken while the VM is still paused, and
//! `meta.json`. It is written under `.SNAP.partial` and renamed into place last,
//! so a daemon killed in the middle leaves no half snapshot under the name.
//! Reverting stops the VM if it runs, copies the disks back and starts
//! `hako run --restore snapshots/VM/SNAP`: the guest goes on from the moment of
//! the snapshot. A snapshot's files are never rewritten (a second snapshot of the
//! same name is refused), so a VM restored from one with memory mapped from its
//! `memory.bin` is safe, and deleting it only unlinks the files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::types::VmStatus;
use crate::daemon::Daemon;
use crate::definition::{check_name, config_from_value};
use crate::disk_copy::copy_sparse;
use crate::error::{Error, Result};
use crate::lifecycle::{api_refusal, START_TIMEOUT};
use crate::process::{self, Boot};
use crate::store::{sync_dir, write_atomic};

/// How long the VM's API has to write a snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// A disk saved with a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotDisk {
    /// The image the VM uses (restored there on revert).
    pub path: String,
    /// The copy, under the snapshot's `disks/`.
    pub copy: String,
    /// Bytes of data copied (holes are not).
    pub data_bytes: u64,
}

/// One snapshot of a VM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    pub name: String,
    pub vm: String,
    /// When it was taken, in seconds since the Unix epoch.
    pub created: u64,
    /// Whether the VM was paused when it was taken (it stays paused after a revert).
    pub was_paused: bool,
    pub memory_bytes: u64,
    /// Memory bytes that were not zero.
    pub memory_data_bytes: u64,
    /// The writable disks, copied while the VM was paused (read-only ones are not).
    pub disks: Vec<SnapshotDisk>,
    /// How long the VM was paused for it (memory, devices and disk copies), in ms.
    pub paused_ms: f64,
}

/// `POST /v1/vms/{name}/snapshots`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// `[A-Za-z0-9_.-]{1,64}`; default: the Unix time, as libvirt names them.
    #[serde(default)]
    pub name: Option<String>,
}

/// `DELETE /v1/vms/{name}/snapshots/{snap}`: what was removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotDeleted {
    pub snapshot: SnapshotInfo,
}

fn meta_path(dir: &Path) -> PathBuf {
    dir.join("meta.json")
}

fn read_meta(dir: &Path) -> Result<SnapshotInfo> {
    let path = meta_path(dir);
    let bytes = fs::read(&path).map_err(Error::io(format!("cannot read {}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Failed(format!("{} is damaged: {e}", path.display())))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The disks of a snapshot's `config.json` that the guest can write.
fn writable_disks(dir: &Path) -> Result<Vec<PathBuf>> {
    let path = dir.join("config.json");
    let bytes = fs::read(&path).map_err(Error::io(format!("cannot read {}", path.display())))?;
    let cfg = serde_json::from_slice(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|v| config_from_value(v).map_err(|e| e.to_string()))
        .map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
    Ok(cfg
        .disks
        .into_iter()
        .filter(|d| !d.read_only)
        .map(|d| d.path)
        .collect())
}

/// Copies `disks` into `dir/disks/` (blocking).
fn save_disks(dir: &Path, disks: &[PathBuf]) -> Result<Vec<SnapshotDisk>> {
    let ddir = dir.join("disks");
    fs::create_dir_all(&ddir).map_err(Error::io(format!("cannot create {}", ddir.display())))?;
    let mut out = Vec::new();
    for (i, path) in disks.iter().enumerate() {
        let copy = format!("{i}.img");
        let data_bytes = copy_sparse(path, &ddir.join(&copy)).map_err(Error::io(format!(
            "cannot copy the disk {}",
            path.display()
        )))?;
        out.push(SnapshotDisk {
            path: path.display().to_string(),
            copy,
            data_bytes,
        });
    }
    Ok(out)
}

impl Daemon {
    fn snapshot_dir(&self, vm: &str, snap: &str) -> Result<PathBuf> {
        check_name(snap).map_err(|_| {
            Error::BadRequest(format!(
                "'{snap}' is not a snapshot name: [A-Za-z0-9_.-]{{1,64}}, not starting with '.'"
            ))
        })?;
        Ok(self.sd.snapshots(vm).join(snap))
    }

    fn existing_snapshot(&self, vm: &str, snap: &str) -> Result<PathBuf> {
        let dir = self.snapshot_dir(vm, snap)?;
        if !meta_path(&dir).exists() {
            return Err(Error::NotFound(format!("{vm}/{snap} (no such snapshot)")));
        }
        Ok(dir)
    }

    /// `POST /v1/vms/{name}/snapshots`: snapshots the running (or paused) VM.
    pub async fn snapshot_create(
        self: &Arc<Self>,
        name: &str,
        req: SnapshotCreate,
    ) -> Result<SnapshotInfo> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let was_paused = Self::running(&slot)?.paused;
        let snap = req.name.unwrap_or_else(|| now_s().to_string());
        let dir = self.snapshot_dir(name, &snap)?;
        if dir.exists() {
            return Err(Error::Conflict(format!(
                "{name} has a snapshot named '{snap}' already"
            )));
        }
        let parent = self.sd.snapshots(name);
        let tmp = parent.join(format!(".{snap}.partial"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(Error::io(format!("cannot create {}", tmp.display())))?;
        // A VM with run_as writes its snapshot as its own user.
        if let Some(ra) = slot.inner().def.run_as {
            std::os::unix::fs::chown(&tmp, Some(ra.uid), Some(ra.gid)).map_err(Error::io(
                format!("cannot give {} to uid {}", tmp.display(), ra.uid),
            ))?;
        }
        let api = self.sd.api_socket(name);
        let started = Instant::now();
        let body = serde_json::json!({"dir": tmp.display().to_string(), "stay_paused": true});
        let r = process::vm_api_json(
            api.clone(),
            "PUT",
            "/v1/vm/snapshot",
            body,
            SNAPSHOT_TIMEOUT,
        )
        .await;
        let report = match r {
            Ok(r) if r.status == 200 => r.json().unwrap_or_default(),
            Ok(r) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(api_refusal(name, &r));
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let t = tmp.clone();
        let saved = process::on_blocking_pool(move || save_disks(&t, &writable_disks(&t)?)).await;
        let paused_ms = started.elapsed().as_secs_f64() * 1e3;
        if !was_paused {
            let r =
                process::vm_api_async(api, "PUT", "/v1/vm/resume", Duration::from_secs(10)).await;
            if let Err(e) = &r {
                tracing::warn!("{name}: cannot resume after the snapshot: {e}");
            }
        }
        let disks = match saved {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let num = |k: &str| report.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let info = SnapshotInfo {
            name: snap.clone(),
            vm: name.to_string(),
            created: now_s(),
            was_paused,
            memory_bytes: num("memory_bytes"),
            memory_data_bytes: num("memory_data_bytes"),
            disks,
            paused_ms,
        };
        let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::Failed(e.to_string()))?;
        let publish = write_atomic(&meta_path(&tmp), &json)
            .and_then(|()| fs::rename(&tmp, &dir))
            .and_then(|()| sync_dir(&parent));
        if let Err(e) = publish {
            let _ = fs::remove_dir_all(&tmp);
            return Err(Error::Io {
                what: format!("cannot write the snapshot {}", dir.display()),
                source: e,
            });
        }
        slot.note_in_log(&format!("snapshot '{snap}' taken"));
        Ok(info)
    }

    /// `GET /v1/vms/{name}/snapshots`: the VM's snapshots, oldest first.
    pub fn snapshot_list(&self, name: &str) -> Result<Vec<SnapshotInfo>> {
        self.slot(name)?;
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.sd.snapshots(name)) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let file_name = e.file_name();
            let n = file_name.to_string_lossy();
            if n.starts_with('.') || !meta_path(&e.path()).exists() {
                continue;
            }
            match read_meta(&e.path()) {
                Ok(m) => out.push(m),
                Err(err) => tracing::warn!("{err}"),
            }
        }
        out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(out)
    }

    /// How many snapshots the VM has.
    pub(crate) fn snapshot_count(&self, name: &str) -> usize {
        self.snapshot_list(name).map(|l| l.len()).unwrap_or(0)
    }

    /// `PUT /v1/vms/{name}/snapshots/{snap}/revert`: stops the VM if it runs,
    /// puts the disks back as they were and restores the snapshot.
    pub async fn snapshot_revert(self: &Arc<Self>, name: &str, snap: &str) -> Result<VmStatus> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let dir = self.existing_snapshot(name, snap)?;
        let meta = read_meta(&dir)?;
        if slot.inner().running().is_some() {
            self.destroy_locked(&slot).await?;
        }
        let d = dir.clone();
        let disks = meta.disks.clone();
        process::on_blocking_pool(move || {
            for disk in &disks {
                let copy = d.join("disks").join(&disk.copy);
                copy_sparse(&copy, Path::new(&disk.path))
                    .map_err(Error::io(format!("cannot put back the disk {}", disk.path)))?;
            }
            Ok(())
        })
        .await?;
        slot.note_in_log(&format!("reverting to snapshot '{snap}'"));
        self.start_from(&slot, &Boot::Restore(dir), START_TIMEOUT)
            .await?;
        if meta.was_paused {
            let api = self.sd.api_socket(name);
            let r =
                process::vm_api_async(api, "PUT", "/v1/vm/pause", Duration::from_secs(10)).await?;
            if r.status != 200 {
                return Err(api_refusal(name, &r));
            }
            if let Some(p) = slot.inner().running_mut() {
                p.paused = true;
            }
        }
        let status = slot.inner().status();
        Ok(status)
    }

    /// `DELETE /v1/vms/{name}/snapshots/{snap}`.
    pub async fn snapshot_delete(&self, name: &str, snap: &str) -> Result<SnapshotDeleted> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let dir = self.existing_snapshot(name, snap)?;
        let snapshot = read_meta(&dir)?;
        // Renamed first, so a daemon killed while it deletes leaves a hidden
        // leftover, not a snapshot with files missing.
        let gone = self.sd.snapshots(name).join(format!(".{snap}.deleted"));
        let _ = fs::remove_dir_all(&gone);
        fs::rename(&dir, &gone).map_err(Error::io(format!("cannot remove {}", dir.display())))?;
        let _ = fs::remove_dir_all(&gone);
        Ok(SnapshotDeleted { snapshot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_disks_of_a_config() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({
            "kernel": "/k",
            "disks": [{"path": "/a.img"}, {"path": "/b.img", "read_only": true}, {"path": "/c.qcow2"}]
        });
        fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
        assert_eq!(
            writable_disks(tmp.path()).unwrap(),
            vec![PathBuf::from("/a.img"), PathBuf::from("/c.qcow2")]
        );
        fs::write(tmp.path().join("config.json"), "{").unwrap();
        assert!(writable_disks(tmp.path()).is_err());
    }

    #[test]
    fn saves_disks_under_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("d.img");
        fs::write(&img, b"disk data").unwrap();
        let saved = save_disks(tmp.path(), std::slice::from_ref(&img)).unwrap();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].copy, "0.img");
        assert_eq!(
            fs::read(tmp.path().join("disks/0.img")).unwrap(),
            b"disk data"
        );
    }
}
