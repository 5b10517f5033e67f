//! The vsock device driven through the MMIO transport the way a driver does,
//! with the test playing the host through the hub (`handshake.rs`, `data.rs`,
//! `hostile.rs`, `persist.rs`), and the real Unix-socket host thread
//! (`unix.rs`).

mod data;
mod handshake;
mod hostile;
mod persist;
mod unix;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use net::RxWaker;
use vm_memory::{Bytes, GuestAddress};

use super::hub::{ConnId, Hub};
use super::packet::{op, Hdr, HDR_LEN, TYPE_STREAM};
use super::*;
use crate::testing::{self, mmio, GuestQueue};
use crate::transport::VirtioMmioDevice;
use crate::{status, GuestMemory};

pub(super) const CID: u64 = 3;
/// Transmit buffers (reused: the device consumes each chain at once).
const TX_BUF: u64 = 0x10000;
/// Receive buffers: slot `i` at `RX_BUF + i * RX_STRIDE`.
const RX_BUF: u64 = 0x40000;
const RX_STRIDE: u64 = 0x2000;
/// Linux's receive buffers: 4 KiB of payload behind the header.
pub(super) const RX_SIZE: u32 = 4096 + HDR_LEN as u32;
const QSIZE: u16 = 64;

/// A directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "hako-vsock-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A driver and the device it drives.
pub(super) struct Guest {
    pub dev: VirtioMmioDevice<Vsock>,
    pub mem: GuestMemory,
    pub rx: GuestQueue,
    pub tx: GuestQueue,
    pub ev: GuestQueue,
    pub hub: Hub,
    /// Receive chains posted and not yet used: head → (address, size).
    posted: HashMap<u16, (u64, u32)>,
    next_slot: u64,
}

/// A device with a host side the test plays.
pub(super) fn setup() -> Guest {
    with_host(VsockHost::detached(RxWaker::new()))
}

/// A device over `host`, initialized by a driver.
pub(super) fn with_host(host: VsockHost) -> Guest {
    let mem = testing::memory();
    let hub = host.hub().clone();
    let mut dev =
        VirtioMmioDevice::new(Vsock::new(CID, host).unwrap(), mem.clone(), testing::line());
    let rx = GuestQueue::new(0x1000, QSIZE);
    let tx = GuestQueue::new(0x3000, QSIZE);
    let ev = GuestQueue::new(0x5000, QSIZE);
    mmio::init(&mut dev, u64::MAX, &[&rx, &tx, &ev]);
    Guest {
        dev,
        mem,
        rx,
        tx,
        ev,
        hub,
        posted: HashMap::new(),
        next_slot: 0,
    }
}

/// A header from the guest (`src_port`) to the host (`dst_port`), with a
/// 64 KiB buffer and nothing consumed.
pub(super) fn hdr(op: u16, src_port: u32, dst_port: u32) -> Hdr {
    Hdr {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 64 * 1024,
        ..Default::default()
    }
}

impl Guest {
    pub fn broken(&mut self) -> bool {
        mmio::status(&mut self.dev) & status::DEVICE_NEEDS_RESET != 0
    }

    /// Sends a packet (header and payload in two descriptors, as Linux does).
    pub fn send(&mut self, mut h: Hdr, payload: &[u8]) {
        if h.op == op::RW {
            h.len = payload.len() as u32;
        }
        self.send_raw(&h.to_bytes(), payload);
    }

    /// Sends `head` and `payload` as they are.
    pub fn send_raw(&mut self, head: &[u8], payload: &[u8]) {
        self.mem.write_slice(head, GuestAddress(TX_BUF)).unwrap();
        let at = TX_BUF + 0x100;
        self.mem.write_slice(payload, GuestAddress(at)).unwrap();
        let mut bufs = vec![(TX_BUF, head.len() as u32, false)];
        if !payload.is_empty() {
            bufs.push((at, payload.len() as u32, false));
        }
        self.tx.add_chain(&self.mem, &bufs);
        mmio::notify(&mut self.dev, 1);
        self.tx.take_used(&self.mem);
    }

    /// Posts `n` receive chains of `size` bytes (one descriptor each).
    pub fn post_rx(&mut self, n: usize, size: u32) {
        for _ in 0..n {
            let addr = RX_BUF + (self.next_slot % 32) * RX_STRIDE * 2;
            self.next_slot += 1;
            let head = self.rx.add_chain(&self.mem, &[(addr, size, true)]);
            self.posted.insert(head, (addr, size));
        }
        mmio::notify(&mut self.dev, 0);
    }

    /// The packets the device put in the receive chains since the last call.
    pub fn recv(&mut self) -> Vec<(Hdr, Vec<u8>)> {
        let mut v = Vec::new();
        for (head, len) in self.rx.take_used(&self.mem) {
            let (addr, size) = self.posted.remove(&(head as u16)).expect("a posted chain");
            assert!(len <= size && len as usize >= HDR_LEN, "used length {len}");
            let mut b = [0u8; HDR_LEN];
            self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
            let h = Hdr::from_bytes(&b);
            assert_eq!(h.len as usize + HDR_LEN, len as usize, "{h:?}");
            let mut p = vec![0u8; h.len as usize];
            self.mem
                .read_slice(&mut p, GuestAddress(addr + HDR_LEN as u64))
                .unwrap();
            v.push((h, p));
        }
        v
    }

    /// Posts enough receive buffers, runs the device, returns what it sent.
    pub fn exchange(&mut self) -> Vec<(Hdr, Vec<u8>)> {
        // At most 32 outstanding: the receive slots do not overlap.
        let free = 32usize.saturating_sub(self.posted.len());
        self.post_rx(free.min(8), RX_SIZE);
        self.dev.process_event();
        self.recv()
    }

    /// The operations of `pkts`.
    pub fn ops(pkts: &[(Hdr, Vec<u8>)]) -> Vec<u16> {
        pkts.iter().map(|p| p.0.op).collect()
    }

    /// Opens a connection from guest port `gport` to host port `hport` and
    /// has the host accept it; returns the hub's id.
    pub fn open_to_host(&mut self, gport: u32, hport: u32) -> ConnId {
        self.send(hdr(op::REQUEST, gport, hport), &[]);
        let id = *self
            .hub
            .lock()
            .conns
            .keys()
            .last()
            .expect("a host connection");
        self.hub.host_connected(id, true);
        // Exactly one buffer: none is left posted afterwards.
        self.post_rx(1, RX_SIZE);
        self.dev.process_event();
        let p = self.recv();
        assert_eq!(Self::ops(&p), vec![op::RESPONSE], "{p:?}");
        let h = p[0].0;
        assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, CID));
        assert_eq!((h.src_port, h.dst_port), (hport, gport));
        assert_eq!(h.buf_alloc, CONN_BUF as u32);
        id
    }

    /// What the guest sent the host on `id` (as the host thread takes it).
    pub fn host_reads(&self, id: ConnId) -> Vec<u8> {
        let mut all = Vec::new();
        let mut b = vec![0u8; CONN_BUF];
        loop {
            let (n, g) = self.hub.host_peek_out(id, &mut b);
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&b[..n]);
            self.hub.host_consume_out(id, n, g);
        }
    }
}
