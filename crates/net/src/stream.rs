//! QEMU's `-netdev stream` framing over a Unix stream socket: every frame is a
//! 4-byte big-endian length followed by that many bytes of bare Ethernet frame (no
//! vnet header, so no offloads). QEMU (`-netdev stream,addr.type=unix`), passt and
//! another hako speak it.
//!
//! Two threads per backend. The receive thread owns the connection's life: in
//! client mode it holds the connection made by [`open`] (and reconnects once a
//! second after the peer goes), in server mode it accepts one peer at a time, a new
//! one once the last is gone. It reads frames into the [`FrameQueue`]. The writer
//! thread takes whole prefixed frames from a bounded channel and writes each
//! completely, so the stream never desynchronises; `send` only tries the channel
//! and drops the frame when it is full (a peer that stopped reading). Dropping the
//! backend signals an eventfd and shuts the connection down, which ends both.

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sys::{self, EventFd};
use crate::{FrameQueue, NetBackend, Offloads, OpenError, RxWaker, MAX_FRAME, VNET_HDR_LEN};

/// The largest frame the stream carries: [`MAX_FRAME`] less the vnet header it has
/// not. A length above it (or 0) is a broken or hostile peer.
pub const MAX_STREAM_FRAME: usize = MAX_FRAME - VNET_HDR_LEN;

/// Frames waiting for the writer thread; more are dropped.
const SEND_QUEUE: usize = 256;

/// How long a client waits between attempts to reconnect.
const RECONNECT: Duration = Duration::from_secs(1);

/// A backend speaking length-prefixed frames over a Unix socket.
pub struct StreamBackend {
    shared: Arc<Shared>,
    tx: Option<SyncSender<Vec<u8>>>,
    queue: FrameQueue,
    threads: Vec<JoinHandle<()>>,
    description: String,
    /// Server mode: the socket file we bound, removed on drop if it is still ours.
    bound: Option<(PathBuf, u64, u64)>,
}

/// What the threads and `send` share.
struct Shared {
    /// The peer frames are written to, if one is connected.
    conn: Mutex<Option<Arc<UnixStream>>>,
    stop: AtomicBool,
    stop_fd: EventFd,
}

