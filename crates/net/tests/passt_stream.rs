//! The stream backend as a client of passt, which speaks QEMU's stream framing.
//! passt runs in a network namespace this test makes, whose only interface is a
//! carrier-less TAP holding TEST-NET-1 192.0.2.1/24 (passt needs a routable
//! template interface), so nothing can leave it; passt answers our DHCPDISCOVER
//! itself, offering the template's address. Skipped (with a message) where passt
//! or the namespace is unavailable.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use net::{Backend, NetSpec};

/// passt, killed when dropped.
struct Passt(Child);

impl Drop for Passt {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts passt in a new network namespace, listening on `socket`.
fn start_passt(socket: PathBuf) -> Option<Passt> {
    std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; only this thread (and what it
        // spawns) moves to the new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipping: unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        for args in [
            &["tuntap", "add", "dev", "t0", "mode", "tap"][..],
            &["addr", "add", "192.0.2.1/24", "dev", "t0"],
            &["link", "set", "t0", "up"],
            &[
                "route",
                "add",
                "default",
                "via",
                "192.0.2.254",
                "dev",
                "t0",
                "onlink",
            ],
        ] {
            match Command::new("ip").args(args).status() {
                Ok(s) if s.success() => {}
                other => {
                    eprintln!("skipping: ip {}: {other:?}", args.join(" "));
                    return None;
                }
            }
        }
        let child = Command::new("passt")
            .args(["--foreground", "--quiet", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => Some(Passt(c)),
            Err(e) => {
                eprintln!("skipping: cannot run passt: {e}");
                None
            }
        }
    })
    .join()
    .unwrap()
}

#[test]
fn passt_answers_dhcp_through_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    // passt drops to "nobody" before it binds its socket.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("passt.sock");
    let Some(_passt) = start_passt(path.clone()) else {
        return;
    };
    let spec = NetSpec {
        backend: Backend::Stream {
            path,
            server: false,
        },
        mac: None,
    };
    let (w, wakes) = waker();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut b = loop {
        match net::open(&spec, w.clone()) {
            Ok(b) => break b,
            Err(e) => assert!(Instant::now() < deadline, "passt never listened: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while Instant::now() < deadline {
        assert!(b.send(&dhcp_discover(GUEST_MAC, 0x77)).unwrap());
        let offer = wait_for(
            &mut *b,
            &wakes,
            Duration::from_millis(300),
            0,
            |p| p.udp().is_some_and(|(s, d, _)| s == 67 && d == 68),
            ignore,
        );
        if let Some((_, p)) = offer {
            let bootp = p.udp().unwrap().2;
            assert_eq!(bootp[4..8], 0x77u32.to_be_bytes(), "xid");
            assert_eq!(
                bootp[16..20],
                [192, 0, 2, 1],
                "yiaddr: the template's address"
            );
            return;
        }
    }
    panic!("no DHCPOFFER from passt through the stream");
}
