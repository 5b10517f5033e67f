//! Device I/O off the vCPU threads (docs/io-thread.md) against the translator's
//! code tracking: Debian on `emu` with 2 CPUs runs programs from a virtio-blk disk,
//! drops the page cache and runs them again, so the queue worker's DMA lands in
//! pages that held code translated before (page cache reuse); every run must
//! compute what the host computes. Writes and a flush go through the worker too.

mod common;

use std::process::Command;
use std::time::Duration;

use common::boot_ok;

#[test]
fn programs_from_a_disk_run_right_after_the_page_cache_is_reused_on_emu() {
    let busybox = dirs_busybox();
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir(&content).unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    std::fs::write(content.join("data.bin"), &data).unwrap();
    // Copies of busybox that differ in a trailing byte: distinct files, so each
    // is read from the disk into pages of its own.
    let bb = std::fs::read(&busybox).unwrap();
    for k in 0..4u8 {
        let mut b = bb.clone();
        b.push(k);
        let d = content.join(format!("d{k}"));
        std::fs::create_dir(&d).unwrap();
        let p = d.join("busybox");
        std::fs::write(&p, &b).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let img = dir.path().join("disk.img");
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(&content)
        .arg(&img)
        .arg("64M")
        .status()
        .expect("mkfs.ext4 (scripts/install-deps.sh)");
    assert!(st.success());
    let want = common::host(&format!("sha256sum {}", content.join("data.bin").display()));
    let want = want.split_whitespace().next().unwrap().to_string();

    let script = r#"mount -t ext4 /dev/vda /mnt && echo mounted
for round in 1 2 3; do
  for k in 0 1 2 3; do
    echo "r$round bb$k $(/mnt/d$k/busybox sha256sum /mnt/data.bin | cut -d' ' -f1)"
  done
  mkdir /mnt/new$round && /mnt/d1/busybox cp /mnt/d2/busybox /mnt/new$round/ && sync
  echo "r$round new $(/mnt/new$round/busybox sha256sum /mnt/data.bin | cut -d' ' -f1)"
  echo 3 > /proc/sys/vm/drop_caches
done
umount /mnt && echo unmounted
poweroff -f
"#;
    let disk = format!("{},format=raw", img.display());
    let args = ["--cpus", "2", "--disk", &disk];
    let out = &boot_ok("emu", script, &args, Duration::from_secs(480));
    assert!(
        out.contains("mounted") && out.contains("unmounted"),
        "{out}"
    );
    for round in 1..=3 {
        for k in 0..4 {
            let line = format!("r{round} bb{k} {want}");
            assert!(out.contains(&line), "want {line}\n{out}");
        }
        let line = format!("r{round} new {want}");
        assert!(out.contains(&line), "want {line}\n{out}");
    }
}

/// The static busybox of the default guest (scripts/default-guest.sh caches it).
fn dirs_busybox() -> std::path::PathBuf {
    let _ = common::default_guest();
    let home = std::env::var("HOME").unwrap();
    std::path::Path::new(&home).join(".cache/hako/debian/busybox/bin/busybox")
}
