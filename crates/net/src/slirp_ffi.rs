//! libslirp's C API, declared by hand from `<slirp/libslirp.h>` (libslirp 4.7) and
//! loaded at run time from `libslirp.so.0`, so building hako needs no -dev
//! package and a machine without libslirp only loses `--net user`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use libc::{in6_addr, in_addr, sockaddr_in, sockaddr_in6, ssize_t};

/// The library file (its soname).
pub const LIBRARY: &str = "libslirp.so.0";

/// `Slirp`: opaque.
#[repr(C)]
pub struct Slirp {
    _opaque: [u8; 0],
}

/// `SLIRP_POLL_*`, the events `add_poll` and `get_revents` speak.
pub const SLIRP_POLL_IN: c_int = 1 << 0;
pub const SLIRP_POLL_OUT: c_int = 1 << 1;
pub const SLIRP_POLL_PRI: c_int = 1 << 2;
pub const SLIRP_POLL_ERR: c_int = 1 << 3;
pub const SLIRP_POLL_HUP: c_int = 1 << 4;

/// `SlirpTimerId` (an enum in C: int-sized).
pub type SlirpTimerId = c_int;

pub type SlirpWriteCb =
    unsafe extern "C" fn(buf: *const c_void, len: usize, opaque: *mut c_void) -> ssize_t;
pub type SlirpTimerCb = unsafe extern "C" fn(opaque: *mut c_void);
pub type SlirpAddPollCb =
    unsafe extern "C" fn(fd: c_int, events: c_int, opaque: *mut c_void) -> c_int;
pub type SlirpGetREventsCb = unsafe extern "C" fn(idx: c_int, opaque: *mut c_void) -> c_int;

/// `SlirpCb`, up to the fields of config version 4.
#[repr(C)]
pub struct SlirpCb {
    pub send_packet: Option<SlirpWriteCb>,
    pub guest_error: Option<unsafe extern "C" fn(msg: *const c_char, opaque: *mut c_void)>,
    pub clock_get_ns: Option<unsafe extern "C" fn(opaque: *mut c_void) -> i64>,
    pub timer_new: Option<
        unsafe extern "C" fn(
            cb: SlirpTimerCb,
            cb_opaque: *mut c_void,
            opaque: *mut c_void,
        ) -> *mut c_void,
    >,
    pub timer_free: Option<unsafe extern "C" fn(timer: *mut c_void, opaque: *mut c_void)>,
    pub timer_mod:
        Option<unsafe extern "C" fn(timer: *mut c_void, expire_ms: i64, opaque: *mut c_void)>,
    pub register_poll_fd: Option<unsafe extern "C" fn(fd: c_int, opaque: *mut c_void)>,
    pub unregister_poll_fd: Option<unsafe extern "C" fn(fd: c_int, opaque: *mut c_void)>,
    pub notify: Option<unsafe extern "C" fn(opaque: *mut c_void)>,
    // Version 4.
    pub init_completed: Option<unsafe extern "C" fn(slirp: *mut Slirp, opaque: *mut c_void)>,
    pub timer_new_opaque: Option<
        unsafe extern "C" fn(
            id: SlirpTimerId,
            cb_opaque: *mut c_void,
            opaque: *mut c_void,
        ) -> *mut c_void,
    >,
}

/// `SlirpConfig`, up to the fields of version 4.
#[repr(C)]
pub struct SlirpConfig {
    pub version: u32,
    // Version 1.
    pub restricted: c_int,
    pub in_enabled: bool,
    pub vnetwork: in_addr,
    pub vnetmask: in_addr,
    pub vhost: in_addr,
    pub in6_enabled: bool,
    pub vprefix_addr6: in6_addr,
    pub vprefix_len: u8,
    pub vhost6: in6_addr,
    pub vhostname: *const c_char,
    pub tftp_server_name: *const c_char,
    pub tftp_path: *const c_char,
    pub bootfile: *const c_char,
    pub vdhcp_start: in_addr,
    pub vnameserver: in_addr,
    pub vnameserver6: in6_addr,
    pub vdnssearch: *const *const c_char,
    pub vdomainname: *const c_char,
    pub if_mtu: usize,
    pub if_mru: usize,
    pub disable_host_loopback: bool,
    pub enable_emu: bool,
    // Version 2.
    pub outbound_addr: *mut sockaddr_in,
    pub outbound_addr6: *mut sockaddr_in6,
    // Version 3.
    pub disable_dns: bool,
    // Version 4.
    pub disable_dhcp: bool,
}

