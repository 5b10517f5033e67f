//! The console input FIFO `run/NAME.in`.
//!
//! The daemon gives each `hako run` this FIFO as its stdin, opened read-write, so
//! the VM process never sees an end of file (it holds a writer itself), and keeps
//! a write end of its own, opened non-blocking: a guest that does not read its
//! console fills the pipe (64 KiB) and further input is refused, not queued in the
//! daemon. `hako run` forwards a stdin that is not a terminal to the guest's serial
//! console byte for byte. After a daemon restart the next daemon opens the FIFO
//! again for the VMs it adopts (a write-only non-blocking open succeeds only while
//! the VM process holds its read end). When a run ends the daemon closes its write
//! end; with no file open on it the pipe forgets what was left unread, so the next
//! run never reads the last run's input.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Makes `path` a FIFO (mode 0600), replacing whatever else is there.
pub fn ensure(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => return Ok(()),
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; mkfifo reads it
    // and touches no other memory.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// For a new run: the FIFO at `path` (made if missing) opened read-write for the
/// child's stdin, and the daemon's non-blocking write end.
pub fn open_for_child(path: &Path) -> io::Result<(File, File)> {
    ensure(path)?;
    // Read-write: the open does not wait for a writer, and the child never sees EOF.
    let stdin = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let writer = open_writer(path)?;
    Ok((stdin, writer))
}

/// The daemon's write end of the FIFO at `path`: non-blocking, and only while a
/// process holds its read end (ENXIO otherwise), so a VM started without it (by
/// a daemon older than the FIFO) is not mistaken for one that reads it.
pub fn open_writer(path: &Path) -> io::Result<File> {
    let m = std::fs::symlink_metadata(path)?;
    if !m.file_type().is_fifo() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a FIFO", path.display()),
        ));
    }
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// What became of input handed to the guest.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// All of it.
    All,
    /// The pipe was full (the guest does not read): this many bytes were dropped.
    Dropped(usize),
    /// Nobody reads the FIFO any more (the VM process ended).
    Gone,
}

/// Writes `data` to the FIFO without blocking.
pub fn send(mut w: &File, mut data: &[u8]) -> Sent {
    while !data.is_empty() {
        match w.write(data) {
            Ok(0) => return Sent::Dropped(data.len()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Dropped(data.len()),
            Err(_) => return Sent::Gone,
        }
    }
    Sent::All
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn input_reaches_the_reader_and_a_full_pipe_drops() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.in");
        // No reader: the daemon does not get a write end.
        ensure(&p).unwrap();
        assert_eq!(
            open_writer(&p).unwrap_err().raw_os_error(),
            Some(libc::ENXIO)
        );
        let (mut stdin, w) = open_for_child(&p).unwrap();
        assert_eq!(send(&w, b"ls\r"), Sent::All);
        let mut buf = [0u8; 3];
        stdin.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ls\r");
        // Nobody reads: the pipe fills and the rest is dropped, not blocked on.
        let big = vec![b'x'; 1 << 20];
        assert!(matches!(send(&w, &big), Sent::Dropped(n) if n > 0 && n < big.len()));
        // The reader is gone: the writer is told so (SIGPIPE is ignored in tests
        // and in the hako binary).
        drop(stdin);
        assert_eq!(send(&w, b"y"), Sent::Gone);
    }

    #[test]
    fn a_file_in_the_way_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.in");
        std::fs::write(&p, "junk").unwrap();
        ensure(&p).unwrap();
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_fifo());
    }
}
