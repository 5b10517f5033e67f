//! The PC platform a stock kernel expects: ACPI tables, the ACPI PM block, the
//! PCI root complex, and virtio devices (blk, console, rng, net) on PCI or MMIO.

use std::io::Write;
use std::sync::{Arc, Mutex};

use accel::{GuestMemory, Vm};
use anyhow::{Context, Result};
use boot::acpi::{self, AcpiConfig, PciHostConfig, PmArgs, PmDevice, PowerEvent, VirtioMmioConfig};
use pci::layout::*;
use pci::{BarAllocator, PciBarWindow, PciConfigIo, PciEcam, PciRoot};
use virtio::blk::BlkArgs;
use virtio::console::ConsoleArgs;
use virtio::transport::mmio::{VirtioMmioArgs, VirtioMmioDevice};
use virtio::transport::pci::{VirtioPciArgs, VirtioPciDevice};
use virtio::VirtioDevice;
use vm_device::bus::lock;
use vm_device::{Bus, IrqLine, MsiSink};
use vm_memory::{Bytes, GuestAddress};

use crate::config::{DiskSpec, VirtioTransport, VmConfig};
use crate::control::Control;
use crate::device_tree::DeviceTree;
use crate::io_thread::{IoThreads, Served};
use crate::irq::{GsiLine, VmMsi};
use vmm_types::dirty::DirtyLog;

/// GSI of the ACPI SCI.
pub const SCI_GSI: u32 = 9;
/// The ACPI PM block's ports.
pub const PM_BASE: u64 = 0x600;
pub const PM_LEN: u64 = 0x10;

/// Accepts console input for the guest; returns how many bytes it took.
pub type InputSink = Arc<dyn Fn(&[u8]) -> usize + Send + Sync>;

/// What building the platform produced for the rest of the VMM.
pub struct Platform {
    /// The PCI root, whose BAR routes follow restored config spaces.
    pub pci: Arc<PciRoot>,
    /// Guest address of the RSDP, for boot_params.
    pub rsdp: u64,
    /// Input of the virtio console (hvc0).
    pub virtio_console_input: InputSink,
    pub disks: Vec<Arc<dyn block::Disk>>,
    pub balloon: Option<crate::balloon::BalloonCtl>,
    /// The virtio-blk queue workers (stopped when this is dropped).
    pub io: IoThreads,
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
pub(crate) struct Attacher<'a> {
    vm: &'a Arc<dyn Vm>,
    mem: &'a GuestMemory,
    root: &'a Arc<PciRoot>,
    mmio: &'a mut Bus,
    tree: &'a mut DeviceTree,
    dirty: &'a Arc<DirtyLog>,
    transport: VirtioTransport,
    mmio_devices: Vec<VirtioMmioConfig>,
    control: &'a Arc<Control>,
    io: IoThreads,
}

/// What plugging a device in gives: its host-side event processing, and the
/// transport for queue workers.
type Plugged = (Arc<dyn Fn() + Send + Sync>, Arc<dyn Served>);

