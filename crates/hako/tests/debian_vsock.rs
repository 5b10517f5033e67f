//! virtio-vsock end to end with the Debian guest on emu and the Unix-socket
//! backend: a host program reaches a guest listener through `CONNECT <port>`, a
//! guest program reaches a Unix listener the test runs at `PATH_<port>`, a port
//! nobody listens on is refused both ways, and hako removes its socket on exit.
//! busybox has no vsock, so the guest runs a small static C tool built here
//! and packed into an extra cpio archive appended to the default initramfs.
//! Only Unix sockets in a temporary directory; no network.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::live::{field, Live};
use sha2::{Digest, Sha256};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(120);

/// The guest's tool: `listen PORT` accepts one connection, `connect CID PORT`
/// makes one; either way stdin goes to the socket (then a write shutdown) and
/// the socket to stdout, until both end. Messages go to stderr (the console).
const TOOL: &str = r#"
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int write_all(int fd, const char *b, ssize_t n) {
    while (n > 0) {
        ssize_t k = write(fd, b, n);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        b += k; n -= k;
    }
    return 0;
}

static int relay(int s) {
    static char buf[65536];
    int in_open = 1, sock_open = 1;
    while (in_open || sock_open) {
        struct pollfd p[2] = {{in_open ? 0 : -1, POLLIN, 0}, {sock_open ? s : -1, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) { if (errno == EINTR) continue; perror("vsock-tool: poll"); return 1; }
        if (p[0].revents) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n <= 0) { in_open = 0; shutdown(s, SHUT_WR); }
            else if (write_all(s, buf, n)) { perror("vsock-tool: send"); return 1; }
        }
        if (p[1].revents) {
            ssize_t n = read(s, buf, sizeof buf);
            if (n < 0) { perror("vsock-tool: recv"); return 1; }
            if (n == 0) sock_open = 0;
            else if (write_all(1, buf, n)) { perror("vsock-tool: stdout"); return 1; }
        }
    }
    close(s);
    return 0;
}

int main(int argc, char **argv) {
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0) { perror("vsock-tool: socket"); return 1; }
    struct sockaddr_vm a;
    memset(&a, 0, sizeof a);
    a.svm_family = AF_VSOCK;
    if (argc == 3 && !strcmp(argv[1], "listen")) {
        a.svm_cid = VMADDR_CID_ANY;
        a.svm_port = atoi(argv[2]);
        if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) { perror("vsock-tool: listen"); return 1; }
        fprintf(stderr, "vsock-tool: listening on %u\n", a.svm_port);
        int c = accept(s, NULL, NULL);
        if (c < 0) { perror("vsock-tool: accept"); return 1; }
        close(s);
        return relay(c);
    }
    if (argc == 4 && !strcmp(argv[1], "connect")) {
        a.svm_cid = atoi(argv[2]);
        a.svm_port = atoi(argv[3]);
        if (connect(s, (struct sockaddr *)&a, sizeof a)) {
            fprintf(stderr, "vsock-tool: connect: %s\n", strerror(errno));
            return 1;
        }
        return relay(s);
    }
    fprintf(stderr, "usage: vsock-tool listen PORT | connect CID PORT\n");
    return 2;
}
"#;

