//! A `hako daemon` in a temporary directory for the daemon tests, the verbs run
//! against it, and the checks of its VMs' processes.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use control_api::client::{request, Response};
use serde_json::Value;

/// A daemon process (ended with SIGKILL when dropped, and every VM it ran with it).
pub struct Daemon {
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub state: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// More arguments of `hako daemon` (e.g. `--http`).
    extra: Vec<String>,
}

pub fn hako_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hako")
}

impl Daemon {
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, &[])
    }

    /// A daemon with more arguments (kept for its restarts).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Daemon {
        fs::create_dir_all(dir).unwrap();
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            sock: dir.join("hako.sock"),
            state: dir.join("state"),
            child: None,
            starts: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.restart();
        d
    }

    /// Starts the daemon process (again), its output in `daemon-N.log`, and waits
    /// for its socket.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon runs already");
        self.starts += 1;
        let log = fs::File::create(self.dir.join(format!("daemon-{}.log", self.starts))).unwrap();
        let child = Command::new(hako_bin())
            .arg("daemon")
            .arg("--socket")
            .arg(&self.sock)
            .arg("--state-dir")
            .arg(&self.state)
            .args(&self.extra)
            .env("HAKO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn hako daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.sock).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the daemon exited ({st}):\n{}", self.daemon_log());
            }
            assert!(Instant::now() < deadline, "the daemon did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address of `--http` (from the daemon's `web console on http://ADDR/`).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.daemon_log();
            if let Some(a) = log
                .lines()
                .find_map(|l| l.split("web console on http://").nth(1))
                .and_then(|r| r.trim_end_matches('/').parse().ok())
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon said no HTTP address:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A console WebSocket on `name` over the Unix socket (`query`: "" or
    /// "?mode=rw"), with a read timeout of `read_timeout`.
    pub fn console_ws(
        &self,
        name: &str,
        query: &str,
        read_timeout: Duration,
    ) -> tungstenite::WebSocket<std::os::unix::net::UnixStream> {
        use tungstenite::client::IntoClientRequest;
        let s = std::os::unix::net::UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(read_timeout)).unwrap();
        let req = format!("ws://localhost/v1/vms/{name}/console{query}")
            .into_client_request()
            .unwrap();
        match tungstenite::client::client(req, s) {
            Ok((ws, _)) => ws,
            Err(e) => panic!("console of {name}: {e}"),
        }
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.join(format!("daemon-{}.log", self.starts))).unwrap_or_default()
    }

    /// SIGKILL to the daemon (its VMs go on).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `hako ARGS` against this daemon (through HAKO_SOCKET).
    pub fn hako(&self, args: &[&str]) -> Output {
        Command::new(hako_bin())
            .args(args)
            .env("HAKO_SOCKET", &self.sock)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `hako ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.hako(args);
        assert!(
            o.status.success(),
            "hako {args:?} failed: {}\n{}\ndaemon:\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout),
            self.daemon_log()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `hako ARGS`, which must fail; its one-line error.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.hako(args);
        assert!(!o.status.success(), "hako {args:?} succeeded");
        String::from_utf8(o.stderr).unwrap().trim().to_string()
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        request(&self.sock, method, path, body, Duration::from_secs(120)).unwrap()
    }

    /// `GET /v1/vms/NAME`'s `status`.
    pub fn status(&self, name: &str) -> Value {
        let r = self.api("GET", &format!("/v1/vms/{name}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json().unwrap()["status"].clone()
    }

    /// Waits (at most `limit`) until `pred` holds for the VM's status; returns it.
    pub fn wait_status(&self, name: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.status(name);
            if pred(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: still {st} after {limit:?}\nlog:\n{}\ndaemon:\n{}",
                self.log(name),
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The VM's console buffer.
    pub fn log(&self, name: &str) -> String {
        self.api("GET", &format!("/v1/vms/{name}/log"), None).body
    }

    /// Waits (at most `limit`) until the VM's console holds `needle`.
    pub fn wait_log(&self, name: &str, needle: &str, limit: Duration) -> String {
        self.wait_log_n(name, needle, 1, limit)
    }

    /// Waits (at most `limit`) until the VM's console holds `needle` `n` times.
    pub fn wait_log_n(&self, name: &str, needle: &str, n: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log(name);
            if log.matches(needle).count() >= n {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no {needle:?} in its log after {limit:?}:\n{log}\ndaemon:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn api_socket(&self, name: &str) -> PathBuf {
        self.state.join("run").join(format!("{name}.api"))
    }

    /// The pids of live `hako run` processes serving `name`'s API socket.
    pub fn vm_processes(&self, name: &str) -> Vec<u32> {
        let sock = fs::canonicalize(&self.state)
            .unwrap()
            .join("run")
            .join(format!("{name}.api"));
        let sock = sock.to_string_lossy().into_owned();
        let mut pids = vec![];
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmd
                .split(|&c| c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if !zombie
                && args.iter().any(|a| a == "run")
                && args
                    .windows(2)
                    .any(|w| w[0] == "--api-socket" && w[1] == sock)
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Every VM process of this state directory.
    fn all_vm_processes(&self) -> Vec<u32> {
        let Ok(dir) = fs::read_dir(self.state.join("vms")) else {
            return vec![];
        };
        dir.flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .flat_map(|n| self.vm_processes(&n))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        for pid in self.all_vm_processes() {
            kill9(pid);
        }
    }
}

pub fn kill9(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}

/// The tiny guest that runs until stopped: guests/migrate.c, printing a
/// `migrate: pass N` line about five times a second.
pub fn forever_guest() -> PathBuf {
    test_guests::build("migrate").expect("build guests/migrate.c")
}

/// A definition of the tiny guest on `emu`.
pub fn tiny_definition(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "config": {
            "kernel": forever_guest(),
            "memory": "64M",
            "cmdline": "mb=5 spin=200000000",
            "accel": "emu",
            "cpu": "portable",
        }
    })
}

/// The guest that echoes its serial input in upper case: guests/echo.c (a '.'
/// resets it: keep dots out of its input).
pub fn echo_definition(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "config": {
            "kernel": test_guests::build("echo").expect("build guests/echo.c"),
            "memory": "64M",
            "accel": "emu",
            "cpu": "portable",
        }
    })
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: u64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The number of `migrate: pass` lines in a console.
pub fn passes(log: &str) -> usize {
    log.lines()
        .filter(|l| l.starts_with("migrate: pass "))
        .count()
}
