//! User-mode networking through libslirp, QEMU's `-netdev user`: no privileges,
//! the guest on 10.0.2.0/24 with the host (and gateway) at 10.0.2.2, a DNS
//! forwarder at 10.0.2.3 and DHCP handing out 10.0.2.15. The guest reaches the
//! host's loopback through 10.0.2.2 (libslirp's default, kept);
//! `host.hako.internal` resolves to it (answered here, see [`crate::dns`]).
//! IPv4 only: IPv6 (QEMU's fec0::/64) is left disabled to keep the surface small.
//!
//! Why libslirp rather than smoltcp: user networking is a NAT, not an endpoint.
//! libslirp terminates each of the guest's TCP and UDP flows into an ordinary host
//! socket and does DHCP, DNS forwarding and host forwards, all exercised by QEMU
//! for decades. smoltcp is an endpoint stack; we would have to write the flow
//! tracking, the NAT and the forwards on top of it ourselves.
//!
//! Threading: libslirp is not thread-safe, so one backend thread owns the `Slirp`
//! and runs a poll(2) loop over the sockets libslirp asks for plus an eventfd.
//! `send` (on a vCPU thread) puts the guest's frame in a bounded channel and
//! signals the eventfd; the loop feeds the channel to `slirp_input`. libslirp's
//! `send_packet` callback fills the [`FrameQueue`], and the loop wakes the device
//! once per round, before it sleeps again. The poll timeout is the nearest of
//! libslirp's timers, at most a second.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::slirp_ffi::{
    self as ffi, Api, HandleTimerFn, Slirp, SlirpCb, SlirpConfig, SlirpTimerCb, SlirpTimerId,
};
use crate::spec::HostFwd;
use crate::sys::{self, EventFd};
use crate::{dns, FrameQueue, NetBackend, Offloads, OpenError, RxWaker};

/// The guest network.
pub const NETWORK: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 0);
/// Its mask (/24).
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
/// The host and gateway, as the guest sees it.
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The DNS forwarder.
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The (first) address DHCP hands out.
pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// Guest frames waiting for the slirp thread; more are dropped.
const SEND_QUEUE: usize = 256;

/// The longest the loop sleeps without looking at its timers.
const MAX_POLL_MS: u32 = 1000;

/// libslirp's guest-error messages logged before going quiet.
const GUEST_ERRORS_LOGGED: u32 = 5;

/// A user-mode (libslirp) backend.
pub struct UserBackend {
    tx: Option<SyncSender<Vec<u8>>>,
    queue: FrameQueue,
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
    description: String,
}

/// What `send` and `drop` tell the slirp thread.
struct Control {
    /// Readable when the thread has something to do (frames, a wake, stop).
    wake_fd: EventFd,
    stop: AtomicBool,
    /// `send` queued a frame itself (a DNS answer): the thread wakes the device.
    wake_pending: AtomicBool,
}

/// Opens user networking with these forwards (binding each host port now, so a
/// port in use is an error before boot).
pub fn open(hostfwd: &[HostFwd], restrict: bool, waker: RxWaker) -> Result<UserBackend, OpenError> {
    let api = ffi::api().map_err(OpenError::Invalid)?;
    let control = Arc::new(Control {
        wake_fd: EventFd::new().map_err(|source| OpenError::Io {
            what: "user: eventfd".into(),
            source,
        })?,
        stop: AtomicBool::new(false),
        wake_pending: AtomicBool::new(false),
    });
    let queue = FrameQueue::default();
    let (tx, rx) = mpsc::sync_channel(SEND_QUEUE);
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let setup = Setup {
        api,
        hostfwd: hostfwd.to_vec(),
        restrict,
    };
    let (c, q) = (control.clone(), queue.clone());
    let thread = std::thread::Builder::new()
        .name("net-user".into())
        .spawn(move || {
            sandbox::enter(sandbox::ThreadKind::Io);
            slirp_thread(setup, c, q, waker, rx, ready_tx)
        })
        .map_err(|source| OpenError::Io {
            what: "user: spawning a thread".into(),
            source,
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(OpenError::Invalid(
                "user: the slirp thread ended while starting".into(),
            ));
        }
    }
    let mut description = format!("user ({GUEST}, libslirp {}", api.version);
    if restrict {
        description.push_str(", restricted");
    }
    for fwd in hostfwd {
        description.push_str(&format!(", hostfwd {fwd}"));
    }
    description.push(')');
    Ok(UserBackend {
        tx: Some(tx),
        queue,
        control,
        thread: Some(thread),
        description,
    })
}