/// The guest's vsock modules, in load order.
const MODULES: [&str; 3] = [
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// What every guest script starts with: load the modules the test ships (a
/// module /init loaded already just fails to load again).
const PRELUDE: &str =
    "for m in vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do \
     insmod /vsock-modules/$m.ko 2>/dev/null; done\n";

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes that differ from run to run.
fn blob(n: usize, salt: u64) -> Vec<u8> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ salt
        | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The default initramfs with `bin/vsock-tool` appended (Linux unpacks
/// concatenated compressed archives in order).
fn initrd_with_tool(dir: &Path) -> PathBuf {
    let src = dir.join("vsock-tool.c");
    std::fs::write(&src, TOOL).unwrap();
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let tool = root.join("bin/vsock-tool");
    let cc = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&tool)
        .arg(&src)
        .output()
        .expect("gcc (build-essential) is needed to build the guest's vsock tool");
    assert!(
        cc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    // The vsock modules too: the default initramfs loads them, but the cache it
    // lives in is shared, and a checkout with an older script may rebuild it.
    let (kernel, _) = common::default_guest();
    let kdir = kernel.parent().unwrap().parent().unwrap();
    let kver = kernel.file_name().unwrap().to_str().unwrap();
    let kver = kver.strip_prefix("vmlinuz-").unwrap();
    let mods = kdir.join(format!("lib/modules/{kver}/kernel/net/vmw_vsock"));
    std::fs::create_dir_all(root.join("vsock-modules")).unwrap();
    for m in MODULES {
        let from = mods.join(format!("{m}.ko"));
        std::fs::copy(&from, root.join(format!("vsock-modules/{m}.ko")))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    // The archive's "." and "bin" entries set the modes of the guest's / and /bin.
    use std::os::unix::fs::PermissionsExt;
    for d in [&root, &root.join("bin"), &root.join("vsock-modules")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let extra = dir.join("tool.cpio.gz");
    let st = Command::new("python3")
        .arg(common::repo().join("scripts/mkcpio.py"))
        .arg(&root)
        .arg(&extra)
        .status()
        .unwrap();
    assert!(st.success(), "mkcpio.py failed");
    let (_, initrd) = common::default_guest();
    let mut all = std::fs::read(&initrd).unwrap();
    all.extend(std::fs::read(&extra).unwrap());
    let out = dir.join("initrd.cpio.gz");
    std::fs::write(&out, all).unwrap();
    out
}

/// Connects to hako's socket and asks for guest port `port`: `Some` with the
/// stream and the `OK` line once the guest accepts, `None` if it refuses.
fn connect_guest(path: &Path, port: u32) -> Option<(UnixStream, String)> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => line.push(b[0]),
            Ok(_) => return None,
            Err(e) => panic!("no answer to CONNECT {port}: {e}"),
        }
    }
    s.set_read_timeout(None).unwrap();
    Some((s, String::from_utf8(line).unwrap()))
}

/// Writes `data` (then shuts the write side) while reading to EOF; what was read.
fn exchange(s: UnixStream, data: Vec<u8>) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

/// Boots the default guest (with the tool) running `script`, with `extra` flags.
fn boot(initrd: &Path, script: &str, extra: &[&str]) -> Live {
    let (kernel, _) = common::default_guest();
    let cmdline = format!(
        "console=ttyS0 quiet hako.cmd={}",
        common::base64(format!("{PRELUDE}{script}").as_bytes())
    );
    let mut cmd = common::hako();
    cmd.args(["run", "--accel", "emu", "--memory", "512M", "--cmdline"])
        .arg(&cmdline)
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(extra);
    Live::spawn(cmd)
}

/// `hako ctl` on the VM whose API socket is `api`; its output.
fn ctl(api: &Path, args: &[&str]) -> String {
    common::wait_for_path(api);
    let o = common::hako()
        .args(["ctl", "--api-socket"])
        .arg(api)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "hako ctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Asks for guest port `port` until the guest accepts (its listener may not be
/// up yet).
fn connect_guest_retrying(path: &Path, port: u32) -> (UnixStream, String) {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(c) = connect_guest(path, port) {
            return c;
        }
        assert!(Instant::now() < deadline, "the guest never accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vsock_connects_host_and_guest_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = initrd_with_tool(dir.path());
    let sock = dir.path().join("v.sock");
    // The guest's connections to host port 6000 land here.
    let listener = UnixListener::bind(dir.path().join("v.sock_6000")).unwrap();
    let to_guest = blob(200_000, 1);
    let want_back = sha256(&to_guest);
    let (tx, rx) = mpsc::channel();
    let served = to_guest.clone();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let got = exchange(s, served);
        tx.send(sha256(&got)).unwrap();
    });

    let script = "head -c 300000 /dev/urandom > /tmp/g\n\
         echo \"guest-file $(sha256sum /tmp/g | cut -d' ' -f1)\"\n\
         vsock-tool listen 5000 < /tmp/g > /tmp/r\n\
         echo \"listener-got $(sha256sum /tmp/r | cut -d' ' -f1)\"\n\
         head -c 250000 /dev/urandom > /tmp/g2\n\
         echo \"guest-file2 $(sha256sum /tmp/g2 | cut -d' ' -f1)\"\n\
         vsock-tool connect 2 6000 < /tmp/g2 > /tmp/r2\n\
         echo \"connector-got $(sha256sum /tmp/r2 | cut -d' ' -f1)\"\n\
         vsock-tool connect 2 6001 < /dev/null\n\
         echo \"refused-status $?\"\n\
         echo guest-done\n";
    let spec = format!("cid=3,path={}", sock.display());
    let mut vm = boot(&initrd, script, &["--vsock", &spec]);
    common::wait_for_path(&sock);

    // Host to guest. A port nobody listens on yet: refused, the VM runs on.
    let out = vm.wait_for("guest-file ", BOOT);
    let guest_file = field(&out, "guest-file ");
    vm.wait_for("vsock-tool: listening on 5000", STEP);
    assert!(
        connect_guest(&sock, 5999).is_none(),
        "nobody listens on 5999"
    );
    let (s, ok) = connect_guest_retrying(&sock, 5000);
    let local: u32 = ok
        .strip_prefix("OK ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not an OK line: {ok:?}"));
    assert!(local >= 1 << 30, "{ok}");
    let from_guest = blob(300_000, 2);
    let got = exchange(s, from_guest.clone());
    assert_eq!(
        sha256(&got),
        guest_file,
        "the guest's file reached the host"
    );
    let out = vm.wait_for("listener-got ", STEP);
    assert_eq!(field(&out, "listener-got "), sha256(&from_guest));

    // Guest to host: the test's listener at PATH_6000.
    let out = vm.wait_for("connector-got ", STEP);
    assert_eq!(field(&out, "connector-got "), want_back, "the host's reply");
    let host_got = rx.recv_timeout(STEP).unwrap();
    assert_eq!(host_got, field(&out, "guest-file2 "), "the guest's upload");

    // Guest to a host port with no listener: reset, and the guest carries on.
    let out = vm.wait_for("guest-done", STEP);
    assert!(
        out.contains("vsock-tool: connect: Connection reset by peer"),
        "{out}"
    );
    assert!(out.contains("refused-status 1"), "{out}");
    assert_eq!(vm.wait_exit(STEP), Some(0), "{}", vm.stderr());
    assert!(!sock.exists(), "hako removes its socket on exit");
}

