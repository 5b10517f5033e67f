//! The `--device` devices for test kernels: QEMU's isa-debug-exit and pc-testdev
//! and the Bochs/QEMU debug console, placed on the buses.

use std::sync::{Arc, Mutex};

use accel::Vm;
use anyhow::{Context, Result};
use devices::debug_exit::DebugExit;
use devices::debugcon::Debugcon;
use devices::pc_testdev::{self, PcTestdev, PcTestdevRegion};
use devices::EventSink;
use vm_device::{Bus, BusDevice, IrqLine};

use crate::config::DeviceSpec;
use crate::device_tree::DeviceTree;
use crate::irq::GsiLine;

/// Ports the accelerators handle themselves (PICs and their ELCRs, PIT, port 0x61
/// for the PIT's gate and speaker): a device there would never see an access.
const ACCELERATOR_PORTS: &[(u16, u16, &str)] = &[
    (0x20, 0x21, "the master PIC"),
    (0x40, 0x43, "the PIT"),
    (0x61, 0x61, "the PIT gate (port 0x61)"),
    (0xa0, 0xa1, "the slave PIC"),
    (0x4d0, 0x4d1, "the PIC's ELCR"),
];

/// Refuses port ranges an accelerator handles itself.
fn check_ports(name: &str, base: u16, len: u16) -> Result<()> {
    let last = base as u32 + len as u32 - 1;
    if let Some((_, _, what)) = ACCELERATOR_PORTS
        .iter()
        .find(|(lo, hi, _)| (base as u32) <= *hi as u32 && *lo as u32 <= last)
    {
        anyhow::bail!("--device {name}: ports {base:#x}..{last:#x} overlap {what}");
    }
    Ok(())
}

fn place(
    bus: &mut Bus,
    name: &str,
    io: bool,
    base: u64,
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
) -> Result<()> {
    let what = if io { "ports" } else { "addresses" };
    bus.insert(base, len, dev).with_context(|| {
        format!(
            "--device {name}: cannot place it at {what} {base:#x}..{:#x}",
            base + len - 1
        )
    })
}

/// Puts every `--device` on the buses. Debug-exit writes go to `events`;
/// debug-console text to this process's stderr; pc-testdev's IRQ range drives
/// the VM's interrupt lines 0..24.
pub fn attach(
    specs: &[DeviceSpec],
    vm: &Arc<dyn Vm>,
    pio: &mut Bus,
    mmio: &mut Bus,
    tree: &mut DeviceTree,
    events: &EventSink,
) -> Result<()> {
    for spec in specs {
        let name = spec.name();
        let dev: Arc<Mutex<dyn BusDevice>> = match *spec {
            DeviceSpec::IsaDebugExit { .. } => Arc::new(Mutex::new(DebugExit::new(events.clone()))),
            DeviceSpec::Debugcon { readback, .. } => Arc::new(Mutex::new(Debugcon::new(
                Box::new(std::io::stderr()),
                readback,
            ))),
            DeviceSpec::PcTestdev => {
                let irqs: Vec<Arc<dyn IrqLine>> = (0..pc_testdev::IRQ_LINES as u32)
                    .map(|gsi| {
                        Arc::new(GsiLine {
                            vm: vm.clone(),
                            gsi,
                        }) as Arc<dyn IrqLine>
                    })
                    .collect();
                let dev = Arc::new(Mutex::new(PcTestdev::new(irqs.clone())));
                tree.add("pc-testdev", &dev, move || irqs.clone());
                for (region, io, base, len) in pc_testdev::Region::ALL {
                    let r = Arc::new(Mutex::new(PcTestdevRegion {
                        dev: dev.clone(),
                        region,
                    }));
                    if io {
                        check_ports(name, base as u16, len as u16)?;
                        place(pio, name, true, base, len, r)?;
                    } else {
                        place(mmio, name, false, base, len, r)?;
                    }
                }
                continue;
            }
        };
        let (base, len) = spec.ports();
        check_ports(name, base, len)?;
        place(pio, name, true, base as u64, len as u64, dev)?;
    }
    Ok(())
}
