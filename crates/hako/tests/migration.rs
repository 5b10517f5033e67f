//! Live migration between two `hako` processes on loopback, with guests/migrate.c
//! (which dirties memory all the time): every pair of accelerators, the pass counter
//! continuing across the cut, the page pattern intact; and the faults, after each of
//! which the source still runs its guest.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use common::migrate_guest::{accels, check_memory, check_sums, continued_passes, passes, Vm};
use common::{free_port, wait_for_path};
use vmm::migration::stream::{self, Kind};

/// A destination waiting on a Unix socket in `dir`.
fn destination(dir: &Path, name: &str, to: &str) -> (Vm, String) {
    let uri = format!("unix:{}", dir.join(format!("{name}.mig")).display());
    let vm = Vm::start(dir, name, &["--incoming", &uri, "--accel", to]);
    // The listening socket appears once hako waits.
    wait_for_path(&dir.join(format!("{name}.mig")));
    (vm, uri)
}

/// The source still runs its guest: more passes, and `info` says running.
fn still_running(src: &mut Vm) {
    let n = passes(&src.output()).len();
    src.wait_passes(n + 3);
    let info = src.ctl_ok(&["--json", "info"]);
    assert!(info.contains("\"state\": \"running\""), "{info}");
}

#[test]
fn live_migration_between_every_pair_of_accelerators() {
    let dir = tempfile::tempdir().unwrap();
    for from in accels() {
        for to in accels() {
            let name = format!("{from}-{to}");
            let (mut dst, uri) = destination(dir.path(), &format!("dst-{name}"), to);
            let mut src = Vm::boot(dir.path(), &format!("src-{name}"), from);
            src.wait_passes(3);
            let report = src.ctl_ok(&["--json", "migrate", &uri]);
            let r: serde_json::Value = serde_json::from_str(&report).unwrap();
            assert!(r["downtime_ms"].as_f64().unwrap() > 0.0, "{report}");
            assert!(r["pages_sent"].as_u64().unwrap() > 0, "{report}");
            assert_eq!(
                src.wait_exit(),
                Some(0),
                "{name}: the source exits 0 once handed over"
            );
            check_sums(&passes(&src.output()));
            dst.wait_passes(3);
            continued_passes(&name, &src.output(), &dst.output());
            let info = dst.ctl_ok(&["--json", "info"]);
            assert!(info.contains(&format!("\"accel\": \"{to}\"")), "{info}");

            // Every page arrived: the memory holds the pattern of a VM mid-pass.
            let snap = dir.path().join(format!("snap-{name}"));
            dst.ctl_ok(&["snapshot", snap.to_str().unwrap(), "--stay-paused"]);
            let last_dst = passes(&dst.output()).last().unwrap().0;
            check_memory(&std::fs::read(snap.join("memory.bin")).unwrap(), last_dst);
            dst.ctl_ok(&["stop"]);
            assert_eq!(dst.wait_exit(), Some(0));
        }
    }
}

/// A fake destination on a Unix socket: `behave` gets the connection after the
/// header and offer were read.
fn fake_destination(
    path: &Path,
    behave: impl FnOnce(&mut std::os::unix::net::UnixStream) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream::read_header(&mut s).unwrap();
        stream::expect_frame(&mut s, Kind::Config).unwrap();
        behave(&mut s);
    })
}

