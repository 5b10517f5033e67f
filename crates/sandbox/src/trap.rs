//! What happens when a thread makes a system call its filter refuses.
//!
//! The filters return SECCOMP_RET_TRAP, not SECCOMP_RET_KILL_PROCESS: the kernel
//! then does not run the call and sends the thread a SIGSYS whose siginfo names the
//! call. Its handler writes one line to stderr (the call's number and name, the
//! thread's kind and name), puts the terminal back as it was, and ends the process
//! with `_exit` (status 159, what a shell reports for a death by SIGSYS). Killing
//! outright would leave the user with a process gone without a word and a raw
//! terminal; a parent-side message would need a parent, and `hako run` has none of
//! its own. The handler uses only async-signal-safe calls (write, prctl, ioctl,
//! _exit), which every filter allows; it allocates nothing and takes no lock.

use std::cell::Cell;
use std::sync::OnceLock;

use crate::ThreadKind;

/// The exit status of a process the sandbox ends: 128 + SIGSYS.
const KILLED_STATUS: i32 = 128 + libc::SIGSYS;

thread_local! {
    /// The kind of the calling thread (0: one that never entered the sandbox and
    /// runs under a filter it inherited). Const-initialised and without a
    /// destructor, so reading it is a plain TLS load, fine in a signal handler.
    static KIND: Cell<u8> = const { Cell::new(0) };
}

/// The terminal to restore, and its settings before it went raw.
static TERMINAL: OnceLock<(i32, libc::termios)> = OnceLock::new();

pub(crate) fn set_kind(kind: ThreadKind) {
    KIND.with(|k| k.set(kind as u8));
}

pub(crate) fn remember_terminal(fd: i32) {
    // SAFETY: isatty only looks at the descriptor number.
    if unsafe { libc::isatty(fd) } != 1 {
        return;
    }
    // SAFETY: an all-zero termios is a valid buffer for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid, writable termios owned by this frame.
    if unsafe { libc::tcgetattr(fd, &mut t) } == 0 {
        let _ = TERMINAL.set((fd, t));
    }
}

pub(crate) fn install() -> std::io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid starting point; the fields set below
    // make it a SA_SIGINFO handler with an empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigsys as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa.sa_mask` is a valid sigset_t inside `sa`.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: `sa` is fully initialised and names a handler with the SA_SIGINFO
    // signature; the old action is not asked for.
    if unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A fixed buffer the handler formats into (no allocation in a signal handler).
struct Line {
    buf: [u8; 320],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The line the handler writes, for system call `nr` refused in a thread of
/// `kind` named `thread`.
fn message(nr: i64, kind: Option<ThreadKind>, thread: &[u8]) -> Line {
    let mut l = Line {
        buf: [0; 320],
        len: 0,
    };
    l.push(b"hako: sandbox: forbidden system call ");
    l.number(nr as u64);
    if let Some(name) = crate::names::name(nr) {
        l.push(b" (");
        l.push(name.as_bytes());
        l.push(b")");
    }
    l.push(b" in thread ");
    l.push(kind.map_or("unknown", ThreadKind::name).as_bytes());
    if !thread.is_empty() {
        l.push(b" (");
        l.push(thread);
        l.push(b")");
    }
    l.push(b"; the process is killed (run with --sandbox off to debug)\n");
    l
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // The SIGSYS part of siginfo_t (the kernel's `_sigsys`): the address of the
    // call at offset 16, then the call's number (an int) at offset 24.
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler, and a
    // SIGSYS from seccomp fills its _sigsys member.
    let nr = unsafe { info.cast::<u8>().add(24).cast::<libc::c_int>().read() };
    let kind = KIND.try_with(Cell::get).ok().and_then(ThreadKind::from_u8);
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into `name`.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let line = message(nr.into(), kind, &name[..end]);
    // SAFETY: write(2) reads `line.len` initialised bytes of `line.buf`.
    unsafe { libc::write(2, line.buf.as_ptr().cast(), line.len) };
    if let Some((fd, t)) = TERMINAL.get() {
        // SAFETY: `t` holds settings tcgetattr returned for `fd`.
        unsafe { libc::tcsetattr(*fd, libc::TCSANOW, t) };
    }
    // SAFETY: _exit is async-signal-safe and ends the whole process at once.
    unsafe { libc::_exit(KILLED_STATUS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_call_and_the_thread() {
        let l = message(libc::SYS_getppid, Some(ThreadKind::Vcpu), b"vcpu0");
        assert_eq!(
            std::str::from_utf8(&l.buf[..l.len]).unwrap(),
            format!(
                "hako: sandbox: forbidden system call {} (getppid) in thread vcpu (vcpu0); \
                 the process is killed (run with --sandbox off to debug)\n",
                libc::SYS_getppid
            )
        );
        let l = message(9999, None, b"");
        let s = std::str::from_utf8(&l.buf[..l.len]).unwrap();
        assert!(s.contains("call 9999 in thread unknown;"), "{s}");
    }
}
