//! The Debian kernel with the busybox initramfs on `emu` (one boot): a shell loop
//! prints an incrementing sequence with a running hash while a second program
//! dirties memory; the VM is snapshotted, its process killed, restored in a new
//! process, then live-migrated to a third on loopback. The sequence must continue
//! without a gap or a repeat and every hash be right across both cuts.

mod common;

use std::time::{Duration, Instant};

use common::migrate_guest::Vm;
use common::{base64, default_guest, wait_for_path};

/// The guest's program: `seq I H` with H(i) = (H(i-1) * 31 + i) mod 1000000007.
/// Every 16th line it also reads the disk past the page cache: `disk I TEXT`.
const SCRIPT: &str = "
(while :; do dd if=/dev/zero of=/tmp/dirt bs=64k count=64 2>/dev/null; done) &
i=0; h=0
while [ $i -lt 1000000 ]; do
  i=$((i+1)); h=$(( (h*31 + i) % 1000000007 ))
  echo \"seq $i $h\"
  if [ $((i % 16)) = 0 ]; then
    echo 3 > /proc/sys/vm/drop_caches
    echo \"disk $i $(head -c 12 /dev/vda)\"
  fi
  usleep 3000
done
";

const DISK_TEXT: &str = "hako-disk-ok";

/// The `disk` lines read after sequence number `after` all show the disk's text,
/// and there are some.
fn check_disk_reads(out: &str, after: u64) {
    let reads: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("disk "))
        .filter(|l| {
            l.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                > Some(after)
        })
        .collect();
    assert!(!reads.is_empty(), "no disk reads after seq {after}:\n{out}");
    for r in reads {
        assert!(r.ends_with(DISK_TEXT), "a disk read gave {r:?}");
    }
}

fn seq(out: &str) -> Vec<(u64, u64)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("seq ")?.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

fn next_hash(h: u64, i: u64) -> u64 {
    (h * 31 + i) % 1_000_000_007
}

/// Waits (bounded) for `n` more sequence lines than `after` in `vm`'s output.
fn wait_seq(vm: &mut Vm, after: u64, n: u64) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let s = seq(&vm.output());
        if s.last().is_some_and(|l| l.0 >= after + n) {
            return s;
        }
        if let Ok(Some(st)) = vm.child.try_wait() {
            panic!("hako exited ({st}):\n{}\n{}", vm.output(), vm.stderr());
        }
        assert!(Instant::now() < deadline, "no progress:\n{}", vm.output());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line follows from the one before; returns the last.
fn check_chain(lines: &[(u64, u64)], prev: Option<(u64, u64)>) -> (u64, u64) {
    let mut p = prev;
    for &(i, h) in lines {
        if let Some((pi, ph)) = p {
            assert_eq!(i, pi + 1, "a gap or repeat after seq {pi}");
            assert_eq!(h, next_hash(ph, i), "seq {i}: wrong hash");
        } else {
            assert_eq!(h, (1..=i).fold(0, next_hash), "seq {i}");
        }
        p = Some((i, h));
    }
    p.expect("some lines")
}

#[test]
fn debian_sequence_continues_across_snapshot_and_live_migration() {
    let (kernel, initrd) = default_guest();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("disk.img");
    let mut img = DISK_TEXT.as_bytes().to_vec();
    img.resize(1 << 20, 0);
    std::fs::write(&disk, img).unwrap();
    let disk_arg = format!("{},format=raw,readonly=on", disk.display());
    let cmdline = format!("console=ttyS0 quiet hako.cmd={}", base64(SCRIPT.as_bytes()));
    let mut src = Vm::start(
        d,
        "boot",
        &[
            "--accel",
            "emu",
            "--memory",
            "256M",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            &cmdline,
            "--disk",
            &disk_arg,
        ],
    );
    wait_seq(&mut src, 0, 40);

    // Snapshot (paused), then kill the process the hard way.
    let snap = d.join("snap");
    src.ctl_ok(&["snapshot", snap.to_str().unwrap(), "--stay-paused"]);
    src.child.kill().unwrap();
    let _ = src.child.wait();
    let before = seq(&src.output());
    let cut1 = check_chain(&before, None);

    let mut restored = Vm::start(d, "restored", &["--restore", snap.to_str().unwrap()]);
    let after = wait_seq(&mut restored, cut1.0, 40);
    assert_eq!(
        after[0].0,
        cut1.0 + 1,
        "the restored sequence starts at the cut"
    );
    assert!(
        !restored.output().contains("init reached"),
        "it booted again"
    );
    let cut2 = check_chain(&after, Some(cut1));
    // The restored virtio-blk (PCI, MSI-X) still answers.
    check_disk_reads(&restored.output(), cut1.0);

    // Live migration to a third process while the dirtier runs.
    let mig = d.join("m.sock");
    let uri = format!("unix:{}", mig.display());
    let mut dst = Vm::start(d, "dst", &["--incoming", &uri]);
    wait_for_path(&mig);
    restored.ctl_ok(&["migrate", &uri]);
    assert_eq!(restored.wait_exit(), Some(0));
    let handed = seq(&restored.output());
    let cut3 = check_chain(&handed, None);
    assert!(cut3.0 >= cut2.0);
    let moved = wait_seq(&mut dst, cut3.0, 40);
    assert_eq!(
        moved[0].0,
        cut3.0 + 1,
        "the migrated sequence starts at the cut"
    );
    check_chain(&moved, Some(cut3));
    check_disk_reads(&dst.output(), cut3.0);
    dst.ctl_ok(&["stop"]);
    assert_eq!(dst.wait_exit(), Some(0));
}
