//! Building a VM: guest memory, accelerator, devices on their buses, the kernel.

use std::io::Write;
use std::sync::{Arc, Mutex};

use accel::{GuestMemory, IoHandler, Vm};
use anyhow::{bail, Context, Result};
use boot::acpi::{PmDevice, PowerEvent};
use boot::guest_ram_ranges;
use devices::i8042::I8042;
use devices::rtc::{RtcArgs, RtcDevice, SystemClock};
use devices::serial::{Serial, SerialArgs};
use devices::{EventSink, PlatformEvent};
use vm_device::bus::lock;
use vm_device::{Bus, IrqLine};

use crate::config::{AccelKind, ConsoleKind, CpuModel, VmConfig};
use crate::console::ConsoleOut;
use crate::control::Control;
use crate::device_tree::DeviceTree;
use crate::irq::GsiLine;
use crate::platform::{self, ConsoleSink, InputSink};
use crate::run::{ExitReason, Start};
use crate::snapshot::Snapshot;
use crate::{kernel, test_devices};
use vmm_types::dirty::DirtyLog;

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_GSI: u32 = 4;
const MAX_CPUS: u32 = 255;

/// The VM's port and MMIO buses: what its vCPUs' unhandled accesses go to.
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

impl IoHandler for Buses {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.pio.read(port as u64, data);
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.pio.write(port as u64, data);
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.mmio.read(addr, data) {
            tracing::debug!("unclaimed MMIO read at {addr:#x}");
        }
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        if !self.mmio.write(addr, data) {
            tracing::debug!("unclaimed MMIO write at {addr:#x}");
        }
    }
}

/// A VM ready to run.
pub struct Machine {
    pub(crate) config: VmConfig,
    pub(crate) vm: Arc<dyn Vm>,
    /// Every device with state, by stable id.
    pub(crate) devices: DeviceTree,
    /// The ACPI PM block, whose power button the host can press.
    pub(crate) pm: Arc<Mutex<PmDevice>>,
    pub(crate) buses: Arc<Buses>,
    /// Where the terminal's input goes (COM1 or hvc0).
    pub(crate) input: InputSink,
    pub(crate) control: Arc<Control>,
    pub(crate) boot_cpu: vmm_types::CpuState,
    pub(crate) mem: GuestMemory,
    /// Guest pages written during a live migration (by devices, and by the CPU on emu).
    pub(crate) dirty: Arc<DirtyLog>,
    /// The `--disk`s, flushed before a snapshot.
    pub(crate) disks: Vec<Arc<dyn block::Disk>>,
    pub(crate) balloon: Option<crate::balloon::BalloonCtl>,
    /// The queue workers of the virtio-blk devices, stopped and joined when the
    /// machine is dropped (a `--on-reboot restart` builds a new one).
    pub(crate) io: crate::io_thread::IoThreads,
}

fn create_vm(cfg: &VmConfig, mem: GuestMemory) -> Result<Arc<dyn Vm>> {
    Ok(match cfg.accel {
        AccelKind::Kvm => {
            let vm = accel_kvm::KvmVm::new(mem, cfg.cpus)?;
            if cfg.cpu == CpuModel::Portable {
                vm.set_cpuid_baseline(Some(accel_emu::EmuVm::portable_cpuid(cfg.cpus)));
                // emu's TSC counts nanoseconds: the same rate here, so guest time
                // keeps its pace when the VM moves between them.
                if !vm.set_tsc_khz(Some((accel_emu::TSC_HZ / 1000) as u32)) {
                    tracing::warn!(
                        "this KVM cannot scale the TSC: the guest's TSC runs at the host's \
                         rate, so after a move to emu (1 GHz) a guest timing by the TSC \
                         sees time at another pace"
                    );
                }
            }
            Arc::new(vm)
        }
        AccelKind::Emu => {
            let vm = accel_emu::EmuVm::new(mem, cfg.cpus)?;
            vm.set_jit(cfg.jit);
            vm.set_portable_cpuid(cfg.cpu == CpuModel::Portable);
            if let Some(path) = &cfg.trace {
                let f = std::fs::File::create(path)
                    .with_context(|| format!("cannot create trace file {}", path.display()))?;
                vm.set_trace(Box::new(std::io::BufWriter::new(f)));
            }
            Arc::new(vm)
        }
    })
}

