//! virtio-console (virtio 1.2, section 5.3), single port (no MULTIPORT): the
//! guest's `hvc0`. Queue 0 carries host input to the guest, queue 1 guest
//! output to a host [`Write`].
//!
//! Host input is pushed through a [`ConsoleInput`] handle from any thread;
//! that thread then calls the transport's `process_event()` to deliver it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_device::bus::lock;

use crate::device::{check_acked, DeviceError, QueueCtx, VirtioDevice};
use crate::{device_type, features, queue};
use vm_device::{Persist, StateError};

/// Queue size of both queues.
pub const QUEUE_SIZE: u16 = 256;
/// Host input buffered while the guest posts no receive buffers; more is dropped.
pub const INPUT_LIMIT: usize = 64 * 1024;
const RX: u16 = 0;
const TX: u16 = 1;

/// Serializable state of the console.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleState {
    pub acked_features: u64,
    /// Input not yet delivered to the guest.
    pub pending_input: Vec<u8>,
}

/// Producer side of the console's input buffer.
#[derive(Clone, Default)]
pub struct ConsoleInput(Arc<Mutex<VecDeque<u8>>>);

impl ConsoleInput {
    /// Queues bytes for the guest; returns how many were accepted (the rest
    /// is dropped when [`INPUT_LIMIT`] bytes are already waiting).
    pub fn push(&self, bytes: &[u8]) -> usize {
        let mut q = lock(&self.0);
        let n = bytes.len().min(INPUT_LIMIT.saturating_sub(q.len()));
        q.extend(&bytes[..n]);
        n
    }

    /// Bytes waiting for the guest.
    pub fn pending(&self) -> usize {
        lock(&self.0).len()
    }
}

/// Spawns a thread that copies `reader` (e.g. the host's stdin) into `input`
/// and calls `kick` after each chunk; `kick` should lock the transport and call
/// its `process_event()`. While the guest is not reading, input waits (up to
/// [`INPUT_LIMIT`] bytes) and the thread retries every 10 ms. Ends at EOF or on
/// a read error.
pub fn spawn_input_thread<R, K>(
    mut reader: R,
    input: ConsoleInput,
    kick: K,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    R: std::io::Read + Send + 'static,
    K: Fn() + Send + 'static,
{
    std::thread::Builder::new()
        .name("virtio-console-in".into())
        .spawn(move || {
            sandbox::enter(sandbox::ThreadKind::Io);
            let mut buf = [0u8; 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut rest = &buf[..n];
                loop {
                    let taken = input.push(rest);
                    rest = &rest[taken..];
                    kick();
                    if rest.is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        })
}

/// The console device.
pub struct Console {
    output: Box<dyn Write + Send>,
    input: ConsoleInput,
    acked_features: u64,
}

impl Console {
    /// A console writing guest output to `output`. Returns the device and the
    /// handle that feeds it input.
    pub fn new(output: Box<dyn Write + Send>) -> (Self, ConsoleInput) {
        let input = ConsoleInput::default();
        (
            Self {
                output,
                input: input.clone(),
                acked_features: 0,
            },
            input,
        )
    }

    fn deliver_input(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        if !ctx.queues.get(usize::from(RX)).is_some_and(|q| q.ready()) {
            return Ok(());
        }
        let input = self.input.clone();
        queue::drain_queue(ctx, RX, |chain, mem| {
            let mut q = lock(&input.0);
            if q.is_empty() {
                return Ok(None);
            }
            let n = (chain.writable_len() as usize).min(q.len());
            let bytes: Vec<u8> = q.drain(..n).collect();
            drop(q);
            chain.write_at(mem, 0, &bytes)?;
            Ok(Some(n as u32))
        })
    }

    fn transmit(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        let out = &mut self.output;
        queue::drain_queue(ctx, TX, |chain, mem| {
            let len = chain.readable_len();
            let mut buf = [0u8; 4096];
            let mut done = 0u64;
            while done < len {
                let n = ((len - done) as usize).min(buf.len());
                chain.read_at(mem, done, &mut buf[..n])?;
                if let Err(e) = out.write_all(&buf[..n]) {
                    tracing::warn!("virtio-console: output failed: {e}");
                    break;
                }
                done += n as u64;
            }
            let _ = out.flush();
            Ok(Some(0))
        })
    }
}

/// What a restored console is wired to. `input` is the handle the VMM already feeds
/// (from [`Console::new`]), so its input keeps reaching the guest.
pub struct ConsoleArgs {
    pub output: Box<dyn Write + Send>,
    pub input: ConsoleInput,
}

impl Persist for Console {
    type State = ConsoleState;
    type Args = ConsoleArgs;

    fn save(&self) -> ConsoleState {
        ConsoleState {
            acked_features: self.acked_features,
            pending_input: lock(&self.input.0).iter().copied().collect(),
        }
    }

    fn restore(args: ConsoleArgs, s: &ConsoleState) -> Result<Self, StateError> {
        if s.pending_input.len() > INPUT_LIMIT {
            return Err(StateError::new(
                "virtio-console",
                format!(
                    "{} bytes of pending input, more than its buffer holds",
                    s.pending_input.len()
                ),
            ));
        }
        check_acked("virtio-console", features::RING, s.acked_features)?;
        let mut q = lock(&args.input.0);
        q.clear();
        q.extend(&s.pending_input);
        drop(q);
        Ok(Console {
            output: args.output,
            input: args.input,
            acked_features: s.acked_features,
        })
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        features::RING
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: none of their features is offered.
        data.fill(0);
    }
    fn activate(&mut self, acked_features: u64, _queues: &[Queue]) -> Result<(), DeviceError> {
        self.acked_features = acked_features;
        Ok(())
    }
    fn process_queue(&mut self, index: u16, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        match index {
            RX => self.deliver_input(ctx),
            _ => self.transmit(ctx),
        }
    }
    fn process_event(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceError> {
        self.deliver_input(ctx)
    }
    fn reset(&mut self) {
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod tests;