/// What the slirp thread needs to create its `Slirp`.
struct Setup {
    api: &'static Api,
    hostfwd: Vec<HostFwd>,
    restrict: bool,
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from(a).to_be(),
    }
}

/// The state libslirp's callbacks reach through their `opaque` pointer. Only
/// shared references to it exist (the loop's and the callbacks', all on the slirp
/// thread), so the mutable parts are cells, never borrowed across a call into
/// libslirp.
struct Ctx {
    queue: FrameQueue,
    /// `send_packet` queued frames since the device was last woken.
    queued: Cell<bool>,
    start: Instant,
    /// libslirp's timers; a timer's handle is its index + 1.
    timers: RefCell<Vec<Option<Timer>>>,
    /// This round's poll set: the wake eventfd, then libslirp's sockets.
    pollfds: RefCell<Vec<libc::pollfd>>,
    guest_errors: Cell<u32>,
}

/// One libslirp timer.
struct Timer {
    /// Expiry on the [`Ctx::now_ms`] clock, when armed.
    expire_ms: Option<i64>,
    kind: TimerKind,
}

enum TimerKind {
    /// Made by `timer_new_opaque`: fires through `slirp_handle_timer`.
    Opaque {
        id: SlirpTimerId,
        cb_opaque: *mut c_void,
    },
    /// Made by `timer_new`: fires by calling `cb(cb_opaque)`.
    Callback {
        cb: SlirpTimerCb,
        cb_opaque: *mut c_void,
    },
}

/// The clock libslirp sees starts at one second, as libslirp reads a zero time as
/// "unset" in places.
const CLOCK_START_NS: i64 = 1_000_000_000;

impl Ctx {
    fn now_ns(&self) -> i64 {
        CLOCK_START_NS + self.start.elapsed().as_nanos() as i64
    }

    fn now_ms(&self) -> i64 {
        self.now_ns() / 1_000_000
    }

