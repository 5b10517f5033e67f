//! The host thread: one poll(2) loop over the listening socket, the host
//! programs still sending their `CONNECT` line, and every host connection.
//!
//! Each round it reads what the hub asks of it under the lock (connections
//! to make, to close, which to read and write), does the socket I/O without
//! the lock, puts the results in the hub, and wakes the device if it has
//! something new for the guest. Every socket is non-blocking; a connection is
//! polled only for what it can do now (reading while its buffer has room,
//! writing while there is something to write), so a hung-up peer cannot make
//! the loop spin. The hub's eventfd wakes it when the device has left work.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::hub::{ConnId, Hub, Phase, Release, CONN_BUF, MAX_CONNS};
use super::request::{self, Line};
use super::sys;

/// Host programs at once that have connected but not yet sent their line.
pub const MAX_GREETERS: usize = 16;
/// How long a host program has to send its line.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest's last bytes may wait for a host program that does not
/// read them, after the guest closed.
pub const LINGER: Duration = Duration::from_secs(10);
/// How often a restored device is woken until it has run.
const WAKE_PERIOD: Duration = Duration::from_millis(50);

/// A host connection the thread holds.
struct Stream {
    sock: UnixStream,
    /// We shut its write side down (the guest sends no more).
    write_shut: bool,
    /// When it is closed even with guest bytes left (after the device let go).
    linger: Option<Instant>,
}

/// A host program that has not sent its `CONNECT` line yet.
struct Greeter {
    sock: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// What one round has to do, read from the hub under its lock.
#[derive(Default)]
struct Plan {
    stop: bool,
    wake: bool,
    conns: usize,
    connect: Vec<(ConnId, u32)>,
    close: Vec<ConnId>,
    /// Released with bytes still to write out.
    flushing: Vec<ConnId>,
    shut: Vec<ConnId>,
    /// (id, read, write) for the connections to poll.
    poll: Vec<(ConnId, bool, bool)>,
}

/// The host thread's own state.
pub(super) struct HostThread {
    hub: Hub,
    listener: UnixListener,
    path: PathBuf,
    /// The socket file we bound (device, inode): removed at the end if still ours.
    bound: (u64, u64),
    streams: HashMap<ConnId, Stream>,
    greeters: Vec<Greeter>,
    buf: Vec<u8>,
}

impl HostThread {
    pub fn new(hub: Hub, listener: UnixListener, path: PathBuf, bound: (u64, u64)) -> Self {
        HostThread {
            hub,
            listener,
            path,
            bound,
            streams: HashMap::new(),
            greeters: Vec::new(),
            buf: vec![0; CONN_BUF],
        }
    }

