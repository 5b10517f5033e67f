//! Helpers shared by the end-to-end tests that boot the default Debian guest.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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

/// Boots the default guest running `script`, with a watchdog.
pub fn boot(accel: &str, script: &str, extra: &[&str], limit: Duration) -> Output {
    let (kernel, initrd) = default_guest();
    let cmdline = format!("console=ttyS0 quiet hako.cmd={}", base64(script.as_bytes()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hako"))
        .args([
            "run",
            "--accel",
            accel,
            "--memory",
            "512M",
            "--cmdline",
            &cmdline,
        ])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

pub fn host(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8(o.stdout).unwrap()
}
