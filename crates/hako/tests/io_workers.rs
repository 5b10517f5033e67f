//! virtio-blk queue workers (docs/io-thread.md): one thread per disk queue, named
//! `blkN-qM`, and no more of them after `--on-reboot restart` rebuilt the machine
//! several times (each machine joins its workers when it is dropped).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{accel_flags, accels, hako};

/// The names of `pid`'s threads that start with `prefix`.
fn threads(pid: u32, prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with(prefix))
        .collect()
}

#[test]
fn one_worker_per_disk_queue_and_none_leaked_across_reboots() {
    let elf = test_guests::build("hello").expect("build guests/hello.c");
    let dir = tempfile::tempdir().unwrap();
    let mut disks = Vec::new();
    for k in 0..2 {
        let p = dir.path().join(format!("d{k}.raw"));
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        disks.push(format!("{},format=raw", p.display()));
    }
    for accel in accels() {
        let mut child = hako()
            .args(["run", "--kernel", elf.to_str().unwrap()])
            .args(accel_flags(accel))
            .args(["--memory", "64M", "--on-reboot", "restart"])
            .args(["--disk", &disks[0], "--disk", &disks[1]])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut boots = 0;
        let mut most = 0;
        let mut seen_both = false;
        let deadline = Instant::now() + Duration::from_secs(120);
        while boots < 5 && Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(5)) {
                boots += line.starts_with("hello: cmdline=") as u32;
            }
            let mut t = threads(pid, "blk");
            t.sort();
            most = most.max(t.len());
            seen_both |= t == ["blk0-q0", "blk1-q0"];
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(boots, 5, "{accel}: the guest did not reboot 4 times");
        assert!(seen_both, "{accel}: no blk0-q0 and blk1-q0 workers seen");
        assert!(most <= 2, "{accel}: {most} blk workers at once (leaked)");
    }
}
