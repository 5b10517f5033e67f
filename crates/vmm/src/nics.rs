//! The `--net` NICs: each a backend from the `net` crate under a virtio-net device.
//! A backend's thread queues received frames and wakes the device through the
//! transport's `process_event`, unless the VM is paused (then the frames wait and
//! are delivered on resume). See docs/net.md.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::control::Control;
use crate::platform::Attacher;

/// Opens every backend (before the guest starts, so an unusable one is an error
/// now) and plugs a virtio-net device in for each, as `virtio-net0`, `virtio-net1`...
pub(crate) fn attach(
    a: &mut Attacher<'_>,
    nets: &[net::NetSpec],
    control: &Arc<Control>,
) -> Result<()> {
    for (i, spec) in nets.iter().enumerate() {
        let waker = net::RxWaker::new();
        let backend = net::open(spec, waker.clone()).with_context(|| format!("--net {spec}"))?;
        tracing::info!("net{i}: {}", backend.describe());
        let backend: net::SharedBackend = Arc::new(Mutex::new(backend));
        let mac = spec.mac_or_default(i);
        let dev = virtio::net::Net::new(backend.clone(), mac);
        let kick = a.attach(&format!("virtio-net{i}"), dev, move || backend.clone())?;
        let ctl = control.clone();
        let deliver: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctl.device_work(|| kick()));
        control.add_on_resume(deliver.clone());
        waker.set(deliver);
        // Frames that came in while the device was being built.
        waker.wake();
    }
    Ok(())
}
