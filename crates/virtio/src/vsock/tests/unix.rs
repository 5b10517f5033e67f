//! The Unix-socket host side with its real thread: the listener, `CONNECT`,
//! connections to `PATH_<port>`, and cleaning up. The test plays the driver
//! and runs the device whenever it looks (the waker only counts here).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::vsock::packet::shutdown;

/// A device over a host side listening on `dir/v.sock`; and the waker's count.
fn listening(dir: &TempDir) -> (Guest, PathBuf, Arc<AtomicUsize>) {
    let path = dir.path().join("v.sock");
    let waker = RxWaker::new();
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    waker.set(Arc::new(move || {
        c.fetch_add(1, Ordering::Relaxed);
    }));
    let host = VsockHost::listen(&path, waker).unwrap();
    (with_host(host), path, n)
}

/// Runs the device until `want` says the packets so far are enough (10 s at most).
fn until(g: &mut Guest, mut want: impl FnMut(&[(Hdr, Vec<u8>)]) -> bool) -> Vec<(Hdr, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    loop {
        all.extend(g.exchange());
        if want(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "gave up waiting; got {all:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn host_program_connects_to_a_guest_port() {
    let dir = TempDir::new();
    let (mut g, path, woken) = listening(&dir);
    let mut host = UnixStream::connect(&path).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    host.write_all(b"CONNECT 5000\nhello").unwrap();
    let p = until(&mut g, |p| p.iter().any(|x| x.0.op == op::REQUEST));
    assert!(
        woken.load(Ordering::Relaxed) > 0,
        "the thread woke the device"
    );
    let req = p[0].0;
    assert_eq!(req.dst_port, 5000);
    g.send(hdr(op::RESPONSE, 5000, req.src_port), &[]);
    assert_eq!(read_line(&mut host), format!("OK {}", req.src_port));
    let p = until(&mut g, |p| p.iter().map(|x| x.1.len()).sum::<usize>() >= 5);
    assert_eq!(p[0].1, b"hello");
    g.send(hdr(op::RW, 5000, req.src_port), b"world");
    let mut b = [0u8; 5];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"world");
    // The host half-closes: the guest hears SHUTDOWN(SEND), closes, gets its RST.
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let p = until(&mut g, |p| p.iter().any(|x| x.0.op == op::SHUTDOWN));
    assert_eq!(p.last().unwrap().0.flags, shutdown::SEND);
    g.send(
        Hdr {
            flags: shutdown::BOTH,
            ..hdr(op::SHUTDOWN, 5000, req.src_port)
        },
        &[],
    );
    until(&mut g, |p| p.iter().any(|x| x.0.op == op::RST));
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the flush");
}

#[test]
fn a_refused_host_program_is_disconnected() {
    let dir = TempDir::new();
    let (mut g, path, _) = listening(&dir);
    let mut host = UnixStream::connect(&path).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    host.write_all(b"CONNECT 5001\n").unwrap();
    let p = until(&mut g, |p| !p.is_empty());
    g.send(hdr(op::RST, 5001, p[0].0.src_port), &[]);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // A line that is not a request is refused too.
    let mut bad = UnixStream::connect(&path).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    assert_eq!(bad.read(&mut [0u8; 8]).unwrap(), 0);
}

#[test]
fn guest_connects_to_path_port() {
    let dir = TempDir::new();
    let (mut g, path, _) = listening(&dir);
    let listener = UnixListener::bind(format!("{}_6000", path.display())).unwrap();
    g.send(hdr(op::REQUEST, 1234, 6000), &[]);
    let p = until(&mut g, |p| !p.is_empty());
    assert_eq!(Guest::ops(&p), vec![op::RESPONSE]);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    // More than our buffer: the guest waits for credit updates as it would.
    let mut sent = 0;
    let mut fwd = 0u32;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < up.len() {
        let room = CONN_BUF as u32 - (sent as u32 - fwd);
        let n = (room as usize).min(up.len() - sent).min(MAX_PKT_PAYLOAD);
        if n > 0 {
            g.send(hdr(op::RW, 1234, 6000), &up[sent..sent + n]);
            sent += n;
        }
        let mut b = [0u8; 65536];
        let k = match s.read(&mut b) {
            Ok(k) => k,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                0
            }
            Err(e) => panic!("{e}"),
        };
        got.extend_from_slice(&b[..k]);
        for (h, _) in g.exchange() {
            if h.op == op::CREDIT_UPDATE {
                fwd = h.fwd_cnt;
            }
        }
        assert!(
            Instant::now() < deadline,
            "stalled at {} of {}",
            got.len(),
            up.len()
        );
    }
    assert_eq!(got, up);
    s.write_all(b"reply").unwrap();
    drop(s);
    let p = until(&mut g, |p| p.iter().any(|x| x.0.op == op::SHUTDOWN));
    let data: Vec<u8> = p.iter().flat_map(|x| x.1.clone()).collect();
    assert_eq!(data, b"reply");
}

#[test]
fn guest_connection_to_nothing_is_reset() {
    let dir = TempDir::new();
    let (mut g, _path, _) = listening(&dir);
    g.send(hdr(op::REQUEST, 1234, 6001), &[]);
    let p = until(&mut g, |p| !p.is_empty());
    assert_eq!(Guest::ops(&p), vec![op::RST]);
    assert_eq!(g.dev.device().connections(), 0);
}

#[test]
fn the_socket_is_checked_replaced_and_removed() {
    let dir = TempDir::new();
    let path = dir.path().join("v.sock");
    std::fs::write(&path, b"data").unwrap();
    let e = VsockHost::listen(&path, RxWaker::new()).err().unwrap();
    assert!(matches!(e, VsockError::NotASocket(_)), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data", "left alone");
    std::fs::remove_file(&path).unwrap();

    // A stale socket (nobody listens) is replaced; a live one is not.
    drop(UnixListener::bind(&path).unwrap());
    let host = VsockHost::listen(&path, RxWaker::new()).unwrap();
    let e = VsockHost::listen(&path, RxWaker::new()).err().unwrap();
    assert!(matches!(e, VsockError::InUse(_)), "{e}");
    let dev = Vsock::new(CID, host.clone()).unwrap();
    drop(host);
    assert!(path.exists(), "the device still holds it");
    drop(dev);
    assert!(!path.exists(), "removed with the last handle");
}
