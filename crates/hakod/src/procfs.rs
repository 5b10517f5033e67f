//! What /proc says about a VM process the daemon did not start itself (one that
//! outlived an earlier daemon): whether it still runs, whether it is the `hako run`
//! of that VM, and since when; and whether a TCP port has a listener.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// The arguments of process `pid` (empty if it is gone or unreadable).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| parse_cmdline(&b))
        .unwrap_or_default()
}

fn parse_cmdline(b: &[u8]) -> Vec<String> {
    b.split(|&c| c == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Whether `args` is a `hako run` serving its API on `api_socket`: the command
/// line the daemon gives each VM, and only that VM's (the socket path is unique).
pub fn is_vm_command(args: &[String], api_socket: &Path) -> bool {
    let sock = api_socket.to_string_lossy();
    args.iter().skip(1).any(|a| a == "run")
        && args
            .windows(2)
            .any(|w| w[0] == "--api-socket" && w[1] == *sock)
}

/// Whether `pid` is (still) the `hako run` of the VM whose API is `api_socket`.
/// A zombie counts as gone: it has ended and only waits to be reaped.
pub fn is_vm_process(pid: u32, api_socket: &Path) -> bool {
    if state(pid) == Some('Z') {
        return false;
    }
    is_vm_command(&cmdline(pid), api_socket)
}

/// The live `hako run` of the VM whose API is `api_socket`, found by its command
/// line among all processes: for a VM whose pid file a daemon killed at the wrong
/// moment never wrote (between starting the process and recording its pid).
pub fn find_vm_process(api_socket: &Path) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| is_vm_process(pid, api_socket))
}

/// The state letter of `/proc/PID/stat` (R, S, Z, ...).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).first()?.chars().next()
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces
/// and parentheses: it ends at the last ')'), so field 3 (state) comes first.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// When process `pid` started, from its start time in clock ticks since boot
/// (`/proc/PID/stat` field 22) and the boot time (`btime` in /proc/stat).
pub fn start_time(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks: u64 = stat_fields(&stat).get(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    let since_boot = Duration::from_millis(ticks * 1000 / hz);
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(btime) + since_boot)
}

/// Whether a socket of this network namespace listens on TCP `port` (IPv4 or
/// IPv6), from /proc/net/tcp and tcp6: how the daemon sees that an incoming
/// migration waits, without taking the one connection it accepts.
pub fn tcp_listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| listening_in(&t, port)))
}

/// Whether the table (the text of /proc/net/tcp) has a LISTEN (0A) socket on `port`.
fn listening_in(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        let state = f.nth(1).unwrap_or("");
        state == "0A"
            && local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_vm_command_line() {
        let args = parse_cmdline(
            b"/usr/bin/hako\0run\0--config\0/s/run/a.config.json\0--api-socket\0/s/run/a.api\0",
        );
        assert!(is_vm_command(&args, Path::new("/s/run/a.api")));
        assert!(!is_vm_command(&args, Path::new("/s/run/b.api")));
        let other = parse_cmdline(b"/bin/sleep\0--api-socket\0/s/run/a.api\0");
        assert!(!is_vm_command(&other, Path::new("/s/run/a.api")));
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(!cmdline(me).is_empty());
        assert!(state(me).is_some_and(|s| s != 'Z'));
        let started = start_time(me).unwrap();
        let age = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(3600), "{age:?}");
        assert!(!is_vm_process(me, Path::new("/nowhere.api")));
        assert!(cmdline(u32::MAX).is_empty());
    }

    #[test]
    fn stat_with_odd_command_names() {
        let f = stat_fields("42 (a b) c) S 1 2");
        assert_eq!(f, ["S", "1", "2"]);
    }

    #[test]
    fn listening_sockets_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n";
        assert!(listening_in(table, 8080));
        assert!(!listening_in(table, 8081), "established, not listening");
        assert!(!listening_in(table, 80));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(tcp_listening(l.local_addr().unwrap().port()));
    }
}
