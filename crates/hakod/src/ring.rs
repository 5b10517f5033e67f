//! The last bytes of a VM's console, kept in memory for `GET /v1/vms/{name}/log`.

use std::collections::VecDeque;

use tokio::sync::watch;

/// How much console output each VM keeps in memory.
pub const LOG_CAPACITY: usize = 1 << 20;

/// A byte ring of at most `capacity` bytes that numbers every byte it was ever
/// given, so a reader can ask for what came after the last byte it saw.
#[derive(Debug)]
pub struct LogRing {
    buf: VecDeque<u8>,
    capacity: usize,
    /// The number of bytes ever pushed: the offset just past the newest byte.
    end: u64,
    /// Tells the console viewers that bytes came (the new end).
    grew: watch::Sender<u64>,
}

impl LogRing {
    pub fn new(capacity: usize) -> LogRing {
        LogRing {
            buf: VecDeque::with_capacity(capacity.min(64 << 10)),
            capacity,
            end: 0,
            grew: watch::Sender::new(0),
        }
    }

    /// A receiver that sees a change at every push.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.grew.subscribe()
    }

    /// Appends `data`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        self.end += data.len() as u64;
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let over = (self.buf.len() + data.len()).saturating_sub(self.capacity);
        self.buf.drain(..over);
        self.buf.extend(data);
        self.grew.send_replace(self.end);
    }

    /// The offset of the oldest byte kept.
    pub fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    /// The offset just past the newest byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The bytes from offset `from` (or from the oldest kept, if those are gone)
    /// to the end, with the offset they start at.
    pub fn since(&self, from: u64) -> (u64, Vec<u8>) {
        let start = from.clamp(self.start(), self.end);
        let skip = (start - self.start()) as usize;
        (start, self.buf.range(skip..).copied().collect())
    }

    /// Everything kept.
    pub fn all(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }
}

/// The length of the longest prefix of `b` that does not end inside a UTF-8
/// sequence, so a reader that asks again for the rest never sees a split character.
pub fn utf8_prefix_len(b: &[u8]) -> usize {
    // A sequence is at most 4 bytes: look at the last 3 for an unfinished lead byte.
    for back in 1..=3.min(b.len()) {
        let i = b.len() - back;
        let c = b[i];
        if c & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match c {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if back < need { i } else { b.len() };
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_with_offsets() {
        let mut r = LogRing::new(8);
        r.push(b"hello");
        assert_eq!((r.start(), r.end(), r.all()), (0, 5, b"hello".to_vec()));
        r.push(b" world");
        assert_eq!((r.start(), r.end(), r.all()), (3, 11, b"lo world".to_vec()));
        assert_eq!(r.since(9), (9, b"ld".to_vec()));
        assert_eq!(r.since(0), (3, b"lo world".to_vec()));
        assert_eq!(r.since(99), (11, vec![]));
        r.push(b"0123456789abc");
        assert_eq!(
            (r.start(), r.end(), r.all()),
            (16, 24, b"56789abc".to_vec())
        );
    }

    #[test]
    fn utf8_prefixes() {
        assert_eq!(utf8_prefix_len(b"abc"), 3);
        let e = "é".as_bytes(); // 2 bytes
        assert_eq!(utf8_prefix_len(&[b'a', e[0]]), 1);
        assert_eq!(utf8_prefix_len(&[b'a', e[0], e[1]]), 3);
        let k = "漢".as_bytes(); // 3 bytes
        assert_eq!(utf8_prefix_len(&k[..2]), 0);
        assert_eq!(utf8_prefix_len(k), 3);
        assert_eq!(utf8_prefix_len(&[0xff, 0xfe]), 2); // not UTF-8: passed through
    }
}
