//! The bounded queue between a backend's host thread and the device, and the
//! waker that tells the device frames are waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

/// Frames waiting for the guest, at most this many (then the newest are dropped,
/// as a NIC's ring overflows). 256 full-size frames bound it at ~16 MiB.
pub const QUEUE_FRAMES: usize = 256;

/// Received frames waiting for the guest's buffers. Cloned handles share it.
#[derive(Clone, Default)]
pub struct FrameQueue(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    frames: VecDeque<Vec<u8>>,
    dropped: u64,
}

impl FrameQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame; false (and counted) if the queue was full.
    pub fn push(&self, frame: Vec<u8>) -> bool {
        let mut q = self.lock();
        if q.frames.len() >= QUEUE_FRAMES {
            q.dropped += 1;
            return false;
        }
        q.frames.push_back(frame);
        true
    }

    /// The oldest waiting frame.
    pub fn pop(&self) -> Option<Vec<u8>> {
        self.lock().frames.pop_front()
    }

    /// Puts a frame back at the front (the guest had no room for it).
    pub fn unpop(&self, frame: Vec<u8>) {
        self.lock().frames.push_front(frame);
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// No frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

type WakeFn = Arc<dyn Fn() + Send + Sync>;

/// What a backend's thread calls after queueing frames. The VMM sets the function
/// once the device is plugged in (it runs the transport's `process_event`); until
/// then waking does nothing and frames wait in the queue. Never call it while
/// holding a lock the device's `recv` takes.
#[derive(Clone, Default)]
pub struct RxWaker(Arc<OnceLock<WakeFn>>);

impl RxWaker {
    /// A waker that does nothing until [`RxWaker::set`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the function (once; later calls are ignored).
    pub fn set(&self, f: WakeFn) {
        let _ = self.0.set(f);
    }

    /// Calls the function, if one is set.
    pub fn wake(&self) {
        if let Some(f) = self.0.get() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn queue_is_bounded_and_keeps_order() {
        let q = FrameQueue::default();
        for i in 0..QUEUE_FRAMES + 3 {
            q.push(vec![i as u8]);
        }
        assert_eq!(q.len(), QUEUE_FRAMES);
        assert_eq!(q.dropped(), 3);
        assert_eq!(q.pop(), Some(vec![0]));
        q.unpop(vec![0]);
        assert_eq!(q.pop(), Some(vec![0]));
        assert_eq!(q.pop(), Some(vec![1]));
    }

    #[test]
    fn waker_does_nothing_until_set() {
        let w = RxWaker::new();
        w.wake();
        let n = Arc::new(AtomicUsize::new(0));
        let c = n.clone();
        w.clone().set(Arc::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }));
        w.wake();
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }
}
