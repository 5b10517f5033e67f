//! The seccomp filters: which system calls (and for `ioctl`, which request
//! numbers) each kind of thread may make. Anything else traps (see `trap.rs`).
//!
//! A thread's filters stack with those it inherited, and the kernel runs them all:
//! a thread started by a confined thread can only do what both filters allow. The
//! main thread's filter is the widest for that reason: it builds machines again
//! after a guest reset and starts their vCPU and device threads.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{Error, ThreadKind};

/// The ioctl "type" byte (bits 8-15 of the request number) of KVM's ioctls.
const IOCTL_TYPE_KVM: u64 = 0xAE;
/// The KVM ioctls that raise a guest interrupt, made from any thread a device
/// runs on (a network backend's receive thread, the console input): KVM_IRQ_LINE
/// (`_IOW(0xAE, 0x61, struct kvm_irq_level)`), KVM_IRQ_LINE_STATUS (`_IOWR(0xAE,
/// 0x67, ...)`) and KVM_SIGNAL_MSI (`_IOW(0xAE, 0xa5, struct kvm_msi)`).
const KVM_IRQ_IOCTLS: &[u64] = &[0x4008_AE61, 0xC008_AE67, 0x4020_AEA5];

/// The type byte of the terminal ioctls (TCGETS, TCSETS, TIOCGWINSZ, FIONBIO,
/// FIOCLEX, FIONREAD: 0x54xx) and of TUN's (TUNSETIFF and friends are
/// `_IOW('T', ...)`).
const IOCTL_TYPE_TERMINAL_TUN: u64 = b'T' as u64;

/// Every thread: memory, synchronisation, time, signals, I/O on descriptors it
/// already holds, and what confining a thread itself takes (prctl, seccomp,
/// landlock_restrict_self: each can only narrow what the thread may do).
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_close,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_getrandom,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_pipe2,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    libc::SYS_landlock_restrict_self,
];

/// Socket I/O on sockets a thread already holds.
const SOCKET_IO: &[i64] = &[
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
];

/// Making sockets and connections.
const SOCKET_SETUP: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
];

/// Looking files up and opening them (Landlock decides which).
const FILES: &[i64] = &[
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_getcwd,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
];

/// Writing files and directories: snapshots, traces, hugetlbfs files.
const FILE_WRITES: &[i64] = &[
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_ftruncate,
    libc::SYS_truncate,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_umask,
    libc::SYS_flock,
    libc::SYS_fadvise64,
    libc::SYS_sync_file_range,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_splice,
];

/// Starting threads.
const THREADS: &[i64] = &[libc::SYS_clone, libc::SYS_clone3];

/// vCPU and API threads open no files, but glibc may, once per process and from
/// whichever thread gets there first: malloc reads /proc/sys/vm/overcommit_memory
/// when it first shrinks a heap, /sys/devices/system/cpu/online when it first
/// sizes its arenas; it copes with failure. In those threads `open` and `openat`
/// pass this kind's filter and are refused (EACCES) by a second one instead of
/// trapping (the kernel takes the strictest answer of a thread's filters).
const OPEN: &[i64] = &[libc::SYS_open, libc::SYS_openat];

/// Whether `kind` threads get the filter that refuses [`OPEN`].
pub(crate) fn refuses_open(kind: ThreadKind) -> bool {
    matches!(kind, ThreadKind::Vcpu | ThreadKind::Api)
}