    /// Milliseconds until the nearest armed timer, if any.
    fn next_timer_ms(&self) -> Option<u32> {
        let now = self.now_ms();
        let timers = self.timers.borrow();
        timers
            .iter()
            .flatten()
            .filter_map(|t| t.expire_ms)
            .min()
            .map(|e| (e - now).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Disarms and fires every expired timer. A timer's callback may modify or
    /// free timers (itself included), so none is borrowed while one runs.
    fn fire_timers(&self, handle_timer: Option<HandleTimerFn>, slirp: *mut Slirp) {
        let now = self.now_ms();
        let expired: Vec<TimerKind> = {
            let mut timers = self.timers.borrow_mut();
            timers
                .iter_mut()
                .flatten()
                .filter(|t| t.expire_ms.is_some_and(|e| e <= now))
                .map(|t| {
                    t.expire_ms = None;
                    match t.kind {
                        TimerKind::Opaque { id, cb_opaque } => TimerKind::Opaque { id, cb_opaque },
                        TimerKind::Callback { cb, cb_opaque } => {
                            TimerKind::Callback { cb, cb_opaque }
                        }
                    }
                })
                .collect()
        };
        for kind in expired {
            match kind {
                TimerKind::Opaque { id, cb_opaque } => {
                    if let Some(handle) = handle_timer {
                        // SAFETY: `slirp` is this thread's live instance; `id` and
                        // `cb_opaque` are what libslirp gave timer_new_opaque.
                        unsafe { handle(slirp, id, cb_opaque) };
                    }
                }
                // SAFETY: libslirp gave this callback and its argument to
                // timer_new for exactly this call, on this thread.
                TimerKind::Callback { cb, cb_opaque } => unsafe { cb(cb_opaque) },
            }
        }
    }
}

/// The context behind an `opaque` pointer.
///
/// # Safety
/// `opaque` must be the `Ctx` pointer this module gave libslirp, still alive
/// (which holds from `slirp_new` until `slirp_cleanup` returns, on the slirp thread).
unsafe fn ctx<'a>(opaque: *mut c_void) -> &'a Ctx {
    // SAFETY: per this function's contract, `opaque` points to a live Ctx, only
    // ever shared.
    unsafe { &*(opaque as *const Ctx) }
}

unsafe extern "C" fn cb_send_packet(
    buf: *const c_void,
    len: usize,
    opaque: *mut c_void,
) -> libc::ssize_t {
    // SAFETY: libslirp passes back our opaque pointer.
    let ctx = unsafe { ctx(opaque) };
    // SAFETY: libslirp passes a frame of `len` readable bytes for this call.
    let frame = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    // A full queue drops the frame, as a NIC would; TCP retransmits.
    ctx.queue.push(frame.to_vec());
    ctx.queued.set(true);
    len as libc::ssize_t
}

unsafe extern "C" fn cb_guest_error(msg: *const c_char, opaque: *mut c_void) {
    // SAFETY: libslirp passes back our opaque pointer.
    let ctx = unsafe { ctx(opaque) };
    let n = ctx.guest_errors.get();
    ctx.guest_errors.set(n.saturating_add(1));
    if n < GUEST_ERRORS_LOGGED && !msg.is_null() {
        // SAFETY: libslirp passes a NUL-terminated message, valid for this call.
        let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
        tracing::warn!("net user: guest error: {msg}");
        if n + 1 == GUEST_ERRORS_LOGGED {
            tracing::warn!("net user: further guest errors are not logged");
        }
    }
}

unsafe extern "C" fn cb_clock_get_ns(opaque: *mut c_void) -> i64 {
    // SAFETY: libslirp passes back our opaque pointer.
    unsafe { ctx(opaque) }.now_ns()
}

/// Stores a new timer; its handle is its slot's index + 1 (never null).
fn new_timer(ctx: &Ctx, kind: TimerKind) -> *mut c_void {
    let mut timers = ctx.timers.borrow_mut();
    let timer = Timer {
        expire_ms: None,
        kind,
    };
    let index = match timers.iter().position(Option::is_none) {
        Some(i) => {
            timers[i] = Some(timer);
            i
        }
        None => {
            timers.push(Some(timer));
            timers.len() - 1
        }
    };
    (index + 1) as *mut c_void
}

unsafe extern "C" fn cb_timer_new(
    cb: SlirpTimerCb,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    // SAFETY: libslirp passes back our opaque pointer.
    new_timer(
        unsafe { ctx(opaque) },
        TimerKind::Callback { cb, cb_opaque },
    )
}

unsafe extern "C" fn cb_timer_new_opaque(
    id: SlirpTimerId,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    // SAFETY: libslirp passes back our opaque pointer.
    new_timer(unsafe { ctx(opaque) }, TimerKind::Opaque { id, cb_opaque })
}

unsafe extern "C" fn cb_timer_free(timer: *mut c_void, opaque: *mut c_void) {
    // SAFETY: libslirp passes back our opaque pointer.
    let ctx = unsafe { ctx(opaque) };
    if let Some(slot) = ctx
        .timers
        .borrow_mut()
        .get_mut((timer as usize).wrapping_sub(1))
    {
        *slot = None;
    }
}

unsafe extern "C" fn cb_timer_mod(timer: *mut c_void, expire_ms: i64, opaque: *mut c_void) {
    // SAFETY: libslirp passes back our opaque pointer.
    let ctx = unsafe { ctx(opaque) };
    if let Some(Some(t)) = ctx
        .timers
        .borrow_mut()
        .get_mut((timer as usize).wrapping_sub(1))
    {
        t.expire_ms = Some(expire_ms);
    }
}

/// register/unregister_poll_fd and notify: nothing to do, as the loop asks
/// libslirp for its sockets every round and runs every round on this thread.
unsafe extern "C" fn cb_poll_fd(_fd: c_int, _opaque: *mut c_void) {}
unsafe extern "C" fn cb_notify(_opaque: *mut c_void) {}
unsafe extern "C" fn cb_init_completed(_slirp: *mut Slirp, _opaque: *mut c_void) {}

unsafe extern "C" fn cb_add_poll(fd: c_int, events: c_int, opaque: *mut c_void) -> c_int {
    // SAFETY: slirp_pollfds_fill passes back the Ctx pointer the loop gave it.
    let ctx = unsafe { ctx(opaque) };
    let mut want = 0;
    for (s, p) in EVENTS {
        if events & s != 0 {
            want |= p;
        }
    }
    let mut fds = ctx.pollfds.borrow_mut();
    fds.push(libc::pollfd {
        fd,
        events: want,
        revents: 0,
    });
    (fds.len() - 1) as c_int
}

unsafe extern "C" fn cb_get_revents(idx: c_int, opaque: *mut c_void) -> c_int {
    // SAFETY: slirp_pollfds_poll passes back the Ctx pointer the loop gave it.
    let ctx = unsafe { ctx(opaque) };
    let fds = ctx.pollfds.borrow();
    let Some(fd) = usize::try_from(idx).ok().and_then(|i| fds.get(i)) else {
        return 0;
    };
    let mut got = 0;
    for (s, p) in EVENTS {
        if fd.revents & p != 0 {
            got |= s;
        }
    }
    got
}

/// libslirp's poll events and poll(2)'s.
const EVENTS: [(c_int, libc::c_short); 5] = [
    (ffi::SLIRP_POLL_IN, libc::POLLIN),
    (ffi::SLIRP_POLL_OUT, libc::POLLOUT),
    (ffi::SLIRP_POLL_PRI, libc::POLLPRI),
    (ffi::SLIRP_POLL_ERR, libc::POLLERR),
    (ffi::SLIRP_POLL_HUP, libc::POLLHUP),
];

/// The callbacks, for every instance.
static CALLBACKS: SlirpCb = SlirpCb {
    send_packet: Some(cb_send_packet),
    guest_error: Some(cb_guest_error),
    clock_get_ns: Some(cb_clock_get_ns),
    timer_new: Some(cb_timer_new),
    timer_free: Some(cb_timer_free),
    timer_mod: Some(cb_timer_mod),
    register_poll_fd: Some(cb_poll_fd),
    unregister_poll_fd: Some(cb_poll_fd),
    notify: Some(cb_notify),
    init_completed: Some(cb_init_completed),
    timer_new_opaque: Some(cb_timer_new_opaque),
};

/// Creates the `Slirp` on this thread, reports to `ready`, and runs it until the
/// backend stops.
fn slirp_thread(
    setup: Setup,
    control: Arc<Control>,
    queue: FrameQueue,
    waker: RxWaker,
    guest: Receiver<Vec<u8>>,
    ready: SyncSender<Result<(), OpenError>>,
) {
    let api = setup.api;
    let ctx = Ctx {
        queue,
        queued: Cell::new(false),
        start: Instant::now(),
        timers: RefCell::new(Vec::new()),
        pollfds: RefCell::new(Vec::new()),
        guest_errors: Cell::new(0),
    };
    let opaque = &ctx as *const Ctx as *mut c_void;
    let zero6 = libc::in6_addr { s6_addr: [0; 16] };
    let cfg = SlirpConfig {
        version: api.config_version(),
        restricted: c_int::from(setup.restrict),
        in_enabled: true,
        vnetwork: in_addr(NETWORK),
        vnetmask: in_addr(NETMASK),
        vhost: in_addr(HOST),
        in6_enabled: false,
        vprefix_addr6: zero6,
        vprefix_len: 0,
        vhost6: zero6,
        vhostname: std::ptr::null(),
        tftp_server_name: std::ptr::null(),
        tftp_path: std::ptr::null(),
        bootfile: std::ptr::null(),
        vdhcp_start: in_addr(GUEST),
        vnameserver: in_addr(DNS),
        vnameserver6: zero6,
        vdnssearch: std::ptr::null(),
        vdomainname: std::ptr::null(),
        if_mtu: 0,
        if_mru: 0,
        disable_host_loopback: false,
        enable_emu: false,
        outbound_addr: std::ptr::null_mut(),
        outbound_addr6: std::ptr::null_mut(),
        disable_dns: false,
        disable_dhcp: false,
    };
    // SAFETY: `cfg` is a fully initialised SlirpConfig of the version it names
    // (libslirp copies what it needs); CALLBACKS is static; `opaque` points to
    // `ctx`, which outlives the instance (slirp_cleanup runs below, before `ctx`
    // is dropped) and is only used on this thread.
    let slirp = unsafe { (api.slirp_new)(&cfg, &CALLBACKS, opaque) };
    if slirp.is_null() {
        let _ = ready.send(Err(OpenError::Invalid(format!(
            "user: libslirp {} refused the configuration (slirp_new failed)",
            api.version
        ))));
        return;
    }
    for fwd in &setup.hostfwd {
        // SAFETY: `slirp` is this thread's live instance; the addresses are passed
        // by value.
        let r = unsafe {
            (api.slirp_add_hostfwd)(
                slirp,
                c_int::from(fwd.udp),
                in_addr(fwd.host_addr),
                c_int::from(fwd.host_port),
                in_addr(fwd.guest_addr),
                c_int::from(fwd.guest_port),
            )
        };
        if r < 0 {
            let source = io::Error::last_os_error();
            // SAFETY: the instance is live and no longer used after this.
            unsafe { (api.slirp_cleanup)(slirp) };
            let _ = ready.send(Err(OpenError::Io {
                what: format!(
                    "user: hostfwd={fwd}: cannot listen on {}:{}",
                    fwd.host_addr, fwd.host_port
                ),
                source,
            }));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    drop(ready);

    run(api, slirp, &ctx, &control, &waker, &guest);

    // SAFETY: the instance is live; nothing uses it after this.
    unsafe { (api.slirp_cleanup)(slirp) };
}

/// The poll loop, until `control.stop`.
fn run(
    api: &Api,
    slirp: *mut Slirp,
    ctx: &Ctx,
    control: &Control,
    waker: &RxWaker,
    guest: &Receiver<Vec<u8>>,
) {
    let opaque = ctx as *const Ctx as *mut c_void;
    let mut poll_failed = false;
    loop {
        for frame in guest.try_iter() {
            let Ok(len) = c_int::try_from(frame.len()) else {
                continue;
            };
            // SAFETY: `slirp` is this thread's live instance; libslirp copies the
            // `len` bytes of the frame during the call.
            unsafe { (api.slirp_input)(slirp, frame.as_ptr(), len) };
        }
        if control.stop.load(Ordering::Acquire) {
            return;
        }
        ctx.fire_timers(api.slirp_handle_timer, slirp);
        // Wake before sleeping: what input and timers produced goes out now.
        if ctx.queued.replace(false) | control.wake_pending.swap(false, Ordering::AcqRel) {
            waker.wake();
        }

        let mut timeout = ctx.next_timer_ms().unwrap_or(MAX_POLL_MS).min(MAX_POLL_MS);
        {
            let mut fds = ctx.pollfds.borrow_mut();
            fds.clear();
            fds.push(sys::pollin(control.wake_fd.as_raw_fd()));
        }
        // SAFETY: `slirp` is live; cb_add_poll gets `opaque`, our live Ctx, and
        // `timeout` is a live u32 for the call.
        unsafe { (api.slirp_pollfds_fill)(slirp, &mut timeout, cb_add_poll, opaque) };
        let result = sys::poll(
            &mut ctx.pollfds.borrow_mut(),
            timeout.min(MAX_POLL_MS) as i32,
        );
        if let Err(e) = &result {
            if !poll_failed {
                tracing::error!("net user: poll: {e} (logged once)");
                poll_failed = true;
            }
        }
        if ctx.pollfds.borrow()[0].revents != 0 {
            control.wake_fd.drain();
        }
        // SAFETY: as for the fill: `slirp` live, `opaque` our Ctx, and the poll
        // set still the one filled for this round.
        unsafe {
            (api.slirp_pollfds_poll)(slirp, c_int::from(result.is_err()), cb_get_revents, opaque)
        };
    }
}

impl NetBackend for UserBackend {
    fn offloads(&self) -> Offloads {
        Offloads::default()
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if frame.len() < 14 {
            return Ok(false);
        }
        if let Some(reply) = dns::intercept(frame, DNS, HOST) {
            // Queued here, but the device is woken by the slirp thread: `send`
            // runs under the device's lock, which waking would take again.
            let queued = self.queue.push(reply);
            self.control.wake_pending.store(true, Ordering::Release);
            self.control.wake_fd.signal();
            return Ok(queued);
        }
        match self.tx.as_ref().map(|tx| tx.try_send(frame.to_vec())) {
            Some(Ok(())) => {
                self.control.wake_fd.signal();
                Ok(true)
            }
            Some(Err(TrySendError::Full(_))) => {
                self.control.wake_fd.signal();
                Ok(false)
            }
            Some(Err(TrySendError::Disconnected(_))) | None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the user-networking thread ended",
            )),
        }
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        self.queue.pop()
    }

    fn unrecv(&mut self, frame: Vec<u8>) {
        self.queue.unpop(frame);
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

impl Drop for UserBackend {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Release);
        self.control.wake_fd.signal();
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn count(opaque: *mut c_void) {
        // SAFETY: the test passes a pointer to a live Cell<u32> as the timer's argument.
        let n = unsafe { &*(opaque as *const Cell<u32>) };
        n.set(n.get() + 1);
    }

    fn ctx() -> Ctx {
        Ctx {
            queue: FrameQueue::default(),
            queued: Cell::new(false),
            start: Instant::now(),
            timers: RefCell::new(Vec::new()),
            pollfds: RefCell::new(Vec::new()),
            guest_errors: Cell::new(0),
        }
    }

    #[test]
    fn timers_fire_once_when_due_and_slots_are_reused() {
        let ctx = ctx();
        let opaque = &ctx as *const Ctx as *mut c_void;
        let fired = Cell::new(0u32);
        let arg = &fired as *const Cell<u32> as *mut c_void;
        // SAFETY: `opaque` is a live Ctx and `count` takes the Cell we pass; the
        // callbacks run on this thread, as on the slirp thread.
        unsafe {
            let a = cb_timer_new(count, arg, opaque);
            let b = cb_timer_new(count, arg, opaque);
            assert_eq!((a as usize, b as usize), (1, 2));
            assert_eq!(ctx.next_timer_ms(), None, "new timers are not armed");
            cb_timer_mod(b, ctx.now_ms() + 60_000, opaque);
            let next = ctx.next_timer_ms().unwrap();
            assert!((59_000..=60_000).contains(&next), "{next}");
            cb_timer_mod(a, ctx.now_ms() - 5, opaque);
            assert_eq!(ctx.next_timer_ms(), Some(0));
            ctx.fire_timers(None, std::ptr::null_mut());
            assert_eq!(fired.get(), 1, "only the due timer fired");
            ctx.fire_timers(None, std::ptr::null_mut());
            assert_eq!(fired.get(), 1, "a fired timer is disarmed");
            cb_timer_free(a, opaque);
            cb_timer_mod(a, 0, opaque); // A freed handle is ignored.
            ctx.fire_timers(None, std::ptr::null_mut());
            assert_eq!(fired.get(), 1);
            let c = cb_timer_new(count, arg, opaque);
            assert_eq!(c as usize, 1, "the freed slot is reused");
            cb_timer_free(b, opaque);
            cb_timer_free(c, opaque);
            assert_eq!(ctx.next_timer_ms(), None);
        }
    }

    #[test]
    fn poll_events_translate_both_ways() {
        let ctx = ctx();
        let opaque = &ctx as *const Ctx as *mut c_void;
        ctx.pollfds.borrow_mut().push(sys::pollin(-1));
        // SAFETY: `opaque` is a live Ctx; these callbacks only touch its poll set.
        unsafe {
            let i = cb_add_poll(7, ffi::SLIRP_POLL_IN | ffi::SLIRP_POLL_OUT, opaque);
            assert_eq!(i, 1);
            assert_eq!(ctx.pollfds.borrow()[1].events, libc::POLLIN | libc::POLLOUT);
            ctx.pollfds.borrow_mut()[1].revents = libc::POLLOUT | libc::POLLHUP;
            assert_eq!(
                cb_get_revents(1, opaque),
                ffi::SLIRP_POLL_OUT | ffi::SLIRP_POLL_HUP
            );
            assert_eq!(
                cb_get_revents(9, opaque),
                0,
                "an unknown index has no events"
            );
        }
    }
}
