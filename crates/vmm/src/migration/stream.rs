//! The migration stream: a versioned header, then frames of (kind, length, CRC-32,
//! payload) in both directions. A frame whose checksum or kind is wrong, or a
//! stream of another version, ends the migration on the spot.

use std::io::{self, Read, Write};

pub const MAGIC: [u8; 8] = *b"HAKOMIGR";
/// Bumped whenever a stream of this build could not be read by the last one.
pub const VERSION: u32 = 1;
/// The largest frame either side accepts (a page batch is a little over 1 MiB).
pub const MAX_FRAME: u32 = 8 << 20;
pub const PAGE: usize = 4096;
/// Pages per PAGES frame.
pub const BATCH: usize = 256;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Source → destination: JSON of the VM's config, CPUID and memory layout.
    Config = 1,
    /// Source → destination: pages, each a u64 guest address (bit 0 set: an all-zero
    /// page, no data follows) and 4096 bytes.
    Pages = 2,
    /// Source → destination: the saved state (the state file's framing).
    State = 3,
    /// Source → destination: nothing follows; start the VM.
    End = 4,
    /// Either way: the sender gives up; the payload says why.
    Abort = 5,
    /// Destination → source: the config is accepted, send memory.
    Ready = 16,
    /// Destination → source: the VM runs here now.
    Running = 17,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Config,
            2 => Kind::Pages,
            3 => Kind::State,
            4 => Kind::End,
            5 => Kind::Abort,
            16 => Kind::Ready,
            17 => Kind::Running,
            _ => return None,
        })
    }
}

/// Why a stream cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("not a hako migration stream (bad magic)")]
    Magic,
    #[error("migration stream version {found}, but this hako speaks version {VERSION}: an incompatible build")]
    Version { found: u32 },
    #[error("corrupt migration stream: {0}")]
    Corrupt(String),
    #[error("the other side gave up: {0}")]
    Aborted(String),
    #[error("migration connection: {0}")]
    Io(#[from] io::Error),
}

pub fn write_header(w: &mut dyn Write) -> io::Result<()> {
    w.write_all(&MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())
}

pub fn read_header(r: &mut dyn Read) -> Result<(), StreamError> {
    let mut h = [0u8; 12];
    r.read_exact(&mut h)?;
    if h[..8] != MAGIC {
        return Err(StreamError::Magic);
    }
    let found = u32::from_le_bytes(h[8..].try_into().expect("4 bytes"));
    if found != VERSION {
        return Err(StreamError::Version { found });
    }
    Ok(())
}

pub fn write_frame(w: &mut dyn Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let mut h = [0u8; 9];
    h[0] = kind as u8;
    h[1..5].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[5..9].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    w.write_all(&h)?;
    w.write_all(payload)
}

