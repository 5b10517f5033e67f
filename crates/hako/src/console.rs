//! The guest's console on the host terminal: raw mode while the guest runs, an
//! escape sequence to quit (Ctrl-A x, as QEMU), and the terminal restored on
//! every exit path (the guard's `Drop`, which runs on normal return and unwinding).
//! This is the binary's business; the `vmm` library only takes input bytes.

use std::io::{self, Read};
use std::os::fd::AsRawFd;

/// The escape prefix: Ctrl-A.
pub const ESCAPE: u8 = 0x01;

/// Puts a terminal into raw mode and restores it when dropped.
pub struct RawTerminal {
    fd: i32,
    saved: libc::termios,
}

impl RawTerminal {
    /// Switches stdin to raw mode if it is a terminal; `None` otherwise.
    pub fn enable_on_stdin() -> Option<RawTerminal> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: isatty only inspects the descriptor number.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: an all-zero termios is a valid value to be overwritten by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios for tcgetattr to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only modifies the termios struct we own.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so the guest's "\n" still returns the carriage
        // when the guest relies on the terminal for it.
        raw.c_oflag |= libc::OPOST | libc::ONLCR;
        // SAFETY: `raw` is a fully initialised termios derived from tcgetattr's result.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: `saved` is the termios tcgetattr returned for this same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// What the escape filter made of a chunk of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Bytes to hand to the guest.
    Data(Vec<u8>),
    /// The user typed the quit sequence; bytes before it still go to the guest.
    Quit(Vec<u8>),
}

/// Recognises Ctrl-A x (quit) and Ctrl-A Ctrl-A (send one Ctrl-A) across reads.
#[derive(Default)]
pub struct EscapeFilter {
    pending_escape: bool,
}

impl EscapeFilter {
    pub fn feed(&mut self, bytes: &[u8]) -> Input {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            if self.pending_escape {
                self.pending_escape = false;
                match b {
                    b'x' | b'X' => return Input::Quit(out),
                    ESCAPE => out.push(ESCAPE),
                    // Unknown sequences pass through unchanged.
                    other => out.extend_from_slice(&[ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.pending_escape = true;
            } else {
                out.push(b);
            }
        }
        Input::Data(out)
    }
}

/// Reads stdin until EOF or the quit sequence, passing bytes to `deliver` (which
/// must block until the guest took them) and calling `quit` on Ctrl-A x.
/// The escape sequence is honoured only when stdin is a terminal.
pub fn pump_stdin(interactive: bool, mut deliver: impl FnMut(&[u8]), quit: impl FnOnce()) {
    let mut stdin = io::stdin().lock();
    let mut filter = EscapeFilter::default();
    let mut buf = [0u8; 256];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if !interactive {
            deliver(&buf[..n]);
            continue;
        }
        match filter.feed(&buf[..n]) {
            Input::Data(d) => deliver(&d),
            Input::Quit(d) => {
                deliver(&d);
                quit();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences() {
        let mut f = EscapeFilter::default();
        assert_eq!(f.feed(b"ls\r"), Input::Data(b"ls\r".to_vec()));
        assert_eq!(f.feed(b"a\x01"), Input::Data(b"a".to_vec()));
        assert_eq!(f.feed(b"\x01b"), Input::Data(b"\x01b".to_vec()));
        assert_eq!(f.feed(b"\x01c"), Input::Data(b"\x01c".to_vec()));
        assert_eq!(f.feed(b"q\x01xignored"), Input::Quit(b"q".to_vec()));
    }
}
