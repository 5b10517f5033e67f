//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2).
//!
//! One [`BusDevice`] of [`MMIO_SIZE`] bytes per device with a level-triggered
//! interrupt line held while InterruptStatus is non-zero. Describe it to the
//! guest through ACPI (`LNRO0005` device, see `boot::acpi`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_device::{BusDevice, IrqLine, Persist, StateError};
use vmm_types::dirty::DirtyLog;

use super::core::{CoreState, NotifyHook, RingPart, VirtioCore};
use crate::device::{VirtioDevice, VirtioInterrupt};
use crate::GuestMemory;

/// Size of a virtio-mmio register window.
pub const MMIO_SIZE: u64 = 0x1000;
const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x1af4;
const CONFIG: u64 = 0x100;

/// Serializable state of a virtio-mmio device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMmioState<S> {
    pub interrupt_status: u32,
    pub core: CoreState<S>,
}

struct MmioIrq<'a> {
    status: &'a mut u32,
    line: &'a dyn IrqLine,
}

impl VirtioInterrupt for MmioIrq<'_> {
    fn signal_queue(&mut self, _queue: u16) {
        *self.status |= 1;
        self.line.set_level(true);
    }
    fn signal_config(&mut self) {
        *self.status |= 2;
        self.line.set_level(true);
    }
}

/// A virtio device on virtio-mmio.
pub struct VirtioMmioDevice<D: VirtioDevice> {
    core: VirtioCore<D>,
    line: Arc<dyn IrqLine>,
    interrupt_status: u32,
}

impl<D: VirtioDevice> VirtioMmioDevice<D> {
    /// Wraps `device`, interrupting through `line`.
    pub fn new(device: D, mem: GuestMemory, line: Arc<dyn IrqLine>) -> Self {
        Self {
            core: VirtioCore::new(device, mem),
            line,
            interrupt_status: 0,
        }
    }

    /// Logs the guest pages the device writes into `log` (live migration).
    pub fn set_dirty_log(&mut self, log: Option<Arc<DirtyLog>>) {
        self.core.dirty = log;
    }

    /// Hands the processing of doorbells to whoever `hook` signals (see
    /// [`NotifyHook`]); `None`: processed on the thread that rang (the default).
    pub fn set_notify_hook(&mut self, hook: Option<NotifyHook>) {
        self.core.notify_hook = hook;
    }

    /// Processes queue `q` after its doorbell went to the notify hook.
    pub fn process_notified(&mut self, q: u16) {
        let (core, mut irq) = self.split();
        core.process_notified(q, &mut irq);
    }

    /// How many queues the device has.
    pub fn num_queues(&self) -> u16 {
        self.core.num_queues()
    }

    /// The device model.
    pub fn device(&self) -> &D {
        &self.core.device
    }

