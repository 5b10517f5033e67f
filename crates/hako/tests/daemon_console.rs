//! The console through the daemon with real VMs: the echo guest (guests/echo.c,
//! which answers each byte of serial input in upper case) on `emu`. Viewers over
//! the WebSocket see the buffer, then live output; two watch at once; a second
//! typist is refused; input reaches the guest, after a daemon restart too
//! (adoption re-opens run/NAME.in); and `hako console` under a pty types, shows
//! the answer and detaches on Ctrl-], restoring the terminal.

mod common;
mod daemon_util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::pty::{lflag, openpty};
use daemon_util::{echo_definition, hako_bin, Daemon};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

const BOOT: Duration = Duration::from_secs(60);

type Ws = WebSocket<UnixStream>;

fn hello(ws: &mut Ws) -> Value {
    match ws.read().expect("the hello") {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        m => panic!("the hello first, not {m:?}"),
    }
}

/// Reads into `text` until it holds `needle` (at most `limit`); JSON text
/// messages go to `notes`.
fn read_until(
    ws: &mut Ws,
    text: &mut String,
    notes: &mut Vec<Value>,
    needle: &str,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while !text.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} after {limit:?} in {text:?} (notices {notes:?})"
        );
        match ws.read() {
            Ok(Message::Binary(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            Ok(Message::Text(t)) => notes.push(serde_json::from_str(t.as_str()).unwrap()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}; so far {text:?}"),
        }
    }
}