impl Shared {
    fn set_conn(&self, conn: Option<Arc<UnixStream>>) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    fn conn(&self) -> Option<Arc<UnixStream>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Where the receive thread gets its connections.
enum Peer {
    Client(PathBuf),
    Server(UnixListener),
}

/// Opens a stream backend: connects to `path`, or with `server` listens on it.
pub fn open(path: &Path, server: bool, waker: RxWaker) -> Result<StreamBackend, OpenError> {
    let shown = path.display();
    let io_err = |what: String| move |source| OpenError::Io { what, source };
    let stop_fd = EventFd::new().map_err(io_err("stream: eventfd".into()))?;
    let (peer, first, bound) = if server {
        let listener = bind(path)?;
        listener
            .set_nonblocking(true)
            .map_err(io_err(format!("stream: {shown}")))?;
        let meta = fs::metadata(path).map_err(io_err(format!("stream: {shown}")))?;
        (
            Peer::Server(listener),
            None,
            Some((path.to_path_buf(), meta.dev(), meta.ino())),
        )
    } else {
        let conn = UnixStream::connect(path).map_err(|source| {
            let hint = match source.kind() {
                io::ErrorKind::NotFound => " (is the peer running?)",
                io::ErrorKind::ConnectionRefused => " (a stale socket: nobody listens there)",
                _ => "",
            };
            OpenError::Io {
                what: format!("stream: cannot connect to {shown}{hint}"),
                source,
            }
        })?;
        (Peer::Client(path.to_path_buf()), Some(Arc::new(conn)), None)
    };
    let description = if server {
        format!("stream (server on {shown})")
    } else {
        format!("stream (client of {shown})")
    };
    let shared = Arc::new(Shared {
        // A client may send at once, before its thread runs.
        conn: Mutex::new(first.clone()),
        stop: AtomicBool::new(false),
        stop_fd,
    });
    let queue = FrameQueue::default();
    let (tx, rx) = mpsc::sync_channel(SEND_QUEUE);
    let mut threads = Vec::new();
    let spawn_err = io_err("stream: spawning a thread".into());
    let (s, q, name) = (shared.clone(), queue.clone(), description.clone());
    threads.push(
        std::thread::Builder::new()
            .name("net-stream-rx".into())
            .spawn(move || {
                sandbox::enter(sandbox::ThreadKind::Io);
                receive_thread(s, peer, first, q, waker, name)
            })
            .map_err(spawn_err)?,
    );
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("net-stream-tx".into())
        .spawn(move || {
            sandbox::enter(sandbox::ThreadKind::Io);
            write_thread(s, rx)
        });
    let mut backend = StreamBackend {
        shared,
        tx: Some(tx),
        queue,
        threads,
        description,
        bound,
    };
    match spawned {
        Ok(t) => backend.threads.push(t),
        // Dropping `backend` stops the receive thread.
        Err(e) => return Err(io_err("stream: spawning a thread".into())(e)),
    }
    Ok(backend)
}

/// Binds `path`, replacing a stale socket but never another kind of file nor a
/// socket someone still listens on.
fn bind(path: &Path) -> Result<UnixListener, OpenError> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(OpenError::Invalid(format!(
                    "stream: {shown}: another process is listening there"
                )));
            }
            fs::remove_file(path).map_err(|source| OpenError::Io {
                what: format!("stream: removing the stale socket {shown}"),
                source,
            })?;
        }
        Ok(_) => {
            return Err(OpenError::Invalid(format!(
                "stream: {shown} exists and is not a socket; refusing to replace it"
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(OpenError::Io {
                what: format!("stream: {shown}"),
                source,
            })
        }
    }
    UnixListener::bind(path).map_err(|source| OpenError::Io {
        what: format!("stream: cannot listen on {shown}"),
        source,
    })
}

/// Waits until `fd` is readable (true) or the backend stops (false), at most
/// `timeout_ms` (< 0: forever; a timeout also returns false).
fn wait_readable(shared: &Shared, fd: i32, timeout_ms: i32) -> bool {
    let mut fds = [sys::pollin(fd), sys::pollin(shared.stop_fd.as_raw_fd())];
    match sys::poll(&mut fds, timeout_ms) {
        Ok(_) => fds[1].revents == 0 && fds[0].revents != 0 && !shared.stop.load(Ordering::Acquire),
        Err(e) => {
            // Not expected on live fds; do not spin if it persists.
            tracing::error!("net stream: poll: {e}");
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    }
}

/// The receive thread: gets a connection, reads frames until it ends, repeats
/// until the backend stops.
fn receive_thread(
    shared: Arc<Shared>,
    peer: Peer,
    mut next: Option<Arc<UnixStream>>,
    queue: FrameQueue,
    waker: RxWaker,
    name: String,
) {
    let mut reported_retry = false;
    while !shared.stop.load(Ordering::Acquire) {
        let conn = match next.take() {
            Some(c) => c,
            None => match &peer {
                Peer::Server(listener) => {
                    if !wait_readable(&shared, listener.as_raw_fd(), -1) {
                        continue;
                    }
                    match listener.accept() {
                        Ok((c, _)) => {
                            tracing::info!("net {name}: a peer connected");
                            Arc::new(c)
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => {
                            tracing::error!("net {name}: accept: {e}");
                            // Do not spin on a persistent error: wait, then retry.
                            wait_readable(&shared, -1, RECONNECT.as_millis() as i32);
                            continue;
                        }
                    }
                }
                Peer::Client(path) => match UnixStream::connect(path) {
                    Ok(c) => {
                        tracing::info!("net {name}: reconnected");
                        reported_retry = false;
                        Arc::new(c)
                    }
                    Err(e) => {
                        if !reported_retry {
                            tracing::warn!("net {name}: reconnecting: {e}; retrying every second");
                            reported_retry = true;
                        }
                        wait_readable(&shared, -1, RECONNECT.as_millis() as i32);
                        continue;
                    }
                },
            },
        };
        shared.set_conn(Some(conn.clone()));
        let end = read_frames(&shared, &conn, &queue, &waker);
        shared.set_conn(None);
        // Unblocks the writer if it is stuck on this peer.
        let _ = conn.shutdown(std::net::Shutdown::Both);
        match end {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::info!("net {name}: the peer closed the connection")
            }
            Err(e) => tracing::error!("net {name}: closing the connection: {e}"),
        }
    }
}

/// Reads frames from one connection into the queue. `Ok` when the backend stops;
/// `UnexpectedEof` when the peer closed; another error for a broken or bad peer.
fn read_frames(
    shared: &Shared,
    conn: &UnixStream,
    queue: &FrameQueue,
    waker: &RxWaker,
) -> io::Result<()> {
    let mut buf = vec![0u8; 4 + MAX_STREAM_FRAME];
    // Bytes of `buf` holding data not yet consumed.
    let mut filled = 0;
    loop {
        if !wait_readable(shared, conn.as_raw_fd(), -1) {
            return Ok(());
        }
        let n = match (&*conn).read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
        let mut start = 0;
        let mut queued = false;
        while filled - start >= 4 {
            let len = u32::from_be_bytes(buf[start..start + 4].try_into().expect("4 bytes"));
            let len = len as usize;
            if len == 0 || len > MAX_STREAM_FRAME {
                if queued {
                    waker.wake();
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad frame length {len} (1 to {MAX_STREAM_FRAME})"),
                ));
            }
            if filled - start < 4 + len {
                break;
            }
            let frame = &buf[start + 4..start + 4 + len];
            // Runts cannot be Ethernet frames; skip them, the stream stays in step.
            if len >= 14 {
                queue.push(frame.to_vec());
                queued = true;
            }
            start += 4 + len;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if queued {
            waker.wake();
        }
    }
}

/// The writer thread: writes each prefixed frame whole to the current peer.
fn write_thread(shared: Arc<Shared>, rx: Receiver<Vec<u8>>) {
    let mut failed_peer: Option<Arc<UnixStream>> = None;
    while let Ok(frame) = rx.recv() {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let Some(conn) = shared.conn() else { continue };
        if failed_peer.as_ref().is_some_and(|f| Arc::ptr_eq(f, &conn)) {
            continue;
        }
        if let Err(e) = sys::send_all(conn.as_raw_fd(), &frame) {
            // Half a frame may have gone: this peer is done. The receive thread
            // sees the shutdown and moves on to the next peer.
            tracing::warn!("net stream: writing to the peer: {e}; closing the connection");
            let _ = conn.shutdown(std::net::Shutdown::Both);
            failed_peer = Some(conn);
        }
    }
}

impl NetBackend for StreamBackend {
    fn offloads(&self) -> Offloads {
        Offloads::default()
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if frame.is_empty() || frame.len() > MAX_STREAM_FRAME || self.shared.conn().is_none() {
            return Ok(false);
        }
        let mut msg = Vec::with_capacity(4 + frame.len());
        msg.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        msg.extend_from_slice(frame);
        match self.tx.as_ref().map(|tx| tx.try_send(msg)) {
            Some(Ok(())) => Ok(true),
            Some(Err(TrySendError::Full(_))) => Ok(false),
            Some(Err(TrySendError::Disconnected(_))) | None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stream writer thread ended",
            )),
        }
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        self.queue.pop()
    }

    fn unrecv(&mut self, frame: Vec<u8>) {
        self.queue.unpop(frame);
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

impl Drop for StreamBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.stop_fd.signal();
        self.tx = None;
        if let Some(conn) = self.shared.conn() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some((path, dev, ino)) = &self.bound {
            if fs::metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino) {
                let _ = fs::remove_file(path);
            }
        }
    }
}