/// The system calls `kind` may make without conditions.
fn syscalls(kind: ThreadKind) -> Vec<i64> {
    let mut v = COMMON.to_vec();
    if refuses_open(kind) {
        v.extend(OPEN);
    }
    match kind {
        // The guest's device accesses run on its vCPU thread: disk I/O (also
        // discards), frames to a TAP device or socket, console output.
        ThreadKind::Vcpu => {
            v.extend(SOCKET_IO);
            v.push(libc::SYS_ftruncate);
        }
        ThreadKind::Io | ThreadKind::Debug => {
            v.extend(SOCKET_IO);
            v.extend(SOCKET_SETUP);
            v.extend(FILES);
            v.push(libc::SYS_rt_sigtimedwait);
            if kind == ThreadKind::Io {
                // virtio-blk queue workers do the guest's disk I/O (an image grows).
                v.push(libc::SYS_ftruncate);
            }
        }
        ThreadKind::Api => {
            v.extend(SOCKET_IO);
            v.extend(SOCKET_SETUP);
            v.extend(THREADS);
        }
        ThreadKind::Main => {
            v.extend(SOCKET_IO);
            v.extend(SOCKET_SETUP);
            v.extend(FILES);
            v.extend(FILE_WRITES);
            v.extend(THREADS);
            v.extend([
                libc::SYS_rt_sigtimedwait,
                libc::SYS_wait4,
                libc::SYS_sched_setaffinity,
                libc::SYS_prlimit64,
                libc::SYS_mlock,
                libc::SYS_munlock,
                libc::SYS_memfd_create,
            ]);
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The ioctl types `kind` may use (any request of these).
fn ioctl_types(kind: ThreadKind) -> &'static [u64] {
    match kind {
        // The GDB server reads and writes vCPU registers and sets debug state.
        ThreadKind::Vcpu | ThreadKind::Debug | ThreadKind::Main => {
            &[IOCTL_TYPE_KVM, IOCTL_TYPE_TERMINAL_TUN]
        }
        ThreadKind::Io | ThreadKind::Api => &[IOCTL_TYPE_TERMINAL_TUN],
    }
}

/// The single ioctl requests `kind` may use besides its types.
fn ioctl_requests(kind: ThreadKind) -> &'static [u64] {
    match kind {
        ThreadKind::Io | ThreadKind::Api => KVM_IRQ_IOCTLS,
        ThreadKind::Vcpu | ThreadKind::Debug | ThreadKind::Main => &[],
    }
}

/// One compiled filter per kind.
pub(crate) struct Compiled {
    vcpu: BpfProgram,
    io: BpfProgram,
    api: BpfProgram,
    debug: BpfProgram,
    main: BpfProgram,
    no_open: BpfProgram,
}

impl Compiled {
    pub(crate) fn new() -> Result<Compiled, Error> {
        Ok(Compiled {
            vcpu: compile(ThreadKind::Vcpu)?,
            io: compile(ThreadKind::Io)?,
            api: compile(ThreadKind::Api)?,
            debug: compile(ThreadKind::Debug)?,
            main: compile(ThreadKind::Main)?,
            no_open: compile_no_open()?,
        })
    }

    pub(crate) fn get(&self, kind: ThreadKind) -> &BpfProgram {
        match kind {
            ThreadKind::Vcpu => &self.vcpu,
            ThreadKind::Io => &self.io,
            ThreadKind::Api => &self.api,
            ThreadKind::Debug => &self.debug,
            ThreadKind::Main => &self.main,
        }
    }

    /// The filter that refuses [`OPEN`] with EACCES and lets all else through.
    pub(crate) fn no_open(&self) -> &BpfProgram {
        &self.no_open
    }
}

fn compile_no_open() -> Result<BpfProgram, Error> {
    let err = |source| Error::Filter {
        kind: "vcpu and api",
        source,
    };
    let rules = OPEN.iter().map(|&n| (n, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        TargetArch::x86_64,
    )
    .map_err(err)?;
    BpfProgram::try_from(filter).map_err(err)
}

fn compile(kind: ThreadKind) -> Result<BpfProgram, Error> {
    let err = |source| Error::Filter {
        kind: kind.name(),
        source,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = syscalls(kind)
        .into_iter()
        .map(|n| (n, Vec::new()))
        .collect();
    // An ioctl is allowed by its type byte or its whole request number, an
    // unsigned int (the upper half of the register is not looked at).
    let by_type = ioctl_types(kind)
        .iter()
        .map(|&t| (SeccompCmpOp::MaskedEq(0xff00), t << 8));
    let by_request = ioctl_requests(kind).iter().map(|&r| (SeccompCmpOp::Eq, r));
    let ioctl = by_type
        .chain(by_request)
        .map(|(op, v)| {
            let c = SeccompCondition::new(1, SeccompCmpArgLen::Dword, op, v)?;
            SeccompRule::new(vec![c])
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    rules.insert(libc::SYS_ioctl, ioctl);
    let filter = SeccompFilter::new(
        rules,
        // Trap rather than kill: the SIGSYS handler says what was refused, then
        // ends the process (trap.rs).
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(err)?;
    BpfProgram::try_from(filter).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles() {
        Compiled::new().unwrap();
    }

    #[test]
    fn the_main_filter_allows_what_the_threads_it_starts_need() {
        // Threads started after the main thread is confined inherit its filter.
        let main = syscalls(ThreadKind::Main);
        for k in [
            ThreadKind::Vcpu,
            ThreadKind::Io,
            ThreadKind::Api,
            ThreadKind::Debug,
        ] {
            for n in syscalls(k) {
                assert!(main.contains(&n), "{} needs {n}", k.name());
            }
            for t in ioctl_types(k) {
                assert!(ioctl_types(ThreadKind::Main).contains(t));
            }
        }
    }

    /// `_IOC(dir, type, nr, size)` of linux/ioctl.h.
    fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
        dir << 30 | size << 16 | ty << 8 | nr
    }

    #[test]
    fn the_interrupt_ioctls_are_kvms() {
        // struct kvm_irq_level is 8 bytes, struct kvm_msi 32; _IOW is 1, _IOWR 3.
        assert_eq!(
            KVM_IRQ_IOCTLS,
            [
                ioc(1, 0xAE, 0x61, 8),
                ioc(3, 0xAE, 0x67, 8),
                ioc(1, 0xAE, 0xa5, 32)
            ]
        );
    }

    #[test]
    fn vcpus_cannot_open_files_or_start_processes() {
        let v = syscalls(ThreadKind::Vcpu);
        assert!(refuses_open(ThreadKind::Vcpu));
        for n in [libc::SYS_socket, libc::SYS_execve, libc::SYS_clone] {
            assert!(!v.contains(&n), "{n}");
        }
        assert!(!syscalls(ThreadKind::Main).contains(&libc::SYS_execve));
    }
}
