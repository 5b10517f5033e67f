//! End to end: Debian's stock cloud kernel with the busybox initramfs of
//! scripts/default-guest.sh boots under `hako run --accel emu`, computes, and powers
//! off; its results must equal the host's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// (kernel, initrd), fetched and cached by scripts/default-guest.sh.
fn default_guest() -> (PathBuf, PathBuf) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/default-guest.sh"))
        .arg("--print-env")
        .output()
        .expect("run scripts/default-guest.sh");
    assert!(out.status.success(), "default-guest.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no {k} in {text}"))
    };
    (get("KERNEL"), get("INITRD"))
}

fn base64(data: &[u8]) -> String {
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
fn boot(accel: &str, script: &str, extra: &[&str], limit: Duration) -> Output {
    let (kernel, initrd) = default_guest();
    let cmdline = format!("console=ttyS0 quiet hako.cmd={}", base64(script.as_bytes()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hako"))
        .args(["run", "--accel", accel, "--memory", "512M", "--cmdline", &cmdline])
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

fn host(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn debian_kernel_boots_on_emu_and_computes_like_the_host() {
    let script = r#"echo "mul=$((123456789*987654321))"
echo -n hakobune | sha256sum
awk 'BEGIN{x=1; for(i=1;i<=20;i++) x=x*1.5+1/i; printf "float=%.9f\n", x}'
md5sum /init
cat /proc/cpuinfo | grep -c ^processor
"#;
    let o = boot("emu", script, &[], Duration::from_secs(900));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status);
    assert!(out.contains("hako-guest: init reached"), "{out}");
    assert!(out.contains("mul=121932631112635269"), "{out}");
    let sha = host("printf hakobune | sha256sum");
    assert!(out.contains(sha.split_whitespace().next().unwrap()), "want {sha}\n{out}");
    let mut x = 1.0f64;
    for i in 1..=20 {
        x = x * 1.5 + 1.0 / i as f64;
    }
    assert!(out.contains(&format!("float={x:.9}")), "want float={x:.9}\n{out}");
    let md5 = host(&format!("md5sum {}", repo().join("scripts/guest-init.sh").display()));
    assert!(out.contains(md5.split_whitespace().next().unwrap()), "want {md5}\n{out}");
    assert!(out.contains("hako-guest: exit status 0"), "{out}");
}
