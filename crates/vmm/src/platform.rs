//! The PC platform a stock kernel expects: ACPI tables, the ACPI PM block, the
//! PCI root complex, and virtio devices (blk, console, rng) on PCI or MMIO.

use std::io::Write;
use std::sync::{Arc, Mutex};

use accel::{GuestMemory, Vm};
use anyhow::{Context, Result};
use boot::acpi::{self, AcpiConfig, PciHostConfig, VirtioMmioConfig};
use pci::layout::*;
use pci::{BarAllocator, PciBarWindow, PciConfigIo, PciEcam, PciRoot};
use virtio::transport::mmio::VirtioMmioDevice;
use virtio::transport::pci::VirtioPciDevice;
use virtio::VirtioDevice;
use vm_device::bus::lock;
use vm_device::{Bus, BusDevice, IrqLine, MsiSink};
use vm_memory::{Bytes, GuestAddress};

use crate::config::{DiskSpec, VirtioTransport, VmConfig};
use crate::irq::{GsiLine, VmMsi};

/// GSI of the ACPI SCI.
pub const SCI_GSI: u32 = 9;
/// The ACPI PM block's ports.
pub const PM_BASE: u64 = 0x600;
pub const PM_LEN: u64 = 0x10;

/// Accepts console input for the guest; returns how many bytes it took.
pub type InputSink = Arc<dyn Fn(&[u8]) -> usize + Send + Sync>;

/// What building the platform produced for the rest of the VMM.
pub struct Platform {
    /// Guest address of the RSDP, for boot_params.
    pub rsdp: u64,
    /// Input of the virtio console (hvc0).
    pub virtio_console_input: InputSink,
}

fn line(vm: &Arc<dyn Vm>, gsi: u32) -> Arc<dyn IrqLine> {
    Arc::new(GsiLine {
        vm: vm.clone(),
        gsi,
    })
}

/// Opens a `--disk`, checking it before the guest starts. `block::open` probes the
/// format when none is given and warns when it probes raw (with the safety rules).
fn open_disk(d: &DiskSpec) -> Result<Arc<dyn block::Disk>> {
    let shown = d.path.display();
    let opts = block::OpenOptions {
        format: d.format,
        read_only: d.read_only,
        backing: block::BackingPolicy::Strict, // guest-writable: see docs/disk-images.md
        ..Default::default()
    };
    let disk = block::open(&d.path, &opts).with_context(|| format!("cannot open disk {shown}"))?;
    Ok(Arc::from(disk))
}

/// Attaches virtio devices to PCI or to the platform MMIO area.
struct Attacher<'a> {
    vm: &'a Arc<dyn Vm>,
    mem: &'a GuestMemory,
    root: &'a Arc<PciRoot>,
    mmio: &'a mut Bus,
    transport: VirtioTransport,
    mmio_devices: Vec<VirtioMmioConfig>,
}

impl Attacher<'_> {
    /// Plugs `dev` in; returns a closure that processes host-side events of it.
    fn attach<D: VirtioDevice + Send + 'static>(
        &mut self,
        dev: D,
    ) -> Result<Arc<dyn Fn() + Send + Sync>> {
        match self.transport {
            VirtioTransport::Pci => {
                let slot = self.root.reserve_slot()?;
                let gsi = intx_gsi(slot, 0);
                let msi: Arc<dyn MsiSink> = Arc::new(VmMsi(self.vm.clone()));
                let t = VirtioPciDevice::new(dev, self.mem.clone(), msi, line(self.vm, gsi), gsi)?;
                let t = Arc::new(Mutex::new(t));
                self.root.add_device(slot, t.clone())?;
                Ok(Arc::new(move || lock(&t).process_event()))
            }
            VirtioTransport::Mmio => {
                let n = self.mmio_devices.len() as u32;
                if n >= PLATFORM_GSI_COUNT {
                    anyhow::bail!("at most {PLATFORM_GSI_COUNT} virtio-mmio devices");
                }
                let gsi = PLATFORM_GSI_BASE + n;
                let base = PLATFORM_MMIO_BASE + n as u64 * PLATFORM_MMIO_STRIDE;
                let t = Arc::new(Mutex::new(VirtioMmioDevice::new(
                    dev,
                    self.mem.clone(),
                    line(self.vm, gsi),
                )));
                self.mmio.insert(base, PLATFORM_MMIO_STRIDE, t.clone())?;
                self.mmio_devices.push(VirtioMmioConfig {
                    base,
                    size: PLATFORM_MMIO_STRIDE,
                    gsi,
                });
                Ok(Arc::new(move || lock(&t).process_event()))
            }
        }
    }
}

