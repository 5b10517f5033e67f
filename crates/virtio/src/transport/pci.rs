//! The virtio 1.x modern PCI transport (virtio 1.2, section 4.1).
//!
//! BAR 0 (64-bit memory, 32 KiB, placed below 4 GiB by the allocator) holds
//! every structure, each announced by a vendor-specific capability:
//!
//! | BAR 0 offset | structure |
//! |---|---|
//! | 0x0000 | common configuration |
//! | 0x1000 | ISR status |
//! | 0x2000 | device-specific configuration |
//! | 0x3000 | notifications: queue N at 0x3000 + 4 * N |
//! | 0x4000 | MSI-X table (one vector per queue plus one for configuration) |
//! | 0x5000 | MSI-X pending-bit array |
//!
//! Interrupts go through MSI-X when the driver enables it, else through INTx
//! (pin A, level, held while the ISR is non-zero; reading the ISR clears it).

use std::sync::Arc;

use pci::config::ConfigError;
use pci::{
    BarDef, BarKind, BarRange, ConfigSpace, ConfigSpaceState, MsixConfig, MsixState, PciDevice,
    PciIds,
};
use serde::{Deserialize, Serialize};
use vm_device::{IrqLine, MsiSink, Persist, StateError};
use vmm_types::dirty::DirtyLog;

use super::core::{CoreState, NotifyHook, RingPart, VirtioCore};
use crate::device::{VirtioDevice, VirtioInterrupt};
use crate::{device_type, GuestMemory};

/// PCI vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are this plus the device type.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// "No MSI-X vector" value of the vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
const COMMON: u64 = 0x0000;
const ISR: u64 = 0x1000;
const DEVICE_CFG: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
const MSIX_TABLE: u64 = 0x4000;
const MSIX_PBA: u64 = 0x5000;
const REGION: u64 = 0x1000;
/// Bytes between two queues' doorbells.
pub const NOTIFY_MULTIPLIER: u32 = 4;

const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;

/// Errors building the transport.
#[derive(Debug, thiserror::Error)]
pub enum PciTransportError {
    #[error("cannot lay out the PCI configuration space")]
    Config(#[source] ConfigError),
}

/// Serializable state of a virtio-pci function and its device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioPciState<S> {
    pub config: ConfigSpaceState,
    pub msix: MsixState,
    pub isr: u8,
    pub config_vector: u16,
    pub queue_vectors: Vec<u16>,
    pub core: CoreState<S>,
}

struct PciIrq<'a> {
    msix: &'a mut MsixConfig,
    sink: &'a dyn MsiSink,
    intx: &'a dyn IrqLine,
    isr: &'a mut u8,
    config_vector: u16,
    queue_vectors: &'a [u16],
}

impl PciIrq<'_> {
    fn raise(&mut self, vector: u16, isr_bit: u8) {
        if self.msix.enabled() {
            if vector != NO_VECTOR {
                self.msix.signal(vector, self.sink);
            }
        } else {
            *self.isr |= isr_bit;
            self.intx.set_level(true);
        }
    }
}

impl VirtioInterrupt for PciIrq<'_> {
    fn signal_queue(&mut self, queue: u16) {
        let v = self
            .queue_vectors
            .get(usize::from(queue))
            .copied()
            .unwrap_or(NO_VECTOR);
        self.raise(v, 1);
    }
    fn signal_config(&mut self) {
        self.raise(self.config_vector, 2);
    }
}

/// A virtio device on PCI.
pub struct VirtioPciDevice<D: VirtioDevice> {
    core: VirtioCore<D>,
    config: ConfigSpace,
    msix: MsixConfig,
    sink: Arc<dyn MsiSink>,
    intx: Arc<dyn IrqLine>,
    isr: u8,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    pci_cfg_cap: usize,
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let mut c = vec![
        CAP_VENDOR,
        0,
        (16 + extra.len()) as u8,
        cfg_type,
        0,
        0,
        0,
        0,
    ];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(length as u32).to_le_bytes());
    c.extend_from_slice(extra);
    c
}

