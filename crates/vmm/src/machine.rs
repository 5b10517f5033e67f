//! Building a VM: guest memory, accelerator, devices on their buses, the kernel.

use std::io::Write;
use std::sync::{Arc, Mutex};

use accel::{GuestMemory, IoHandler, Vm};
use anyhow::{bail, Context, Result};
use boot::acpi::PowerEvent;
use boot::guest_ram_ranges;
use devices::i8042::I8042;
use devices::rtc::RtcDevice;
use devices::serial::Serial;
use devices::{EventSink, PlatformEvent};
use vm_device::bus::lock;
use vm_device::{Bus, IrqLine};

use crate::config::{AccelKind, ConsoleKind, VmConfig};
use crate::console::ConsoleOut;
use crate::irq::GsiLine;
use crate::platform::{self, InputSink};
use crate::run::{ExitReason, ExitState};
use crate::{kernel, test_devices};

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
    pub(crate) buses: Arc<Buses>,
    /// Where the terminal's input goes (COM1 or hvc0).
    pub(crate) input: InputSink,
    pub(crate) exit: Arc<ExitState>,
    pub(crate) boot_cpu: vmm_types::CpuState,
}

fn create_vm(cfg: &VmConfig, mem: GuestMemory) -> Result<Arc<dyn Vm>> {
    Ok(match cfg.accel {
        AccelKind::Kvm => Arc::new(accel_kvm::KvmVm::new(mem, cfg.cpus)?),
        AccelKind::Emu => {
            let vm = accel_emu::EmuVm::new(mem, cfg.cpus)?;
            vm.set_jit(cfg.jit);
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

fn check(config: &VmConfig) -> Result<()> {
    if config.cpus == 0 || config.cpus > MAX_CPUS {
        bail!(
            "--cpus must be between 1 and {MAX_CPUS}, not {}",
            config.cpus
        );
    }
    if config.memory < 16 << 20 {
        bail!("--memory must be at least 16M");
    }
    if let Some(host) = host_memory() {
        if config.memory > host {
            bail!(
                "--memory {} MiB is more than this host has ({} MiB)",
                config.memory >> 20,
                host >> 20
            );
        }
    }
    if config.trace.is_some() && config.accel != AccelKind::Emu {
        bail!("--trace needs --accel emu");
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
    /// Builds the VM described by `config`, with every console's output going to `out`.
    pub fn new(config: VmConfig, out: Box<dyn Write + Send>) -> Result<Machine> {
        check(&config)?;
        let out = Arc::new(Mutex::new(ConsoleOut(out)));
        let mem =
            GuestMemory::from_ranges(&guest_ram_ranges(config.memory)).with_context(|| {
                format!(
                    "cannot allocate {} MiB of guest memory",
                    config.memory >> 20
                )
            })?;
        let vm = create_vm(&config, mem.clone())?;
        let exit = Arc::new(ExitState::default());

        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let com1_irq: Arc<dyn IrqLine> = Arc::new(GsiLine {
            vm: vm.clone(),
            gsi: COM1_GSI,
        });
        let serial = Arc::new(Mutex::new(Serial::new(
            com1_irq,
            Box::new(SharedOut(out.clone())),
        )));
        pio.insert(COM1_BASE as u64, 8, serial.clone())?;

        let ex = exit.clone();
        let events: EventSink = Arc::new(move |e| {
            ex.request(match e {
                PlatformEvent::Reset => ExitReason::Reset,
                PlatformEvent::PowerOff => ExitReason::PowerOff,
                PlatformEvent::DebugExit(v) => ExitReason::DebugExit(v),
            })
        });
        // 0x60..0x64: the i8042 data and command ports (0x61 is the PIT's, claimed by the accelerator).
        pio.insert(0x60, 5, Arc::new(Mutex::new(I8042::new(events.clone()))))?;
        let layout = boot::MemoryLayout::new(config.memory);
        let mut rtc = RtcDevice::new();
        rtc.rtc_mut().set_memory_size(layout.low, layout.high);
        pio.insert(0x70, 2, Arc::new(Mutex::new(rtc)))?;

        let debug_events = events.clone();
        let pm = platform::pm_device(
            &vm,
            Box::new(move |e| {
                events(match e {
                    PowerEvent::PowerOff => PlatformEvent::PowerOff,
                    PowerEvent::Reset => PlatformEvent::Reset,
                })
            }),
        );
        let plat = platform::build(
            &config,
            &vm,
            &mem,
            &mut pio,
            &mut mmio,
            pm,
            Box::new(SharedOut(out)),
        )?;

        // After the platform's devices, so an overlap is reported against this flag.
        test_devices::attach(&config.devices, &vm, &mut pio, &mut mmio, &debug_events)?;
        let boot_cpu = kernel::load(&config, &mem, plat.rsdp)?;
        let input: InputSink = match config.console {
            ConsoleKind::Serial => Arc::new(move |b: &[u8]| lock(&serial).enqueue_input(b)),
            ConsoleKind::Virtio => plat.virtio_console_input,
        };
        Ok(Machine {
            config,
            vm,
            buses: Arc::new(Buses { pio, mmio }),
            input,
            exit,
            boot_cpu,
        })
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