#[test]
fn websocket_viewers_and_input_survive_a_daemon_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(&tmp.path().join("d"));
    let r = d.api("POST", "/v1/vms", Some(&echo_definition("echo")));
    assert_eq!(r.status, 201, "{}", r.body);
    d.ok(&["start", "echo"]);
    d.wait_log("echo", "echo: ready", BOOT);
    let fifo = d.state.join("run/echo.in");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::metadata(&fifo).unwrap().file_type()
    ));

    // A late viewer sees the boot (the buffer), then live output.
    let t = Duration::from_millis(200);
    let mut a = d.console_ws("echo", "?mode=rw", t);
    assert_eq!(hello(&mut a)["mode"], "rw");
    let mut b = d.console_ws("echo", "?mode=rw", t);
    let hb = hello(&mut b);
    assert_eq!(hb["mode"], "ro", "{hb}");
    assert!(hb["reason"].as_str().unwrap().contains("another viewer"));
    let (mut ta, mut tb, mut notes) = (String::new(), String::new(), vec![]);
    read_until(&mut a, &mut ta, &mut notes, "echo: ready", BOOT);
    read_until(&mut b, &mut tb, &mut notes, "echo: ready", BOOT);

    // Input from the typist reaches the guest; both see its answer.
    a.send(Message::Binary(b"hello world".to_vec().into()))
        .unwrap();
    read_until(&mut a, &mut ta, &mut notes, "HELLO WORLD", BOOT);
    read_until(&mut b, &mut tb, &mut notes, "HELLO WORLD", BOOT);
    // The read-only viewer's input does not reach it.
    b.send(Message::Binary(b"sneaky".to_vec().into())).unwrap();
    let mut refused: Vec<Value> = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused.iter().any(|n| n["type"] == "notice") {
        assert!(Instant::now() < deadline, "no notice: {refused:?}");
        if let Ok(Message::Text(m)) = b.read() {
            refused.push(serde_json::from_str(m.as_str()).unwrap());
        }
    }
    assert!(
        refused
            .iter()
            .any(|n| n["message"].as_str().unwrap_or("").contains("read-only")),
        "{refused:?}"
    );
    a.send(Message::Binary(b"after".to_vec().into())).unwrap();
    read_until(&mut a, &mut ta, &mut notes, "AFTER", BOOT);
    assert!(!ta.contains("SNEAKY"), "{ta:?}");
    drop((a, b));

    // The daemon dies; the next one adopts the VM and opens its FIFO again.
    d.kill9();
    d.restart();
    assert_eq!(d.status("echo")["state"], "running");
    let mut c = d.console_ws("echo", "?mode=rw", t);
    assert_eq!(hello(&mut c)["mode"], "rw");
    let mut tc = String::new();
    read_until(&mut c, &mut tc, &mut notes, "AFTER", BOOT);
    c.send(Message::Binary(b"adopted".to_vec().into())).unwrap();
    read_until(&mut c, &mut tc, &mut notes, "ADOPTED", BOOT);

    // The VM ends: the viewer is told.
    d.ok(&["destroy", "echo"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !notes
        .iter()
        .any(|n| n["type"] == "state" && n["state"] == "defined")
    {
        assert!(Instant::now() < deadline, "not told of the end: {notes:?}");
        match c.read() {
            Ok(Message::Text(m)) => notes.push(serde_json::from_str(m.as_str()).unwrap()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    // Input now is refused with a reason.
    c.send(Message::Binary(b"late".to_vec().into())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "no notice for input to a stopped VM"
        );
        if let Ok(Message::Text(m)) = c.read() {
            if m.as_str().contains("not running") {
                break;
            }
        }
    }
}

/// Collects bytes from `rx` into `text` until it holds `needle`.
fn wait_for(rx: &mpsc::Receiver<Vec<u8>>, text: &mut String, needle: &str) {
    let deadline = Instant::now() + BOOT;
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {needle:?} in {text:?}");
        if let Ok(b) = rx.recv_timeout(left.min(Duration::from_millis(200))) {
            text.push_str(&String::from_utf8_lossy(&b));
        }
    }
}

#[test]
fn hako_console_types_and_detaches_on_ctrl_bracket() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("d"));
    let r = d.api("POST", "/v1/vms", Some(&echo_definition("e")));
    assert_eq!(r.status, 201, "{}", r.body);
    // Not running: a clear refusal.
    let e = d.fails(&["console", "e"]);
    assert!(
        e.contains("'e' is not running") && e.contains("hako start e"),
        "{e}"
    );
    let e = d.fails(&["console", "nope"]);
    assert!(e.contains("no VM named 'nope'"), "{e}");
    d.ok(&["start", "e"]);
    d.wait_log("e", "echo: ready", BOOT);

    let pty = openpty();
    let cooked = lflag(&pty.slave);
    assert_ne!(cooked & libc::ICANON, 0);
    let mut child = Command::new(hako_bin())
        .args(["console", "e"])
        .env("HAKO_SOCKET", &d.sock)
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let mut reader = pty.master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut text = String::new();
    wait_for(&rx, &mut text, "Connected to e (Ctrl-] to detach)");
    // The buffer: the boot.
    wait_for(&rx, &mut text, "echo: ready");
    // Raw while attached.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lflag(&pty.slave) & libc::ICANON != 0 {
        assert!(Instant::now() < deadline, "the terminal is not raw");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut master = pty.master.try_clone().unwrap();
    master.write_all(b"typed").unwrap();
    wait_for(&rx, &mut text, "TYPED");
    // A second `hako console` is read-only, and says so.
    let o = Command::new(hako_bin())
        .args(["console", "e", "--timeout", "5"])
        .env("HAKO_SOCKET", &d.sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            // Ctrl-] at once: it prints the hello's reason first, then detaches.
            std::thread::sleep(Duration::from_millis(500));
            c.stdin.take().unwrap().write_all(&[0x1d])?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("another viewer types"), "{err}");
    assert!(err.contains("Detached from e"), "{err}");

    // Ctrl-] detaches; the terminal is cooked again; the VM runs on.
    master.write_all(&[0x1d]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "Ctrl-] did not detach: {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st}");
    wait_for(&rx, &mut text, "Detached from e");
    assert_eq!(lflag(&pty.slave), cooked);
    assert_eq!(d.status("e")["state"], "running");
    d.ok(&["destroy", "e"]);

    // No daemon: a clear message.
    let o = Command::new(hako_bin())
        .args(["console", "e"])
        .env("HAKO_SOCKET", tmp.path().join("none.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("the daemon is not running at"), "{err}");
}
