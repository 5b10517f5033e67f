//! The GDB server (`hako run --gdb`): the GDB remote protocol through `gdbstub`,
//! one session at a time, each vCPU a thread, all vCPUs stopped together. While a
//! debugger is attached the VM is stopped except between its `continue` or `step`
//! and the next stop; when it detaches the VM runs on without debugging.

pub mod regs;
mod target;
pub mod walk;

use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use accel::{DebugStop, WatchKind};
use anyhow::{bail, Context, Result};
use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::breakpoints::WatchKind as GdbWatch;

use crate::handle::VmHandle;
use crate::run::ExitReason;
use target::{tid, VmTarget};

/// Where GDB connects.
pub enum GdbListener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Listens for GDB at `spec` (`tcp:HOST:PORT` or `unix:PATH`). A TCP address that is
/// not loopback is refused unless `allow_remote`: the GDB protocol has no
/// authentication, and a debugger can read and write all of the guest.
pub fn bind(spec: &str, allow_remote: bool) -> Result<GdbListener> {
    if let Some(a) = spec.strip_prefix("tcp:") {
        let addrs: Vec<SocketAddr> = a
            .to_socket_addrs()
            .with_context(|| format!("--gdb {spec}: not a HOST:PORT"))?
            .collect();
        let addr = *addrs
            .first()
            .context("--gdb: the address resolves to nothing")?;
        if !addr.ip().is_loopback() && !allow_remote {
            bail!(
                "--gdb {spec}: {} is not a loopback address; anyone who can reach it \
                 controls the guest (add --gdb-allow-remote to accept that)",
                addr.ip()
            );
        }
        let l =
            TcpListener::bind(addr).with_context(|| format!("--gdb: cannot listen on {addr}"))?;
        return Ok(GdbListener::Tcp(l));
    }
    if let Some(p) = spec.strip_prefix("unix:").filter(|p| !p.is_empty()) {
        let l = UnixListener::bind(p).with_context(|| format!("--gdb: cannot listen on {p}"))?;
        return Ok(GdbListener::Unix(l, p.into()));
    }
    bail!("--gdb {spec}: expected tcp:HOST:PORT or unix:PATH")
}

impl Drop for GdbListener {
    fn drop(&mut self) {
        if let GdbListener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Serves GDB sessions for `vm` on a thread of its own until the VM ends.
pub fn serve(l: GdbListener, vm: &VmHandle) -> Result<()> {
    let (control, mem, ncpus, accel) = vm.debug_parts();
    let vm = vm.clone();
    std::thread::Builder::new()
        .name("gdb".into())
        .spawn(move || {
            sandbox::enter(sandbox::ThreadKind::Debug);
            let mut t = VmTarget::new(control, mem, ncpus, accel);
            loop {
                let r = match &l {
                    GdbListener::Tcp(l) => l.accept().map(|(s, _)| {
                        let _ = s.set_nodelay(true);
                        session(s, &mut t, &vm)
                    }),
                    GdbListener::Unix(l, _) => l.accept().map(|(s, _)| session(s, &mut t, &vm)),
                };
                if let Err(e) = r {
                    tracing::warn!("gdb: accept: {e}");
                    return;
                }
                if vm.ended() {
                    return;
                }
            }
        })
        .context("cannot start the GDB server thread")?;
    Ok(())
}

/// One debugger session: the VM stops for it and runs on when it leaves.
fn session<C>(conn: C, t: &mut VmTarget, vm: &VmHandle)
where
    C: ConnectionExt<Error = io::Error>,
{
    tracing::info!("gdb: debugger attached");
    if !t.control.pause(Duration::from_secs(5)) {
        tracing::warn!("gdb: the vCPUs did not stop; dropping the debugger");
        t.control.resume();
        return;
    }
    t.control.clear_debug_stop();
    let gdb = match GdbStub::builder(conn).build() {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!("gdb: {e}");
            t.control.resume();
            return;
        }
    };
    match gdb.run_blocking::<EventLoop<C>>(t) {
        Ok(DisconnectReason::Kill) => {
            tracing::info!("gdb: the debugger killed the VM");
            vm.end(ExitReason::Stopped);
            return;
        }
        Ok(DisconnectReason::TargetExited(_)) | Ok(DisconnectReason::TargetTerminated(_)) => {
            return;
        }
        Ok(DisconnectReason::Disconnect) => tracing::info!("gdb: debugger detached"),
        // Garbage, a broken connection: the session ends, the VM survives.
        Err(e) => tracing::warn!("gdb: session ended: {e}"),
    }
    t.forget_all();
    // Nothing to resume into when the VM has ended.
    let _ = t.apply_and_resume();
}

struct EventLoop<C>(PhantomData<C>);

fn stop_reason(i: usize, s: DebugStop) -> MultiThreadStopReason<u64> {
    match s {
        DebugStop::Step => MultiThreadStopReason::SignalWithThread {
            tid: tid(i),
            signal: Signal::SIGTRAP,
        },
        DebugStop::Breakpoint => MultiThreadStopReason::SwBreak(tid(i)),
        DebugStop::Watchpoint { addr, kind } => MultiThreadStopReason::Watch {
            tid: tid(i),
            kind: match kind {
                WatchKind::Write => GdbWatch::Write,
                WatchKind::Read => GdbWatch::Read,
                WatchKind::Access => GdbWatch::ReadWrite,
            },
            addr,
        },
    }
}

impl<C: ConnectionExt<Error = io::Error>> BlockingEventLoop for EventLoop<C> {
    type Target = VmTarget;
    type Connection = C;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        t: &mut VmTarget,
        conn: &mut C,
    ) -> std::result::Result<
        Event<Self::StopReason>,
        WaitForStopReasonError<target::Ended, io::Error>,
    > {
        loop {
            if let Some((i, s)) = t.control.take_debug_stop() {
                return Ok(Event::TargetStopped(stop_reason(i, s)));
            }
            if t.control.reason().is_some() {
                return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(0)));
            }
            match conn.peek() {
                Ok(Some(_)) => {
                    let b = conn.read().map_err(WaitForStopReasonError::Connection)?;
                    return Ok(Event::IncomingData(b));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(WaitForStopReasonError::Connection(e)),
            }
        }
    }

    fn on_interrupt(
        t: &mut VmTarget,
    ) -> std::result::Result<Option<Self::StopReason>, target::Ended> {
        if !t.control.pause(Duration::from_secs(5)) {
            return Err(target::Ended);
        }
        t.control.clear_debug_stop();
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: tid(0),
            signal: Signal::SIGINT,
        }))
    }
}
