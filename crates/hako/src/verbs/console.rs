//! `hako console NAME`: the VM's serial console on this terminal, through the
//! daemon's console WebSocket (`GET /v1/vms/NAME/console`) over its Unix socket.
//! The terminal is raw while attached (restored on every way out); the console
//! buffer comes first, then live output; keystrokes go to the guest unless the
//! console is read-only (`--read-only`, or another viewer types). Ctrl-] detaches,
//! as with virsh.

use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

use super::VmArgs;

/// The detach key: Ctrl-].
pub const DETACH: u8 = 0x1d;

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Only watch: do not type on the console.
    #[arg(long)]
    read_only: bool,
}

/// Splits keyboard input at the detach key.
#[derive(Debug, PartialEq, Eq)]
pub struct Keys {
    /// What goes to the guest (the bytes before the detach key).
    pub send: Vec<u8>,
    /// The detach key was typed.
    pub detach: bool,
}

pub fn filter_keys(input: &[u8]) -> Keys {
    match input.iter().position(|&b| b == DETACH) {
        Some(i) => Keys {
            send: input[..i].to_vec(),
            detach: true,
        },
        None => Keys {
            send: input.to_vec(),
            detach: false,
        },
    }
}

/// What the stdin thread hands over.
enum Key {
    Bytes(Vec<u8>),
    Detach,
}

fn read_keys(tx: mpsc::Sender<Key>) {
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return, // the end of input: keep watching
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let k = filter_keys(&buf[..n]);
        if !k.send.is_empty() && tx.send(Key::Bytes(k.send)).is_err() {
            return;
        }
        if k.detach {
            let _ = tx.send(Key::Detach);
            return;
        }
    }
}

/// The daemon's refusal of the upgrade, as one line.
fn refusal(e: tungstenite::Error) -> anyhow::Error {
    match e {
        tungstenite::Error::Http(r) => {
            let msg = r
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {}", r.status()));
            anyhow::anyhow!("the daemon refused the console: {msg}")
        }
        e => anyhow::anyhow!("the console WebSocket failed: {e}"),
    }
}

/// Whether a state is one of a VM that runs.
fn up(state: &str) -> bool {
    matches!(state, "running" | "paused")
}

pub fn run(a: ConsoleArgs) -> Result<i32> {
    let path = super::checked(&a.vm)?;
    let name = &a.vm.name;
    let conn = &a.vm.conn;
    // Also the clear message when the daemon is not there.
    let info = conn.call("GET", &path, None)?;
    let state = info["status"]["state"].as_str().unwrap_or("").to_string();
    if !up(&state) {
        bail!("'{name}' is not running (it is {state}; start it with `hako start {name}`)");
    }
    let sock = conn.socket();
    let stream = UnixStream::connect(&sock)
        .with_context(|| format!("cannot connect to the daemon at {}", sock.display()))?;
    let mode = if a.read_only { "ro" } else { "rw" };
    let req = format!("ws://localhost{path}/console?mode={mode}")
        .into_client_request()
        .context("the console's URL")?;
    let (mut ws, _) = tungstenite::client::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => refusal(e),
        tungstenite::HandshakeError::Interrupted(_) => {
            anyhow::anyhow!("the console's handshake was interrupted")
        }
    })?;
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .context("cannot set a timeout on the socket")?;

    let tty = io::stdin().is_terminal();
    let _raw = crate::console::RawTerminal::enable_on_stdin();
    let nl = if tty { "\r\n" } else { "\n" };
    eprint!("Connected to {name} (Ctrl-] to detach){nl}");
    let (tx, keys) = mpsc::channel();
    // Read-only or not, the keyboard is read: Ctrl-] detaches either way.
    std::thread::Builder::new()
        .name("console-keys".into())
        .spawn(move || read_keys(tx))
        .context("cannot start the keyboard thread")?;
    let mut typing = false;
    let mut told = false;
    let mut out = io::stdout();
    loop {
        loop {
            match keys.try_recv() {
                Ok(Key::Bytes(b)) if typing => ws.send(Message::Binary(b.into()))?,
                Ok(Key::Bytes(_)) if !told => {
                    told = true;
                    eprint!("{nl}hako: read-only: keystrokes are not sent (Ctrl-] detaches){nl}");
                }
                Ok(Key::Bytes(_)) => {}
                Ok(Key::Detach) => {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    eprint!("{nl}Detached from {name}{nl}");
                    return Ok(0);
                }
                Err(_) => break,
            }
        }
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                eprint!("{nl}The daemon closed the console of {name}{nl}");
                return Ok(0);
            }
            Err(e) => bail!("the console of '{name}': {e}"),
        };
        match msg {
            Message::Binary(b) => {
                out.write_all(&b)?;
                out.flush()?;
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                match v["type"].as_str() {
                    Some("hello") => {
                        typing = v["mode"] == "rw";
                        if let Some(why) = v["reason"].as_str() {
                            eprint!("hako: {why}{nl}");
                        }
                    }
                    Some("state") => {
                        let st = v["state"].as_str().unwrap_or("");
                        if !up(st) {
                            eprint!("{nl}'{name}' is {st} now{nl}");
                            return Ok(0);
                        }
                    }
                    Some("notice") => {
                        if let Some(m) = v["message"].as_str() {
                            eprint!("{nl}hako: {m}{nl}");
                        }
                    }
                    _ => {}
                }
            }
            Message::Close(_) => {
                eprint!("{nl}The daemon closed the console of {name}{nl}");
                return Ok(0);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key() {
        assert_eq!(
            filter_keys(b"ls\r"),
            Keys {
                send: b"ls\r".to_vec(),
                detach: false
            }
        );
        assert_eq!(
            filter_keys(b"ab\x1dcd"),
            Keys {
                send: b"ab".to_vec(),
                detach: true
            }
        );
        assert_eq!(
            filter_keys(b"\x1d"),
            Keys {
                send: vec![],
                detach: true
            }
        );
        // Ctrl-C and Ctrl-A go to the guest.
        assert_eq!(filter_keys(b"\x03\x01").send, b"\x03\x01".to_vec());
    }
}