    /// Runs until the hub says stop, then removes the socket.
    pub fn run(mut self) {
        loop {
            let plan = self.plan();
            if plan.stop {
                break;
            }
            let mut news = self.act(&plan);
            if news || plan.wake {
                self.hub.wake_device();
                news = false;
            }
            news |= self.wait_and_io(&plan);
            if news {
                self.hub.wake_device();
            }
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.bound) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn plan(&self) -> Plan {
        let h = self.hub.lock();
        let mut p = Plan {
            stop: h.stop,
            wake: h.wake_requested,
            conns: h.conns.len(),
            ..Default::default()
        };
        for (&id, c) in &h.conns {
            let to_write = !c.greeting.is_empty() || !c.tx.is_empty();
            match c.release {
                Some(Release::Abort) => p.close.push(id),
                Some(Release::Flush) if !to_write || c.phase == Phase::Failed => p.close.push(id),
                Some(Release::Flush) => {
                    p.flushing.push(id);
                    p.poll.push((id, false, true));
                }
                None => match c.phase {
                    Phase::Connecting { port } => p.connect.push((id, port)),
                    Phase::Failed => {}
                    Phase::Requested { .. } | Phase::Open => {
                        let read = !c.host_eof && c.rx.len() < CONN_BUF;
                        if c.shut_write && !to_write {
                            p.shut.push(id);
                        }
                        if read || to_write {
                            p.poll.push((id, read, to_write));
                        }
                    }
                },
            }
        }
        p
    }

    /// Connects, closes and shuts down what the plan says; whether the device
    /// has news.
    fn act(&mut self, p: &Plan) -> bool {
        let now = Instant::now();
        for &id in &p.close {
            self.streams.remove(&id);
            self.hub.host_remove(id);
        }
        for &id in &p.flushing {
            let expired = match self.streams.get_mut(&id) {
                Some(s) => *s.linger.get_or_insert(now + LINGER) <= now,
                None => true,
            };
            if expired {
                self.streams.remove(&id);
                self.hub.host_remove(id);
            }
        }
        for &id in &p.shut {
            if let Some(s) = self.streams.get_mut(&id).filter(|s| !s.write_shut) {
                let _ = s.sock.shutdown(std::net::Shutdown::Write);
                s.write_shut = true;
            }
        }
        for &(id, port) in &p.connect {
            let mut target = OsString::from(self.path.as_os_str());
            target.push(format!("_{port}"));
            let ok = match sys::connect_nonblocking(std::path::Path::new(&target)) {
                Ok(sock) => {
                    self.streams.insert(
                        id,
                        Stream {
                            sock,
                            write_shut: false,
                            linger: None,
                        },
                    );
                    true
                }
                Err(e) => {
                    tracing::debug!("vsock: guest connection to host port {port}: {e}");
                    false
                }
            };
            self.hub.host_connected(id, ok);
        }
        !p.connect.is_empty()
    }

    /// Polls, then does the I/O that is ready; whether the device has news.
    fn wait_and_io(&mut self, p: &Plan) -> bool {
        let Some(kick) = self.hub.kick() else {
            return false;
        };
        let greeters = self.greeters.len();
        let accepting = greeters < MAX_GREETERS && p.conns < MAX_CONNS;
        let mut fds = vec![
            sys::pollfd(kick.as_raw_fd(), libc::POLLIN),
            sys::pollfd(
                if accepting {
                    self.listener.as_raw_fd()
                } else {
                    -1
                },
                libc::POLLIN,
            ),
        ];
        fds.extend(
            self.greeters
                .iter()
                .map(|g| sys::pollfd(g.sock.as_raw_fd(), libc::POLLIN)),
        );
        let polled: Vec<_> = p
            .poll
            .iter()
            .filter_map(|&(id, r, w)| {
                let s = self.streams.get(&id)?;
                let ev = if r { libc::POLLIN } else { 0 } | if w { libc::POLLOUT } else { 0 };
                fds.push(sys::pollfd(s.sock.as_raw_fd(), ev));
                Some((id, r, w))
            })
            .collect();
        let timeout = self.timeout(p);
        if let Err(e) = sys::poll(&mut fds, timeout) {
            // Not expected on live fds; do not spin if it persists.
            tracing::error!("vsock: poll: {e}");
            std::thread::sleep(Duration::from_millis(100));
            return false;
        }
        if fds[0].revents != 0 {
            kick.drain();
        }
        let mut news = false;
        // Before accepting: the greeters accepted now were not polled.
        let greeters_ready: Vec<bool> = fds[2..2 + greeters]
            .iter()
            .map(|f| f.revents != 0)
            .collect();
        if fds[1].revents != 0 {
            self.accept();
        }
        news |= self.read_greeters(&greeters_ready);
        let base = 2 + greeters;
        for (i, (id, r, w)) in polled.into_iter().enumerate() {
            let rev = fds[base + i].revents;
            if rev == 0 {
                continue;
            }
            if r {
                news |= self.read_stream(id);
            }
            if w {
                news |= self.write_stream(id);
            }
        }
        news
    }

    /// poll's timeout: the next deadline, or the wake period while a restored
    /// device waits to run, else forever.
    fn timeout(&self, p: &Plan) -> i32 {
        let now = Instant::now();
        let mut next = self
            .greeters
            .iter()
            .map(|g| g.deadline)
            .chain(
                p.flushing
                    .iter()
                    .filter_map(|id| self.streams.get(id)?.linger),
            )
            .min();
        if p.wake {
            next = Some(next.map_or(now + WAKE_PERIOD, |n| n.min(now + WAKE_PERIOD)));
        }
        match next {
            // Rounded up, so a deadline is never polled for with 0 ms early.
            Some(t) => t.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1,
            None => -1,
        }
    }

    fn accept(&mut self) {
        while self.greeters.len() < MAX_GREETERS {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_ok() {
                        self.greeters.push(Greeter {
                            sock,
                            line: Vec::new(),
                            deadline: Instant::now() + GREETING_TIMEOUT,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("vsock: accept on {}: {e}", self.path.display());
                    return;
                }
            }
        }
    }

    /// Reads the request lines of the greeters that are `ready`, and drops
    /// those past their deadline; whether the device has news.
    fn read_greeters(&mut self, ready: &[bool]) -> bool {
        let now = Instant::now();
        let mut news = false;
        let greeters = std::mem::take(&mut self.greeters);
        for (i, mut g) in greeters.into_iter().enumerate() {
            if ready.get(i).copied().unwrap_or(false) {
                let mut b = [0u8; request::MAX_LINE + 1];
                let want = b.len().saturating_sub(g.line.len()).max(1);
                match (&g.sock).read(&mut b[..want]) {
                    Ok(0) => continue,
                    Ok(n) => g.line.extend_from_slice(&b[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => continue,
                }
            }
            match request::parse(&g.line) {
                Line::Incomplete if g.deadline > now => self.greeters.push(g),
                Line::Incomplete => {
                    tracing::debug!("vsock: a host program sent no request in time")
                }
                Line::Bad(why) => tracing::warn!("vsock: refusing a host program: {why}"),
                Line::Connect { port, rest } => {
                    match self.hub.host_request(port, &g.line[rest..]) {
                        Some(id) => {
                            self.streams.insert(
                                id,
                                Stream {
                                    sock: g.sock,
                                    write_shut: false,
                                    linger: None,
                                },
                            );
                            news = true;
                        }
                        None => {
                            tracing::warn!("vsock: {MAX_CONNS} connections open; refusing one more")
                        }
                    }
                }
            }
        }
        news
    }

    /// Reads host bytes for the guest; whether the device has news.
    fn read_stream(&mut self, id: ConnId) -> bool {
        let Some(s) = self.streams.get(&id) else {
            return false;
        };
        let room = self.hub.host_room(id).min(self.buf.len());
        if room == 0 {
            return false;
        }
        match (&s.sock).read(&mut self.buf[..room]) {
            Ok(0) => self.hub.host_eof(id),
            Ok(n) => {
                self.hub.host_push(id, &self.buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return false
            }
            Err(e) => {
                tracing::debug!("vsock: reading from a host connection: {e}");
                self.hub.host_failed(id);
            }
        }
        true
    }

    /// Writes what waits for the host; whether the device has news (its
    /// credit grew, or the connection broke).
    fn write_stream(&mut self, id: ConnId) -> bool {
        let Some(s) = self.streams.get(&id) else {
            return false;
        };
        let mut news = false;
        loop {
            let (n, greeting) = self.hub.host_peek_out(id, &mut self.buf);
            if n == 0 {
                return news;
            }
            match sys::send(s.sock.as_raw_fd(), &self.buf[..n]) {
                Ok(k) => {
                    self.hub.host_consume_out(id, k, greeting);
                    news |= !greeting && k > 0;
                    if k < n {
                        return news;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return news,
                Err(e) => {
                    tracing::debug!("vsock: writing to a host connection: {e}");
                    self.hub.host_failed(id);
                    return true;
                }
            }
        }
    }
}
