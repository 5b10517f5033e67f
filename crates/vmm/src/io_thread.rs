//! Device I/O off the vCPU threads (docs/io-thread.md): one worker thread per queue
//! of a served device (virtio-blk). The transport's notify hook signals the queue's
//! eventfd on a doorbell and the vCPU goes on; the worker wakes and processes the
//! queue, in order, inside [`Control::device_work`] (so a pause waits for it and
//! none starts while paused). Resumes and restores signal every queue again (work a
//! pause deferred; requests a snapshot holds). Dropping [`IoThreads`] (with its
//! machine) stops and joins every worker.

mod eventfd;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use virtio::transport::{NotifyHook, VirtioMmioDevice, VirtioPciDevice};
use virtio::VirtioDevice;
use vm_device::bus::lock;

use crate::control::Control;
use crate::device_tree::DeviceTree;
pub use eventfd::EventFd;

/// A transport whose doorbells queue workers process.
pub(crate) trait Served: Send + Sync {
    fn set_notify_hook(&self, hook: Option<NotifyHook>);
    fn process_notified(&self, q: u16);
    fn num_queues(&self) -> u16;
}

impl<D: VirtioDevice + Send> Served for Mutex<VirtioPciDevice<D>> {
    fn set_notify_hook(&self, hook: Option<NotifyHook>) {
        lock(self).set_notify_hook(hook);
    }
    fn process_notified(&self, q: u16) {
        lock(self).process_notified(q);
    }
    fn num_queues(&self) -> u16 {
        lock(self).num_queues()
    }
}

impl<D: VirtioDevice + Send> Served for Mutex<VirtioMmioDevice<D>> {
    fn set_notify_hook(&self, hook: Option<NotifyHook>) {
        lock(self).set_notify_hook(hook);
    }
    fn process_notified(&self, q: u16) {
        lock(self).process_notified(q);
    }
    fn num_queues(&self) -> u16 {
        lock(self).num_queues()
    }
}

struct Worker {
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

/// The queue workers of one machine.
#[derive(Default)]
pub struct IoThreads {
    workers: Vec<Worker>,
    stop: Arc<AtomicBool>,
}

impl IoThreads {
    /// Starts a worker per queue of `t`, named `{name}-q{N}`, and hooks `t`'s
    /// doorbells to them (again after every restore of the device tree, which builds
    /// a new transport behind the same lock). Returns each queue's eventfd.
    pub(crate) fn serve(
        &mut self,
        name: &str,
        t: Arc<dyn Served>,
        control: &Arc<Control>,
        tree: &mut DeviceTree,
    ) -> Result<Vec<Arc<EventFd>>> {
        let mut wakes = Vec::new();
        for q in 0..t.num_queues() {
            let wake = Arc::new(EventFd::new().context("cannot make a queue eventfd")?);
            let (w, stop, ctl, dev) = (wake.clone(), self.stop.clone(), control.clone(), t.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{name}-q{q}"))
                .spawn(move || {
                    sandbox::enter(sandbox::ThreadKind::Io);
                    work(&w, &stop, &ctl, &*dev, q);
                })
                .context("cannot start a queue worker")?;
            self.workers.push(Worker {
                wake: wake.clone(),
                thread: Some(thread),
            });
            wakes.push(wake);
        }
        let all: Arc<[Arc<EventFd>]> = wakes.clone().into();
        let a = all.clone();
        let hook: NotifyHook = Arc::new(move |q| {
            if let Some(e) = a.get(usize::from(q)) {
                e.signal();
            }
        });
        t.set_notify_hook(Some(hook.clone()));
        let renotify: Arc<dyn Fn() + Send + Sync> =
            Arc::new(move || all.iter().for_each(|e| e.signal()));
        control.add_on_resume(renotify.clone());
        tree.after_restore(move || {
            t.set_notify_hook(Some(hook.clone()));
            renotify();
        });
        Ok(wakes)
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker runs.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

/// A worker: wait for the doorbell, process the queue unless the VM is paused.
fn work(wake: &EventFd, stop: &AtomicBool, control: &Control, t: &dyn Served, q: u16) {
    loop {
        if let Err(e) = wake.wait() {
            tracing::error!("queue worker {q}: cannot wait for its doorbell: {e}");
            return;
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        control.device_work(|| t.process_notified(q));
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in &self.workers {
            w.wake.signal();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                if t.join().is_err() {
                    tracing::error!("a queue worker panicked");
                }
            }
        }
    }
}
