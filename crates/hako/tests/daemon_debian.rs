//! End to end with the Debian guest on `emu`: a VM defined from a TOML file, started
//! by the daemon, its boot in the log, shut down cleanly by the ACPI power button
//! through the daemon (after a snapshot and a revert to it), started by autostart
//! when the daemon starts, and undefined.
//!
//! The busybox initramfs has no ACPI button driver (Debian builds `button` as a
//! module, and the initramfs carries only virtio modules), and its init would not
//! act on the button anyway. So the guest's script loads `button.ko` from the
//! kernel package, handed in as a raw virtio disk, and polls the power button's
//! ACPI event counter (`/sys/firmware/acpi/interrupts/ff_pwr_btn`); on a press it
//! ends, and the initramfs' init powers the machine off (`poweroff -f`).

mod common;
mod daemon_util;

use std::path::Path;
use std::time::Duration;

use daemon_util::Daemon;

const BOOT: Duration = Duration::from_secs(300);

/// `button.ko` of the guest's kernel, padded to whole sectors into `img`; its
/// length.
fn button_disk(kernel: &Path, img: &Path) -> usize {
    let kver = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .expect("a kernel named vmlinuz-VERSION");
    let module = kernel
        .parent()
        .unwrap()
        .join("../lib/modules")
        .join(kver)
        .join("kernel/drivers/acpi/button.ko");
    let mut data = std::fs::read(&module).unwrap_or_else(|e| panic!("{}: {e}", module.display()));
    let len = data.len();
    data.resize(len.div_ceil(512) * 512, 0);
    std::fs::write(img, data).unwrap();
    len
}

#[test]
fn debian_guest_through_the_daemon() {
    let (kernel, initrd) = common::default_guest();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("button.img");
    let len = button_disk(&kernel, &img);
    let script = format!(
        "head -c {len} /dev/vda > /tmp/button.ko\n\
         insmod /tmp/button.ko && echo 'daemon-test: button driver loaded'\n\
         echo 'daemon-test: waiting for the power button'\n\
         i=0; while ! grep -q '^ *[1-9]' /sys/firmware/acpi/interrupts/ff_pwr_btn; do\n\
           i=$((i+1)); echo \"daemon-test: tick $i\"; sleep 0.3; done\n\
         echo 'daemon-test: power button pressed'\n"
    );
    let cmdline = format!(
        "console=ttyS0 quiet hako.cmd={}",
        common::base64(script.as_bytes())
    );
    // Relative paths: taken from the definition file's directory.
    std::fs::copy(&initrd, tmp.path().join("initrd.img")).unwrap();
    let toml = format!(
        "name = \"deb\"\n\n[config]\nkernel = \"{}\"\ninitrds = [\"initrd.img\"]\n\
         cmdline = \"{cmdline}\"\nmemory = \"512M\"\naccel = \"emu\"\n\
         disks = [{{ path = \"button.img\", format = \"raw\" }}]\n",
        kernel.display()
    );
    let file = tmp.path().join("deb.toml");
    std::fs::write(&file, toml).unwrap();

    let mut d = Daemon::start(&tmp.path().join("d"));
    d.ok(&["define", file.to_str().unwrap()]);
    let st = d.status("deb");
    assert_eq!(st["memory_bytes"], 512 << 20);
    d.ok(&["start", "deb"]);
    d.wait_log("deb", "hako-guest: init reached", BOOT);
    d.wait_log("deb", "daemon-test: waiting for the power button", BOOT);
    d.wait_log("deb", "daemon-test: tick 3", BOOT);

    // A snapshot, and a revert to it: the guest's ticks go on from the moment it
    // was taken, not from where the guest had got to.
    let before = last_tick(&d.log("deb"));
    let out = d.ok(&["snapshot-create", "deb", "booted"]);
    assert!(out.contains("snapshot 'booted' of 'deb' taken"), "{out}");
    // Read once the console has surely reached the buffer (its follower polls the
    // log file): a later tick only widens the window, a missed one would not.
    std::thread::sleep(Duration::from_millis(500));
    let after = last_tick(&d.log("deb"));
    d.wait_log("deb", &format!("daemon-test: tick {}", after + 5), BOOT);
    let out = d.ok(&["snapshot-revert", "deb", "booted"]);
    assert!(out.contains("deb: running"), "{out}");
    assert!(d
        .log("deb")
        .contains("[hakod] reverting to snapshot 'booted'"));
    // The restored run's output follows its start line; the replaced run's last
    // output may come after the revert line, never after the next start.
    let marker = "[hakod] deb started";
    let deadline = std::time::Instant::now() + BOOT;
    let first = loop {
        let log = d.log("deb");
        let tail = &log[log.rfind(marker).expect("the restored run in the log")..];
        if let Some(t) = ticks(tail).first() {
            break *t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tick after the revert:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        first > before && first <= after + 1,
        "after the revert the guest ticked {first}; the snapshot was taken between ticks \
         {before} and {after}"
    );

    // Shutdown (of the reverted guest): the power button, and the guest powers off; its process exits 0.
    let out = d.ok(&["shutdown", "deb", "--wait", "120"]);
    assert!(out.starts_with("deb: defined"), "{out}\n{}", d.log("deb"));
    let st = d.status("deb");
    assert_eq!(st["last_exit"]["code"], 0, "{st}");
    // The end line follows the rest of the console into the buffer (the second
    // one: the run the revert replaced ended with status 0 too).
    let log = d.wait_log_n(
        "deb",
        "[hakod] deb ended (exit status 0)",
        2,
        Duration::from_secs(10),
    );
    let last_end = log.rfind("[hakod] deb ended (exit status 0)").unwrap();
    assert!(
        log[..last_end].contains("daemon-test: power button pressed"),
        "{log}"
    );
    assert!(d.vm_processes("deb").is_empty());

    // Autostart: the next daemon starts it; destroy ends it.
    d.ok(&["autostart", "deb"]);
    d.kill9();
    d.restart();
    d.wait_status("deb", Duration::from_secs(60), |s| s["state"] == "running");
    // The buffer starts with the last run's console, from its log file (the run
    // restored from the snapshot: it went on ticking and was pressed off), then
    // the new run boots.
    let log = d.wait_log("deb", "daemon-test: waiting for the power button", BOOT);
    let new_run = log
        .find("daemon-test: waiting for the power button")
        .unwrap();
    assert!(
        log[..new_run].contains("daemon-test: power button pressed"),
        "the last run's console comes first:\n{log}"
    );
    let out = d.ok(&["destroy", "deb"]);
    assert!(out.starts_with("deb: defined"), "{out}");
    assert!(d.vm_processes("deb").is_empty());

    // Undefine removes it (its snapshot first).
    d.ok(&["snapshot-delete", "deb", "booted"]);
    d.ok(&["undefine", "deb"]);
    assert!(!d.ok(&["list", "--all"]).contains("deb"));
    assert!(!d.state.join("vms/deb.json").exists());
}

/// The numbers of the whole `daemon-test: tick N` lines in `log`.
fn ticks(log: &str) -> Vec<u64> {
    log.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim().strip_prefix("daemon-test: tick ")?.parse().ok())
        .collect()
}

fn last_tick(log: &str) -> u64 {
    ticks(log).last().copied().unwrap_or(0)
}