impl Attacher<'_> {
    /// Plugs `dev` in as device `id` of the tree, `args` making what restoring it needs;
    /// returns a closure that processes host-side events of it. Its doorbells are
    /// processed on the vCPU thread that rings them (tiny devices).
    pub(crate) fn attach<D, F>(
        &mut self,
        id: &str,
        dev: D,
        args: F,
    ) -> Result<Arc<dyn Fn() + Send + Sync>>
    where
        D: VirtioDevice + Send + 'static,
        F: Fn() -> D::Args + Send + Sync + 'static,
    {
        Ok(self.plug(id, dev, args)?.0)
    }

    /// Plugs `dev` in as [`Attacher::attach`] does, its queues processed by workers
    /// named `{name}-q{N}`, off the vCPU threads.
    pub(crate) fn attach_served<D, F>(
        &mut self,
        id: &str,
        name: &str,
        dev: D,
        args: F,
    ) -> Result<()>
    where
        D: VirtioDevice + Send + 'static,
        F: Fn() -> D::Args + Send + Sync + 'static,
    {
        let (_, served) = self.plug(id, dev, args)?;
        self.io.serve(name, served, self.control, self.tree)?;
        Ok(())
    }

    fn plug<D, F>(&mut self, id: &str, dev: D, args: F) -> Result<Plugged>
    where
        D: VirtioDevice + Send + 'static,
        F: Fn() -> D::Args + Send + Sync + 'static,
    {
        match self.transport {
            VirtioTransport::Pci => {
                let slot = self.root.reserve_slot()?;
                let gsi = intx_gsi(slot, 0);
                let msi: Arc<dyn MsiSink> = Arc::new(VmMsi(self.vm.clone()));
                let intx = line(self.vm, gsi);
                let mut t =
                    VirtioPciDevice::new(dev, self.mem.clone(), msi.clone(), intx.clone(), gsi)?;
                t.set_dirty_log(Some(self.dirty.clone()));
                let t = Arc::new(Mutex::new(t));
                self.root.add_device(slot, t.clone())?;
                let mem = self.mem.clone();
                let dirty = self.dirty.clone();
                self.tree.add(id, &t, move || VirtioPciArgs {
                    device: args(),
                    mem: mem.clone(),
                    msi: msi.clone(),
                    intx: intx.clone(),
                    intx_gsi: gsi,
                    dirty: Some(dirty.clone()),
                });
                let served: Arc<dyn Served> = t.clone();
                Ok((Arc::new(move || lock(&t).process_event()), served))
            }
            VirtioTransport::Mmio => {
                let n = self.mmio_devices.len() as u32;
                if n >= PLATFORM_GSI_COUNT {
                    anyhow::bail!("at most {PLATFORM_GSI_COUNT} virtio-mmio devices");
                }
                let gsi = PLATFORM_GSI_BASE + n;
                let base = PLATFORM_MMIO_BASE + n as u64 * PLATFORM_MMIO_STRIDE;
                let irq = line(self.vm, gsi);
                let mut t = VirtioMmioDevice::new(dev, self.mem.clone(), irq.clone());
                t.set_dirty_log(Some(self.dirty.clone()));
                let t = Arc::new(Mutex::new(t));
                self.mmio.insert(base, PLATFORM_MMIO_STRIDE, t.clone())?;
                let mem = self.mem.clone();
                let dirty = self.dirty.clone();
                self.tree.add(id, &t, move || VirtioMmioArgs {
                    device: args(),
                    mem: mem.clone(),
                    line: irq.clone(),
                    dirty: Some(dirty.clone()),
                });
                self.mmio_devices.push(VirtioMmioConfig {
                    base,
                    size: PLATFORM_MMIO_STRIDE,
                    gsi,
                });
                let served: Arc<dyn Served> = t.clone();
                Ok((Arc::new(move || lock(&t).process_event()), served))
            }
        }
    }
}

/// Where the platform's devices go: the buses, the device tree, the dirty log.
pub struct Wiring<'a> {
    pub pio: &'a mut Bus,
    pub mmio: &'a mut Bus,
    pub tree: &'a mut DeviceTree,
    pub dirty: &'a Arc<DirtyLog>,
    pub control: &'a Arc<Control>,
}

