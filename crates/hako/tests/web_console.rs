//! The web console in a real browser: Debian's chromium, headless, driven over
//! the DevTools protocol (CDP: JSON over a WebSocket). A daemon with
//! `--http 127.0.0.1:0`, the Debian guest on `emu` defined in it; the page lists
//! the VM, its start button boots it, its console (xterm.js over the console
//! WebSocket) shows the boot, a command typed into the terminal runs in the
//! guest's shell and its output shows; destroy stops it.
//!
//! Needs /usr/bin/chromium (scripts/install-deps.sh installs it) and xterm.js
//! built into the binary: without them this test fails, it does not skip.

mod common;
mod daemon_util;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_util::Daemon;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";
const BOOT: Duration = Duration::from_secs(300);

/// The browser, killed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts headless chromium; returns it and its DevTools WebSocket URL.
fn chromium() -> (Browser, String) {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/install-deps.sh installs Debian's chromium"
    );
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let url = line
                .split("DevTools listening on ")
                .nth(1)
                .map(|u| u.trim().to_string());
            let _ = tx.send((line, url));
        }
    });
    let browser = Browser {
        child,
        _profile: profile,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "chromium said no DevTools URL:\n{seen}");
        match rx.recv_timeout(left) {
            Ok((_, Some(url))) => return (browser, url),
            Ok((line, None)) => seen += &(line + "\n"),
            Err(_) => panic!("chromium said no DevTools URL:\n{seen}"),
        }
    }
}

/// A DevTools connection, attached to one page (flat sessions).
struct Cdp {
    ws: WebSocket<TcpStream>,
    next: u64,
    session: Option<String>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let hostport = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("a ws:// URL");
        assert!(hostport.starts_with("127.0.0.1:"), "{url}");
        let s = TcpStream::connect(hostport).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client::client(url, s).expect("the DevTools WebSocket");
        Cdp {
            ws,
            next: 1,
            session: None,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = Value::from(s.clone());
        }
        self.ws.send(Message::Text(msg.to_string().into())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let m = match self.ws.read().expect("a DevTools message") {
                Message::Text(t) => t,
                _ => continue,
            };
            let v: Value = serde_json::from_str(m.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page; its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits (at most `limit`) until `expr` is true in the page.
    fn wait(&mut self, expr: &str, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        while self.eval(expr) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "{what}: not after {limit:?}; the terminal shows:\n{}",
                self.eval("window.hako ? hako.text() : document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn click(&mut self, vm: &str, action: &str) {
        let clicked = self.eval(&format!(
            "(() => {{ const b = document.querySelector('button[data-vm=\"{vm}\"][data-action=\"{action}\"]'); \
             if (!b || b.disabled) return false; b.click(); return true; }})()"
        ));
        assert_eq!(
            clicked,
            Value::Bool(true),
            "no {action} button to click for {vm}"
        );
    }

    /// The VM's row of the page's table, as text.
    fn row(&mut self, vm: &str) -> String {
        self.eval(&format!(
            "(document.querySelector('tr[data-vm=\"{vm}\"]') || {{innerText: ''}}).innerText"
        ))
        .as_str()
        .unwrap_or("")
        .to_string()
    }
}

#[test]
fn web_console_in_chromium() {
    let (kernel, initrd) = common::default_guest();
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(&tmp.path().join("d"), &["--http", "127.0.0.1:0"]);
    let addr = d.http_addr();
    assert!(addr.ip().is_loopback());
    let def = json!({
        "name": "deb",
        "config": {
            "kernel": kernel, "initrds": [initrd], "cmdline": "console=ttyS0 quiet",
            "memory": "512M", "cpus": 1, "accel": "emu",
        }
    });
    let r = d.api("POST", "/v1/vms", Some(&def));
    assert_eq!(r.status, 201, "{}", r.body);

    let (_browser, url) = chromium();
    let mut cdp = Cdp::connect(&url);
    let page = format!("http://{addr}/");
    let t = cdp.call("Target.createTarget", json!({"url": "about:blank"}));
    let target = t["targetId"].as_str().unwrap().to_string();
    let s = cdp.call(
        "Target.attachToTarget",
        json!({"targetId": target, "flatten": true}),
    );
    cdp.session = Some(s["sessionId"].as_str().unwrap().to_string());
    cdp.call("Page.enable", json!({}));
    cdp.call("Page.navigate", json!({"url": page}));
    cdp.wait(
        "document.readyState === 'complete'",
        Duration::from_secs(30),
        "the page loads",
    );
    let missing = cdp.eval("!!document.getElementById('assets-missing')");
    assert_eq!(
        missing,
        Value::Bool(false),
        "the web console's assets (xterm.js) are missing from this build: run \
         scripts/install-deps.sh (npm ci in crates/hakod/web) and build again"
    );
    assert_eq!(
        cdp.eval("typeof Terminal"),
        "function",
        "xterm.js did not load"
    );
    // The list, refreshed from the API: the VM, defined, 1 vCPU, 512 MiB.
    cdp.wait(
        "!!document.querySelector('tr[data-vm=\"deb\"]')",
        Duration::from_secs(10),
        "the VM is listed",
    );
    let row = cdp.row("deb");
    assert!(
        row.contains("defined") && row.contains("512 MiB"),
        "{row:?}"
    );

    // Its console first (a viewer waiting for the boot), then start.
    cdp.click("deb", "console");
    cdp.wait(
        "hako.mode === 'rw'",
        Duration::from_secs(10),
        "the console types",
    );
    cdp.click("deb", "start");
    cdp.wait(
        "document.querySelector('tr[data-vm=\"deb\"]').innerText.includes('running')",
        Duration::from_secs(90),
        "the list shows it running",
    );
    cdp.wait(
        "hako.text().includes(\"type 'poweroff -f' to stop\")",
        BOOT,
        "the boot shows in the terminal",
    );
    assert!(
        cdp.eval("hako.text()")
            .as_str()
            .unwrap()
            .contains("hako-guest: init reached"),
        "the boot's start is in the terminal"
    );
    // Wait for the shell's prompt (busybox ash prints "# " or "~ # ").
    cdp.wait(
        "hako.text().trimEnd().endsWith('#')",
        Duration::from_secs(60),
        "a shell prompt",
    );

    // Type a command as keystrokes into the terminal.
    cdp.eval("hako.term.focus(); true");
    cdp.call("Input.insertText", json!({"text": "echo web-$((6*7))"}));
    for kind in ["keyDown", "keyUp"] {
        let mut ev = json!({"type": kind, "key": "Enter", "code": "Enter",
            "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13});
        if kind == "keyDown" {
            ev["text"] = "\r".into();
        }
        cdp.call("Input.dispatchKeyEvent", ev);
    }
    cdp.wait(
        "hako.text().split('\\n').some(l => l.trim() === 'web-42')",
        Duration::from_secs(60),
        "the command's output",
    );

    let shown = cdp.eval("hako.text()");
    eprintln!("the terminal:\n{}", shown.as_str().unwrap_or(""));

    // Destroy from the page.
    cdp.click("deb", "destroy");
    cdp.wait(
        "document.querySelector('tr[data-vm=\"deb\"]').innerText.includes('defined')",
        Duration::from_secs(60),
        "the list shows it stopped",
    );
    assert_eq!(d.status("deb")["state"], "defined");
}
