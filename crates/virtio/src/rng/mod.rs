//! virtio-rng (virtio 1.2, section 5.4): one request queue whose writable
//! buffers the device fills with entropy from the host's `getrandom(2)`.

use serde::{Deserialize, Serialize};
use virtio_queue::Queue;

use crate::device::{check_acked, DeviceError, QueueCtx, VirtioDevice};
use crate::{device_type, features, queue};
use vm_device::{Persist, StateError};

/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
/// At most this many bytes are produced per request.
pub const MAX_REQUEST: u64 = 64 * 1024;

/// Where the device takes its bytes from.
pub type EntropySource = Box<dyn FnMut(&mut [u8]) -> std::io::Result<()> + Send>;

/// Fills `buf` from the kernel's entropy pool (`getrandom(2)`, blocking until seeded).
pub fn host_getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for
        // the duration of the call; getrandom writes at most that many bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Serializable state of the entropy device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub acked_features: u64,
}

/// The entropy device.
pub struct Rng {
    source: EntropySource,
    acked_features: u64,
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    /// A device fed by the host's `getrandom`.
    pub fn new() -> Self {
        Self::with_source(Box::new(host_getrandom))
    }

    /// A device fed by `source` (tests).
    pub fn with_source(source: EntropySource) -> Self {
        Self {
            source,
            acked_features: 0,
        }
    }
}

impl Persist for Rng {
    type State = RngState;
    /// Where the entropy comes from.
    type Args = EntropySource;

    fn save(&self) -> RngState {
        RngState {
            acked_features: self.acked_features,
        }
    }

    fn restore(source: EntropySource, s: &RngState) -> Result<Self, StateError> {
        let mut r = Rng::with_source(source);
        check_acked("virtio-rng", r.features(), s.acked_features)?;
        r.acked_features = s.acked_features;
        Ok(r)
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        features::RING
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(&mut self, acked_features: u64, _queues: &[Queue]) -> Result<(), DeviceError> {
        self.acked_features = acked_features;
        Ok(())
    }
    fn process_queue(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        let source = &mut self.source;
        queue::drain_queue(ctx, index, |chain, mem| {
            let want = chain.writable_len().min(MAX_REQUEST) as usize;
            let mut buf = [0u8; 4096];
            let mut done = 0;
            while done < want {
                let n = (want - done).min(buf.len());
                if let Err(e) = source(&mut buf[..n]) {
                    tracing::warn!("virtio-rng: entropy source failed: {e}");
                    break;
                }
                done += chain.write_at(mem, done as u64, &buf[..n])?;
            }
            Ok(Some(done as u32))
        })
    }
    fn reset(&mut self) {
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod tests;
