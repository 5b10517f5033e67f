//! The system calls the host thread needs and std does not offer: an eventfd
//! to wake it, poll(2), a send that never raises SIGPIPE nor blocks, and a
//! connect to a Unix socket that never blocks (a listener whose backlog is
//! full must not stall every other connection).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// A non-blocking eventfd: readable after `signal` until `drain`.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd, is open, and nothing else owns it.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable.
    pub fn signal(&self) {
        let one = 1u64;
        // SAFETY: writes the 8 bytes of a live u64 to our own fd. The only
        // failure (EAGAIN at the counter's maximum) leaves it readable anyway.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter (the fd is no longer readable).
    pub fn drain(&self) {
        let mut v = 0u64;
        // SAFETY: reads at most 8 bytes into a live u64 from our own non-blocking fd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A `pollfd` for `fd` asking for `events`.
pub fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2), retried on EINTR; `timeout_ms` < 0 waits forever (the network
/// backends' own).
pub use net::poll;

/// One `send(2)` of `buf` that neither blocks nor raises SIGPIPE: a peer that
/// went away is an `EPIPE` error, a full socket `WouldBlock`.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a live slice of the length passed; send only reads it.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Connects a non-blocking stream socket to the Unix socket at `path`. A
/// listener whose backlog is full is `WouldBlock`, never a wait.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is a valid (unnamed) address to fill in.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a usable Unix socket path (too long or with a NUL byte)",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket takes no pointers; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket, is open, and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    loop {
        // SAFETY: `addr` is a live sockaddr_un and `len` does not exceed its size
        // (the path is shorter than sun_path, checked above).
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(UnixStream::from(fd));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn eventfd_wakes_poll_until_drained() {
        let e = EventFd::new().unwrap();
        let mut fds = [pollfd(e.as_raw_fd(), libc::POLLIN)];
        assert_eq!(poll(&mut fds, 0).unwrap(), 0);
        e.signal();
        assert_eq!(poll(&mut fds, 0).unwrap(), 1);
        e.drain();
        assert_eq!(poll(&mut fds, 0).unwrap(), 0);
    }

    #[test]
    fn nonblocking_connect_and_send() {
        let dir = super::super::tests::TempDir::new();
        let p = dir.path().join("s");
        assert!(connect_nonblocking(&p).is_err(), "nothing there yet");
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let c = connect_nonblocking(&p).unwrap();
        let (mut s, _) = l.accept().unwrap();
        assert_eq!(send(c.as_raw_fd(), b"hi").unwrap(), 2);
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        drop(s);
        let e = send(c.as_raw_fd(), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(connect_nonblocking(Path::new(&"x".repeat(200))).is_err());
    }
}