    /// The device model, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.core.device
    }

    /// The device status register (DEVICE_NEEDS_RESET included).
    pub fn status(&self) -> u8 {
        self.core.status()
    }

    fn split(&mut self) -> (&mut VirtioCore<D>, MmioIrq<'_>) {
        (
            &mut self.core,
            MmioIrq {
                status: &mut self.interrupt_status,
                line: &*self.line,
            },
        )
    }

    /// Lets the device do host-side work (e.g. deliver console input).
    pub fn process_event(&mut self) {
        let (core, mut irq) = self.split();
        core.event(&mut irq);
    }

    fn read_reg(&self, off: u64) -> u32 {
        let c = &self.core;
        let sel = c.selected();
        match off {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => c.device.device_type(),
            0x00c => VENDOR,
            0x010 => c.device_features_word(),
            0x034 => u32::from(c.max_size(c.queue_sel)),
            0x038 => sel.map_or(0, |r| u32::from(r.size)),
            0x044 => sel.map_or(0, |r| u32::from(r.enabled)),
            0x060 => self.interrupt_status,
            0x070 => u32::from(c.status()),
            0x080 => sel.map_or(0, |r| r.desc as u32),
            0x084 => sel.map_or(0, |r| (r.desc >> 32) as u32),
            0x090 => sel.map_or(0, |r| r.driver as u32),
            0x094 => sel.map_or(0, |r| (r.driver >> 32) as u32),
            0x0a0 => sel.map_or(0, |r| r.device as u32),
            0x0a4 => sel.map_or(0, |r| (r.device >> 32) as u32),
            // No shared memory regions: length and base read as all ones.
            0x0b0..=0x0bc => u32::MAX,
            0x0fc => u32::from(c.config_generation),
            _ => 0,
        }
    }

    fn write_reg(&mut self, off: u64, v: u32) {
        let (core, mut irq) = self.split();
        match off {
            0x014 => core.device_features_sel = v,
            0x020 => core.write_driver_features(v),
            0x024 => core.driver_features_sel = v,
            0x030 => core.queue_sel = v.min(u32::from(u16::MAX)) as u16,
            0x038 => core.write_queue_size(v.min(u32::from(u16::MAX)) as u16, &mut irq),
            0x044 if v == 1 => core.enable_queue(&mut irq),
            0x050 => core.notify(v.min(u32::from(u16::MAX)) as u16, &mut irq),
            0x064 => {
                *irq.status &= !v;
                if *irq.status == 0 {
                    irq.line.set_level(false);
                }
            }
            0x070 => {
                core.write_status(v as u8, &mut irq);
                if v == 0 {
                    *irq.status = 0;
                    irq.line.set_level(false);
                }
            }
            0x080 => core.write_queue_addr(RingPart::Desc, Some(v), None),
            0x084 => core.write_queue_addr(RingPart::Desc, None, Some(v)),
            0x090 => core.write_queue_addr(RingPart::Driver, Some(v), None),
            0x094 => core.write_queue_addr(RingPart::Driver, None, Some(v)),
            0x0a0 => core.write_queue_addr(RingPart::Device, Some(v), None),
            0x0a4 => core.write_queue_addr(RingPart::Device, None, Some(v)),
            _ => tracing::debug!("virtio-mmio: ignored write at {off:#x}"),
        }
    }
}

/// What a restored virtio-mmio device is built from (as for [`VirtioMmioDevice::new`]).
pub struct VirtioMmioArgs<A> {
    pub device: A,
    pub mem: GuestMemory,
    pub line: Arc<dyn IrqLine>,
    pub dirty: Option<Arc<DirtyLog>>,
}

impl<D: VirtioDevice> Persist for VirtioMmioDevice<D> {
    type State = VirtioMmioState<D::State>;
    type Args = VirtioMmioArgs<D::Args>;

    fn save(&self) -> Self::State {
        VirtioMmioState {
            interrupt_status: self.interrupt_status,
            core: self.core.state(),
        }
    }

    fn restore(args: Self::Args, s: &Self::State) -> Result<Self, StateError> {
        let device = D::restore(args.device, &s.core.device)?;
        let mut t = VirtioMmioDevice::new(device, args.mem, args.line);
        t.core.dirty = args.dirty;
        t.core.load(&s.core)?;
        if s.interrupt_status & !0x3 != 0 {
            return Err(StateError::new(
                "virtio-mmio",
                "interrupt status out of range",
            ));
        }
        t.interrupt_status = s.interrupt_status;
        t.line.set_level(t.interrupt_status != 0);
        Ok(t)
    }
}

impl<D: VirtioDevice> BusDevice for VirtioMmioDevice<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            self.core.device.read_config(offset - CONFIG, data);
            return;
        }
        // Registers are 32-bit; other widths read zero.
        if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            self.core.device.write_config(offset - CONFIG, data);
        } else if data.len() == 4 && offset % 4 == 0 {
            self.write_reg(
                offset,
                u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
            );
        }
    }
}
