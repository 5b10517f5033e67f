//! One stream connection as the device sees it (virtio 1.2, 5.10.6.3-5.10.6.6):
//! its state, the credit both ends have, and which control packets it owes
//! the guest.
//!
//! Credit, in the spec's terms: each end advertises `buf_alloc` (its receive
//! buffer) and `fwd_cnt` (bytes it has taken out of that buffer). A sender may
//! have at most `buf_alloc - (bytes sent - fwd_cnt)` bytes in flight. Ours is
//! the hub's per-connection buffer towards the host ([`CONN_BUF`]), and our
//! `fwd_cnt` is what the host thread has written to the host.

use std::num::Wrapping;

use super::hub::{ConnId, CONN_BUF};
use super::packet::Hdr;

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Host-initiated: our REQUEST is to be sent (`sent` false) or waits for
    /// the guest's RESPONSE.
    Requesting { sent: bool },
    /// Guest-initiated: the host thread is connecting to the host's listener.
    Connecting,
    /// Data flows.
    Established,
    /// We owe the guest an RST; the connection is gone once it is sent.
    Reset,
}

/// A connection between guest port `peer_port` and host port `local_port`.
#[derive(Debug)]
pub(super) struct Conn {
    /// The hub's connection carrying its bytes to and from the host.
    pub id: ConnId,
    pub state: State,
    /// The guest's credit: its buffer and what it has consumed of it.
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: Wrapping<u32>,
    /// Payload bytes we sent the guest.
    pub tx_cnt: Wrapping<u32>,
    /// Payload bytes the guest sent us.
    pub rx_cnt: Wrapping<u32>,
    /// The `fwd_cnt` we last told the guest.
    pub fwd_cnt_sent: Wrapping<u32>,
    /// The guest's `SHUTDOWN` flags so far.
    pub peer_shutdown: u32,
    /// We sent `SHUTDOWN` (SEND): the host will send no more.
    pub shutdown_sent: bool,
    /// We owe the guest a `RESPONSE`.
    pub need_response: bool,
    /// We owe the guest a `CREDIT_UPDATE` (it asked).
    pub need_credit_update: bool,
    /// We asked the guest for credit and it has not given any since.
    pub credit_requested: bool,
}

impl Conn {
    pub fn new(id: ConnId, state: State) -> Self {
        Conn {
            id,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            peer_shutdown: 0,
            shutdown_sent: false,
            need_response: false,
            need_credit_update: false,
            credit_requested: false,
        }
    }

    /// Takes the guest's credit from any packet it sent on this connection.
    pub fn update_peer_credit(&mut self, h: &Hdr) {
        let before = self.peer_credit();
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
        if self.peer_credit() > before {
            self.credit_requested = false;
        }
    }

    /// Payload bytes the guest has room for now. A guest whose `fwd_cnt` runs
    /// ahead of what we sent (nonsense) gets nothing rather than a wrapped
    /// fortune.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Payload bytes the guest may still send us, given what the host thread
    /// has forwarded (`fwd_cnt`).
    pub fn our_credit(&self, fwd_cnt: Wrapping<u32>) -> u32 {
        let in_flight = (self.rx_cnt - fwd_cnt).0;
        (CONN_BUF as u32).saturating_sub(in_flight)
    }

    /// Whether the guest needs to hear our `fwd_cnt`: it asked, or what it
    /// believes is left of our buffer has fallen under half while the host
    /// thread has made room since. (A guest with at least half the buffer
    /// believed free is not waiting for us, so it needs no update yet.)
    pub fn wants_credit_update(&self, fwd_cnt: Wrapping<u32>) -> bool {
        if self.need_credit_update {
            return true;
        }
        if fwd_cnt == self.fwd_cnt_sent {
            return false;
        }
        self.our_credit(self.fwd_cnt_sent) < CONN_BUF as u32 / 2
    }

    /// Fills in our credit on a packet we send on this connection and notes it
    /// as told.
    pub fn stamp(&mut self, h: &mut Hdr, fwd_cnt: Wrapping<u32>) {
        h.buf_alloc = CONN_BUF as u32;
        h.fwd_cnt = fwd_cnt.0;
        self.fwd_cnt_sent = fwd_cnt;
        self.need_credit_update = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_both_ways() {
        let mut c = Conn::new(0, State::Established);
        let h = Hdr {
            buf_alloc: 1000,
            fwd_cnt: 0,
            ..Default::default()
        };
        c.update_peer_credit(&h);
        assert_eq!(c.peer_credit(), 1000);
        c.tx_cnt += Wrapping(600);
        assert_eq!(c.peer_credit(), 400);
        c.update_peer_credit(&Hdr {
            buf_alloc: 1000,
            fwd_cnt: 500,
            ..Default::default()
        });
        assert_eq!(c.peer_credit(), 900);
        // A fwd_cnt ahead of what was sent gives nothing.
        c.update_peer_credit(&Hdr {
            buf_alloc: 1000,
            fwd_cnt: 700,
            ..Default::default()
        });
        assert_eq!(c.peer_credit(), 0);

        // Wrapping counters.
        c.rx_cnt = Wrapping(u32::MAX - 10);
        let fwd = Wrapping(u32::MAX - 20);
        assert_eq!(c.our_credit(fwd), CONN_BUF as u32 - 10);
        c.rx_cnt += Wrapping(100);
        assert_eq!(c.our_credit(fwd), CONN_BUF as u32 - 110);
    }

    #[test]
    fn credit_updates_when_the_guest_runs_low() {
        let mut c = Conn::new(0, State::Established);
        assert!(!c.wants_credit_update(Wrapping(0)));
        c.rx_cnt = Wrapping(CONN_BUF as u32 / 2 + 1);
        assert!(!c.wants_credit_update(Wrapping(0)), "nothing forwarded yet");
        assert!(c.wants_credit_update(Wrapping(1)));
        let mut h = Hdr::default();
        c.stamp(&mut h, Wrapping(1));
        assert_eq!((h.buf_alloc, h.fwd_cnt), (CONN_BUF as u32, 1));
        assert!(!c.wants_credit_update(Wrapping(1)));
        c.need_credit_update = true;
        assert!(c.wants_credit_update(Wrapping(1)));
    }
}
