//! The confinement of a VM process (`hako run`): a seccomp filter for each kind of
//! thread, and Landlock rules for the files the VM may reach. See docs/sandbox.md.
//!
//! Nothing here does anything until [`enable`] is called (by `hako run`, before it
//! starts a thread): [`enter`], which every long-lived thread of a VM calls first
//! thing, is a no-op otherwise, so unit tests, `hako img` and `hako ctl` stay
//! unconfined.

mod files;
mod filters;
mod names;
mod test_hook;
mod trap;

use std::sync::{Mutex, OnceLock};

pub use files::{write_refused, FileRules};

/// What a thread does, which decides the system calls it may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ThreadKind {
    /// Runs guest code: KVM_RUN or the emulator, and the device accesses of the
    /// guest, synchronously.
    Vcpu = 1,
    /// A device's or backend's own thread: network backends, vsock, console input,
    /// signals.
    Io = 2,
    /// The control API's runtime (tokio) and its blocking pool.
    Api = 3,
    /// The main thread and the VM's control thread: build machines (again after a
    /// reset), snapshots, migrations, the end of the process.
    Main = 4,
    /// The GDB server: an I/O thread that also reads and writes vCPU state.
    Debug = 5,
}

impl ThreadKind {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Io => "io",
            ThreadKind::Api => "api",
            ThreadKind::Main => "main",
            ThreadKind::Debug => "debug",
        }
    }

    fn from_u8(v: u8) -> Option<ThreadKind> {
        Some(match v {
            1 => ThreadKind::Vcpu,
            2 => ThreadKind::Io,
            3 => ThreadKind::Api,
            4 => ThreadKind::Main,
            5 => ThreadKind::Debug,
            _ => return None,
        })
    }
}

/// Why the sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the seccomp filter of {kind} threads")]
    Filter {
        kind: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot install the SIGSYS handler")]
    Handler(#[source] std::io::Error),
    #[error("cannot apply the seccomp filter of {kind} threads")]
    Apply {
        kind: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("cannot set up the Landlock rules")]
    Landlock(#[from] landlock::RulesetError),
    #[error("--sandbox-allow {0}")]
    Allow(String, #[source] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// The process-wide sandbox, once enabled.
struct Sandbox {
    filters: filters::Compiled,
    /// The Landlock ruleset every thread entering from now on restricts itself with
    /// (none before [`prepare_files`], or where Landlock is unavailable).
    files: Mutex<Option<landlock::RulesetCreated>>,
}

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();

/// Turns the sandbox on for this process: compiles the filters and installs the
/// SIGSYS reporter. From now on every [`enter`] confines its thread. Call it before
/// any thread of the VM exists.
pub fn enable() -> Result<(), Error> {
    if SANDBOX.get().is_some() {
        return Ok(());
    }
    let filters = filters::Compiled::new()?;
    trap::install().map_err(Error::Handler)?;
    let _ = SANDBOX.set(Sandbox {
        filters,
        files: Mutex::new(None),
    });
    Ok(())
}

/// Whether file access is restricted (Landlock rules in force for threads that
/// enter the sandbox).
pub fn files_confined() -> bool {
    SANDBOX
        .get()
        .is_some_and(|s| lock(&s.files).as_ref().is_some())
}

/// Confines the calling thread as a `kind` thread: the Landlock rules (once they
/// exist), then the seccomp filter of its kind. A no-op unless [`enable`] was
/// called. A thread that cannot be confined would escape the sandbox, so failing
/// to ends the process with a message.
pub fn enter(kind: ThreadKind) {
    let Some(s) = SANDBOX.get() else {
        return;
    };
    if let Err(e) = confine(s, kind) {
        let mut why = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            why = format!("{why}: {c}");
            cause = c.source();
        }
        eprintln!("hako: sandbox: {why}; stopping (run with --sandbox off to debug)");
        // SAFETY: _exit ends the process at once; nothing is left half-done that a
        // destructor could still fix.
        unsafe { libc::_exit(1) };
    }
    test_hook::maybe_trigger(kind);
}

fn confine(s: &Sandbox, kind: ThreadKind) -> Result<(), Error> {
    if let Some(r) = lock(&s.files).as_ref() {
        files::restrict_thread(r)?;
    }
    trap::set_kind(kind);
    let apply = |f| {
        seccompiler::apply_filter(f).map_err(|source| Error::Apply {
            kind: kind.name(),
            source,
        })
    };
    if filters::refuses_open(kind) {
        apply(s.filters.no_open())?;
    }
    apply(s.filters.get(kind))
}

/// Builds the Landlock ruleset from `rules`: every thread that enters the sandbox
/// from now on restricts itself with it. Where the kernel has no Landlock, says so
/// and goes on with file access unconfined (the seccomp filters still apply). A
/// no-op unless [`enable`] was called.
pub fn prepare_files(rules: &FileRules) -> Result<(), Error> {
    let Some(s) = SANDBOX.get() else {
        return Ok(());
    };
    if let Some(created) = rules.create()? {
        *lock(&s.files) = Some(created);
    }
    Ok(())
}

/// Remembers the terminal settings of `fd` (before it goes raw), so a process the
/// sandbox ends leaves the terminal as it found it.
pub fn remember_terminal(fd: i32) {
    trap::remember_terminal(fd);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
