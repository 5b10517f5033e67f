//! The hub: what the device and the host thread share, one bounded pair of
//! byte buffers per host connection and the few facts each side tells the
//! other. Neither side ever blocks on the other: the device (on a vCPU thread)
//! only copies bytes in and out and flags work for the thread; the thread does
//! the socket I/O and wakes the device through the [`RxWaker`] the VMM set.
//!
//! Bounds: at most [`MAX_CONNS`] connections (connections the device has
//! let go of count until the thread has closed them), each holding at most
//! [`CONN_BUF`] bytes per direction, so a guest (or a host program) can make
//! the VMM hold at most `MAX_CONNS * 2 * CONN_BUF` bytes (32 MiB).

use std::collections::{BTreeMap, VecDeque};
use std::num::Wrapping;
use std::sync::{Arc, Mutex, MutexGuard};

use net::RxWaker;
use vm_device::bus::lock;

use super::sys::EventFd;

/// A host connection's id (never reused by one hub).
pub type ConnId = u64;

/// Bytes buffered per connection and direction. It is also the `buf_alloc` the
/// device advertises to the guest, so a guest that respects its credit never
/// finds the buffer full.
pub const CONN_BUF: usize = 64 * 1024;

/// Host connections at once (the device's connections are a subset).
pub const MAX_CONNS: usize = 256;

/// Where a host connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A host program asked for guest port `port` (`CONNECT port`); the guest
    /// has not accepted yet.
    Requested { port: u32 },
    /// The guest asked for host port `port`; the thread has not connected yet.
    Connecting { port: u32 },
    /// Bytes flow.
    Open,
    /// Connecting failed, or the host side broke (a read or write error).
    Failed,
}

/// How the device lets go of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Write out what the guest sent, then close.
    Flush,
    /// Close now, dropping what is buffered.
    Abort,
}

/// What the device sees of a host connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub phase: Phase,
    /// Bytes from the host waiting for the guest.
    pub rx_len: usize,
    /// The host will send no more (it shut its side down or closed).
    pub host_eof: bool,
    /// Bytes of guest data written to the host so far (wrapping, like `fwd_cnt`).
    pub forwarded: Wrapping<u32>,
}

/// One host connection's shared state.
#[derive(Debug)]
pub(crate) struct HostConn {
    pub phase: Phase,
    /// Host → guest.
    pub rx: VecDeque<u8>,
    pub host_eof: bool,
    /// `OK <port>\n`, written to the host before any guest data.
    pub greeting: Vec<u8>,
    /// Guest → host.
    pub tx: VecDeque<u8>,
    pub forwarded: Wrapping<u32>,
    /// The guest will send no more: shut the host's side down once `tx` is out.
    pub shut_write: bool,
    /// The device let go of it.
    pub release: Option<Release>,
}

impl HostConn {
    fn new(phase: Phase) -> Self {
        HostConn {
            phase,
            rx: VecDeque::new(),
            host_eof: false,
            greeting: Vec::new(),
            tx: VecDeque::new(),
            forwarded: Wrapping(0),
            shut_write: false,
            release: None,
        }
    }
}

/// The state behind the hub's lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub conns: BTreeMap<ConnId, HostConn>,
    next_id: ConnId,
    /// Host requests the device has not taken yet.
    requests: VecDeque<ConnId>,
    /// The device changed something the thread must act on.
    host_dirty: bool,
    /// Keep waking the device until it has run once (after a restore).
    pub wake_requested: bool,
    /// The thread must end.
    pub stop: bool,
}

impl Inner {
    fn add(&mut self, phase: Phase) -> Option<ConnId> {
        if self.conns.len() >= MAX_CONNS {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(id, HostConn::new(phase));
        Some(id)
    }
}

/// The shared state, the thread's eventfd and the device's waker. Cloned
/// handles share them.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
    /// Wakes the host thread (none without one: tests play the host).
    kick: Option<Arc<EventFd>>,
    waker: RxWaker,
}

