//! `hako run`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use vmm::config::parse_size;
use vmm::{
    AccelKind, ConsoleKind, DeviceSpec, DiskSpec, ExitReason, Machine, OnReboot, VirtioTransport,
    VmConfig,
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
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Initial ramdisk handed to a Linux kernel. For a Multiboot kernel each file is a
    /// module: repeat the flag or separate paths with commas.
    #[arg(long, value_name = "PATH", value_delimiter = ',')]
    initrd: Vec<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = "console=ttyS0")]
    cmdline: String,
    /// Guest memory (e.g. 128M, 2G).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// Accelerator.
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
    /// A virtio-blk disk: PATH[,format=raw|qcow2|vdi|vpc|vmdk][,readonly=on][,serial=ID]. Repeatable.
    /// The format is probed from the header when not given; vdi, vpc and vmdk are
    /// read-only (readonly=on).
    #[arg(long, value_name = "SPEC")]
    disk: Vec<DiskSpec>,
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

pub fn run(a: RunArgs) -> Result<i32> {
    let accel = match a.accel {
        AccelArg::Kvm => {
            if accel_kvm::probe::probe().kvm.pvm {
                eprintln!(
                    "hako: warning: /dev/kvm is PVM-backed here: a stock kernel's supervisor code is \
                     emulated by the host kernel and will hardly boot; use --accel emu for stock kernels"
                );
            }
            AccelKind::Kvm
        }
        AccelArg::Emu => AccelKind::Emu,
        AccelArg::Auto => crate::host::auto_accel(),
    };
    let cfg = VmConfig {
        kernel: a.kernel,
        initrds: a.initrd,
        cmdline: a.cmdline,
        memory: a.memory,
        cpus: a.cpus,
        accel,
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
    };
    let mut term = None;
    loop {
        let machine = Machine::new(cfg.clone(), Box::new(std::io::stdout()))?;
        tracing::info!("running on {}", machine.accel_name());
        if term.is_none() {
            term = Some(vmm::console::RawTerminal::enable_on_stdin());
        }
        let interactive = matches!(term, Some(Some(_)));
        let reason = machine.run(interactive)?;
        if matches!(reason, ExitReason::Reset | ExitReason::TripleFault)
            && cfg.on_reboot == OnReboot::Restart
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
