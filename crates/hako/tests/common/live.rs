//! A `hako run` of the default guest in the background whose console the test
//! reads while it runs (to talk to the guest over the network in the middle).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{base64, default_guest, hako};

pub struct Live {
    pub child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

fn drain(mut r: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

impl Live {
    /// Boots the default guest on `emu` running `script`, with `extra` flags (and
    /// 512 MiB unless they say `--memory`),
    /// `cmdline_extra` appended to the kernel command line, and `wrap` (e.g.
    /// `ip netns exec NS`) in front of the command.
    pub fn boot(script: &str, extra: &[&str], cmdline_extra: &str, wrap: &[&str]) -> Live {
        let (kernel, initrd) = default_guest();
        let cmdline = format!(
            "console=ttyS0 quiet {cmdline_extra} hako.cmd={}",
            base64(script.as_bytes())
        );
        let h = hako();
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(h.get_program());
                c
            }
            None => h,
        };
        cmd.args(["run", "--accel", "emu", "--cmdline", &cmdline])
            .args(
                (!extra.contains(&"--memory"))
                    .then_some(["--memory", "512M"])
                    .into_iter()
                    .flatten(),
            )
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .args(extra);
        Live::spawn(cmd)
    }

    /// Runs `cmd` (a `hako` command line) with its console captured.
    pub fn spawn(mut cmd: Command) -> Live {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hako");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        drain(child.stdout.take().unwrap(), out.clone());
        drain(child.stderr.take().unwrap(), err.clone());
        Live { child, out, err }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until the console shows a whole line with `text`;
    /// panics with the console otherwise, or if hako exits first.
    pub fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let o = self.output();
            // The whole line: the guest may be in the middle of printing it.
            if o.find(text).is_some_and(|i| o[i..].contains('\n')) {
                return o;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "hako exited ({st}) before {text:?}:\n{}\nstderr:\n{}",
                    self.output(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} within {limit:?}:\n{o}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `limit`) for hako to exit; its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("hako did not exit within {limit:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value printed after `key` on a console line (`key VALUE`).
pub fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.trim_end().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"))
        .trim()
        .to_string()
}
