//! The serial console on a real terminal (a pty): input reaches the guest, Ctrl-A x
//! quits with status 0, and the terminal's mode is restored on every exit path.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::pty::{lflag, openpty, Pty};
use common::{accel_flags, accels, hako};

/// Starts the echo guest with the pty as stdin; returns the child and its stdout lines.
fn start(accel: &str, pty: &Pty) -> (Child, mpsc::Receiver<u8>) {
    let elf = test_guests::build("echo").expect("build guests/echo.c");
    let mut child = hako()
        .args(["run", "--kernel", elf.to_str().unwrap()])
        .args(accel_flags(accel))
        .args(["--memory", "64M"])
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while out.read(&mut b).map(|n| n == 1).unwrap_or(false) {
            if tx.send(b[0]).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Collects output until it contains `want` (or fails after a minute).
fn wait_for(rx: &mpsc::Receiver<u8>, seen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains(want) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {want:?}; got {seen:?}"
        );
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push(b as char);
        }
    }
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hako did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_a_x_quits_and_restores_the_terminal() {
    for accel in accels() {
        let mut pty = openpty();
        let before = lflag(&pty.slave);
        assert_ne!(
            before & libc::ICANON,
            0,
            "a new pty starts in canonical mode"
        );
        let (mut child, rx) = start(accel, &pty);
        let mut seen = String::new();
        wait_for(&rx, &mut seen, "echo: ready");
        assert_eq!(
            lflag(&pty.slave) & (libc::ICANON | libc::ECHO),
            0,
            "{accel}: raw mode while running"
        );
        pty.master.write_all(b"hako").unwrap();
        wait_for(&rx, &mut seen, "HAKO");
        // Ctrl-A Ctrl-A sends one Ctrl-A to the guest (echoed back unchanged).
        pty.master.write_all(b"\x01\x01").unwrap();
        wait_for(&rx, &mut seen, "HAKO\x01");
        pty.master.write_all(b"\x01x").unwrap();
        assert_eq!(
            wait_exit(&mut child),
            0,
            "{accel}: Ctrl-A x is a clean exit"
        );
        assert_eq!(
            lflag(&pty.slave),
            before,
            "{accel}: terminal mode restored after Ctrl-A x"
        );
    }
}

#[test]
fn guest_reset_restores_the_terminal() {
    for accel in accels() {
        let mut pty = openpty();
        let before = lflag(&pty.slave);
        let (mut child, rx) = start(accel, &pty);
        let mut seen = String::new();
        wait_for(&rx, &mut seen, "echo: ready");
        pty.master.write_all(b"ok.").unwrap();
        wait_for(&rx, &mut seen, "echo: bye");
        assert_eq!(
            wait_exit(&mut child),
            0,
            "{accel}: the guest's reset is a clean exit"
        );
        assert_eq!(
            lflag(&pty.slave),
            before,
            "{accel}: terminal mode restored after the guest reset"
        );
        assert!(seen.contains("OK"), "{accel}: {seen}");
    }
}

#[test]
fn sigterm_ends_the_vm_and_restores_the_terminal() {
    for accel in accels() {
        let pty = openpty();
        let before = lflag(&pty.slave);
        let (mut child, rx) = start(accel, &pty);
        let mut seen = String::new();
        wait_for(&rx, &mut seen, "echo: ready");
        // SAFETY: kill() on the pid of our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(
            wait_exit(&mut child),
            128 + libc::SIGTERM,
            "{accel}: exit status for SIGTERM"
        );
        assert_eq!(
            lflag(&pty.slave),
            before,
            "{accel}: terminal mode restored after SIGTERM"
        );
    }
}
