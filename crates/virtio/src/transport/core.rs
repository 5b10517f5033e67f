//! What the PCI and MMIO transports share: device status, feature
//! negotiation, queue configuration registers, activation, doorbells, reset,
//! and breaking the device (DEVICE_NEEDS_RESET) when the driver misbehaves.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use virtio_queue::{Queue, QueueState, QueueT};

use vm_device::StateError;
use vmm_types::dirty::DirtyLog;

use crate::device::{DeviceError, QueueCtx, VirtioDevice, VirtioInterrupt};
use crate::{features, status, GuestMemory};

/// Driver-programmed configuration of one queue (the transport registers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRegs {
    pub size: u16,
    pub enabled: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// Which ring address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingPart {
    Desc,
    Driver,
    Device,
}

/// Called with a queue's index when its doorbell rang and the work is another
/// thread's (see [`VirtioCore::notify`]): it signals that queue's worker, which then
/// calls the transport's `process_notified`. It runs on the vCPU thread with the
/// transport locked, so it must only signal (never block, never lock the transport).
pub type NotifyHook = Arc<dyn Fn(u16) + Send + Sync>;

/// Serializable transport-independent state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreState<S> {
    pub status: u8,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u16,
    pub queues: Vec<QueueRegs>,
    /// (next_avail, next_used) of each queue.
    pub positions: Vec<(u16, u16)>,
    pub config_generation: u8,
    pub broken: bool,
    pub device: S,
}

/// The transport-independent half of a transport.
pub struct VirtioCore<D: VirtioDevice> {
    pub(crate) device: D,
    pub(crate) mem: GuestMemory,
    pub(crate) status: u8,
    pub(crate) device_features_sel: u32,
    pub(crate) driver_features_sel: u32,
    pub(crate) driver_features: u64,
    pub(crate) queue_sel: u16,
    pub(crate) regs: Vec<QueueRegs>,
    pub(crate) queues: Vec<Queue>,
    pub(crate) config_generation: u8,
    pub(crate) broken: bool,
    /// Where written guest pages are logged (live migration).
    pub(crate) dirty: Option<Arc<DirtyLog>>,
    /// With a hook, doorbells are checked here and processed by another thread.
    pub(crate) notify_hook: Option<NotifyHook>,
}

fn fresh_queues(max: &[u16]) -> Vec<Queue> {
    // A max size of 0 is a device-model bug; fall back to a 1-entry queue.
    max.iter()
        .map(|&m| Queue::new(m).or_else(|_| Queue::new(1)).unwrap_or_default())
        .collect()
}

impl<D: VirtioDevice> VirtioCore<D> {
    pub(crate) fn new(device: D, mem: GuestMemory) -> Self {
        let max = device.queue_max_sizes();
        let regs = max
            .iter()
            .map(|&m| QueueRegs {
                size: m,
                ..Default::default()
            })
            .collect();
        Self {
            queues: fresh_queues(&max),
            regs,
            device,
            mem,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
            broken: false,
            dirty: None,
            notify_hook: None,
        }
    }

    /// Features offered to the driver.
    pub(crate) fn device_features(&self) -> u64 {
        self.device.features() | features::VERSION_1
    }

    pub(crate) fn device_features_word(&self) -> u32 {
        match self.device_features_sel {
            0 => self.device_features() as u32,
            1 => (self.device_features() >> 32) as u32,
            _ => 0,
        }
    }