/// Builds ACPI, PCI and the virtio devices onto the buses and into guest memory.
pub fn build(
    cfg: &VmConfig,
    vm: &Arc<dyn Vm>,
    mem: &GuestMemory,
    pio: &mut Bus,
    mmio: &mut Bus,
    pm: Arc<Mutex<dyn BusDevice>>,
    console_out: Box<dyn Write + Send>,
) -> Result<Platform> {
    let disks: Vec<_> = cfg
        .disks
        .iter()
        .map(|d| open_disk(d).map(|x| (d, x)))
        .collect::<Result<_>>()?;

    let ram_end = vm_memory::GuestMemoryBackend::last_addr(mem).0 + 1;
    let mmio64 = mmio64_base(ram_end);
    let root = PciRoot::new(BarAllocator::new(mmio64));
    pio.insert(
        PCI_CONFIG_IO_BASE as u64,
        PCI_CONFIG_IO_LEN as u64,
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
    )?;
    pio.insert(
        IO_BASE,
        IO_SIZE,
        Arc::new(Mutex::new(PciBarWindow::new(root.clone(), IO_BASE, true))),
    )?;
    mmio.insert(
        ECAM_BASE,
        ECAM_SIZE,
        Arc::new(Mutex::new(PciEcam::new(root.clone()))),
    )?;
    mmio.insert(
        MMIO32_BASE,
        MMIO32_SIZE,
        Arc::new(Mutex::new(PciBarWindow::new(
            root.clone(),
            MMIO32_BASE,
            false,
        ))),
    )?;
    mmio.insert(
        mmio64,
        MMIO64_SIZE,
        Arc::new(Mutex::new(PciBarWindow::new(root.clone(), mmio64, false))),
    )?;
    pio.insert(PM_BASE, PM_LEN, pm)?;

    let mut a = Attacher {
        vm,
        mem,
        root: &root,
        mmio,
        transport: cfg.virtio,
        mmio_devices: Vec::new(),
    };
    for (i, (spec, disk)) in disks.into_iter().enumerate() {
        let serial = spec
            .serial
            .clone()
            .unwrap_or_else(|| format!("hako-disk{i}"));
        a.attach(virtio::blk::Blk::new(disk, &serial))?;
    }
    let (console, input) = virtio::console::Console::new(console_out);
    let kick = a.attach(console)?;
    a.attach(virtio::rng::Rng::new())?;
    let virtio_console_input: InputSink = Arc::new(move |bytes: &[u8]| {
        let n = input.push(bytes);
        kick();
        n
    });

    let mut acpi_cfg = AcpiConfig::new(cfg.cpus);
    acpi_cfg.i8042 = true;
    acpi_cfg.virtio_mmio = a.mmio_devices;
    acpi_cfg.pci = Some(PciHostConfig {
        ecam_base: ECAM_BASE,
        last_bus: LAST_BUS,
        mmio32: (MMIO32_BASE, MMIO32_SIZE),
        mmio64: (mmio64, MMIO64_SIZE),
        intx_gsi_base: INTX_GSI_BASE,
        slots: SLOTS,
    });
    let tables = acpi::build(&acpi_cfg).context("cannot build the ACPI tables")?;
    for (addr, bytes) in &tables.blobs {
        mem.write_slice(bytes, GuestAddress(*addr))
            .context("cannot write the ACPI tables")?;
    }
    Ok(Platform {
        rsdp: tables.rsdp_addr,
        virtio_console_input,
    })
}

/// The ACPI PM block (power button, S5 power-off, reset register) on the SCI.
pub fn pm_device(
    vm: &Arc<dyn Vm>,
    on_event: Box<dyn Fn(acpi::pm::PowerEvent) + Send>,
) -> Arc<Mutex<dyn BusDevice>> {
    Arc::new(Mutex::new(acpi::pm::PmDevice::new(
        line(vm, SCI_GSI),
        on_event,
    )))
}