/// Builds ACPI, PCI and the virtio devices onto the buses and into guest memory
/// (the ACPI tables only if `write_tables`: a restored guest has its own).
pub fn build(
    cfg: &VmConfig,
    vm: &Arc<dyn Vm>,
    mem: &GuestMemory,
    w: Wiring<'_>,
    console_out: &ConsoleSink,
    write_tables: bool,
) -> Result<Platform> {
    let Wiring {
        pio,
        mmio,
        tree,
        dirty,
        control,
    } = w;
    let disks: Vec<_> = cfg
        .disks
        .iter()
        .map(|d| open_disk(d).map(|x| (d, x)))
        .collect::<Result<_>>()?;

    let ram_end = vm_memory::GuestMemoryBackend::last_addr(mem).0 + 1;
    let mmio64 = mmio64_base(ram_end);
    let root = PciRoot::new(BarAllocator::new(mmio64));
    let config_io = Arc::new(Mutex::new(PciConfigIo::new(root.clone())));
    pio.insert(
        PCI_CONFIG_IO_BASE as u64,
        PCI_CONFIG_IO_LEN as u64,
        config_io.clone(),
    )?;
    let r = root.clone();
    tree.add("pci-config-io", &config_io, move || r.clone());
    tree.add("pci-host-bridge", root.host_bridge(), || ());
    // The windows route to devices with their own locks: no bus-held lock, so
    // vCPUs on different devices never wait for each other.
    pio.insert_sync(
        IO_BASE,
        IO_SIZE,
        Arc::new(PciBarWindow::new(root.clone(), IO_BASE, true)),
    )?;
    mmio.insert_sync(ECAM_BASE, ECAM_SIZE, Arc::new(PciEcam::new(root.clone())))?;
    mmio.insert_sync(
        MMIO32_BASE,
        MMIO32_SIZE,
        Arc::new(PciBarWindow::new(root.clone(), MMIO32_BASE, false)),
    )?;
    mmio.insert_sync(
        mmio64,
        MMIO64_SIZE,
        Arc::new(PciBarWindow::new(root.clone(), mmio64, false)),
    )?;

    let mut a = Attacher {
        vm,
        mem,
        root: &root,
        mmio,
        tree,
        dirty,
        transport: cfg.virtio,
        mmio_devices: Vec::new(),
        control,
        io: IoThreads::default(),
    };
    let opened: Vec<_> = disks.iter().map(|d| d.1.clone()).collect();
    for (i, (spec, disk)) in disks.into_iter().enumerate() {
        let serial = spec
            .serial
            .clone()
            .unwrap_or_else(|| format!("hako-disk{i}"));
        let blk = virtio::blk::Blk::new(disk.clone(), &serial);
        let args = move || BlkArgs {
            disk: disk.clone(),
            serial: serial.clone(),
        };
        a.attach_served(&format!("virtio-blk{i}"), &format!("blk{i}"), blk, args)?;
    }
    let (console, input) = virtio::console::Console::new(console_out());
    let out = console_out.clone();
    let inp = input.clone();
    let kick = a.attach("virtio-console", console, move || ConsoleArgs {
        output: out(),
        input: inp.clone(),
    })?;
    let entropy = || Box::new(virtio::rng::host_getrandom) as virtio::rng::EntropySource;
    a.attach("virtio-rng", virtio::rng::Rng::new(), entropy)?;
    crate::nics::attach(&mut a, &cfg.nets, control)?;
    let balloon = cfg
        .balloon
        .map(|t| crate::balloon::attach(&mut a, t, control))
        .transpose()?;
    cfg.vsock
        .iter()
        .try_for_each(|s| crate::vsock::attach(&mut a, s, control))?;
    let r = root.clone();
    a.tree.after_restore(move || r.refresh_routes());
    let virtio_console_input: InputSink = Arc::new(move |bytes: &[u8]| {
        let n = input.push(bytes);
        kick();
        n
    });

    let mut acpi_cfg = AcpiConfig::new(cfg.cpus);
    acpi_cfg.i8042 = true;
    acpi_cfg.virtio_mmio = a.mmio_devices;
    let io = a.io;
    acpi_cfg.pci = Some(PciHostConfig {
        ecam_base: ECAM_BASE,
        last_bus: LAST_BUS,
        mmio32: (MMIO32_BASE, MMIO32_SIZE),
        mmio64: (mmio64, MMIO64_SIZE),
        intx_gsi_base: INTX_GSI_BASE,
        slots: SLOTS,
    });
    let tables = acpi::build(&acpi_cfg).context("cannot build the ACPI tables")?;
    // A restored guest has its tables in its memory already (and may have written them).
    for (addr, bytes) in tables.blobs.iter().filter(|_| write_tables) {
        mem.write_slice(bytes, GuestAddress(*addr))
            .context("cannot write the ACPI tables")?;
    }
    Ok(Platform {
        pci: root,
        rsdp: tables.rsdp_addr,
        virtio_console_input,
        disks: opened,
        balloon,
        io,
    })
}

/// Makes a fresh output for a console each time a console is built or restored.
pub type ConsoleSink = Arc<dyn Fn() -> Box<dyn Write + Send> + Send + Sync>;

/// The ACPI PM block (power button, S5 power-off, reset register) on the SCI, on the
/// port bus and in the tree as `acpi-pm`. `on_event` makes its event handler.
pub fn pm_device(
    vm: &Arc<dyn Vm>,
    pio: &mut Bus,
    tree: &mut DeviceTree,
    on_event: impl Fn() -> Box<dyn Fn(PowerEvent) + Send> + Send + Sync + 'static,
) -> Result<Arc<Mutex<PmDevice>>> {
    let sci = line(vm, SCI_GSI);
    let pm = Arc::new(Mutex::new(PmDevice::new(sci.clone(), on_event())));
    pio.insert(PM_BASE, PM_LEN, pm.clone())?;
    tree.add("acpi-pm", &pm, move || PmArgs {
        sci: sci.clone(),
        on_event: on_event(),
    });
    Ok(pm)
}
