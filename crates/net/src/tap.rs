//! A TAP device (`/dev/net/tun` with `IFF_TAP`): frames with a 12-byte vnet header
//! in both directions, so the guest's checksum and segmentation offloads pass
//! through to the host kernel.
//!
//! The fd is non-blocking. `send` writes one frame (a full device queue drops it);
//! a reader thread polls the fd and a stop eventfd and reads every waiting frame
//! into the [`FrameQueue`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::sys::{self, EventFd};
use crate::{FrameQueue, NetBackend, Offloads, OpenError, RxWaker, MAX_FRAME, VNET_HDR_LEN};

// From linux/if_tun.h: the ioctls are _IOW('T', nr, int) (or unsigned int), so
// (1 << 30) | (4 << 16) | ('T' << 8) | nr.
/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNSETOFFLOAD` = `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `TUNSETVNETHDRSZ` = `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

// Also linux/if_tun.h: `ifr_flags` for TUNSETIFF.
/// An Ethernet (TAP) rather than IP (TUN) device.
const IFF_TAP: libc::c_short = 0x0002;
/// No 4-byte packet-information prefix.
const IFF_NO_PI: libc::c_short = 0x1000;
/// A `virtio_net_hdr` in front of every frame.
const IFF_VNET_HDR: libc::c_short = 0x4000;

// And the TUNSETOFFLOAD flags: what the reader (we, for the guest) can take.
/// Frames may carry partial checksums.
const TUN_F_CSUM: libc::c_uint = 0x01;
/// TSO over IPv4.
const TUN_F_TSO4: libc::c_uint = 0x02;
/// TSO over IPv6.
const TUN_F_TSO6: libc::c_uint = 0x04;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags (the rest of the
/// 40-byte union is padding here).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A TAP backend.
pub struct TapBackend {
    tap: Arc<File>,
    ifname: String,
    queue: FrameQueue,
    stop: Arc<(AtomicBool, EventFd)>,
    reader: Option<JoinHandle<()>>,
    /// A write error was logged (logged once, then counted silently).
    reported: bool,
}

/// Opens (or creates, with CAP_NET_ADMIN) the TAP device `ifname`.
pub fn open(ifname: &str, waker: RxWaker) -> Result<TapBackend, OpenError> {
    let what = |w: &str| format!("tap {ifname}: {w}");
    let tap = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|source| OpenError::Io {
            what: what(match source.kind() {
                io::ErrorKind::NotFound => "no /dev/net/tun (is the tun module loaded?)",
                io::ErrorKind::PermissionDenied => "cannot open /dev/net/tun",
                _ => "opening /dev/net/tun",
            }),
            source,
        })?;
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(OpenError::Invalid(what("not an interface name")));
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: TUNSETIFF reads (and writes back the name into) a `struct ifreq`,
    // which `IfReq` matches in layout and size (40 bytes); it lives for the call.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        let source = io::Error::last_os_error();
        let why = match source.raw_os_error() {
            Some(libc::EPERM) => "needs CAP_NET_ADMIN or an existing TAP owned by this user",
            Some(libc::EBUSY) => "in use by another process",
            Some(libc::EINVAL) => "exists but is not a TAP device (a TUN, or another kind)",
            _ => "TUNSETIFF",
        };
        return Err(OpenError::Io {
            what: what(why),
            source,
        });
    }
    let hdr_len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points to a
    // live c_int.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) } < 0 {
        return Err(OpenError::Io {
            what: what("TUNSETVNETHDRSZ 12"),
            source: io::Error::last_os_error(),
        });
    }
    set_offload(&tap, 0).map_err(|source| OpenError::Io {
        what: what("TUNSETOFFLOAD"),
        source,
    })?;
    let tap = Arc::new(tap);
    let stop = Arc::new((
        AtomicBool::new(false),
        EventFd::new().map_err(|source| OpenError::Io {
            what: what("eventfd"),
            source,
        })?,
    ));
    let queue = FrameQueue::default();
    let (t, s, q, name) = (tap.clone(), stop.clone(), queue.clone(), ifname.to_string());
    let reader = std::thread::Builder::new()
        .name("net-tap-rx".into())
        .spawn(move || {
            sandbox::enter(sandbox::ThreadKind::Io);
            reader_thread(&t, &s, &q, &waker, &name)
        })
        .map_err(|source| OpenError::Io {
            what: what("spawning a thread"),
            source,
        })?;
    Ok(TapBackend {
        tap,
        ifname: ifname.to_string(),
        queue,
        stop,
        reader: Some(reader),
        reported: false,
    })
}

/// TUNSETOFFLOAD: which offloaded frames the kernel may hand us.
fn set_offload(tap: &File, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned int in the
    // pointer-sized argument), so no memory is read or written.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads frames until the stop eventfd fires.
fn reader_thread(
    tap: &File,
    stop: &(AtomicBool, EventFd),
    queue: &FrameQueue,
    waker: &RxWaker,
    name: &str,
) {
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let mut fds = [
            sys::pollin(tap.as_raw_fd()),
            sys::pollin(stop.1.as_raw_fd()),
        ];
        if let Err(e) = sys::poll(&mut fds, -1) {
            tracing::error!("net tap {name}: poll: {e}; receiving stops");
            return;
        }
        if stop.0.load(Ordering::Acquire) || fds[1].revents != 0 {
            return;
        }
        let mut queued = false;
        loop {
            // SAFETY: reads at most `buf.len()` bytes into the live buffer from our
            // non-blocking TAP fd.
            let n = unsafe { libc::read(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        tracing::error!("net tap {name}: read: {e}; receiving stops");
                        if queued {
                            waker.wake();
                        }
                        return;
                    }
                }
            }
            let n = n as usize;
            if n < VNET_HDR_LEN + 14 {
                continue;
            }
            let mut frame = buf[..n].to_vec();
            // The kernel writes a 10-byte virtio_net_hdr and skips the last two
            // bytes (num_buffers, the device's to fill): do not leak old data.
            frame[10..VNET_HDR_LEN].fill(0);
            queue.push(frame);
            queued = true;
        }
        if queued {
            waker.wake();
        }
    }
}

impl NetBackend for TapBackend {
    fn offloads(&self) -> Offloads {
        Offloads {
            vnet_hdr: true,
            csum: true,
            tso: true,
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        loop {
            // SAFETY: writes `frame` (a live slice of that length) to our
            // non-blocking TAP fd; the kernel only reads it.
            let n =
                unsafe { libc::write(self.tap.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(false),
                _ => {
                    // EIO while the link is down, EINVAL for a header the kernel
                    // refuses: the guest's frame is dropped, the device goes on.
                    if !self.reported {
                        let why = if e.raw_os_error() == Some(libc::EIO) {
                            format!(" (is it up? ip link set {} up)", self.ifname)
                        } else {
                            String::new()
                        };
                        tracing::warn!(
                            "net tap {}: dropping the guest's frames: {e}{why} (logged once)",
                            self.ifname
                        );
                        self.reported = true;
                    }
                    return Ok(false);
                }
            }
        }
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        self.queue.pop()
    }

    fn unrecv(&mut self, frame: Vec<u8>) {
        self.queue.unpop(frame);
    }

    fn set_guest_offloads(&mut self, csum: bool, tso: bool) -> io::Result<()> {
        let mut flags = 0;
        if csum {
            flags |= TUN_F_CSUM;
            if tso {
                flags |= TUN_F_TSO4 | TUN_F_TSO6;
            }
        }
        set_offload(&self.tap, flags)
    }

    fn describe(&self) -> String {
        format!("tap ({})", self.ifname)
    }
}

impl Drop for TapBackend {
    fn drop(&mut self) {
        self.stop.0.store(true, Ordering::Release);
        self.stop.1.signal();
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_ioc_encoding() {
        let iow = |nr: libc::c_ulong| (1 << 30) | (4 << 16) | ((b'T' as libc::c_ulong) << 8) | nr;
        assert_eq!(TUNSETIFF, iow(202));
        assert_eq!(TUNSETOFFLOAD, iow(208));
        assert_eq!(TUNSETVNETHDRSZ, iow(216));
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
