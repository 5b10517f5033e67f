//! What `hako run` confines the VM to (docs/sandbox.md): the seccomp filters are
//! the sandbox crate's; the files a VM may reach follow from its config here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sandbox::FileRules;
use vmm::memory_backing::Hugepages;
use vmm::VmConfig;

/// The sandbox settings of one `hako run`, and the paths its flags name besides
/// the VM's config.
pub(crate) struct Confinement {
    pub on: bool,
    /// `--sandbox-allow`: directories the VM may read and write.
    pub allow: Vec<PathBuf>,
    /// `--config FILE`, read again after a reset.
    pub config_file: Option<PathBuf>,
    /// `--restore DIR`.
    pub restore: Option<PathBuf>,
    pub api_socket: Option<PathBuf>,
    /// The Unix socket of `--gdb unix:PATH`.
    pub gdb_socket: Option<PathBuf>,
}

impl Confinement {
    /// Turns the sandbox on (before any thread exists) unless `--sandbox off`.
    /// Checks the `--sandbox-allow` directories now, so that a bad one fails the
    /// start, not an incoming migration that has already arrived.
    pub fn enable(&self) -> Result<()> {
        if !self.on {
            tracing::info!("sandbox: off (--sandbox off)");
            return Ok(());
        }
        let mut check = FileRules::new();
        for d in &self.allow {
            check.allow_dir(d)?;
        }
        sandbox::enable().context("cannot set up the sandbox (--sandbox off runs without it)")
    }

    /// Sets the file rules for a VM built from `cfg`: threads that start from now
    /// on are held to them.
    pub fn prepare(&self, cfg: &VmConfig) -> Result<()> {
        if !self.on {
            return Ok(());
        }
        let rules = self.rules(cfg)?;
        sandbox::prepare_files(&rules).context("cannot set up the sandbox's file rules")
    }

    fn rules(&self, cfg: &VmConfig) -> Result<FileRules> {
        let mut r = FileRules::new();
        r.read(&cfg.kernel);
        cfg.initrds.iter().for_each(|i| r.read(i));
        if let Some(f) = &self.config_file {
            r.read(f);
        }
        if let Some(d) = &self.restore {
            r.read(d);
        }
        for d in &cfg.disks {
            disk_rules(&mut r, &d.path, d.format, d.read_only);
        }
        if let Some(t) = &cfg.trace {
            // Created now if need be, so the rule has a file to name; a reset
            // creates it again.
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(t)
                .with_context(|| format!("cannot create trace file {}", t.display()))?;
            r.read_write(t);
        }
        if let Hugepages::Hugetlbfs(dir) = &cfg.memory_backing.hugepages {
            r.read_write(dir);
        }
        // The API socket's directory is the VM's own: snapshots go there unless told
        // otherwise, so it is read-write.
        if let Some(s) = &self.api_socket {
            r.read_write(&parent(s));
        }
        for s in cfg
            .nets
            .iter()
            .filter_map(|n| match &n.backend {
                net::spec::Backend::Stream { path, .. } => Some(path),
                _ => None,
            })
            .chain(cfg.vsock.iter().map(|v| &v.path))
            .chain(self.gdb_socket.iter())
        {
            r.socket_dir(&parent(s));
        }
        for d in &self.allow {
            r.allow_dir(d)?;
        }
        Ok(r)
    }
}

/// The disk at `path` and the backing files it names: read-write, or read-only for
/// a read-only disk; backing files are only read.
fn disk_rules(r: &mut FileRules, path: &Path, format: Option<block::ImageFormat>, ro: bool) {
    if ro {
        r.read(path);
    } else {
        r.read_write(path);
    }
    // An image that cannot be inspected fails to open when the machine is built,
    // with the better message.
    let Ok((chain, _)) = block::info::inspect_chain(path, format) else {
        return;
    };
    for layer in &chain {
        r.read(Path::new(&layer.filename));
        // A VMDK descriptor names extent files beside it.
        if layer.format == block::ImageFormat::Vmdk {
            r.read(&parent(Path::new(&layer.filename)));
        }
    }
}

/// The directory `p` is in ("." for a bare name).
fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The socket path of a `--gdb` address, when it is `unix:PATH`.
pub(crate) fn gdb_socket(spec: Option<&str>) -> Option<PathBuf> {
    spec?.strip_prefix("unix:").map(PathBuf::from)
}
