//! `GET /v1/events`: every state change of every VM, in order, as server-sent
//! events (no VM runs: starts fail at once, which still goes through the states).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::{def, Daemon};

/// Subscribes to the event stream; its `state` events arrive on the channel.
fn subscribe(d: &Daemon) -> mpsc::Receiver<Value> {
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        let mut sent_ready = false;
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            if !sent_ready && line.trim().is_empty() {
                // The end of the response's headers: subscribed.
                let _ = ready_tx.send(());
                sent_ready = true;
            }
            if let Some(data) = line.trim().strip_prefix("data: ") {
                if tx.send(serde_json::from_str(data).unwrap()).is_err() {
                    return;
                }
            }
            line.clear();
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the event stream answered");
    rx
}

fn next(rx: &mpsc::Receiver<Value>) -> (String, String, String, u64) {
    let e = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("an event in time");
    (
        e["vm"].as_str().unwrap().to_string(),
        e["previous"].as_str().unwrap().to_string(),
        e["state"].as_str().unwrap().to_string(),
        e["seq"].as_u64().unwrap(),
    )
}

#[test]
fn state_changes_are_streamed_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), None);
    let a = subscribe(&d);
    let b = subscribe(&d);
    assert_eq!(d.req("POST", "/v1/vms", Some(def("e1"))).status, 201);
    let r = d.req("PUT", "/v1/vms/e1/start", None);
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(d.req("DELETE", "/v1/vms/e1", None).status, 200);
    let want = [
        ("new", "defined"),
        ("defined", "running"),
        ("running", "crashed"),
        ("crashed", "undefined"),
    ];
    for rx in [&a, &b] {
        let mut last_seq = 0;
        for (prev, state) in want {
            let (vm, p, s, seq) = next(rx);
            assert_eq!((vm.as_str(), p.as_str(), s.as_str()), ("e1", prev, state));
            assert!(seq > last_seq, "seq {seq} after {last_seq}");
            last_seq = seq;
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "no event without a change"
        );
    }
    // A request that changes nothing sends nothing.
    assert_eq!(d.req("GET", "/v1/vms", None).status, 200);
    assert!(a.recv_timeout(Duration::from_millis(300)).is_err());
}
