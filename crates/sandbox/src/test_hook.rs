//! A hook for tests: `HAKO_TEST_FORBIDDEN_SYSCALL=vcpu|io|api|debug|main` makes the first
//! confined thread of that kind make a system call no filter allows, right after
//! it entered the sandbox, so a test can watch the process being ended. Only in
//! debug builds and with the `test-hook` feature (which hako's tests turn on).

use crate::ThreadKind;

#[cfg(any(debug_assertions, feature = "test-hook"))]
pub(crate) fn maybe_trigger(kind: ThreadKind) {
    if std::env::var("HAKO_TEST_FORBIDDEN_SYSCALL").is_ok_and(|k| k == kind.name()) {
        // SAFETY: getppid takes no arguments and changes nothing; under the
        // sandbox it is refused (no filter allows it) and the process ends.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

#[cfg(not(any(debug_assertions, feature = "test-hook")))]
pub(crate) fn maybe_trigger(_kind: ThreadKind) {}