impl<D: VirtioDevice> VirtioPciDevice<D> {
    /// Wraps `device`. `msi` receives MSI-X messages; `intx` is the INTA line of
    /// the slot (GSI [`pci::layout::intx_gsi`]`(slot, 0)`), whose number goes in the
    /// interrupt line register.
    pub fn new(
        device: D,
        mem: GuestMemory,
        msi: Arc<dyn MsiSink>,
        intx: Arc<dyn IrqLine>,
        intx_gsi: u32,
    ) -> Result<Self, PciTransportError> {
        let ty = device.device_type();
        let class = match ty {
            device_type::BLOCK => (0x01, 0x80, 0x00),
            device_type::CONSOLE => (0x07, 0x80, 0x00),
            _ => (0xff, 0x00, 0x00),
        };
        let mut config = ConfigSpace::new(PciIds {
            vendor: VIRTIO_PCI_VENDOR,
            device: VIRTIO_PCI_DEVICE_BASE + ty as u16,
            revision: 1,
            class,
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x40 + ty as u16,
        });
        config.set_interrupt(1, intx_gsi.min(0xff) as u8);
        config
            .add_bar(
                0,
                BarDef {
                    kind: BarKind::Mem64,
                    size: BAR_SIZE,
                    prefetchable: false,
                },
            )
            .map_err(PciTransportError::Config)?;
        let nq = device.queue_max_sizes().len() as u64;
        let caps = [
            vendor_cap(CFG_COMMON, COMMON, 0x40, &[]),
            vendor_cap(
                CFG_NOTIFY,
                NOTIFY,
                (nq * u64::from(NOTIFY_MULTIPLIER)).max(4),
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
            vendor_cap(CFG_ISR, ISR, 4, &[]),
            vendor_cap(CFG_DEVICE, DEVICE_CFG, REGION, &[]),
        ];
        for c in &caps {
            config
                .add_capability(c, &[])
                .map_err(PciTransportError::Config)?;
        }
        // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and data are driver-writable.
        let pci_cfg = vendor_cap(CFG_PCI, 0, 0, &[0; 4]);
        let mut wmask = vec![0u8; 20];
        wmask[4] = 0xff;
        wmask[8..20].fill(0xff);
        let pci_cfg_cap = config
            .add_capability(&pci_cfg, &wmask)
            .map_err(PciTransportError::Config)?;
        let msix = MsixConfig::new(
            &mut config,
            nq as u16 + 1,
            0,
            MSIX_TABLE as u32,
            MSIX_PBA as u32,
        )
        .map_err(PciTransportError::Config)?;
        Ok(Self {
            core: VirtioCore::new(device, mem),
            config,
            msix,
            sink: msi,
            intx,
            isr: 0,
            config_vector: NO_VECTOR,
            queue_vectors: vec![NO_VECTOR; nq as usize],
            pci_cfg_cap,
        })
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

    /// The device model, mutably (for host-side configuration).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.core.device
    }

    /// The device status register (DEVICE_NEEDS_RESET included).
    pub fn status(&self) -> u8 {
        self.core.status()
    }

    fn split(&mut self) -> (&mut VirtioCore<D>, PciIrq<'_>) {
        let irq = PciIrq {
            msix: &mut self.msix,
            sink: &*self.sink,
            intx: &*self.intx,
            isr: &mut self.isr,
            config_vector: self.config_vector,
            queue_vectors: &self.queue_vectors,
        };
        (&mut self.core, irq)
    }

    /// Lets the device do host-side work (e.g. deliver console input).
    pub fn process_event(&mut self) {
        let (core, mut irq) = self.split();
        core.event(&mut irq);
    }

    fn valid_vector(&self, v: u16) -> u16 {
        if v < self.msix.vectors() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn common_read(&self, off: u64, data: &mut [u8]) {
        let c = &self.core;
        let mut img = [0u8; 0x40];
        let mut put = |o: usize, b: &[u8]| img[o..o + b.len()].copy_from_slice(b);
        put(0x00, &c.device_features_sel.to_le_bytes());
        put(0x04, &c.device_features_word().to_le_bytes());
        put(0x08, &c.driver_features_sel.to_le_bytes());
        put(0x0c, &c.driver_features_word().to_le_bytes());
        put(0x10, &self.config_vector.to_le_bytes());
        put(0x12, &c.num_queues().to_le_bytes());
        put(0x14, &[c.status(), c.config_generation]);
        put(0x16, &c.queue_sel.to_le_bytes());
        if let Some(r) = c.selected() {
            let q = usize::from(c.queue_sel);
            put(0x18, &r.size.to_le_bytes());
            put(0x1a, &self.queue_vectors[q].to_le_bytes());
            put(0x1c, &u16::from(r.enabled).to_le_bytes());
            put(0x1e, &c.queue_sel.to_le_bytes());
            put(0x20, &r.desc.to_le_bytes());
            put(0x28, &r.driver.to_le_bytes());
            put(0x30, &r.device.to_le_bytes());
            put(0x38, &c.queue_sel.to_le_bytes());
        }
        for (i, d) in data.iter_mut().enumerate() {
            *d = img.get(off as usize + i).copied().unwrap_or(0);
        }
    }

    fn common_write(&mut self, off: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(b);
        let (lo, hi) = (v as u32, (v >> 32) as u32);
        match (off, n) {
            (0x10, 2) => {
                self.config_vector = self.valid_vector(v as u16);
                return;
            }
            (0x1a, 2) => {
                let vec = self.valid_vector(v as u16);
                if let Some(q) = self.queue_vectors.get_mut(usize::from(self.core.queue_sel)) {
                    *q = vec;
                }
                return;
            }
            _ => {}
        }
        let (core, mut irq) = self.split();
        match (off, n) {
            (0x00, 4) => core.device_features_sel = lo,
            (0x08, 4) => core.driver_features_sel = lo,
            (0x0c, 4) => core.write_driver_features(lo),
            (0x14, 1) => core.write_status(v as u8, &mut irq),
            (0x16, 2) => core.queue_sel = v as u16,
            (0x18, 2) => core.write_queue_size(v as u16, &mut irq),
            (0x1c, 2) if v == 1 => core.enable_queue(&mut irq),
            (0x20 | 0x28 | 0x30, 4 | 8) | (0x24 | 0x2c | 0x34, 4) => {
                let part = match off & !7 {
                    0x20 => RingPart::Desc,
                    0x28 => RingPart::Driver,
                    _ => RingPart::Device,
                };
                match (off % 8, n) {
                    (0, 8) => core.write_queue_addr(part, Some(lo), Some(hi)),
                    (0, _) => core.write_queue_addr(part, Some(lo), None),
                    _ => core.write_queue_addr(part, None, Some(lo)),
                }
            }
            _ => tracing::debug!("virtio-pci: ignored common cfg write at {off:#x} ({n} bytes)"),
        }
        if (off, n, v) == (0x14, 1, 0) {
            self.reset_transport();
        }
    }

    fn reset_transport(&mut self) {
        self.config_vector = NO_VECTOR;
        self.queue_vectors.fill(NO_VECTOR);
        self.isr = 0;
        self.intx.set_level(false);
    }

    fn pci_cfg_target(&self) -> Option<(u64, usize)> {
        let b = self.config.bytes();
        let c = self.pci_cfg_cap;
        let bar = b[c + 4];
        let off = u64::from(self.config.dword(c + 8));
        let len = self.config.dword(c + 12) as usize;
        (bar == 0 && matches!(len, 1 | 2 | 4)).then_some((off, len))
    }
}

/// What a restored virtio-pci device is built from (as for [`VirtioPciDevice::new`]).
pub struct VirtioPciArgs<A> {
    pub device: A,
    pub mem: GuestMemory,
    pub msi: Arc<dyn MsiSink>,
    pub intx: Arc<dyn IrqLine>,
    pub intx_gsi: u32,
    pub dirty: Option<Arc<DirtyLog>>,
}

impl<D: VirtioDevice> Persist for VirtioPciDevice<D> {
    type State = VirtioPciState<D::State>;
    type Args = VirtioPciArgs<D::Args>;

    fn save(&self) -> Self::State {
        VirtioPciState {
            config: self.config.state(),
            msix: self.msix.state(),
            isr: self.isr,
            config_vector: self.config_vector,
            queue_vectors: self.queue_vectors.clone(),
            core: self.core.state(),
        }
    }

    /// Builds the device as [`VirtioPciDevice::new`] does, then loads `s` into it: a
    /// state from a device with another layout (queues, BARs, MSI-X vectors) is refused.
    fn restore(args: Self::Args, s: &Self::State) -> Result<Self, StateError> {
        let bad = |why: &str| StateError::new("virtio-pci", why.to_string());
        let device = D::restore(args.device, &s.core.device)?;
        let mut t = VirtioPciDevice::new(device, args.mem, args.msi, args.intx, args.intx_gsi)
            .map_err(|e| bad(&e.to_string()))?;
        t.core.dirty = args.dirty;
        if s.queue_vectors.len() != t.queue_vectors.len() {
            return Err(bad("queue count differs"));
        }
        let vectors = t.msix.vectors();
        let vector_ok = |v: u16| v == NO_VECTOR || v < vectors;
        if !vector_ok(s.config_vector) || !s.queue_vectors.iter().all(|&v| vector_ok(v)) {
            return Err(bad("an MSI-X vector out of range"));
        }
        t.config.load(&s.config)?;
        t.msix.load(&s.msix)?;
        t.core.load(&s.core)?;
        t.isr = s.isr;
        t.config_vector = s.config_vector;
        t.queue_vectors.clone_from(&s.queue_vectors);
        t.intx.set_level(t.isr != 0 && !t.msix.enabled());
        Ok(t)
    }
}

impl<D: VirtioDevice> PciDevice for VirtioPciDevice<D> {
    fn config_read(&mut self, offset: u64, data: &mut [u8]) {
        let data_field = (self.pci_cfg_cap + 16) as u64;
        if offset == data_field {
            if let Some((off, len)) = self.pci_cfg_target() {
                let mut buf = [0u8; 4];
                self.bar_read(0, off, &mut buf[..len]);
                for (i, d) in data.iter_mut().enumerate() {
                    *d = buf.get(i).copied().unwrap_or(0);
                }
                return;
            }
        }
        self.config.read(offset, data)
    }

    fn config_write(&mut self, offset: u64, data: &[u8]) {
        self.config.write(offset, data);
        let end = offset + data.len() as u64;
        let cap = self.msix.cap_offset() as u64;
        if offset < cap + 4 && end > cap + 2 {
            self.msix.config_written(&self.config, &*self.sink);
        }
        let data_field = (self.pci_cfg_cap + 16) as u64;
        if offset == data_field {
            if let Some((off, len)) = self.pci_cfg_target() {
                let n = len.min(data.len());
                self.bar_write(0, off, &data[..n]);
            }
        }
    }

    fn bar_defs(&self) -> Vec<(usize, BarDef)> {
        self.config.bar_defs()
    }

    fn set_bar_address(&mut self, index: usize, addr: u64) {
        self.config.set_bar_address(index, addr)
    }

    fn decoded_bars(&self) -> Vec<BarRange> {
        self.config.decoded_bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 {
            return;
        }
        let (region, off) = (offset & !(REGION - 1), offset & (REGION - 1));
        match region {
            COMMON => self.common_read(off, data),
            ISR if off == 0 => {
                if let Some(d) = data.first_mut() {
                    *d = self.isr;
                }
                self.isr = 0;
                self.intx.set_level(false);
            }
            DEVICE_CFG => self.core.device.read_config(off, data),
            MSIX_TABLE => self.msix.table_read(off, data),
            MSIX_PBA => self.msix.pba_read(off, data),
            _ => {}
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        let (region, off) = (offset & !(REGION - 1), offset & (REGION - 1));
        match region {
            COMMON => self.common_write(off, data),
            DEVICE_CFG => self.core.device.write_config(off, data),
            NOTIFY => {
                let q = (off / u64::from(NOTIFY_MULTIPLIER)).min(u64::from(u16::MAX)) as u16;
                let (core, mut irq) = self.split();
                core.notify(q, &mut irq);
            }
            MSIX_TABLE => self.msix.table_write(off, data, &*self.sink),
            _ => {}
        }
    }
}
