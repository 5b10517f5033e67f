//! The stream backend (QEMU's `-netdev stream` framing) against itself and against
//! a raw Unix socket peer speaking the 4-byte big-endian length prefix.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use net::{Backend, NetBackend, NetSpec};

const WAIT: Duration = Duration::from_secs(5);

fn open(
    path: &Path,
    server: bool,
) -> Result<(Box<dyn NetBackend>, std::sync::mpsc::Receiver<()>), String> {
    let (w, wakes) = waker();
    let spec = NetSpec {
        backend: Backend::Stream {
            path: path.to_path_buf(),
            server,
        },
        mac: None,
    };
    net::open(&spec, w)
        .map(|b| (b, wakes))
        .map_err(|e| e.to_string())
}

/// A recognisable Ethernet frame of `len` bytes numbered `n`.
fn frame(n: u16, len: usize) -> Vec<u8> {
    let mut f = eth(BROADCAST, GUEST_MAC, 0x88b5, &vec![0u8; len - 14]);
    f[14..16].copy_from_slice(&n.to_be_bytes());
    for (i, b) in f[16..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// The next frame the backend receives, waiting for wakes up to `WAIT`.
fn next(b: &mut dyn NetBackend, wakes: &std::sync::mpsc::Receiver<()>) -> Option<Vec<u8>> {
    wait_for(b, wakes, WAIT, 0, |_| true, ignore).map(|(f, _)| f)
}

/// Sends `f` until the backend takes it (a server has no peer until it accepts).
fn send_when_connected(b: &mut dyn NetBackend, f: &[u8]) {
    let deadline = Instant::now() + WAIT;
    while !b.send(f).unwrap() {
        assert!(
            Instant::now() < deadline,
            "the backend never took the frame"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn write_prefixed(s: &mut UnixStream, f: &[u8]) {
    s.write_all(&(f.len() as u32).to_be_bytes()).unwrap();
    s.write_all(f).unwrap();
}

fn read_prefixed(s: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut f).unwrap();
    f
}

/// Connects to a server backend's socket once it exists.
fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

#[test]
fn two_backends_exchange_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.sock");
    let (mut server, server_wakes) = open(&path, true).unwrap();
    let (mut client, client_wakes) = open(&path, false).unwrap();
    assert_eq!(server.offloads(), net::Offloads::default());
    assert!(
        server.describe().contains("server on"),
        "{}",
        server.describe()
    );
    assert!(
        client.describe().contains("client of"),
        "{}",
        client.describe()
    );
    // The client is connected from `open` on.
    assert!(client.send(&frame(1, 60)).unwrap());
    assert_eq!(next(&mut *server, &server_wakes), Some(frame(1, 60)));
    for (n, len) in [(2, 1514), (3, 9000), (4, 16), (5, 65000)] {
        assert!(server.send(&frame(n, len)).unwrap());
        assert_eq!(
            next(&mut *client, &client_wakes),
            Some(frame(n, len)),
            "frame {n}"
        );
    }
    // Frames the guest had no room for come back first.
    assert!(client.send(&frame(6, 100)).unwrap());
    assert!(client.send(&frame(7, 100)).unwrap());
    let six = next(&mut *server, &server_wakes).unwrap();
    server.unrecv(six.clone());
    assert_eq!(next(&mut *server, &server_wakes), Some(six));
    assert_eq!(next(&mut *server, &server_wakes), Some(frame(7, 100)));
    drop(client);
    drop(server);
    assert!(!path.exists(), "the server removes its socket");
}

#[test]
fn a_raw_peer_sees_exactly_the_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (mut b, wakes) = open(&path, true).unwrap();
    let mut peer = connect(&path);
    // Peer to backend: several frames in one write, and one split across writes.
    let mut burst = Vec::new();
    for n in 0..3 {
        let f = frame(n, 64 + usize::from(n));
        burst.extend_from_slice(&(f.len() as u32).to_be_bytes());
        burst.extend_from_slice(&f);
    }
    peer.write_all(&burst).unwrap();
    for n in 0..3 {
        assert_eq!(next(&mut *b, &wakes), Some(frame(n, 64 + usize::from(n))));
    }
    let f = frame(9, 1000);
    let mut msg = (f.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&f);
    peer.write_all(&msg[..2]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    peer.write_all(&msg[2..500]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(b.recv(), None, "half a frame is not a frame");
    peer.write_all(&msg[500..]).unwrap();
    assert_eq!(next(&mut *b, &wakes), Some(f));
    // Backend to peer: each frame prefixed by its big-endian length, nothing else.
    send_when_connected(&mut *b, &frame(20, 60));
    assert!(b.send(&frame(21, 1514)).unwrap());
    assert_eq!(read_prefixed(&mut peer), frame(20, 60));
    assert_eq!(read_prefixed(&mut peer), frame(21, 1514));
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut extra = [0u8; 1];
    let e = peer.read(&mut extra).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
}

#[test]
fn a_client_backend_speaks_to_a_raw_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let (mut b, wakes) = open(&path, false).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    assert!(b.send(&frame(1, 60)).unwrap());
    assert_eq!(read_prefixed(&mut peer), frame(1, 60));
    write_prefixed(&mut peer, &frame(2, 70));
    assert_eq!(next(&mut *b, &wakes), Some(frame(2, 70)));
}

#[test]
fn a_bad_length_closes_that_peer_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (mut b, wakes) = open(&path, true).unwrap();
    for bad in [
        0u32,
        0xffff_ffff,
        (net::stream::MAX_STREAM_FRAME + 1) as u32,
    ] {
        let mut peer = connect(&path);
        // A good frame first, then garbage.
        write_prefixed(&mut peer, &frame(1, 60));
        assert_eq!(next(&mut *b, &wakes), Some(frame(1, 60)));
        let mut garbage = bad.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xaa; 64]);
        peer.write_all(&garbage).unwrap();
        let mut buf = [0u8; 16];
        match peer.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("length {bad:#x}: the backend kept the connection ({other:?})"),
        }
        assert_eq!(
            b.recv(),
            None,
            "length {bad:#x}: nothing of the garbage is a frame"
        );
    }
    // The backend still serves the next peer, in both directions.
    let mut peer = connect(&path);
    write_prefixed(&mut peer, &frame(2, 60));
    assert_eq!(next(&mut *b, &wakes), Some(frame(2, 60)));
    send_when_connected(&mut *b, &frame(3, 60));
    assert_eq!(read_prefixed(&mut peer), frame(3, 60));
}