    pub(crate) fn driver_features_word(&self) -> u32 {
        match self.driver_features_sel {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    pub(crate) fn write_driver_features(&mut self, val: u32) {
        if self.status & status::FEATURES_OK != 0 {
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(val),
            1 => {
                self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(val) << 32)
            }
            _ => {}
        }
    }

    /// The status register as the driver reads it.
    pub(crate) fn status(&self) -> u8 {
        self.status
            | if self.broken {
                status::DEVICE_NEEDS_RESET
            } else {
                0
            }
    }

    pub(crate) fn active(&self) -> bool {
        self.status & status::DRIVER_OK != 0
    }

    /// Number of queues.
    pub(crate) fn num_queues(&self) -> u16 {
        self.regs.len() as u16
    }

    pub(crate) fn selected(&self) -> Option<&QueueRegs> {
        self.regs.get(usize::from(self.queue_sel))
    }

    pub(crate) fn max_size(&self, q: u16) -> u16 {
        self.queues.get(usize::from(q)).map_or(0, |q| q.max_size())
    }

    /// Breaks the device: logged once, DEVICE_NEEDS_RESET, configuration interrupt.
    pub(crate) fn fail(&mut self, err: DeviceError, irq: &mut dyn VirtioInterrupt) {
        if self.broken {
            return;
        }
        tracing::error!(
            device_type = self.device.device_type(),
            "virtio device needs reset: {err}"
        );
        self.broken = true;
        if self.status & status::DRIVER_OK != 0 {
            self.config_generation = self.config_generation.wrapping_add(1);
            irq.signal_config();
        }
    }

    /// Writes the size register of the selected queue.
    pub(crate) fn write_queue_size(&mut self, size: u16, irq: &mut dyn VirtioInterrupt) {
        let q = self.queue_sel;
        let max = self.max_size(q);
        let Some(r) = self.regs.get_mut(usize::from(q)) else {
            return;
        };
        if r.enabled {
            return;
        }
        if size == 0 || !size.is_power_of_two() || size > max {
            r.size = size;
            self.fail(
                DeviceError::Transport(format!("queue {q} size {size} (max {max}, power of two)")),
                irq,
            );
            return;
        }
        r.size = size;
    }

    /// Writes half (or all) of a ring address of the selected queue.
    pub(crate) fn write_queue_addr(&mut self, part: RingPart, lo: Option<u32>, hi: Option<u32>) {
        let Some(r) = self.regs.get_mut(usize::from(self.queue_sel)) else {
            return;
        };
        if r.enabled {
            return;
        }
        let field = match part {
            RingPart::Desc => &mut r.desc,
            RingPart::Driver => &mut r.driver,
            RingPart::Device => &mut r.device,
        };
        if let Some(lo) = lo {
            *field = (*field & !0xffff_ffff) | u64::from(lo);
        }
        if let Some(hi) = hi {
            *field = (*field & 0xffff_ffff) | (u64::from(hi) << 32);
        }
    }

    /// The driver enabled the selected queue: the configuration must be valid.
    pub(crate) fn enable_queue(&mut self, irq: &mut dyn VirtioInterrupt) {
        let q = self.queue_sel;
        let i = usize::from(q);
        let Some(r) = self.regs.get(i).copied() else {
            return;
        };
        if r.enabled {
            return;
        }
        let state = QueueState {
            max_size: self.max_size(q),
            size: r.size,
            ready: true,
            desc_table: r.desc,
            avail_ring: r.driver,
            used_ring: r.device,
            ..Default::default()
        };
        match Queue::try_from(state) {
            Ok(queue) => {
                self.queues[i] = queue;
                self.regs[i].enabled = true;
            }
            Err(e) => self.fail(
                DeviceError::Transport(format!("queue {q} cannot be enabled: {e}")),
                irq,
            ),
        }
    }

    /// Writes the status register.
    pub(crate) fn write_status(&mut self, val: u8, irq: &mut dyn VirtioInterrupt) {
        if val == 0 {
            self.reset();
            return;
        }
        let mut val = val & !status::DEVICE_NEEDS_RESET;
        let newly = val & !self.status;
        if newly & status::FEATURES_OK != 0 {
            let offered = self.device_features();
            if self.driver_features & !offered != 0
                || self.driver_features & features::VERSION_1 == 0
            {
                tracing::warn!(
                    "virtio driver accepted unsupported features {:#x}",
                    self.driver_features
                );
                val &= !status::FEATURES_OK;
            }
        }
        self.status = val;
        if newly & status::DRIVER_OK != 0 && !self.broken {
            if let Err(e) = self.activate() {
                self.fail(e, irq);
            }
        }
    }

    fn activate(&mut self) -> Result<(), DeviceError> {
        if self.status & status::FEATURES_OK == 0 {
            return Err(DeviceError::Transport(
                "DRIVER_OK without FEATURES_OK".into(),
            ));
        }
        let event_idx = self.driver_features & features::EVENT_IDX != 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            if !q.ready() {
                continue;
            }
            q.set_event_idx(event_idx);
            if !q.is_valid(&self.mem) {
                return Err(DeviceError::Transport(format!(
                    "queue {i} rings are not in guest memory"
                )));
            }
        }
        self.device.activate(self.driver_features, &self.queues)
    }

