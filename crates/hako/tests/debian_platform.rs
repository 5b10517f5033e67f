//! End to end (issue 4): Debian's stock kernel on `emu` with 2 CPUs finds its
//! platform through ACPI and PCI: both CPUs online, virtio-blk mounted and written,
//! virtio-console and virtio-rng bound, and `poweroff` through ACPI ends hako with 0.

mod common;

use std::process::Command;
use std::time::Duration;

use common::boot;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn debian_kernel_uses_acpi_smp_and_virtio_on_emu() {
    assert!(
        have("mkfs.ext4") && have("debugfs"),
        "e2fsprogs missing: run scripts/install-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir(&content).unwrap();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(content.join("data.bin"), &data).unwrap();
    let img = dir.path().join("disk.img");
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(&content)
        .arg(&img)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success());
    let want_sha = common::host(&format!("sha256sum {}", content.join("data.bin").display()));
    let want_sha = want_sha.split_whitespace().next().unwrap().to_string();

    let script = r#"echo "cpus=$(grep -c ^processor /proc/cpuinfo)"
mount -t ext4 /dev/vda /mnt && echo mounted
sha256sum /mnt/data.bin
echo "written by the guest" > /mnt/out.txt
umount /mnt && echo unmounted
[ -e /dev/hvc0 ] && echo "hvc0 present"
echo "rng=$(cat /sys/class/misc/hw_random/rng_current)"
echo "entropy=$(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \n' | wc -c)"
poweroff -f
"#;
    let disk = format!("{},format=raw", img.display());
    let o = boot(
        "emu",
        script,
        &["--cpus", "2", "--disk", &disk],
        Duration::from_secs(1200),
    );
    let out = &o.stdout;
    let err = &o.stderr;
    assert!(
        o.success,
        "timed out: {}
stdout:
{out}
stderr:
{err}",
        o.timed_out
    );
    assert!(out.contains("cpus=2"), "{out}");
    assert!(
        out.contains("mounted") && out.contains("unmounted"),
        "{out}"
    );
    assert!(out.contains(&want_sha), "want {want_sha}\n{out}");
    assert!(out.contains("hvc0 present"), "{out}");
    assert!(out.contains("rng=virtio_rng"), "{out}");
    assert!(out.contains("entropy=32"), "{out}");
    // The guest's write reached the image.
    let cat = Command::new("debugfs")
        .args(["-R", "cat /out.txt"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout),
        "written by the guest\n"
    );
}