/// Reads one frame; an Abort frame becomes [`StreamError::Aborted`].
pub fn read_frame(r: &mut dyn Read) -> Result<(Kind, Vec<u8>), StreamError> {
    let mut h = [0u8; 9];
    r.read_exact(&mut h)?;
    let kind = Kind::from_u8(h[0])
        .ok_or_else(|| StreamError::Corrupt(format!("unknown frame kind {}", h[0])))?;
    let len = u32::from_le_bytes(h[1..5].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(StreamError::Corrupt(format!("a frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    let crc = u32::from_le_bytes(h[5..9].try_into().expect("4 bytes"));
    if crc32fast::hash(&payload) != crc {
        return Err(StreamError::Corrupt(
            "a frame's checksum does not match".into(),
        ));
    }
    if kind == Kind::Abort {
        return Err(StreamError::Aborted(
            String::from_utf8_lossy(&payload).into_owned(),
        ));
    }
    Ok((kind, payload))
}

/// Reads a frame that must be of `want`.
pub fn expect_frame(r: &mut dyn Read, want: Kind) -> Result<Vec<u8>, StreamError> {
    let (k, p) = read_frame(r)?;
    if k != want {
        return Err(StreamError::Corrupt(format!(
            "expected {want:?}, got {k:?}"
        )));
    }
    Ok(p)
}

/// Builds PAGES payloads: `(address, page)` with all-zero pages sent as a marker.
#[derive(Default)]
pub struct PageBatch {
    buf: Vec<u8>,
    pages: usize,
}

impl PageBatch {
    pub fn push(&mut self, gpa: u64, page: &[u8]) {
        debug_assert_eq!(gpa % PAGE as u64, 0);
        if page.iter().all(|&b| b == 0) {
            self.buf.extend_from_slice(&(gpa | 1).to_le_bytes());
        } else {
            self.buf.extend_from_slice(&gpa.to_le_bytes());
            self.buf.extend_from_slice(page);
        }
        self.pages += 1;
    }

    pub fn full(&self) -> bool {
        self.pages >= BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// The payload so far, leaving the batch empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.pages = 0;
        std::mem::take(&mut self.buf)
    }
}

/// Walks a PAGES payload: `f(address, Some(page))`, or `None` for a zero page.
pub fn for_each_page(
    payload: &[u8],
    mut f: impl FnMut(u64, Option<&[u8]>) -> Result<(), StreamError>,
) -> Result<(), StreamError> {
    let mut p = payload;
    while !p.is_empty() {
        if p.len() < 8 {
            return Err(StreamError::Corrupt("a page entry is cut short".into()));
        }
        let a = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
        p = &p[8..];
        if a & 1 == 1 {
            f(a & !1, None)?;
            continue;
        }
        if a % PAGE as u64 != 0 || p.len() < PAGE {
            return Err(StreamError::Corrupt(format!("bad page entry at {a:#x}")));
        }
        f(a, Some(&p[..PAGE]))?;
        p = &p[PAGE..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_damage_is_caught() {
        let mut out = Vec::new();
        write_header(&mut out).unwrap();
        let mut b = PageBatch::default();
        b.push(0x1000, &[0u8; PAGE]);
        let mut page = vec![0u8; PAGE];
        page[17] = 9;
        b.push(0x5000, &page);
        let payload = b.take();
        assert_eq!(payload.len(), 8 + 8 + PAGE, "a zero page is 8 bytes");
        write_frame(&mut out, Kind::Pages, &payload).unwrap();
        write_frame(&mut out, Kind::End, &[]).unwrap();

        let mut r: &[u8] = &out;
        read_header(&mut r).unwrap();
        let got = expect_frame(&mut r, Kind::Pages).unwrap();
        let mut seen = Vec::new();
        for_each_page(&got, |a, p| {
            seen.push((a, p.map(|p| p[17])));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(0x1000, None), (0x5000, Some(9))]);
        assert!(matches!(
            expect_frame(&mut r, Kind::Config),
            Err(StreamError::Corrupt(_))
        ));

        let mut bad = out.clone();
        bad[12 + 9 + 20] ^= 1; // inside the PAGES payload
        let mut r: &[u8] = &bad;
        read_header(&mut r).unwrap();
        assert!(matches!(read_frame(&mut r), Err(StreamError::Corrupt(_))));

        let mut v = out.clone();
        v[8] = 9;
        assert!(matches!(
            read_header(&mut &v[..]),
            Err(StreamError::Version { found: 9 })
        ));
        assert!(matches!(
            read_header(&mut &b"GARBAGE!\x01\0\0\0"[..]),
            Err(StreamError::Magic)
        ));
        // A truncated stream is an I/O error (unexpected EOF), not a hang or a panic.
        let mut r: &[u8] = &out[..out.len() - 3];
        read_header(&mut r).unwrap();
        expect_frame(&mut r, Kind::Pages).unwrap();
        assert!(matches!(read_frame(&mut r), Err(StreamError::Io(_))));
        // An announced frame larger than anyone sends is refused before allocating it.
        let mut huge = vec![Kind::Pages as u8];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(StreamError::Corrupt(_))
        ));
        let mut abort = Vec::new();
        write_frame(&mut abort, Kind::Abort, b"no room").unwrap();
        assert!(
            matches!(read_frame(&mut &abort[..]), Err(StreamError::Aborted(m)) if m == "no room")
        );
    }

    #[test]
    fn bad_page_entries_are_refused() {
        let misaligned = 0x1234u64.to_le_bytes();
        assert!(for_each_page(&misaligned, |_, _| Ok(())).is_err());
        let short = [0u8; 5];
        assert!(for_each_page(&short, |_, _| Ok(())).is_err());
        let mut cut = 0x2000u64.to_le_bytes().to_vec();
        cut.extend_from_slice(&[1; 100]);
        assert!(for_each_page(&cut, |_, _| Ok(())).is_err());
    }
}