fn migrate_fails(src: &Vm, uri: &str, extra: &[&str], expect: &str) {
    let mut args = vec!["migrate", uri];
    args.extend(extra);
    let o = src.ctl(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the migration to {uri} succeeded");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
}

#[test]
fn failed_migrations_leave_the_source_running() {
    let dir = tempfile::tempdir().unwrap();
    // A guest that rewrites its pages without a pause: memory never settles, so a
    // zero downtime limit can never be met (with pauses between passes, a round
    // could catch no writes at all and converge).
    let mut src = Vm::boot_with(dir.path(), "src", "emu", "spin=0");
    src.wait_passes(2);

    // Nobody listens.
    migrate_fails(&src, "unix:/nonexistent/hako.mig", &[], "cannot connect");
    still_running(&mut src);

    // The destination refuses the VM.
    let p = dir.path().join("refuse.mig");
    let t = fake_destination(&p, |s| {
        stream::write_frame(s, Kind::Abort, b"no room for it here").unwrap();
    });
    migrate_fails(
        &src,
        &format!("unix:{}", p.display()),
        &[],
        "no room for it here",
    );
    t.join().unwrap();
    still_running(&mut src);

    // The connection drops in the middle of the memory.
    let p = dir.path().join("drop.mig");
    let t = fake_destination(&p, |s| {
        stream::write_frame(s, Kind::Ready, &[]).unwrap();
        stream::expect_frame(s, Kind::Pages).unwrap();
        // Gone without a word.
    });
    migrate_fails(&src, &format!("unix:{}", p.display()), &[], "migration");
    t.join().unwrap();
    still_running(&mut src);

    // The destination answers garbage.
    let p = dir.path().join("garbage.mig");
    let t = fake_destination(&p, |s| {
        s.write_all(b"\x10\x00\x00\x00\x00\xde\xad\xbe\xef")
            .unwrap();
    });
    migrate_fails(&src, &format!("unix:{}", p.display()), &[], "checksum");
    t.join().unwrap();
    still_running(&mut src);

    // Memory that never converges: every pass rewrites more pages than a zero
    // downtime allows; the migration gives up after its timeout.
    let (mut dst, uri) = destination(dir.path(), "dst-slow", "emu");
    migrate_fails(
        &src,
        &uri,
        &["--downtime-ms", "0", "--timeout-s", "1"],
        "did not converge",
    );
    still_running(&mut src);
    // The destination learned it and ran nothing.
    assert_eq!(dst.wait_exit(), Some(1));
    assert!(passes(&dst.output()).is_empty(), "{}", dst.output());
    assert!(
        dst.stderr().contains("did not converge"),
        "{}",
        dst.stderr()
    );

    // A destination killed while memory streams in.
    let (mut dst, uri) = destination(dir.path(), "dst-killed", "emu");
    let killer = {
        let pid = dst.child.id() as i32;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            // SAFETY: kill(2) on a child process id this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
    };
    // A low downtime limit keeps the migration busy long past the kill.
    migrate_fails(
        &src,
        &uri,
        &["--downtime-ms", "0", "--timeout-s", "20"],
        "migration",
    );
    killer.join().unwrap();
    let _ = dst.wait_exit();
    still_running(&mut src);

    src.ctl_ok(&["stop"]);
    assert_eq!(src.wait_exit(), Some(0));
}

#[test]
fn destinations_refuse_corrupt_and_incompatible_streams() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "garbage",
            b"this is not a migration".to_vec(),
            "not a hako migration stream",
        ),
        (
            "version",
            {
                let mut v = stream::MAGIC.to_vec();
                v.extend_from_slice(&99u32.to_le_bytes());
                v
            },
            "incompatible build",
        ),
        (
            "bad-offer",
            {
                let mut v = Vec::new();
                stream::write_header(&mut v).unwrap();
                stream::write_frame(&mut v, Kind::Config, b"{\"config\": 5}").unwrap();
                v
            },
            "offer",
        ),
    ];
    for (name, bytes, expect) in cases {
        let port = free_port();
        let uri = format!("tcp:127.0.0.1:{port}");
        let mut dst = Vm::start(dir.path(), name, &["--incoming", &uri, "--accel", "emu"]);
        let mut s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        s.write_all(&bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert_eq!(dst.wait_exit(), Some(1), "{name}");
        let err = dst.stderr();
        assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(dst.output().is_empty(), "{name}: a guest ran");
    }
}

#[test]
fn a_waiting_destination_ends_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dst, _) = destination(dir.path(), "dst", "emu");
    // SAFETY: kill(2) on a child process id this test started.
    unsafe { libc::kill(dst.child.id() as i32, libc::SIGTERM) };
    assert_eq!(dst.wait_exit(), Some(128 + libc::SIGTERM));
}
