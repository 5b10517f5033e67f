//! The console WebSocket and the web console's listener, without running any VM
//! (the daemon's `hako` is /bin/false: every start fails at once, which still
//! writes the daemon's `[hakod]` lines into the console buffer): the hello and
//! the typing seat, the buffer then live output, refusals, and the loopback TCP
//! listener's guard.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

mod common;

use common::{def, free_port, Daemon};

trait Console {
    fn console(&self, vm: &str, query: &str) -> Result<WebSocket<UnixStream>, tungstenite::Error>;
}

impl Console for Daemon {
    /// A console WebSocket over the Unix socket.
    fn console(&self, vm: &str, query: &str) -> Result<WebSocket<UnixStream>, tungstenite::Error> {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!("ws://localhost/v1/vms/{vm}/console{query}")
            .into_client_request()
            .unwrap();
        tungstenite::client::client(req, s)
            .map(|(ws, _)| ws)
            .map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => e,
                tungstenite::HandshakeError::Interrupted(_) => panic!("interrupted"),
            })
    }
}

/// The next text message, as JSON (binary messages are skipped).
fn next_json(ws: &mut WebSocket<UnixStream>) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
            m => panic!("unexpected {m:?}"),
        }
    }
}

/// Reads binary messages into `text` until it holds `needle` `n` times (at most
/// `limit`).
fn read_count(ws: &mut WebSocket<UnixStream>, text: &mut String, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while text.matches(needle).count() < n {
        assert!(Instant::now() < deadline, "not {n} {needle:?} in {text:?}");
        match ws.read() {
            Ok(Message::Binary(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            Ok(_) => {}
            Err(e) => panic!("{e}; so far {text:?}"),
        }
    }
}

fn refusal_status(e: tungstenite::Error) -> (u16, String) {
    match e {
        tungstenite::Error::Http(r) => (
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        e => panic!("not an HTTP refusal: {e}"),
    }
}

#[test]
fn viewers_the_typing_seat_and_the_buffer() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), None);
    assert_eq!(d.req("POST", "/v1/vms", Some(def("a"))).status, 201);
    // A start that fails leaves the daemon's lines in the buffer.
    assert_eq!(d.req("PUT", "/v1/vms/a/start", None).status, 500);

    let mut w1 = d.console("a", "?mode=rw").unwrap();
    let hello = next_json(&mut w1);
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["mode"], "rw");
    assert_eq!(hello["vm"], "a");
    assert_eq!(hello["state"], "crashed");
    // The buffer first.
    let live = "[hakod] a started";
    let mut t1 = String::new();
    read_count(&mut w1, &mut t1, live, 1);

    // A second viewer that asks to type is read-only and told why.
    let mut w2 = d.console("a", "?mode=rw").unwrap();
    let hello = next_json(&mut w2);
    assert_eq!(hello["mode"], "ro");
    assert!(
        hello["reason"]
            .as_str()
            .unwrap()
            .contains("another viewer types"),
        "{hello}"
    );
    let mut t2 = String::new();
    read_count(&mut w2, &mut t2, live, 1);
    // A third only watches.
    let mut w3 = d.console("a", "").unwrap();
    assert_eq!(next_json(&mut w3)["mode"], "ro");
    let mut t3 = String::new();
    read_count(&mut w3, &mut t3, live, 1);

    // Input from a read-only viewer is refused, with a notice.
    w2.send(Message::Binary(b"ls\r".to_vec().into())).unwrap();
    let n = next_json(&mut w2);
    assert_eq!(n["type"], "notice");
    assert!(n["message"].as_str().unwrap().contains("read-only"), "{n}");
    // The typist's input finds no running VM.
    w1.send(Message::Binary(b"ls\r".to_vec().into())).unwrap();
    let n = next_json(&mut w1);
    assert!(
        n["message"].as_str().unwrap().contains("not running"),
        "{n}"
    );

    // Live output reaches every viewer: the next start's lines.
    assert_eq!(d.req("PUT", "/v1/vms/a/start", None).status, 500);
    read_count(&mut w1, &mut t1, live, 2);
    read_count(&mut w2, &mut t2, live, 2);
    read_count(&mut w3, &mut t3, live, 2);

    // The seat is free again once its holder goes.
    w1.close(None).unwrap();
    let _ = w1.flush();
    drop(w1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut w = d.console("a", "?mode=rw").unwrap();
        if next_json(&mut w)["mode"] == "rw" {
            break;
        }
        assert!(Instant::now() < deadline, "the seat stayed taken");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Undefined while watched: told, and closed.
    assert_eq!(d.req("DELETE", "/v1/vms/a", None).status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "not told of the undefine");
        match w3.read() {
            Ok(Message::Text(t)) if t.as_str().contains("undefined") => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn console_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), None);
    assert_eq!(d.req("POST", "/v1/vms", Some(def("a"))).status, 201);
    let (st, body) = refusal_status(d.console("nope", "").unwrap_err());
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("no VM named 'nope'"), "{body}");
    let (st, body) = refusal_status(d.console("a", "?mode=root").unwrap_err());
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("'rw' or 'ro'"), "{body}");
    // Not a WebSocket upgrade.
    let r = d.req("GET", "/v1/vms/a/console", None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error_message().contains("WebSocket"), "{}", r.body);
    // A hostile viewer: a message over 64 KiB ends its own connection only.
    let mut w = d.console("a", "?mode=rw").unwrap();
    next_json(&mut w);
    let _ = w.send(Message::Binary(vec![b'x'; 1 << 20].into()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.read().is_ok() {
        assert!(Instant::now() < deadline, "still connected");
    }
    assert_eq!(d.req("GET", "/v1/vms", None).status, 200);
}

/// One request over TCP with the given headers; (status, body).
fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn the_loopback_listener_and_its_guard() {
    let tmp = tempfile::tempdir().unwrap();
    // Only loopback addresses, until there are tokens.
    let r = hakod::server::run(hakod::Options {
        socket: tmp.path().join("x.sock"),
        state_dir: tmp.path().join("x"),
        exe: PathBuf::from("/bin/false"),
        http: Some("0.0.0.0:8080".parse().unwrap()),
        http_token: None,
    });
    let e = r.unwrap_err().to_string();
    assert!(e.contains("loopback") && e.contains("token"), "{e}");

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let d = Daemon::start(tmp.path(), Some(addr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "no TCP listener");
        std::thread::sleep(Duration::from_millis(10));
    }
    let host = addr.to_string();
    let (st, page) = http(addr, "/", &[("Host", &host)]);
    assert_eq!(st, 200, "{page}");
    assert!(
        page.contains("/web/xterm.js") && page.contains("/web/app.js"),
        "{page}"
    );
    let (st, js) = http(addr, "/web/xterm.js", &[("Host", &host)]);
    assert_eq!(st, 200);
    assert!(js.len() > 100_000, "xterm.js is bundled");
    let (st, _) = http(addr, "/web/app.js", &[("Host", &host)]);
    assert_eq!(st, 200);
    let (st, _) = http(addr, "/web/nothing.js", &[("Host", &host)]);
    assert_eq!(st, 404);
    // The API is there too, from this page's origin.
    let own = format!("http://{host}");
    let (st, body) = http(addr, "/v1/vms", &[("Host", &host), ("Origin", &own)]);
    assert_eq!(st, 200, "{body}");
    // Another site's page, and a DNS-rebound name, are refused.
    let (st, body) = http(
        addr,
        "/v1/vms",
        &[("Host", &host), ("Origin", "http://evil.example")],
    );
    assert_eq!(st, 403, "{body}");
    let evil = format!("evil.example:{}", addr.port());
    let (st, _) = http(addr, "/", &[("Host", &evil)]);
    assert_eq!(st, 403);
    let (st, _) = http(addr, "/", &[]);
    assert_eq!(st, 403);
    // The same page over the Unix socket.
    let r = d.req("GET", "/", None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("xterm"));
}

#[test]
fn a_token_guards_the_tcp_listener() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let token = "s3cret-token-0123456789";
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A token file without a listener is a mistake, said so.
    let r = hakod::server::run(hakod::Options {
        socket: tmp.path().join("x.sock"),
        state_dir: tmp.path().join("x"),
        exe: PathBuf::from("/bin/false"),
        http: None,
        http_token: Some(file.clone()),
    });
    assert!(r.unwrap_err().to_string().contains("--http"));

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _d = common::Daemon::start_with(tmp.path(), Some(addr), Some(file));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "no TCP listener");
        std::thread::sleep(Duration::from_millis(10));
    }
    let host = addr.to_string();
    let (st, body) = http(addr, "/v1/vms", &[("Host", &host)]);
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    let wrong = "Bearer s3cret-token-0123456780";
    let (st, _) = http(
        addr,
        "/v1/vms",
        &[("Host", &host), ("Authorization", wrong)],
    );
    assert_eq!(st, 401);
    let good = format!("Bearer {token}");
    let (st, body) = http(
        addr,
        "/v1/vms",
        &[("Host", &host), ("Authorization", &good)],
    );
    assert_eq!(st, 200, "{body}");
    // With the token, another host name is fine (a non-loopback listener is
    // reached by name); another site's page still is not.
    let named = format!("vmhost.example:{}", addr.port());
    let (st, _) = http(
        addr,
        "/v1/vms",
        &[("Host", &named), ("Authorization", &good)],
    );
    assert_eq!(st, 200);
    let (st, _) = http(
        addr,
        "/v1/vms",
        &[
            ("Host", &host),
            ("Authorization", &good),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(st, 403);
    // A browser: /?token= sets the cookie, which then lets the page in.
    let (st, head) = http(addr, &format!("/?token={token}"), &[("Host", &host)]);
    assert_eq!(st, 303, "{head}");
    assert!(
        head.contains("hako_token=") && head.contains("HttpOnly"),
        "{head}"
    );
    let (st, _) = http(addr, "/?token=nope", &[("Host", &host)]);
    assert_eq!(st, 401);
    let cookie = format!("hako_token={token}");
    let (st, page) = http(addr, "/", &[("Host", &host), ("Cookie", &cookie)]);
    assert_eq!(st, 200, "{page}");
}