#[test]
fn a_new_peer_replaces_a_gone_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (mut b, wakes) = open(&path, true).unwrap();
    for n in 0..3 {
        let mut peer = connect(&path);
        write_prefixed(&mut peer, &frame(n, 60));
        assert_eq!(next(&mut *b, &wakes), Some(frame(n, 60)));
        send_when_connected(&mut *b, &frame(100 + n, 60));
        assert_eq!(read_prefixed(&mut peer), frame(100 + n, 60));
    }
}

#[test]
fn send_never_blocks_on_a_peer_that_stops_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let (mut b, _wakes) = open(&path, false).unwrap();
    let (_peer, _) = listener.accept().unwrap();
    let f = frame(1, 1514);
    let (mut taken, mut dropped) = (0, 0);
    let start = Instant::now();
    for _ in 0..5000 {
        let t = Instant::now();
        if b.send(&f).unwrap() {
            taken += 1;
        } else {
            dropped += 1;
        }
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "send blocked for {:?}",
            t.elapsed()
        );
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(taken > 0 && dropped > 0, "taken {taken}, dropped {dropped}");
    // Dropping the backend while its writer is stuck on the peer does not hang.
    let t = Instant::now();
    drop(b);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t.elapsed()
    );
}

#[test]
fn opening_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = open(&missing, false).err().unwrap();
    assert!(
        err.contains("cannot connect to") && err.contains("missing"),
        "{err}"
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    let err = open(&file, true).err().unwrap();
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    let live = dir.path().join("live");
    let _listener = UnixListener::bind(&live).unwrap();
    let err = open(&live, true).err().unwrap();
    assert!(err.contains("another process is listening"), "{err}");

    // A stale socket (its listener gone) is replaced.
    let stale = dir.path().join("stale");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let err = open(&stale, false).err().unwrap();
    assert!(err.contains("nobody listens"), "{err}");
    let (mut b, wakes) = open(&stale, true).unwrap();
    let mut peer = connect(&stale);
    write_prefixed(&mut peer, &frame(1, 60));
    assert_eq!(next(&mut *b, &wakes), Some(frame(1, 60)));
}

#[test]
fn a_client_reconnects_when_its_server_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let (server, _) = open(&path, true).unwrap();
    let (mut client, _) = open(&path, false).unwrap();
    drop(server);
    let (mut server, server_wakes) = open(&path, true).unwrap();
    // The client retries once a second.
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = client.send(&frame(1, 60));
        if let Some((f, _)) = wait_for(
            &mut *server,
            &server_wakes,
            Duration::from_millis(200),
            0,
            |_| true,
            ignore,
        ) {
            assert_eq!(f, frame(1, 60));
            break;
        }
        assert!(Instant::now() < deadline, "the client never reconnected");
    }
}