/// The host's physical memory in bytes (MemTotal), if /proc/meminfo tells.
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Refuses a guest larger than this host's memory.
pub(crate) fn check_host_memory(bytes: u64) -> Result<()> {
    if let Some(host) = host_memory() {
        if bytes > host {
            bail!(
                "the guest's {} MiB of memory is more than this host has ({} MiB)",
                bytes >> 20,
                host >> 20
            );
        }
    }
    Ok(())
}

/// Checks `config` before anything is allocated; `boot`: the kernel will be loaded.
fn check(config: &VmConfig, boot: bool) -> Result<()> {
    if config.cpus == 0 || config.cpus > MAX_CPUS {
        bail!(
            "--cpus must be between 1 and {MAX_CPUS}, not {}",
            config.cpus
        );
    }
    if config.memory < 16 << 20 {
        bail!("--memory must be at least 16M");
    }
    check_host_memory(config.memory)?;
    if config.trace.is_some() && config.accel != AccelKind::Emu {
        bail!("--trace needs --accel emu");
    }
    if let Some(b) = config.balloon.filter(|&b| b > config.memory) {
        bail!(
            "--balloon {} MiB is more than the guest's {} MiB of memory",
            b >> 20,
            config.memory >> 20
        );
    }
    if !boot {
        return Ok(());
    }
    // Check the files before allocating anything, so a typo fails fast.
    std::fs::metadata(&config.kernel)
        .with_context(|| format!("cannot read kernel {}", config.kernel.display()))?;
    for i in &config.initrds {
        std::fs::metadata(i).with_context(|| format!("cannot read initrd {}", i.display()))?;
    }
    Ok(())
}

impl Machine {
    /// Builds the VM described by `config` with its kernel loaded, every console's
    /// output going to `out`.
    pub fn new(config: VmConfig, out: Box<dyn Write + Send>) -> Result<Machine> {
        Self::build(config, out, None)
    }

    /// Builds the machine a snapshot describes, its devices in their saved states;
    /// returns it with how its vCPUs start.
    pub fn from_snapshot(snap: Snapshot, out: Box<dyn Write + Send>) -> Result<(Machine, Start)> {
        let m = Self::build(snap.config, out, Some(snap.memory))?;
        m.vm.check_cpuid(&snap.state.cpuid)
            .with_context(|| format!("cannot restore onto {}", m.accel_name()))?;
        m.devices
            .restore(&snap.state.devices)
            .context("cannot restore the devices")?;
        let start = Start::Restored {
            vm: Box::new(snap.state.vm),
            vcpus: snap.state.vcpus,
        };
        Ok((m, start))
    }

    /// The machine a migration brings in: its memory arrives from the source (no
    /// kernel is loaded, no table written), then its state.
    pub(crate) fn incoming(
        config: VmConfig,
        out: Box<dyn Write + Send>,
        mem: GuestMemory,
    ) -> Result<Machine> {
        Self::build(config, out, Some(mem))
    }