impl Hub {
    pub(crate) fn new(kick: Option<Arc<EventFd>>, waker: RxWaker) -> Self {
        Hub {
            inner: Arc::default(),
            kick,
            waker,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    pub(crate) fn kick(&self) -> Option<&EventFd> {
        self.kick.as_deref()
    }

    /// Runs `f` under the lock, then wakes the host thread if `f` left it work.
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.lock();
        let r = f(&mut g);
        let dirty = std::mem::take(&mut g.host_dirty);
        drop(g);
        if dirty {
            if let Some(k) = &self.kick {
                k.signal();
            }
        }
        r
    }

    /// Runs `f` on connection `id` (if it exists and the device still has it),
    /// marking the thread's work if `f` says so.
    fn with_conn<R: Default>(&self, id: ConnId, f: impl FnOnce(&mut HostConn) -> (R, bool)) -> R {
        self.with(|h| {
            let Some(c) = h.conns.get_mut(&id).filter(|c| c.release.is_none()) else {
                return R::default();
            };
            let (r, dirty) = f(c);
            h.host_dirty |= dirty;
            r
        })
    }

    // --- The device's side. ---

    /// Host programs waiting for the guest to accept them: (id, guest port).
    pub(crate) fn take_requests(&self) -> Vec<(ConnId, u32)> {
        self.with(|h| {
            let ids: Vec<_> = h.requests.drain(..).collect();
            ids.into_iter()
                .filter_map(|id| match h.conns.get(&id)?.phase {
                    Phase::Requested { port } => Some((id, port)),
                    _ => None,
                })
                .collect()
        })
    }

    /// Opens a connection to host port `port` (the thread connects); `None` at
    /// the connection limit.
    pub(crate) fn connect(&self, port: u32) -> Option<ConnId> {
        self.with(|h| {
            let id = h.add(Phase::Connecting { port })?;
            h.host_dirty = true;
            Some(id)
        })
    }

    /// Where connection `id` stands; `None` once it is gone.
    pub(crate) fn status(&self, id: ConnId) -> Option<Status> {
        let h = self.lock();
        let c = h.conns.get(&id).filter(|c| c.release.is_none())?;
        Some(Status {
            phase: c.phase,
            rx_len: c.rx.len(),
            host_eof: c.host_eof,
            forwarded: c.forwarded,
        })
    }

    /// Takes up to `buf.len()` bytes the host sent; returns how many.
    pub(crate) fn read(&self, id: ConnId, buf: &mut [u8]) -> usize {
        self.with_conn(id, |c| {
            let was_full = c.rx.len() >= CONN_BUF;
            let n = buf.len().min(c.rx.len());
            for (d, s) in buf.iter_mut().zip(c.rx.drain(..n)) {
                *d = s;
            }
            // The thread stops reading a connection whose buffer is full.
            (n, was_full && n > 0)
        })
    }

    /// Drops what the host sent and will send (the guest receives no more).
    pub(crate) fn discard(&self, id: ConnId) {
        self.with_conn(id, |c| {
            let was_full = c.rx.len() >= CONN_BUF;
            c.rx.clear();
            ((), was_full)
        })
    }

    /// Queues guest bytes for the host: all of them, or none (false) when the
    /// buffer has no room (a guest that ignored its credit).
    pub(crate) fn write(&self, id: ConnId, data: &[u8]) -> bool {
        self.with_conn(id, |c| {
            if c.tx.len() + data.len() > CONN_BUF || c.shut_write {
                return (false, false);
            }
            c.tx.extend(data);
            (true, !data.is_empty())
        })
    }

    /// The guest accepted host request `id` on our port `local_port`: tell the
    /// host program, then relay.
    pub(crate) fn accept(&self, id: ConnId, local_port: u32) {
        self.with_conn(id, |c| {
            if !matches!(c.phase, Phase::Requested { .. }) {
                return ((), false);
            }
            c.phase = Phase::Open;
            c.greeting = format!("OK {local_port}\n").into_bytes();
            ((), true)
        })
    }

    /// The guest will send no more on `id`.
    pub(crate) fn shut_write(&self, id: ConnId) {
        self.with_conn(id, |c| {
            let new = !c.shut_write;
            c.shut_write = true;
            ((), new)
        })
    }

    /// The device is done with `id`; the thread closes it (`how`).
    pub(crate) fn release(&self, id: ConnId, how: Release) {
        self.with(|h| {
            if let Some(c) = h.conns.get_mut(&id) {
                c.release = Some(how);
                h.host_dirty = true;
            }
        })
    }

    /// Aborts every connection (the driver reset the device, or a restored
    /// device starts without connections).
    pub(crate) fn reset_all(&self) {
        self.with(|h| {
            h.requests.clear();
            for c in h.conns.values_mut() {
                c.release = Some(Release::Abort);
            }
            h.host_dirty |= !h.conns.is_empty();
        })
    }

    /// Asks the thread to wake the device until it has run (a restored device
    /// has an event for the guest and nobody else may kick it soon).
    pub(crate) fn request_wake(&self) {
        self.with(|h| {
            h.wake_requested = true;
            h.host_dirty = true;
        })
    }

    /// The device ran: no more wakes needed.
    pub(crate) fn clear_wake_request(&self) {
        self.lock().wake_requested = false;
    }

    // --- The host's side (the thread, or a test playing it). ---

    /// Wakes the device. Never call it holding the hub's lock.
    pub(crate) fn wake_device(&self) {
        self.waker.wake();
    }

    /// A host program asks for guest port `port`, having sent `early` bytes
    /// after its request line; `None` at the connection limit.
    pub(crate) fn host_request(&self, port: u32, early: &[u8]) -> Option<ConnId> {
        let mut h = self.lock();
        let id = h.add(Phase::Requested { port })?;
        h.conns.get_mut(&id)?.rx.extend(early);
        h.requests.push_back(id);
        Some(id)
    }

    /// The connection the device asked for is made (`ok`) or refused.
    pub(crate) fn host_connected(&self, id: ConnId, ok: bool) {
        if let Some(c) = self.lock().conns.get_mut(&id) {
            if matches!(c.phase, Phase::Connecting { .. }) {
                c.phase = if ok { Phase::Open } else { Phase::Failed };
            }
        }
    }

    /// Room for host bytes on `id` (0 when it takes none now).
    pub(crate) fn host_room(&self, id: ConnId) -> usize {
        let h = self.lock();
        match h.conns.get(&id) {
            Some(c) if c.release.is_none() && !c.host_eof => CONN_BUF.saturating_sub(c.rx.len()),
            _ => 0,
        }
    }

    /// Bytes from the host for the guest; returns how many fitted.
    pub(crate) fn host_push(&self, id: ConnId, data: &[u8]) -> usize {
        let mut h = self.lock();
        let Some(c) = h.conns.get_mut(&id).filter(|c| c.release.is_none()) else {
            return 0;
        };
        let n = data.len().min(CONN_BUF.saturating_sub(c.rx.len()));
        c.rx.extend(&data[..n]);
        n
    }

    /// The host will send no more on `id`.
    pub(crate) fn host_eof(&self, id: ConnId) {
        if let Some(c) = self.lock().conns.get_mut(&id) {
            c.host_eof = true;
        }
    }

    /// The host side of `id` broke.
    pub(crate) fn host_failed(&self, id: ConnId) {
        if let Some(c) = self.lock().conns.get_mut(&id) {
            c.phase = Phase::Failed;
        }
    }

    /// Copies the next bytes for the host into `buf` (the greeting first, then
    /// guest data) without taking them; returns (bytes, from the greeting).
    pub(crate) fn host_peek_out(&self, id: ConnId, buf: &mut [u8]) -> (usize, bool) {
        let h = self.lock();
        let Some(c) = h.conns.get(&id) else {
            return (0, false);
        };
        if !c.greeting.is_empty() {
            let n = buf.len().min(c.greeting.len());
            buf[..n].copy_from_slice(&c.greeting[..n]);
            return (n, true);
        }
        if c.release == Some(Release::Abort) {
            return (0, false);
        }
        let n = buf.len().min(c.tx.len());
        for (d, s) in buf.iter_mut().zip(c.tx.iter()) {
            *d = *s;
        }
        (n, false)
    }

    /// `n` bytes [`Hub::host_peek_out`] showed were written to the host.
    pub(crate) fn host_consume_out(&self, id: ConnId, n: usize, greeting: bool) {
        if let Some(c) = self.lock().conns.get_mut(&id) {
            if greeting {
                c.greeting.drain(..n.min(c.greeting.len()));
            } else {
                let n = n.min(c.tx.len());
                c.tx.drain(..n);
                c.forwarded += Wrapping(n as u32);
            }
        }
    }

    /// Forgets connection `id` (the thread closed it).
    pub(crate) fn host_remove(&self, id: ConnId) {
        let mut h = self.lock();
        h.conns.remove(&id);
        h.requests.retain(|&r| r != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_bounded_and_ordered() {
        let hub = Hub::new(None, RxWaker::new());
        let id = hub.host_request(5000, b"early").unwrap();
        assert_eq!(hub.take_requests(), vec![(id, 5000)]);
        assert!(hub.take_requests().is_empty());
        assert_eq!(hub.host_push(id, &vec![1; CONN_BUF]), CONN_BUF - 5);
        assert_eq!(hub.host_room(id), 0);
        let mut b = [0u8; 8];
        assert_eq!(hub.read(id, &mut b), 8);
        assert_eq!(&b[..5], b"early");
        assert_eq!(hub.host_room(id), 8);
        hub.accept(id, 77);
        assert!(hub.write(id, b"abc"));
        assert!(!hub.write(id, &vec![0; CONN_BUF]), "all or nothing");
        let mut out = [0u8; 64];
        assert_eq!(hub.host_peek_out(id, &mut out), (6, true));
        assert_eq!(&out[..6], b"OK 77\n");
        hub.host_consume_out(id, 6, true);
        assert_eq!(hub.host_peek_out(id, &mut out), (3, false));
        hub.host_consume_out(id, 2, false);
        assert_eq!(hub.status(id).unwrap().forwarded, Wrapping(2));
        hub.release(id, Release::Flush);
        assert!(hub.status(id).is_none(), "the device let go");
        assert_eq!(hub.host_peek_out(id, &mut out), (1, false), "still flushed");
        hub.host_remove(id);
    }

    #[test]
    fn connections_are_limited() {
        let hub = Hub::new(None, RxWaker::new());
        let ids: Vec<_> = (0..MAX_CONNS)
            .map(|p| hub.connect(p as u32).unwrap())
            .collect();
        assert!(hub.connect(1).is_none());
        assert!(hub.host_request(1, b"").is_none());
        hub.reset_all();
        assert!(hub.connect(1).is_none(), "released ones count until closed");
        hub.host_remove(ids[0]);
        assert!(hub.connect(1).is_some());
    }
}
