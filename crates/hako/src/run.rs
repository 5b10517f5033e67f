//! `hako run`.

use std::path::PathBuf;

#[path = "sandbox_rules.rs"]
mod sandbox_rules;

use crate::host_io::lock;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use sandbox_rules::Confinement;
use vmm::migration::MigrationUri;
use vmm::snapshot::RestoreMode;
use vmm::{
    AccelKind, ConsoleKind, CpuModel, DeviceSpec, DiskSpec, ExitReason, Machine, OnReboot, Start,
    VirtioTransport, VmConfig,
};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum AccelArg {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// Hakobune's own x86-64 emulator (no hardware support needed).
    Emu,
    /// What `hako host` recommends for this machine.
    Auto,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Console: the guest's first serial port (COM1) is this terminal. \
When stdin is a terminal it is in raw mode; type Ctrl-A x to quit, Ctrl-A Ctrl-A to send Ctrl-A.\n\
Exit status: 0 when the guest ends itself (reset, power-off, triple fault, or halts for good) \
or is quit from the console; (V << 1) | 1 (in 8 bits) when it writes V to --device isa-debug-exit; \
1 with a one-line message when the VMM fails."
)]
pub struct RunArgs {
    /// Kernel to boot: a bzImage or an ELF vmlinux, entered in 64-bit mode, or a
    /// Multiboot v1 kernel (header in the first 8 KiB), entered in 32-bit protected mode.
    #[arg(long, value_name = "PATH", required_unless_present_any = ["restore", "incoming", "config"])]
    kernel: Option<PathBuf>,
    /// Boot the VM a definition file describes (JSON: the `config.json` of a
    /// snapshot, or what `hako img import` writes). Only --accel, --api-socket and
    /// --gdb may be given with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "kernel", "initrd", "cmdline", "memory", "cpus", "cpu", "disk", "net", "balloon", "vsock", "device", "virtio",
        "console", "on_reboot", "restore", "incoming"
    ])]
    config: Option<PathBuf>,
    /// Resume the snapshot in DIR (written by `hako ctl snapshot`) instead of booting.
    /// Its config.json describes the VM; only --accel, --api-socket, --gdb and
    /// --restore-mode may be given with it.
    #[arg(long, value_name = "DIR", conflicts_with_all = [
        "kernel", "initrd", "cmdline", "memory", "cpus", "cpu", "disk", "net", "balloon", "vsock", "device", "virtio",
        "console", "on_reboot", "trace"
    ])]
    restore: Option<PathBuf>,
    /// Wait for a live migration on tcp:HOST:PORT or unix:PATH (from `hako ctl
    /// migrate`), then run the VM it brings. Only --accel, --api-socket and --gdb
    /// may be given with it.
    #[arg(long, value_name = "URI", conflicts_with_all = [
        "kernel", "initrd", "cmdline", "memory", "cpus", "cpu", "disk", "net", "balloon", "vsock", "device", "virtio",
        "console", "on_reboot", "trace", "restore"
    ])]
    incoming: Option<MigrationUri>,
    /// How --restore loads guest memory: map the memory file copy-on-write (restore
    /// time does not grow with memory size), or copy it into fresh memory.
    #[arg(long, value_enum, default_value_t = RestoreModeArg::Map, requires = "restore")]
    restore_mode: RestoreModeArg,
    /// Serve the GDB remote protocol on tcp:HOST:PORT (loopback unless
    /// --gdb-allow-remote) or unix:PATH; `--gdb` alone is tcp:127.0.0.1:1234. Each
    /// vCPU is a thread; `target remote :1234` in GDB. See docs/gdb.md.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "tcp:127.0.0.1:1234")]
    gdb: Option<String>,
    /// With --gdb: do not run the guest until the debugger continues it.
    #[arg(long, requires = "gdb")]
    gdb_wait: bool,
    /// With --gdb: allow a TCP address that is not loopback.
    #[arg(long, requires = "gdb")]
    gdb_allow_remote: bool,
    /// Serve the VM's control API (HTTP/1.1 + JSON; see docs/api/openapi.json) on
    /// this Unix socket, created with mode 0600. `hako ctl --api-socket PATH` talks to it.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// Initial ramdisk handed to a Linux kernel. For a Multiboot kernel each file is a
    /// module: repeat the flag or separate paths with commas.
    #[arg(long, value_name = "PATH", value_delimiter = ',')]
    initrd: Vec<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = "console=ttyS0")]
    cmdline: String,
    /// Guest memory (e.g. 128M, 2G), with options: mergeable=on offers it to KSM
    /// (identical pages of guests are shared); hugepages=on backs it with transparent
    /// huge pages, hugepages=DIR with files in that hugetlbfs mount (reserved at start).
    #[arg(long, value_name = "SIZE[,OPTS]", default_value = "512M")]
    memory: vmm::memory_backing::MemorySpec,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// The CPU the guest sees: everything the accelerator offers (host), or only what
    /// both accelerators offer on any x86-64 host (portable), for a VM that may be
    /// restored or migrated onto the other accelerator.
    #[arg(long, value_enum, default_value_t = CpuArg::Host)]
    cpu: CpuArg,
    /// Accelerator. With --restore, auto means the one the snapshot was taken on.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Write an instruction trace (RIP and registers per instruction) to FILE (emu only;
    /// the traced vCPU runs in the interpreter).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// emu only: translate hot guest code to host code (on), or interpret every
    /// instruction (off). The translator needs an x86-64 host.
    #[arg(long, value_enum, default_value_t = JitArg::On)]
    jit: JitArg,
    /// A virtio-blk disk: PATH[,format=raw|qcow2|vdi|vpc|vmdk|vhdx][,readonly=on][,serial=ID].
    /// Repeatable. The format is probed from the header when not given; vdi, vpc, vmdk and vhdx are
    /// read-only (readonly=on).
    #[arg(long, value_name = "SPEC")]
    disk: Vec<DiskSpec>,
    /// A virtio-net NIC (repeatable; see docs/net.md):
    /// user[,hostfwd=tcp:[HOSTADDR]:HPORT-[GUESTADDR]:GPORT]...[,restrict=on] (no
    /// privileges: 10.0.2.15 by DHCP, host and gateway 10.0.2.2, DNS 10.0.2.3,
    /// host.hako.internal the host; forwards bind 127.0.0.1 unless HOSTADDR is given),
    /// tap,ifname=NAME (a TAP device, created with CAP_NET_ADMIN), or
    /// stream,path=SOCKET[,server=on] (QEMU's length-prefixed frames: passt, gvproxy,
    /// or another hako). Each takes mac=52:54:00:12:34:56.
    #[arg(long, value_name = "SPEC")]
    net: Vec<net::NetSpec>,
    /// A virtio-balloon whose first target is SIZE (memory the guest gives back; 0
    /// for none yet): `hako ctl balloon SIZE` changes it. The guest also reports
    /// the memory it frees (free page reporting), which returns to the host.
    #[arg(long, value_name = "SIZE", value_parser = vmm::config::parse_size)]
    balloon: Option<u64>,
    /// A virtio-vsock device: cid=N,path=SOCKET (see docs/vsock.md). The guest has
    /// CID N (3 or more), the host CID 2. Host programs connect to SOCKET and send
    /// `CONNECT <port>\n` to reach the guest's port (answer: `OK <port>\n`); the
    /// guest's connections to host port P reach the socket SOCKET_P.
    #[arg(long, value_name = "SPEC")]
    vsock: Option<vmm::config::VsockSpec>,
    /// Which console the terminal's input goes to: COM1 (ttyS0) or virtio-console
    /// (hvc0; boot with console=hvc0). Both consoles' output goes to the terminal.
    #[arg(long, value_enum, default_value_t = ConsoleArg::Serial)]
    console: ConsoleArg,
    /// What a reboot in the guest does: end hako (status 0) or boot the guest again.
    #[arg(long, value_enum, default_value_t = RebootArg::Exit)]
    on_reboot: RebootArg,
    /// How virtio devices attach: PCI (found by any kernel with virtio_pci) or
    /// virtio-mmio (described in the ACPI DSDT; for kernels without PCI).
    #[arg(long, value_enum, default_value_t = TransportArg::Pci)]
    virtio: TransportArg,
    /// A device for test kernels: isa-debug-exit[,iobase=N][,iosize=N] (QEMU's: a write
    /// of V ends hako with status (V << 1) | 1; default ports 0x501, 2 of them) or
    /// debugcon[,iobase=N][,readback=N] (bytes written to port 0x402 go to stderr) or
    /// pc-testdev (QEMU's test device: ports 0xe0-0xeb and 0x2000-0x2017, MMIO at
    /// 0xff000000). Repeatable.
    #[arg(long, value_name = "SPEC")]
    device: Vec<DeviceSpec>,
    /// Confine the VM process (see docs/sandbox.md): each thread may make only the
    /// system calls its work needs, and the process reaches only the files of its
    /// VM. `off` is for debugging.
    #[arg(long, value_enum, default_value_t = SandboxArg::On)]
    sandbox: SandboxArg,
    /// With the sandbox: a directory the VM may also read and write (a place for
    /// snapshots, for instance). Repeatable.
    #[arg(long, value_name = "DIR")]
    sandbox_allow: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SandboxArg {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum CpuArg {
    Host,
    Portable,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum RestoreModeArg {
    Map,
    Copy,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum JitArg {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ConsoleArg {
    Serial,
    Virtio,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum RebootArg {
    Exit,
    Restart,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum TransportArg {
    Pci,
    Mmio,
}

fn explicit_accel(a: AccelArg) -> Option<AccelKind> {
    match a {
        AccelArg::Kvm => {
            if accel_kvm::probe::probe().kvm.pvm {
                eprintln!(
                    "hako: warning: /dev/kvm is PVM-backed here: a stock kernel's supervisor code is \
                     emulated by the host kernel and will hardly boot; use --accel emu for stock kernels"
                );
            }
            Some(AccelKind::Kvm)
        }
        AccelArg::Emu => Some(AccelKind::Emu),
        AccelArg::Auto => None,
    }
}

/// How the first VM of a `hako run` comes to be.
enum First {
    Boot,
    /// The machine, how it starts, when the restore began, from where.
    Restored(Box<(Machine, Start)>, std::time::Instant, PathBuf),
    Incoming(MigrationUri, Option<AccelKind>),
}

pub fn run(a: RunArgs) -> Result<i32> {
    let accel = explicit_accel(a.accel);
    let api_socket = a.api_socket.clone();
    let confine = Confinement {
        on: a.sandbox == SandboxArg::On,
        allow: a.sandbox_allow.clone(),
        config_file: a.config.clone(),
        restore: a.restore.clone(),
        api_socket: a.api_socket.clone(),
        gdb_socket: sandbox_rules::gdb_socket(a.gdb.as_deref()),
    };
    // Before any thread of the VM starts.
    confine.enable()?;
    // Bound before anything runs, so a taken port fails the start.
    let gdb = a
        .gdb
        .as_deref()
        .map(|s| vmm::gdb::bind(s, a.gdb_allow_remote))
        .transpose()?
        .map(|l| (l, a.gdb_wait));
    if let Some(uri) = a.incoming.clone() {
        return run_vm(None, First::Incoming(uri, accel), api_socket, gdb, &confine);
    }
    let mut first = First::Boot;
    let cfg = match &a.restore {
        Some(dir) => {
            let began = std::time::Instant::now();
            let mode = match a.restore_mode {
                RestoreModeArg::Map => RestoreMode::Map,
                RestoreModeArg::Copy => RestoreMode::Copy,
            };
            let snap = vmm::snapshot::load(dir, accel, mode)
                .with_context(|| format!("cannot restore {}", dir.display()))?;
            let cfg = snap.config.clone();
            confine.prepare(&cfg)?;
            let m = Machine::from_snapshot(snap, Box::new(std::io::stdout()))
                .with_context(|| format!("cannot restore {}", dir.display()))?;
            first = First::Restored(Box::new(m), began, dir.clone());
            cfg
        }
        None => match &a.config {
            Some(file) => load_config(file, accel)?,
            None => boot_config(a, accel.unwrap_or_else(crate::host::auto_accel)),
        },
    };
    if matches!(first, First::Boot) {
        confine.prepare(&cfg)?;
    }
    run_vm(Some(cfg), first, api_socket, gdb, &confine)
}

/// A VM definition file; `accel` overrides its accelerator. Paths in it that are
/// relative are taken from the file's directory.
fn load_config(file: &std::path::Path, accel: Option<AccelKind>) -> Result<VmConfig> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut cfg: VmConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a VM definition", file.display()))?;
    if cfg.kernel.as_os_str().is_empty() {
        anyhow::bail!(
            "{} names no kernel: set \"kernel\" (and \"initrds\") in it; only direct \
             kernel boot is supported",
            file.display()
        );
    }
    let base = file.parent().unwrap_or(std::path::Path::new("."));
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    fix(&mut cfg.kernel);
    cfg.initrds.iter_mut().for_each(fix);
    cfg.disks.iter_mut().for_each(|d| fix(&mut d.path));
    for n in &mut cfg.nets {
        if let net::spec::Backend::Stream { path, .. } = &mut n.backend {
            fix(path);
        }
    }
    if let Some(v) = &mut cfg.vsock {
        fix(&mut v.path);
    }
    if let Some(a) = accel {
        cfg.accel = a;
    }
    Ok(cfg)
}

fn boot_config(a: RunArgs, accel: AccelKind) -> VmConfig {
    VmConfig {
        kernel: a.kernel.expect("clap requires --kernel without --restore"),
        initrds: a.initrd,
        cmdline: a.cmdline,
        memory: a.memory.size,
        memory_backing: a.memory.backing,
        cpus: a.cpus,
        accel,
        cpu: match a.cpu {
            CpuArg::Host => CpuModel::Host,
            CpuArg::Portable => CpuModel::Portable,
        },
        trace: a.trace,
        jit: a.jit == JitArg::On,
        disks: a.disk,
        console: match a.console {
            ConsoleArg::Serial => ConsoleKind::Serial,
            ConsoleArg::Virtio => ConsoleKind::Virtio,
        },
        on_reboot: match a.on_reboot {
            RebootArg::Exit => OnReboot::Exit,
            RebootArg::Restart => OnReboot::Restart,
        },
        virtio: match a.virtio {
            TransportArg::Pci => VirtioTransport::Pci,
            TransportArg::Mmio => VirtioTransport::Mmio,
        },
        devices: a.device,
        nets: a.net,
        balloon: a.balloon,
        vsock: a.vsock,
    }
}

/// Runs the VM (`first`: already built from a snapshot) until it ends, booting it
/// again after a reset when the config asks for that.
/// A GDB listener and whether the guest waits for the debugger.
type Gdb = Option<(vmm::gdb::GdbListener, bool)>;

fn run_vm(
    cfg: Option<VmConfig>,
    first: First,
    api_socket: Option<PathBuf>,
    mut gdb: Gdb,
    confine: &Confinement,
) -> Result<i32> {
    let mut term = None;
    // The main thread enters the sandbox once the first machine is built (the
    // threads it starts afterwards inherit its filter and rules).
    let mut main_confined = false;
    // Before any VM thread exists, so they all inherit the blocked signals.
    let signal_target = crate::host_io::route_signals()?;
    // Before the guest runs, so a socket in use fails the start, not a running guest.
    let api = api_socket.as_deref().map(control_api::serve).transpose()?;
    let mut first = Some(first);
    let mut cfg = cfg;
    loop {
        let next = first.take().unwrap_or(First::Boot);
        // The terminal goes raw before the guest runs, so its first output already
        // finds it so; not while waiting for a migration, where Ctrl-C must work.
        if term.is_none() && !matches!(next, First::Incoming(..)) {
            sandbox::remember_terminal(0);
            term = Some(crate::console::RawTerminal::enable_on_stdin());
        }
        let vm = match next {
            First::Incoming(uri, accel) => {
                lock(&signal_target).set_idle(true);
                let st = signal_target.clone();
                let built = move |e: vmm::Ender| {
                    let mut g = lock(&st);
                    g.set_idle(false);
                    g.set_vm(Some(e));
                };
                let vm = vmm::migration::receive(&uri, accel, Box::new(std::io::stdout()), &built)
                    .with_context(|| format!("incoming migration on {uri}"));
                lock(&signal_target).set_idle(false);
                let vm = vm?;
                cfg = vm.info().ok().map(|i| i.config);
                // The VM runs already: the rules hold the main thread and the
                // threads started from now on (docs/sandbox.md).
                if let Some(c) = &cfg {
                    confine.prepare(c)?;
                }
                sandbox::enter(sandbox::ThreadKind::Main);
                main_confined = true;
                vm
            }
            other => {
                let mut restored = None;
                let (machine, start) = match other {
                    First::Restored(b, began, dir) => {
                        restored = Some((began, dir));
                        *b
                    }
                    _ => (
                        Machine::new(
                            cfg.clone().expect("a config to boot"),
                            Box::new(std::io::stdout()),
                        )?,
                        Start::Boot,
                    ),
                };
                tracing::info!("running on {}", machine.accel_name());
                // Before the vCPUs run, so that no signal finds no VM to end.
                lock(&signal_target).set_vm(Some(machine.ender()));
                if !main_confined {
                    sandbox::enter(sandbox::ThreadKind::Main);
                    main_confined = true;
                }
                let wait = gdb.as_ref().is_some_and(|g| g.1);
                let vm = machine.start(start, wait)?;
                if let Some((began, dir)) = restored {
                    tracing::info!(
                        "restored {} in {:.2} ms (to running)",
                        dir.display(),
                        began.elapsed().as_secs_f64() * 1e3
                    );
                }
                vm
            }
        };
        // The first VM only: a guest booted again after a reset runs undebugged.
        if let Some((l, _)) = gdb.take() {
            vmm::gdb::serve(l, &vm)?;
        }
        if term.is_none() {
            sandbox::remember_terminal(0);
            term = Some(crate::console::RawTerminal::enable_on_stdin());
        }
        let interactive = matches!(term, Some(Some(_)));
        crate::host_io::route_stdin(interactive, &vm)?;
        if let Some(a) = &api {
            a.set_vm(Some(vm.clone()));
        }
        let reason = vm.wait();
        // A signal from now on waits for the next VM (after a reset) or is lost with
        // this one, which has ended anyway.
        lock(&signal_target).set_vm(None);
        if let Some(a) = &api {
            a.set_vm(None);
        }
        if matches!(reason, ExitReason::Reset | ExitReason::TripleFault)
            && cfg
                .as_ref()
                .is_some_and(|c| c.on_reboot == OnReboot::Restart)
        {
            tracing::info!("the guest reset itself: booting it again");
            continue;
        }
        drop(term);
        if let Some(status) = reason.debug_exit_status() {
            tracing::info!("{}", reason.describe());
            return Ok(status.into());
        }
        if let ExitReason::Signal(n) = reason {
            eprintln!("hako: {}", reason.describe());
            return Ok(128 + n);
        }
        return if reason.is_clean() {
            tracing::info!("{}", reason.describe());
            Ok(0)
        } else {
            anyhow::bail!("{}", reason.describe())
        };
    }
}

/// The VM these flags describe, for `hako define NAME [flags]` (crate::verbs).
pub(crate) fn define_config(a: RunArgs) -> Result<VmConfig> {
    if a.restore.is_some() || a.incoming.is_some() || a.api_socket.is_some() || a.gdb.is_some() {
        anyhow::bail!("a definition holds no --restore, --incoming, --api-socket or --gdb");
    }
    let accel = explicit_accel(a.accel);
    let auto = crate::host::auto_accel;
    match &a.config {
        Some(file) => load_config(file, accel),
        None => Ok(boot_config(a, accel.unwrap_or_else(auto))),
    }
}