/// A snapshot does not carry connections: after the restore the guest's
/// connection is reset (the device's TRANSPORT_RESET event; without it the
/// guest would wait on it forever), and its next listener is reachable through
/// the socket the restored hako creates again.
#[test]
fn a_restored_guest_drops_its_connections_and_accepts_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = initrd_with_tool(dir.path());
    let sock = dir.path().join("v.sock");
    let api = dir.path().join("api.sock");
    let snap = dir.path().join("snap");
    let script = "vsock-tool listen 5000 < /dev/null\n\
         echo \"first-status $?\"\n\
         echo again > /tmp/a\n\
         vsock-tool listen 5001 < /tmp/a\n\
         echo \"second-status $?\"\n";
    let spec = format!("cid=3,path={}", sock.display());
    let api_arg = api.to_str().unwrap();
    let mut vm = boot(
        &initrd,
        script,
        &["--vsock", &spec, "--api-socket", api_arg],
    );
    common::wait_for_path(&sock);
    vm.wait_for("vsock-tool: listening on 5000", BOOT);
    let (mut old, _) = connect_guest_retrying(&sock, 5000);
    old.write_all(b"before-snapshot\n").unwrap();
    vm.wait_for("before-snapshot", STEP);
    ctl(&api, &["snapshot", snap.to_str().unwrap(), "--stay-paused"]);
    ctl(&api, &["stop"]);
    assert_eq!(vm.wait_exit(STEP), Some(0), "{}", vm.stderr());
    assert!(!sock.exists(), "the first hako removed its socket");
    let mut rest = Vec::new();
    old.read_to_end(&mut rest).unwrap();
    drop(old);

    let mut cmd = common::hako();
    cmd.args(["run", "--restore", snap.to_str().unwrap(), "--api-socket"])
        .arg(dir.path().join("api2.sock"));
    let mut vm = Live::spawn(cmd);
    let out = vm.wait_for("first-status", STEP);
    assert!(out.contains("first-status 1"), "not reset:\n{out}");
    assert!(out.contains("vsock-tool: recv:"), "{out}");
    vm.wait_for("vsock-tool: listening on 5001", STEP);
    let (s, _) = connect_guest_retrying(&sock, 5001);
    assert_eq!(exchange(s, b"after\n".to_vec()), b"again\n");
    let out = vm.wait_for("second-status", STEP);
    assert!(out.contains("second-status 0"), "{out}");
    assert!(out.contains("after"), "{out}");
    assert_eq!(vm.wait_exit(STEP), Some(0), "{}", vm.stderr());
}

#[test]
fn vsock_refuses_a_path_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("precious");
    std::fs::write(&file, b"keep me").unwrap();
    let (kernel, _) = common::default_guest();
    let r = common::run_watchdog(
        common::hako()
            .args(["run", "--accel", "emu", "--kernel"])
            .arg(&kernel)
            .arg("--vsock")
            .arg(format!("cid=3,path={}", file.display())),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("is not a socket"), "{}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    let r = common::run_watchdog(
        common::hako().args(["run", "--kernel", "k", "--vsock", "cid=2,path=x"]),
        Duration::from_secs(60),
    );
    assert_eq!(
        r.code,
        Some(2),
        "a reserved CID is a usage error: {}",
        r.stderr
    );
    assert!(r.stderr.contains("reserved"), "{}", r.stderr);
}
