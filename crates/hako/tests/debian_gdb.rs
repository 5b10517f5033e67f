//! GDB on the Debian kernel on `emu` (one boot, `nokaslr`): a breakpoint at a
//! kernel function whose address the guest printed from /proc/kallsyms, RIP there,
//! a kernel string read through the kernel's page tables, a single step, a
//! watchpoint on a variable the kernel keeps writing (jiffies), and a continue to
//! the guest's clean power-off.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{base64, default_guest, free_port, hako, run_watchdog};

const SCRIPT: &str = "
grep -E ' (__x64_sys_sync|linux_banner|jiffies)$' /proc/kallsyms | sed 's/^/sym: /'
i=0; while [ $i -lt 250 ]; do i=$((i+1)); sync; usleep 20000; done
";

#[test]
fn gdb_debugs_the_debian_kernel_on_emu() {
    let (kernel, initrd) = default_guest();
    let port = free_port();
    let cmdline = format!(
        "console=ttyS0 quiet nokaslr hako.cmd={}",
        base64(SCRIPT.as_bytes())
    );
    let mut vm = hako()
        .args([
            "run",
            "--accel",
            "emu",
            "--memory",
            "256M",
            "--cmdline",
            &cmdline,
        ])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--gdb", &format!("tcp:127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = vm.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut syms = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while syms.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = rx
            .recv_timeout(left)
            .expect("the guest printed its symbols");
        if let Some(rest) = l.strip_prefix("sym: ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            syms.insert(w[2].to_string(), w[0].to_string());
        }
    }
    let (sync, banner, jiffies) = (
        &syms["__x64_sys_sync"],
        &syms["linux_banner"],
        &syms["jiffies"],
    );
    assert!(sync.starts_with("ffffffff81"), "nokaslr: {sync}");

    let mut g = Command::new("gdb");
    g.args(["-batch", "-nx"]);
    for c in [
        format!("target remote 127.0.0.1:{port}"),
        format!("break *0x{sync}"),
        "continue".into(),
        "p/x $pc".into(),
        format!("x/s 0x{banner}"),
        "stepi".into(),
        "p/x $pc".into(),
        "delete".into(),
        format!("watch *(unsigned long *)0x{jiffies}"),
        "continue".into(),
        "delete".into(),
        "continue".into(),
    ] {
        g.arg("-ex").arg(c);
    }
    let o = run_watchdog(&mut g, Duration::from_secs(300));
    let text = format!("{}{}", o.stdout, o.stderr);
    assert!(!o.timed_out, "gdb timed out:\n{text}");
    assert!(
        text.contains(&format!("$1 = 0x{sync}")),
        "RIP at the breakpoint:\n{text}"
    );
    assert!(
        text.contains("\"Linux version "),
        "the kernel's banner:\n{text}"
    );
    let stepped = text
        .lines()
        .find_map(|l| l.strip_prefix("$2 = 0x"))
        .unwrap_or_else(|| panic!("no $2:\n{text}"));
    assert_ne!(stepped.trim(), sync.as_str(), "stepi moved on:\n{text}");
    assert!(
        text.contains("Hardware watchpoint 2: *(unsigned long *)0x"),
        "{text}"
    );
    assert!(
        text.contains("Old value = ") && text.contains("New value = "),
        "{text}"
    );
    assert!(
        text.contains("exited normally"),
        "continued to the power-off:\n{text}"
    );
    let status = vm.wait().unwrap();
    assert!(status.success(), "hako: {status}");
}