    /// The driver rang the doorbell of queue `q`. Without a hook the queue is
    /// processed here; with one, the hook is told and the caller goes on.
    pub(crate) fn notify(&mut self, q: u16, irq: &mut dyn VirtioInterrupt) {
        if self.broken {
            return;
        }
        if !self.active() {
            tracing::debug!("virtio notify of queue {q} before DRIVER_OK ignored");
            return;
        }
        if !self.queues.get(usize::from(q)).is_some_and(|x| x.ready()) {
            self.fail(DeviceError::QueueNotReady(q), irq);
            return;
        }
        match &self.notify_hook {
            Some(hook) => hook(q),
            None => self.process(q, irq),
        }
    }

    /// Processes queue `q` for a doorbell the hook was told of. The driver may have
    /// reset the device or the queue since (or the signal is a spurious one, after a
    /// resume or a restore): then there is nothing to do.
    pub(crate) fn process_notified(&mut self, q: u16, irq: &mut dyn VirtioInterrupt) {
        if self.broken || !self.active() {
            return;
        }
        if self.queues.get(usize::from(q)).is_some_and(|x| x.ready()) {
            self.process(q, irq);
        }
    }

    fn process(&mut self, q: u16, irq: &mut dyn VirtioInterrupt) {
        let mut ctx = QueueCtx {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: &mut *irq,
            dirty: self.dirty.as_deref(),
        };
        if let Err(e) = self.device.process_queue(q, &mut ctx) {
            self.fail(e, irq);
        }
    }

    /// Host-side event for the device (console input...).
    pub(crate) fn event(&mut self, irq: &mut dyn VirtioInterrupt) {
        if self.broken || !self.active() {
            return;
        }
        let mut ctx = QueueCtx {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: &mut *irq,
            dirty: self.dirty.as_deref(),
        };
        if let Err(e) = self.device.process_event(&mut ctx) {
            self.fail(e, irq);
        }
    }

    /// Device reset (status 0).
    pub(crate) fn reset(&mut self) {
        self.device.reset();
        let max = self.device.queue_max_sizes();
        self.queues = fresh_queues(&max);
        self.regs = max
            .iter()
            .map(|&m| QueueRegs {
                size: m,
                ..Default::default()
            })
            .collect();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.broken = false;
    }

    pub(crate) fn state(&self) -> CoreState<D::State> {
        CoreState {
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            queues: self.regs.clone(),
            positions: self
                .queues
                .iter()
                .map(|q| (q.next_avail(), q.next_used()))
                .collect(),
            config_generation: self.config_generation,
            broken: self.broken,
            device: self.device.save(),
        }
    }

    /// Loads the transport half of `s` into a core whose device was restored from
    /// `s.device` (see the transports' `Persist::restore`).
    pub(crate) fn load(&mut self, s: &CoreState<D::State>) -> Result<(), StateError> {
        let bad = |why: &str| StateError::new("virtio", why.to_string());
        if s.queues.len() != self.regs.len() || s.positions.len() != self.regs.len() {
            return Err(bad("queue count differs"));
        }
        if s.driver_features & !self.device_features() != 0 {
            return Err(bad(
                "the driver's features include ones the device does not offer",
            ));
        }
        if usize::from(s.queue_sel) > self.regs.len() {
            return Err(bad("selected queue out of range"));
        }
        let event_idx =
            s.status & status::DRIVER_OK != 0 && s.driver_features & features::EVENT_IDX != 0;
        let max = self.device.queue_max_sizes();
        let mut queues = fresh_queues(&max);
        for (i, r) in s.queues.iter().enumerate() {
            if !r.enabled {
                continue;
            }
            let state = QueueState {
                max_size: max[i],
                next_avail: s.positions[i].0,
                next_used: s.positions[i].1,
                event_idx_enabled: event_idx,
                size: r.size,
                ready: true,
                desc_table: r.desc,
                avail_ring: r.driver,
                used_ring: r.device,
            };
            queues[i] = Queue::try_from(state).map_err(|_| bad("invalid queue"))?;
        }
        self.queues = queues;
        self.regs.clone_from(&s.queues);
        self.status = s.status;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.queue_sel = s.queue_sel;
        self.config_generation = s.config_generation;
        self.broken = s.broken;
        // Rings outside the restored memory would break the device at its first doorbell.
        if self.active()
            && self
                .queues
                .iter()
                .any(|q| q.ready() && !q.is_valid(&self.mem))
        {
            return Err(bad("queue rings outside guest memory"));
        }
        Ok(())
    }
}
