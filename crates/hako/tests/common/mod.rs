//! Helpers shared by the end-to-end tests: running `hako` under a watchdog, the
//! accelerators to test here, and the default Debian guest.
#![allow(dead_code)]

pub mod live;
pub mod migrate_guest;
pub mod pty;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// (kernel, initrd), fetched and cached by scripts/default-guest.sh.
pub fn default_guest() -> (PathBuf, PathBuf) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/default-guest.sh"))
        .arg("--print-env")
        .output()
        .expect("run scripts/default-guest.sh");
    assert!(
        out.status.success(),
        "default-guest.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no {k} in {text}"))
    };
    (get("KERNEL"), get("INITRD"))
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// What a watched run of `hako` did.
pub struct Run {
    pub success: bool,
    /// The exit status (None when killed by a signal).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdin closed, output captured) and kills it after `limit`: a hung
/// VMM fails the test instead of hanging CI. Both pipes are drained on threads so
/// a chatty guest cannot block on a full pipe.
pub fn run_watchdog(cmd: &mut Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hako");
    let drain = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out_t = drain(Box::new(child.stdout.take().unwrap()));
    let err_t = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        success: status.success(),
        code: status.code(),
        timed_out,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// A `hako` command.
pub fn hako() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hako"))
}

pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Accelerators to test here: `kvm` where /dev/kvm opens, `emu` (with the
/// translator) and `emu-interp` (`--accel emu --jit off`) always.
pub fn accels() -> Vec<&'static str> {
    ["kvm", "emu", "emu-interp"]
        .into_iter()
        .filter(|a| *a != "kvm" || kvm_usable())
        .collect()
}

/// The `hako run` flags that select `accel` (a name from [`accels`]).
pub fn accel_flags(accel: &str) -> Vec<&str> {
    match accel {
        "emu-interp" => vec!["--accel", "emu", "--jit", "off"],
        a => vec!["--accel", a],
    }
}

/// Boots the default guest running `script`, with a watchdog.
pub fn boot(accel: &str, script: &str, extra: &[&str], limit: Duration) -> Run {
    let (kernel, initrd) = default_guest();
    let cmdline = format!("console=ttyS0 quiet hako.cmd={}", base64(script.as_bytes()));
    let mut cmd = hako();
    cmd.arg("run")
        .args(accel_flags(accel))
        .args(["--memory", "512M", "--cmdline", &cmdline])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(extra);
    run_watchdog(&mut cmd, limit)
}

/// Boots the default guest running `script` and requires a clean exit; returns its console output.
pub fn boot_ok(accel: &str, script: &str, extra: &[&str], limit: Duration) -> String {
    let o = boot(accel, script, extra, limit);
    assert!(
        o.success,
        "timed out: {}\nstdout:\n{}\nstderr:\n{}",
        o.timed_out, o.stdout, o.stderr
    );
    o.stdout
}

pub fn host(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8(o.stdout).unwrap()
}

/// A TCP port on loopback nobody listens on now (bound and released at once; the
/// test's own `hako` then takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (at most 30 s) for `p` to exist: a socket a `hako` creates once it listens.
pub fn wait_for_path(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}