    /// `restored`: the memory of a snapshot (no kernel is loaded, no table written).
    fn build(
        config: VmConfig,
        out: Box<dyn Write + Send>,
        restored: Option<GuestMemory>,
    ) -> Result<Machine> {
        let boot = restored.is_none();
        check(&config, boot)?;
        let out = Arc::new(Mutex::new(ConsoleOut(out)));
        let mem = match restored {
            Some(m) => {
                crate::memory_backing::advise(&m, &config.memory_backing)?;
                m
            }
            None => crate::memory_backing::allocate(
                &guest_ram_ranges(config.memory),
                &config.memory_backing,
            )
            .with_context(|| {
                format!(
                    "cannot allocate {} MiB of guest memory",
                    config.memory >> 20
                )
            })?,
        };
        let vm = create_vm(&config, mem.clone())?;
        let control = Arc::new(Control::new(config.cpus as usize));

        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let mut tree = DeviceTree::default();
        let dirty = Arc::new(DirtyLog::new(&crate::snapshot::memory::layout(&mem)));
        let console_out: ConsoleSink = Arc::new(move || Box::new(SharedOut(out.clone())));
        let com1_irq: Arc<dyn IrqLine> = Arc::new(GsiLine {
            vm: vm.clone(),
            gsi: COM1_GSI,
        });
        let serial = Arc::new(Mutex::new(Serial::new(com1_irq.clone(), console_out())));
        pio.insert(COM1_BASE as u64, 8, serial.clone())?;
        let sink = console_out.clone();
        tree.add("serial0", &serial, move || SerialArgs {
            irq: com1_irq.clone(),
            out: sink(),
        });

        let ex = control.clone();
        let events: EventSink = Arc::new(move |e| {
            ex.request(match e {
                PlatformEvent::Reset => ExitReason::Reset,
                PlatformEvent::PowerOff => ExitReason::PowerOff,
                PlatformEvent::DebugExit(v) => ExitReason::DebugExit(v),
            })
        });
        // 0x60..0x64: the i8042 data and command ports (0x61 is the PIT's, claimed by the accelerator).
        let i8042 = Arc::new(Mutex::new(I8042::new(events.clone())));
        pio.insert(0x60, 5, i8042.clone())?;
        let ev = events.clone();
        tree.add("i8042", &i8042, move || ev.clone());
        let layout = boot::MemoryLayout::new(config.memory);
        let mut rtc = RtcDevice::new();
        rtc.rtc_mut().set_memory_size(layout.low, layout.high);
        let rtc = Arc::new(Mutex::new(rtc));
        pio.insert(0x70, 2, rtc.clone())?;
        tree.add("rtc", &rtc, || RtcArgs {
            clock: SystemClock,
            irq: None,
        });

        let ev = events.clone();
        let pm = platform::pm_device(&vm, &mut pio, &mut tree, move || {
            let ev = ev.clone();
            Box::new(move |e| {
                ev(match e {
                    PowerEvent::PowerOff => PlatformEvent::PowerOff,
                    PowerEvent::Reset => PlatformEvent::Reset,
                })
            })
        })?;
        let plat = platform::build(
            &config,
            &vm,
            &mem,
            platform::Wiring {
                pio: &mut pio,
                mmio: &mut mmio,
                tree: &mut tree,
                dirty: &dirty,
                control: &control,
            },
            &console_out,
            boot,
        )?;

        // After the platform's devices, so an overlap is reported against this flag.
        test_devices::attach(
            &config.devices,
            &vm,
            &mut pio,
            &mut mmio,
            &mut tree,
            &events,
        )?;
        let boot_cpu = if boot {
            kernel::load(&config, &mem, plat.rsdp)?
        } else {
            vmm_types::CpuState::default()
        };
        let input: InputSink = match config.console {
            ConsoleKind::Serial => Arc::new(move |b: &[u8]| lock(&serial).enqueue_input(b)),
            ConsoleKind::Virtio => plat.virtio_console_input,
        };
        let m = Machine {
            config,
            vm,
            devices: tree,
            pm,
            buses: Arc::new(Buses { pio, mmio }),
            input,
            control,
            boot_cpu,
            mem,
            dirty,
            disks: plat.disks,
            balloon: plat.balloon,
            io: plat.io,
        };
        tracing::debug!("{} virtio-blk queue workers", m.io.len());
        Ok(m)
    }

    /// What ends this VM, before and after it starts.
    pub fn ender(&self) -> crate::control::Ender {
        crate::control::Ender(self.control.clone())
    }

    /// The name of the accelerator this VM runs on.
    pub fn accel_name(&self) -> &'static str {
        self.vm.accel_name()
    }
}

/// One output shared by every console (COM1, hvc0).
struct SharedOut<W: Write>(Arc<Mutex<W>>);

impl<W: Write> Write for SharedOut<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        lock(&self.0).flush()
    }
}
