//! The guest of the snapshot and migration tests (guests/migrate.c) run in the
//! background with an API socket, and the checks of its output and memory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{accel_flags, hako, kvm_usable};

pub const MB: u64 = 24;
pub const FIRST_PAGE: u64 = 4 << 20;

/// The accelerators a snapshot is taken and restored on here (the interpreter is
/// the same CPU model as `emu` and adds nothing to a state test).
pub fn accels() -> Vec<&'static str> {
    let mut v = vec!["emu"];
    if kvm_usable() {
        v.push("kvm");
    }
    v
}

/// A `hako run` in the background with an API socket, its console in a file.
pub struct Vm {
    pub child: Child,
    pub out: PathBuf,
    pub sock: PathBuf,
}

impl Vm {
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Vm {
        let out = dir.join(format!("{name}.out"));
        let sock = dir.join(format!("{name}.sock"));
        let child = hako()
            .arg("run")
            .args(args)
            .arg("--api-socket")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .expect("spawn hako");
        Vm { child, out, sock }
    }

    pub fn boot(dir: &Path, name: &str, accel: &str) -> Vm {
        Vm::boot_with(dir, name, accel, "")
    }

    /// Like [`Vm::boot`], with more of the guest's command line (`spin=0`: it
    /// rewrites its pages without a pause).
    pub fn boot_with(dir: &Path, name: &str, accel: &str, extra: &str) -> Vm {
        let elf = test_guests::build("migrate").expect("build guests/migrate.c");
        let cmdline = format!("mb={MB} {extra}");
        // Portable: the same CPU on both accelerators, so the VM can move between them.
        let mut args = vec![
            "--kernel",
            elf.to_str().unwrap(),
            "--memory",
            "64M",
            "--cpu",
            "portable",
        ];
        args.extend(["--cmdline", &cmdline]);
        args.extend(accel_flags(accel));
        Vm::start(dir, name, &args)
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.out.with_extension("err")).unwrap_or_default()
    }

    /// Waits (bounded) until the guest has printed `n` more passes than `after`.
    pub fn wait_passes(&mut self, n: usize) -> Vec<(u64, u64)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = passes(&self.output());
            if p.len() >= n {
                return p;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "hako exited ({st}) early:\n{}\n{}",
                    self.output(),
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "no progress:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        // The socket appears once the VM is built.
        super::wait_for_path(&self.sock);
        hako()
            .args(["ctl", "--api-socket", self.sock.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "hako ctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.stderr()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Waits (bounded) for the process to end; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "hako did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (pass, sum) of every `migrate: pass P sum S` line.
pub fn passes(out: &str) -> Vec<(u64, u64)> {
    // Only whole lines: the guest may be stopped (or cut over) in the middle of one.
    out.split_inclusive('\n')
        .filter_map(|l| {
            let rest = l.strip_suffix('\n')?.strip_prefix("migrate: pass ")?;
            let (p, s) = rest.split_once(" sum ")?;
            Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
        })
        .collect()
}

pub fn pages() -> u64 {
    ((MB << 20) - FIRST_PAGE) / 4096
}

/// The passes a VM printed after taking over from one that printed `before_out`
/// (a restore or a migration): they go on from the last whole pass there with no
/// gap, with the right sums. The cut may fall inside a line the guest was
/// printing, so the two outputs are read as one.
pub fn continued_passes(what: &str, before_out: &str, after_out: &str) -> Vec<(u64, u64)> {
    let before = passes(before_out);
    let last = before.last().expect("passes before the cut").0;
    let after = passes(&(before_out.to_string() + after_out)).split_off(before.len());
    let got: Vec<u64> = after.iter().map(|p| p.0).collect();
    let expect: Vec<u64> = (last + 1..).take(got.len()).collect();
    assert!(
        !got.is_empty() && got == expect,
        "{what}: the passes do not continue from {last}: {got:?}\nbefore:\n{before_out}\nafter:\n{after_out}"
    );
    check_sums(&after);
    after
}

/// Every pass line holds the sum the guest's pages must give.
pub fn check_sums(p: &[(u64, u64)]) {
    for &(pass, sum) in p {
        assert_eq!(sum, pages() * (pass % 256), "pass {pass}: wrong sum");
    }
}

/// The page pattern of a VM stopped mid-pass, `last` being the last printed pass.
pub fn check_memory(mem: &[u8], last: u64) {
    let bytes: Vec<u8> = (0..pages())
        .map(|i| mem[(FIRST_PAGE + i * 4096) as usize])
        .collect();
    let lo = (last % 256) as u8;
    let hi = lo.wrapping_add(1);
    let mut drops = 0;
    for w in bytes.windows(2) {
        if w[0] != w[1] {
            assert_eq!(w[0], w[1].wrapping_add(1), "pages out of order: {w:?}");
            drops += 1;
        }
    }
    assert!(drops <= 1, "{drops} edges in the page pattern");
    assert!(
        [lo, hi].contains(&bytes[0]) && [lo, hi].contains(&bytes[bytes.len() - 1]),
        "pages hold {}..{}, last printed pass {last}",
        bytes[0],
        bytes[bytes.len() - 1]
    );
}
