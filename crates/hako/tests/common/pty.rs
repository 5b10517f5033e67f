//! A pseudo-terminal for the tests that need a real terminal (raw mode, Ctrl-A x,
//! Ctrl-]) and a look at its local modes.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Pty {
    pub master: File,
    pub slave: OwnedFd,
}

pub fn openpty() -> Pty {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the provided ints; the null
    // name/termios/winsize pointers are allowed and mean "defaults".
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty failed");
    // SAFETY: both descriptors were just returned by openpty and are owned by no one else.
    unsafe {
        Pty {
            master: File::from_raw_fd(m),
            slave: OwnedFd::from_raw_fd(s),
        }
    }
}

pub fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: an all-zero termios is a valid buffer for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open terminal descriptor and `t` is writable.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}