/// `slirp_handle_timer`.
pub type HandleTimerFn =
    unsafe extern "C" fn(slirp: *mut Slirp, id: SlirpTimerId, cb_opaque: *mut c_void);

/// The library's functions hakobune calls.
pub struct Api {
    pub version: String,
    pub slirp_new: unsafe extern "C" fn(
        cfg: *const SlirpConfig,
        cb: *const SlirpCb,
        opaque: *mut c_void,
    ) -> *mut Slirp,
    pub slirp_cleanup: unsafe extern "C" fn(slirp: *mut Slirp),
    pub slirp_pollfds_fill: unsafe extern "C" fn(
        slirp: *mut Slirp,
        timeout: *mut u32,
        add_poll: SlirpAddPollCb,
        opaque: *mut c_void,
    ),
    pub slirp_pollfds_poll: unsafe extern "C" fn(
        slirp: *mut Slirp,
        select_error: c_int,
        get_revents: SlirpGetREventsCb,
        opaque: *mut c_void,
    ),
    pub slirp_input: unsafe extern "C" fn(slirp: *mut Slirp, pkt: *const u8, len: c_int),
    /// Only since 4.7 (with config version 4 and `timer_new_opaque`).
    pub slirp_handle_timer: Option<HandleTimerFn>,
    pub slirp_add_hostfwd: unsafe extern "C" fn(
        slirp: *mut Slirp,
        is_udp: c_int,
        host_addr: in_addr,
        host_port: c_int,
        guest_addr: in_addr,
        guest_port: c_int,
    ) -> c_int,
}

impl Api {
    /// The SlirpConfig version to ask for: 4 where the library has
    /// `slirp_handle_timer` (4.7+), else 3 (timers through `timer_new`).
    pub fn config_version(&self) -> u32 {
        if self.slirp_handle_timer.is_some() {
            4
        } else {
            3
        }
    }
}

/// The library, loaded once per process and never unloaded (its functions stay
/// valid for the life of every thread that may call them).
pub fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Api, String> {
    // SAFETY: loading libslirp runs its (and glib's) initialisers, which do
    // nothing but set up their own state; the library is a plain C library
    // without load-time requirements on the process.
    let lib = unsafe { libloading::Library::new(LIBRARY) }.map_err(|e| {
        format!("user networking needs libslirp (Debian: apt-get install libslirp0): {e}")
    })?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol is looked up by its C name and given the type its
            // declaration in libslirp.h has (transcribed above); the library is
            // never unloaded, so the copied function pointer stays valid.
            unsafe { lib.get(concat!($name, "\0").as_bytes()).map(|s| *s) }
                .map_err(|e| format!("{LIBRARY} lacks {}: {e}", $name))
        };
    }
    let version: unsafe extern "C" fn() -> *const c_char = sym!("slirp_version_string")?;
    // SAFETY: slirp_version_string returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(version()) }
        .to_string_lossy()
        .into_owned();
    Ok(Api {
        version,
        slirp_new: sym!("slirp_new")?,
        slirp_cleanup: sym!("slirp_cleanup")?,
        slirp_pollfds_fill: sym!("slirp_pollfds_fill")?,
        slirp_pollfds_poll: sym!("slirp_pollfds_poll")?,
        slirp_input: sym!("slirp_input")?,
        slirp_handle_timer: sym!("slirp_handle_timer").ok(),
        slirp_add_hostfwd: sym!("slirp_add_hostfwd")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_header() {
        // Offsets a C compiler gives these structs on x86-64 (checked with
        // offsetof against libslirp.h 4.7).
        assert_eq!(std::mem::size_of::<SlirpCb>(), 11 * 8);
        assert_eq!(std::mem::offset_of!(SlirpConfig, vprefix_addr6), 28);
        assert_eq!(std::mem::offset_of!(SlirpConfig, vhostname), 64);
        assert_eq!(std::mem::offset_of!(SlirpConfig, vdhcp_start), 96);
        assert_eq!(std::mem::offset_of!(SlirpConfig, if_mtu), 136);
        assert_eq!(
            std::mem::offset_of!(SlirpConfig, disable_host_loopback),
            152
        );
        assert_eq!(std::mem::offset_of!(SlirpConfig, outbound_addr), 160);
        assert_eq!(std::mem::offset_of!(SlirpConfig, disable_dhcp), 177);
        assert_eq!(std::mem::size_of::<SlirpConfig>(), 184);
    }
}
