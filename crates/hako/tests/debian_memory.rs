//! Memory overcommit with the Debian guest on emu: free page reporting and the
//! balloon returning memory to the host (seen in the VMM's RSS and the balloon's
//! figures), transparent huge pages, and KSM merging two guests' pages.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::hako;
use common::live::{field, Live};

const BOOT: Duration = Duration::from_secs(120);

/// A field of /proc/PID/status or smaps_rollup in KiB (e.g. "VmRSS:").
fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
}

fn ctl(sock: &Path, args: &[&str]) -> serde_json::Value {
    let o = hako()
        .args(["ctl", "--api-socket", sock.to_str().unwrap(), "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "hako ctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Polls `hako ctl balloon` (bounded) until `ok` holds; returns that answer.
fn balloon_until(
    sock: &Path,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = ctl(sock, &["balloon"]);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn free_page_reporting_and_the_balloon_return_memory_to_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let script = "free_kb() { sed -n 's/^MemFree: *\\([0-9]*\\).*/\\1/p' /proc/meminfo; }\n\
                  dd if=/dev/urandom of=/tmp/x bs=1M count=300 2>/dev/null\n\
                  echo \"filled $(free_kb)\"\n\
                  sleep 3\n\
                  rm /tmp/x\n\
                  echo \"freed $(free_kb)\"\n\
                  sleep 600\n";
    let mut vm = Live::boot(
        script,
        &["--balloon", "0", "--api-socket", sock.to_str().unwrap()],
        "",
        &[],
    );
    let pid = vm.child.id();
    vm.wait_for("filled ", BOOT);
    let rss_filled = proc_kib(pid, "status", "VmRSS:");
    assert!(
        rss_filled > 300 << 10,
        "the guest's 300 MiB are resident: {rss_filled} KiB"
    );

    // The guest frees them; its driver reports the free ranges, the host discards them.
    vm.wait_for("freed ", BOOT);
    let b = balloon_until(&sock, "free page reporting", |v| {
        v["reported_bytes"].as_u64().unwrap_or(0) >= 200 << 20
    });
    let rss_freed = proc_kib(pid, "status", "VmRSS:");
    assert!(
        rss_filled - rss_freed > 200 << 10,
        "RSS went from {rss_filled} to {rss_freed} KiB only ({b})"
    );

    // Inflate by 128 MiB: the guest gives exactly that back, and its free memory
    // (as its driver reports it) shrinks by about as much.
    let before = ctl(&sock, &["balloon"]);
    let free_before = before["stats"]["free_memory"].as_u64().unwrap();
    assert_eq!(
        before["stats"]["total_memory"]
            .as_u64()
            .map(|t| t > 400 << 20),
        Some(true),
        "{before}"
    );
    ctl(&sock, &["balloon", "128M"]);
    let b = balloon_until(&sock, "inflation", |v| v["actual_bytes"] == 128u64 << 20);
    assert!(b["inflated_pages"].as_u64().unwrap() >= 32768, "{b}");
    let b = balloon_until(&sock, "the guest's free memory after inflation", |v| {
        v["stats"]["free_memory"].as_u64().unwrap_or(u64::MAX) < free_before - (100 << 20)
    });
    let rss_inflated = proc_kib(pid, "status", "VmRSS:");
    assert!(
        rss_inflated < rss_freed + (16 << 10),
        "inflating grew RSS: {rss_freed} -> {rss_inflated} KiB ({b})"
    );

    // Deflate: the guest takes its memory back.
    ctl(&sock, &["balloon", "0"]);
    balloon_until(&sock, "deflation", |v| v["actual_bytes"] == 0);
    balloon_until(&sock, "the guest's free memory after deflation", |v| {
        v["stats"]["free_memory"].as_u64().unwrap_or(0) > free_before - (32 << 20)
    });

    // A target above the guest's memory is refused.
    let o = hako()
        .args([
            "ctl",
            "--api-socket",
            sock.to_str().unwrap(),
            "balloon",
            "1G",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("larger than the guest's 512 MiB"));

    ctl(&sock, &["stop"]);
    assert_eq!(vm.wait_exit(BOOT), Some(0));
}

#[test]
fn hugepages_on_backs_guest_memory_with_transparent_huge_pages() {
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.contains("[never]") || thp.is_empty() {
        eprintln!("skipped: transparent huge pages are off on this host ({thp:?})");
        return;
    }
    let mut vm = Live::boot(
        "dd if=/dev/zero of=/tmp/x bs=1M count=64 2>/dev/null\necho touched\nsleep 600\n",
        &["--memory", "512M,hugepages=on"],
        "",
        &[],
    );
    vm.wait_for("touched", BOOT);
    let huge = proc_kib(vm.child.id(), "smaps_rollup", "AnonHugePages:");
    assert!(huge >= 32 << 10, "only {huge} KiB of huge pages");
}

/// KSM's settings, restored when dropped.
struct Ksm(Vec<(&'static str, String)>);

impl Ksm {
    const DIR: &'static str = "/sys/kernel/mm/ksm";

    fn start() -> Option<Ksm> {
        let keys = ["run", "pages_to_scan", "sleep_millisecs"];
        let saved: Vec<_> = keys
            .iter()
            .map(|k| std::fs::read_to_string(format!("{}/{k}", Self::DIR)).map(|v| (*k, v)))
            .collect::<Result<_, _>>()
            .ok()?;
        let k = Ksm(saved);
        for (key, v) in [
            ("pages_to_scan", "20000"),
            ("sleep_millisecs", "10"),
            ("run", "1"),
        ] {
            std::fs::write(format!("{}/{key}", Self::DIR), v).ok()?;
        }
        Some(k)
    }

    fn sharing() -> u64 {
        std::fs::read_to_string(format!("{}/pages_sharing", Self::DIR))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Ksm {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            let _ = std::fs::write(format!("{}/{k}", Self::DIR), v.trim());
        }
    }
}

#[test]
fn ksm_merges_the_pages_of_two_guests_booted_from_the_same_image() {
    let Some(ksm) = Ksm::start() else {
        eprintln!("skipped: no KSM here, or not allowed to run it (needs root)");
        return;
    };
    // Per process where the kernel counts it (Linux 5.19+), so other users of KSM
    // on the host do not count; else the host-wide figure.
    let merged = |pids: &[u32]| -> u64 {
        let own: Option<u64> = pids
            .iter()
            .map(|p| {
                std::fs::read_to_string(format!("/proc/{p}/ksm_merging_pages"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
            })
            .sum();
        own.unwrap_or_else(Ksm::sharing)
    };
    let script =
        "yes hakobune | head -c 67108864 > /tmp/x\necho \"booted $(wc -c < /tmp/x)\"\nsleep 600\n";
    let mut a = Live::boot(script, &["--memory", "256M,mergeable=on"], "", &[]);
    let mut b = Live::boot(script, &["--memory", "256M,mergeable=on"], "", &[]);
    let pids = [a.child.id(), b.child.id()];
    let start = merged(&pids);
    // The same kernel and initramfs, and the same 64 MiB of file data in both:
    // 16384 pages that are identical between the guests (and not within one, the
    // 9-byte pattern not dividing the page size).
    assert_eq!(field(&a.wait_for("booted ", BOOT), "booted "), "67108864");
    assert_eq!(field(&b.wait_for("booted ", BOOT), "booted "), "67108864");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut now = merged(&pids);
    while now < start + 12288 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        now = merged(&pids);
    }
    assert!(
        now >= start + 12288,
        "merged pages went from {start} to {now} only"
    );
    drop(ksm);
}

/// A VM with a NIC and a balloon, snapshotted and restored in a new process: the
/// guest's network works again (new connections through a fresh user-mode stack)
/// and the balloon answers on the restored VM.
#[test]
fn a_restored_vm_keeps_its_nic_and_its_balloon() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // An HTTP server on the host's loopback answering "hako-N" for /N.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = [0u8; 512];
            let n = s.read(&mut req).unwrap_or(0);
            let path = String::from_utf8_lossy(&req[..n])
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let body = format!("hako-{path}");
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let sock = dir.path().join("src.sock");
    // (No `wget -T`: Debian 12's busybox-static segfaults with it, on any host.)
    let script = format!(
        "i=0\nwhile [ $i -lt 600 ]; do\n\
           i=$((i+1))\n\
           echo \"fetch $i $(wget -q -O - http://10.0.2.2:{port}/$i)\"\n\
           sleep 0.2\n\
         done\n"
    );
    let mut src = Live::boot(
        &script,
        &[
            "--net",
            "user",
            "--balloon",
            "0",
            "--api-socket",
            sock.to_str().unwrap(),
        ],
        "",
        &[],
    );
    src.wait_for("fetch 3 hako-3", BOOT);
    let snap = dir.path().join("snap");
    ctl(
        &sock,
        &["snapshot", snap.to_str().unwrap(), "--stay-paused"],
    );
    let before = src
        .output()
        .lines()
        .filter(|l| l.starts_with("fetch "))
        .count();
    ctl(&sock, &["stop"]);
    assert_eq!(src.wait_exit(BOOT), Some(0));

    let sock2 = dir.path().join("dst.sock");
    let mut cmd = hako();
    cmd.args(["run", "--restore", snap.to_str().unwrap(), "--api-socket"])
        .arg(&sock2);
    let mut dst = Live::spawn(cmd);
    // The guest goes on counting, and its fetches get through again.
    let next = before + 3;
    let out = dst.wait_for(&format!("fetch {next} hako-{next}"), BOOT);
    assert!(
        !out.contains("init reached"),
        "the restored guest booted again"
    );
    ctl(&sock2, &["balloon", "64M"]);
    balloon_until(&sock2, "inflation after restore", |v| {
        v["actual_bytes"] == 64u64 << 20
    });
    ctl(&sock2, &["stop"]);
    assert_eq!(dst.wait_exit(BOOT), Some(0));
}
