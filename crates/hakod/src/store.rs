//! The state directory: definitions in `vms/NAME.json`, the files of running VMs in
//! `run/` (`NAME.config.json`, `NAME.api`, `NAME.log`, `NAME.pid`, `NAME.exit`).
//!
//! Every file the daemon relies on after a crash is written atomically: a temporary
//! file in the same directory, written and fsynced, renamed over the old one, and
//! the directory fsynced, so a power cut leaves the old file or the new one, never
//! half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::definition::{check_name, Definition};

/// The state directory and the names of the files in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// A definition file that could not be loaded: reported, skipped, left on disk.
#[derive(Debug, Clone)]
pub struct LoadProblem {
    pub path: PathBuf,
    pub reason: String,
}

impl StateDir {
    /// Creates `root`, `root/vms` and `root/run` (mode 0700 when new) and returns
    /// the directory with its absolute, canonical path: the VM processes are
    /// recognised by the paths on their command lines, so these must not depend on
    /// the daemon's working directory.
    pub fn open(root: &Path) -> io::Result<StateDir> {
        for d in [root.to_path_buf(), root.join("vms"), root.join("run")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)?;
        }
        if crate::paths::is_root() {
            // VMs with `run_as` (crate::process) run as other users: they must
            // reach the state directory (not list it) and bind their API sockets
            // in run/, where the sticky bit keeps them off each other's entries
            // (and their sockets are 0600). vms/ stays the daemon's alone.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root, fs::Permissions::from_mode(0o711))?;
            fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o1733))?;
        }
        Ok(StateDir {
            root: root.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn vms_dir(&self) -> PathBuf {
        self.root.join("vms")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `vms/NAME.json`: the definition.
    pub fn definition(&self, name: &str) -> PathBuf {
        self.vms_dir().join(format!("{name}.json"))
    }

    /// `run/NAME.config.json`: the bare `VmConfig` the running process booted.
    pub fn run_config(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.config.json"))
    }

    /// `run/NAME.api`: the VM's own control API socket.
    pub fn api_socket(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.api"))
    }

    /// `run/NAME.log`: the console (stdout and stderr) of the current or last run.
    pub fn log(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.log"))
    }

    /// `run/NAME.in`: the FIFO that is the stdin of the VM's `hako run` (its
    /// console input; see [`crate::console::fifo`]).
    pub fn console_in(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.in"))
    }

    /// `snapshots/NAME/`: the VM's snapshots, a directory each (see
    /// [`crate::snapshots`]).
    pub fn snapshots(&self, name: &str) -> PathBuf {
        self.root.join("snapshots").join(name)
    }

    /// `run/NAME.pid`: the pid of the running `hako run`.
    pub fn pid(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.pid"))
    }

    /// `run/NAME.exit`: how the last run ended, when it crashed.
    pub fn exit(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.exit"))
    }

    /// The lock file that keeps a second daemon off this directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join("hakod.lock")
    }

    /// Saves a definition atomically.
    pub fn save(&self, def: &Definition) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(def).map_err(io::Error::other)?;
        write_atomic(
            &self.definition(&def.name),
            &[json, b"\n".to_vec()].concat(),
        )
    }

    /// Removes a definition (the directory entry is made durable).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.definition(name))?;
        sync_dir(&self.vms_dir())
    }

    /// Loads every `vms/*.json`: the definitions, sorted by name, and the files
    /// that are not one (bad JSON, a wrong shape, a name that does not match the
    /// file's), which stay on disk untouched.
    pub fn load_all(&self) -> io::Result<(Vec<Definition>, Vec<LoadProblem>)> {
        let mut defs = Vec::new();
        let mut problems = Vec::new();
        for entry in fs::read_dir(self.vms_dir())? {
            let path = entry?.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue; // temporary files and anything else
            };
            match load_one(&path, stem) {
                Ok(d) => defs.push(d),
                Err(reason) => problems.push(LoadProblem { path, reason }),
            }
        }
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((defs, problems))
    }
}

fn load_one(path: &Path, stem: &str) -> Result<Definition, String> {
    check_name(stem).map_err(|e| e.to_string())?;
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let def = Definition::from_value(v, None).map_err(|e| e.to_string())?;
    if def.name != stem {
        return Err(format!("it names the VM {:?}", def.name));
    }
    Ok(def)
}

/// Writes `data` to `path` atomically (temp file, fsync, rename, fsync the dir).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Unique per process and call, and not ending in .json: never mistaken for a
    // definition by load_all.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory, so the entries renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn save_load_remove_and_corrupt_files() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("state")).unwrap();
        assert!(sd.root().is_absolute());
        let d =
            Definition::from_value(json!({"name": "a", "config": {"kernel": "/k"}}), None).unwrap();
        sd.save(&d).unwrap();
        let mut d2 = d.clone();
        d2.autostart = true;
        sd.save(&d2).unwrap(); // replaces
        fs::write(sd.vms_dir().join("broken.json"), "{ not json").unwrap();
        fs::write(
            sd.vms_dir().join("other.json"),
            serde_json::to_vec(&d).unwrap(),
        )
        .unwrap();
        fs::write(sd.vms_dir().join("notes.txt"), "ignored").unwrap();
        let (defs, problems) = sd.load_all().unwrap();
        assert_eq!(defs, vec![d2]);
        let mut bad: Vec<String> = problems
            .iter()
            .map(|p| p.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        bad.sort();
        assert_eq!(bad, ["broken.json", "other.json"]);
        assert!(problems.iter().any(|p| p.reason.contains("names the VM")));
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(sd.vms_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 4, "{left:?}");
        sd.remove("a").unwrap();
        assert!(!sd.definition("a").exists());
    }
}
