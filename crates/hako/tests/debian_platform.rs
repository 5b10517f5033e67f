//! End to end (issue 4): Debian's stock kernel on `emu` with 2 CPUs finds its
//! platform through ACPI and PCI: both CPUs online, virtio-blk mounted and written,
//! virtio-console and virtio-rng bound, and `poweroff` through ACPI ends hako with 0.

mod common;

use std::process::Command;
use std::time::Duration;

use common::boot_ok;

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

    // A qcow2 overlay on a raw base: the guest reads through to the base and writes
    // into the overlay, which qemu-img must then find clean and read back.
    let base = dir.path().join("base.raw");
    let base_data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&base, &base_data).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    let st = common::hako()
        .args(["img", "create", "-f", "qcow2", "-b"])
        .arg(&base)
        .args(["-F", "raw"])
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(st.success(), "hako img create");
    let want_base_md5 = md5_of(&base_data[..4096]);

    let script = r#"echo "cpus=$(grep -c ^processor /proc/cpuinfo)"
echo "vdb-head=$(dd if=/dev/vdb bs=4096 count=1 2>/dev/null | md5sum)"
printf 'written through qcow2' | dd of=/dev/vdb bs=512 seek=100 conv=notrunc 2>/dev/null
sync
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
    let disk2 = format!("{},format=qcow2", overlay.display());
    let args = ["--cpus", "2", "--disk", &disk, "--disk", &disk2];
    let out = &boot_ok("emu", script, &args, Duration::from_secs(360));
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

    assert!(
        out.contains(&format!("vdb-head={want_base_md5}")),
        "want {want_base_md5}\n{out}"
    );
    if have("qemu-img") {
        let check = Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&overlay)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "qemu-img check: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let flat = dir.path().join("flat.raw");
        let st = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&overlay)
            .arg(&flat)
            .status()
            .unwrap();
        assert!(st.success());
        let got = std::fs::read(&flat).unwrap();
        let mut want = base_data.clone();
        want[51200..51200 + 21].copy_from_slice(b"written through qcow2");
        assert!(
            got == want,
            "qemu-img reads the overlay differently from what the guest wrote"
        );
    } else {
        eprintln!(
            "qemu-img missing: skipped the qcow2 interoperability check (scripts/install-deps.sh)"
        );
    }
}

fn md5_of(data: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), data).unwrap();
    common::host(&format!("md5sum {}", f.path().display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
