//! virtio-net end to end with the Debian guest on emu: user-mode networking
//! (DHCP, the built-in DNS name, NAT to a server on the host's loopback, a host
//! forward into the guest), two VMs wired by a stream socket, and a TAP in a
//! network namespace the test makes. All traffic stays on this machine.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::free_port;
use common::live::{field, Live};
use sha2::{Digest, Sha256};

const BOOT: Duration = Duration::from_secs(120);

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes that differ from run to run (so a cached answer cannot pass).
fn blob(n: usize) -> Vec<u8> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An HTTP/1.0 server on 127.0.0.1 serving `body` to at most `max` requests,
/// for at most a minute.
fn http_server(body: Vec<u8>, max: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < max && Instant::now() < deadline {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
            served += 1;
        }
    });
    port
}

/// Reads what a guest serves on `addr` with `nc -l` (retrying while it is not
/// listening yet: the connection then closes at once with nothing).
fn fetch_from_guest(connect: impl Fn() -> std::io::Result<TcpStream>, want: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = connect() {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            if got.len() >= want {
                return got;
            }
        }
        assert!(Instant::now() < deadline, "the guest never served its file");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn user_networking_gives_dhcp_dns_nat_and_host_forwards() {
    let body = blob(256 << 10);
    let port = http_server(body.clone(), 4);
    let fwd = free_port();
    let script = format!(
        "cat /etc/resolv.conf\n\
         echo \"dns $(nslookup host.hako.internal 2>/dev/null | tail -n +3 | sed -n 's/^Address[ :0-9]*: *\\([0-9.]*\\).*/\\1/p' | head -1)\"\n\
         wget -q -O /tmp/f http://10.0.2.2:{port}/blob && echo \"fetched $(sha256sum /tmp/f | cut -d' ' -f1)\"\n\
         wget -q -O /tmp/h http://host.hako.internal:{port}/blob && echo \"by-name $(sha256sum /tmp/h | cut -d' ' -f1)\"\n\
         head -c 300000 /dev/urandom > /tmp/g\n\
         echo \"serving $(sha256sum /tmp/g | cut -d' ' -f1)\"\n\
         nc -l -p 8080 < /tmp/g\n\
         echo served\n"
    );
    let mut vm = Live::boot(
        &script,
        &["--net", &format!("user,hostfwd=tcp:127.0.0.1:{fwd}-:8080")],
        "",
        &[],
    );
    let out = vm.wait_for("serving ", BOOT);
    // DHCP gave the QEMU-convention address and DNS server.
    assert!(out.contains("hako-guest: eth0 10.0.2.15"), "{out}");
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");
    // The built-in DNS answers for the host's name.
    assert_eq!(field(&out, "dns "), "10.0.2.2", "{out}");
    // NAT: the guest reached a server on the host's 127.0.0.1 through 10.0.2.2.
    assert_eq!(field(&out, "fetched "), sha256(&body), "{out}");
    assert_eq!(field(&out, "by-name "), sha256(&body), "{out}");
    // The host forward reaches the guest's listener.
    let want = field(&out, "serving ");
    let got = fetch_from_guest(|| TcpStream::connect(("127.0.0.1", fwd)), 300000);
    assert_eq!(sha256(&got), want);
    vm.wait_for("served", BOOT);
    assert_eq!(vm.wait_exit(BOOT), Some(0));
}

#[test]
fn two_vms_wired_by_a_stream_socket_exchange_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("wire.sock");
    let server = Live::boot(
        "ifconfig eth0 192.168.77.1 netmask 255.255.255.0 up\n\
         head -c 500000 /dev/urandom > /tmp/g\n\
         echo \"serving $(sha256sum /tmp/g | cut -d' ' -f1)\"\n\
         nc -l -p 9000 < /tmp/g\n\
         echo served\n",
        &[
            "--net",
            &format!("stream,path={},server=on", sock.display()),
        ],
        "hako.dhcp=off",
        &[],
    );
    common::wait_for_path(&sock);
    let mut client = Live::boot(
        "ifconfig eth0 192.168.77.2 netmask 255.255.255.0 up\n\
         n=0\n\
         while [ $n -lt 60 ]; do\n\
           timeout 30 nc 192.168.77.1 9000 > /tmp/f\n\
           [ -s /tmp/f ] && break\n\
           n=$((n+1)); sleep 0.5\n\
         done\n\
         echo \"received $(sha256sum /tmp/f | cut -d' ' -f1) $(wc -c < /tmp/f)\"\n",
        &["--net", &format!("stream,path={}", sock.display())],
        "hako.dhcp=off",
        &[],
    );
    let mut server = server;
    let sent = field(&server.wait_for("serving ", BOOT), "serving ");
    let out = client.wait_for("received ", BOOT);
    assert_eq!(field(&out, "received "), format!("{sent} 500000"), "{out}");
    assert_eq!(client.wait_exit(BOOT), Some(0));
    server.wait_for("served", BOOT);
    assert_eq!(server.wait_exit(BOOT), Some(0));
}

/// A network namespace the test made, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Option<Netns> {
        let name = format!("hako-test-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Netns(name))
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn tap_in_a_test_namespace_carries_ping_and_tcp_both_ways() {
    let Some(ns) = Netns::new() else {
        eprintln!("skipped: cannot create a network namespace here (needs root)");
        return;
    };
    let mut vm = Live::boot(
        "ifconfig eth0 192.168.79.2 netmask 255.255.255.0 up\n\
         n=0; until ping -c 1 -W 1 192.168.79.1 >/dev/null 2>&1 || [ $n -ge 60 ]; do n=$((n+1)); sleep 0.5; done\n\
         ping -c 2 -W 2 192.168.79.1 >/dev/null && echo guest-pinged-host\n\
         head -c 2000000 /dev/urandom > /tmp/g\n\
         echo \"serving $(sha256sum /tmp/g | cut -d' ' -f1)\"\n\
         nc -l -p 9000 < /tmp/g\n\
         echo served\n",
        &["--net", "tap,ifname=hktap0"],
        "hako.dhcp=off",
        &["ip", "netns", "exec", &ns.0],
    );
    // The TAP appears once hako opened it: give the host side its address.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ns.run(&["ip", "link", "show", "hktap0"]).status.success() {
        assert!(Instant::now() < deadline, "no hktap0:\n{}", vm.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ns
        .run(&["ip", "addr", "add", "192.168.79.1/24", "dev", "hktap0"])
        .status
        .success());
    assert!(ns
        .run(&["ip", "link", "set", "hktap0", "up"])
        .status
        .success());
    let out = vm.wait_for("serving ", BOOT);
    assert!(out.contains("guest-pinged-host"), "{out}");
    let ping = ns.run(&["ping", "-c", "2", "-W", "2", "192.168.79.2"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // A TCP transfer large enough for segmentation offloads.
    let want = field(&out, "serving ");
    let py = "import socket,sys,hashlib\n\
              s=socket.create_connection(('192.168.79.2',9000),timeout=20)\n\
              d=b''\n\
              while True:\n\
              \x20   x=s.recv(65536)\n\
              \x20   if not x: break\n\
              \x20   d+=x\n\
              print(len(d), hashlib.sha256(d).hexdigest())\n";
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let o = ns.run(&["python3", "-c", py]);
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if s.starts_with("2000000 ") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no transfer: {s}\n{}",
            vm.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(got, format!("2000000 {want}"));
    vm.wait_for("served", BOOT);
    assert_eq!(vm.wait_exit(BOOT), Some(0));
}
