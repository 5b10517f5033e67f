//! An in-process daemon for the API tests: on a thread of its own, with
//! `/bin/false` as its `hako` (every start fails at once: no VM runs in these
//! tests), ended when dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use control_api::client::{request, Response};
use serde_json::{json, Value};

pub struct Daemon {
    pub sock: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<hakod::Result<()>>>,
}

impl Daemon {
    /// A daemon on `dir/hako.sock` with its state in `dir/state` (and, with
    /// `http`, a TCP listener there).
    pub fn start(dir: &Path, http: Option<SocketAddr>) -> Daemon {
        Daemon::start_with(dir, http, None)
    }

    /// [`Daemon::start`] with a token file for the TCP listener.
    pub fn start_with(dir: &Path, http: Option<SocketAddr>, http_token: Option<PathBuf>) -> Daemon {
        let sock = dir.join("hako.sock");
        let opts = hakod::Options {
            socket: sock.clone(),
            state_dir: dir.join("state"),
            exe: PathBuf::from("/bin/false"),
            http,
            http_token,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(hakod::server::serve(opts, async {
                let _ = rx.await;
            }))
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon {
            sock,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn req(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        request(
            &self.sock,
            method,
            path,
            body.as_ref(),
            Duration::from_secs(30),
        )
        .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

/// A definition whose start fails (its kernel does not exist).
pub fn def(name: &str) -> Value {
    json!({"name": name, "config": {"kernel": "/nonexistent/kernel", "memory": "64M", "accel": "emu"}})
}

/// A TCP port nobody listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
