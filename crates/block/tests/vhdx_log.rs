//! VHDX log replay: images whose header names a log with entries not yet applied read
//! as they will once the log is replayed (in memory, the file untouched), and
//! `replay_in_place` writes the same state into the file and clears the log. The logs
//! are built here after MS-VHDX 2.3 (`encode_entry`): several entries in a sequence,
//! stale entries, entries from another log, a head whose tail skips older entries, a
//! sequence wrapping around the end of the buffer, a torn (badly checksummed) head,
//! and corrupt entries, which are refused. (`crates/hako/tests/img_vhdx_log.rs`
//! checks the same replay against qemu-img's.)

use block::storage::{MemStorage, Storage};
use block::vhdx::header::{crc32c, read_header, set_checksum};
use block::vhdx::log::{encode_entry, LogWrite};
use block::vhdx::{replay_in_place, VhdxDisk, VhdxWriterOptions};
use block::{Disk, ImageWriter, VhdxWriter};
use std::sync::Arc;

const MIB: u64 = 1 << 20;
const K4: u64 = 4096;
const LOG: u64 = MIB;
const LOG_LEN: u64 = MIB;
const BAT: u64 = 3 * MIB;
const H2: usize = 128 << 10;
const GUID: [u8; 16] = [0x42; 16];

/// An 8 MiB dynamic disk in 1 MiB blocks, block 0 (at 4 MiB in the file) full of 1,
/// plus blocks written straight into the file past it (5 MiB: 3s, 6 MiB: 5s) that
/// only the log's BAT updates make part of the disk.
fn base() -> Vec<u8> {
    let s = Arc::new(MemStorage::new(Vec::new(), 64 * MIB));
    let w = VhdxWriter::create(
        Box::new(s.clone()),
        "base",
        8 * MIB,
        VhdxWriterOptions {
            fixed: false,
            block_size: Some(MIB),
        },
    )
    .unwrap();
    w.write_at(&vec![1; MIB as usize], 0).unwrap();
    w.finish().unwrap();
    let mut b = s.contents();
    assert_eq!(b.len() as u64, 5 * MIB);
    b.extend(vec![3u8; MIB as usize]);
    b.extend(vec![5u8; MIB as usize]);
    b
}

/// The BAT's first sector with `entries` (block index, file offset) fully present.
fn bat_sector(entries: &[(usize, u64)]) -> Box<[u8]> {
    let mut s = vec![0u8; K4 as usize];
    for &(i, off) in entries {
        s[8 * i..8 * i + 8].copy_from_slice(&(off | 6).to_le_bytes());
    }
    s.into_boxed_slice()
}

fn data(offset: u64, data: Box<[u8]>) -> LogWrite {
    LogWrite::Data { offset, data }
}

/// Entry 10: blocks 0 and 3 in the BAT. Entry 11: block 5 too, the first 8 KiB of
/// block 0 zeroed, one sector of block 3 replaced.
fn entries(tail: u32) -> (Vec<u8>, Vec<u8>) {
    let flushed = 7 * MIB;
    let e10 = encode_entry(
        &GUID,
        10,
        tail,
        flushed,
        7 * MIB,
        &[data(BAT, bat_sector(&[(0, 4 * MIB), (3, 5 * MIB)]))],
    );
    let e11 = encode_entry(
        &GUID,
        11,
        tail,
        flushed,
        7 * MIB,
        &[
            data(BAT, bat_sector(&[(0, 4 * MIB), (3, 5 * MIB), (5, 6 * MIB)])),
            LogWrite::Zero {
                offset: 4 * MIB,
                len: 2 * K4,
            },
            data(5 * MIB + 3 * K4, vec![0xee; K4 as usize].into_boxed_slice()),
        ],
    );
    (e10, e11)
}

/// The disk after both entries.
fn expected_both() -> Vec<u8> {
    let mut v = vec![0u8; 8 * MIB as usize];
    v[..MIB as usize].fill(1);
    v[..2 * K4 as usize].fill(0);
    v[3 * MIB as usize..4 * MIB as usize].fill(3);
    v[(3 * MIB + 3 * K4) as usize..(3 * MIB + 4 * K4) as usize].fill(0xee);
    v[5 * MIB as usize..6 * MIB as usize].fill(5);
    v
}

/// `img` with `entry` placed at log offset `at` (wrapping at the log's end).
fn place(img: &mut [u8], at: u64, entry: &[u8]) {
    for (i, &b) in entry.iter().enumerate() {
        let o = LOG + (at + i as u64) % LOG_LEN;
        img[o as usize] = b;
    }
}

/// `img` with the current header (the second) naming log `guid`.
fn dirty(mut img: Vec<u8>, guid: [u8; 16]) -> Vec<u8> {
    img[H2 + 48..H2 + 64].copy_from_slice(&guid);
    set_checksum(&mut img[H2..H2 + 4096]);
    img
}

fn mem(b: Vec<u8>) -> Arc<MemStorage> {
    let n = b.len() as u64;
    Arc::new(MemStorage::new(b, n + 64 * MIB))
}

fn open(b: &[u8]) -> block::disk::Result<VhdxDisk> {
    VhdxDisk::open(Box::new(mem(b.to_vec())), "log.vhdx", true)
}

fn read_all(d: &dyn Disk) -> Vec<u8> {
    let mut v = vec![0u8; d.size() as usize];
    d.read_at(&mut v, 0).unwrap();
    v
}

fn with_both() -> Vec<u8> {
    let (e10, e11) = entries(0);
    let mut img = base();
    place(&mut img, 0, &e10);
    place(&mut img, e10.len() as u64, &e11);
    dirty(img, GUID)
}

#[test]
fn a_pending_log_is_replayed_in_memory() {
    let img = with_both();
    // Without the log the disk is block 0 only.
    let clean = VhdxDisk::open(Box::new(mem(base())), "clean", true).unwrap();
    let mut want_clean = vec![0u8; 8 * MIB as usize];
    want_clean[..MIB as usize].fill(1);
    assert!(read_all(&clean) == want_clean);
    let s = mem(img.clone());
    let d = VhdxDisk::open(Box::new(s.clone()), "log.vhdx", true).unwrap();
    assert_eq!(d.replayed_log_entries(), 2);
    assert!(read_all(&d) == expected_both());
    let r = d.check();
    assert_eq!(
        (r.corruptions, r.allocated_blocks),
        (0, 3),
        "{:?}",
        r.errors
    );
    // Block status follows the replayed BAT.
    assert_eq!(
        d.block_status(5 * MIB, MIB).unwrap(),
        (block::BlockStatus::Data, MIB)
    );
    assert_eq!(
        d.block_status(6 * MIB, MIB).unwrap(),
        (block::BlockStatus::Zero, MIB)
    );
    // The file is untouched.
    assert!(s.contents() == img);
}

#[test]
fn replay_in_place_writes_the_log_and_clears_it() {
    let s = mem(with_both());
    assert_eq!(replay_in_place(s.as_ref(), "log.vhdx").unwrap(), 2);
    let h = read_header(s.as_ref(), "log.vhdx", s.len().unwrap()).unwrap();
    assert_eq!(h.log_guid, [0; 16]);
    assert_eq!(h.sequence, 4, "both headers rewritten above the old 2");
    let d = VhdxDisk::open(Box::new(s.clone()), "log.vhdx", true).unwrap();
    assert_eq!(d.replayed_log_entries(), 0);
    assert!(read_all(&d) == expected_both());
    // Both headers are valid: damaging either still opens the replayed image.
    for at in [64usize << 10, H2] {
        let mut c = s.contents();
        c[at + 200] ^= 1;
        let d = open(&c).unwrap();
        assert!(read_all(&d) == expected_both());
    }
    // Nothing left to replay.
    assert_eq!(replay_in_place(s.as_ref(), "log.vhdx").unwrap(), 0);
}

#[test]
fn stale_and_foreign_entries_are_ignored() {
    let mut img = with_both();
    // An older entry of the same log (already applied, then left behind in the
    // buffer), and a newer-looking one from another log.
    let stale = encode_entry(
        &GUID,
        3,
        512 << 10,
        7 * MIB,
        7 * MIB,
        &[data(BAT, bat_sector(&[(1, 6 * MIB)]))],
    );
    place(&mut img, 512 << 10, &stale);
    let foreign = encode_entry(
        &[9; 16],
        50,
        768 << 10,
        7 * MIB,
        7 * MIB,
        &[data(BAT, bat_sector(&[(2, 6 * MIB)]))],
    );
    place(&mut img, 768 << 10, &foreign);
    let d = open(&img).unwrap();
    assert_eq!(d.replayed_log_entries(), 2);
    assert!(read_all(&d) == expected_both());
}

#[test]
fn the_head_tail_starts_the_replay() {
    let (e10, _) = entries(0);
    // Entry 11 names itself as the tail: entry 10 was already applied.
    let at11 = e10.len() as u64;
    let (_, e11) = entries(at11 as u32);
    let mut img = base();
    // Entry 10 would make block 3 point at garbage if it were replayed.
    let e10 = encode_entry(
        &GUID,
        10,
        0,
        7 * MIB,
        7 * MIB,
        &[data(BAT, bat_sector(&[(3, 6 * MIB)]))],
    );
    assert_eq!(e10.len() as u64, at11);
    place(&mut img, 0, &e10);
    place(&mut img, at11, &e11);
    let d = open(&dirty(img, GUID)).unwrap();
    assert_eq!(d.replayed_log_entries(), 1);
    assert!(read_all(&d) == expected_both());
}

#[test]
fn a_sequence_wraps_around_the_end_of_the_log() {
    let (e10, e11) = entries((LOG_LEN - K4) as u32);
    let mut img = base();
    // Entry 10's header in the last sector, its data sector at the start, entry 11
    // after it.
    place(&mut img, LOG_LEN - K4, &e10);
    place(&mut img, e10.len() as u64 - K4, &e11);
    let d = open(&dirty(img, GUID)).unwrap();
    assert_eq!(d.replayed_log_entries(), 2);
    assert!(read_all(&d) == expected_both());
}

#[test]
fn a_torn_head_is_not_replayed() {
    let (e10, mut e11) = entries(0);
    // The head's last sector never reached the disk: its checksum fails.
    let n = e11.len();
    e11[n - 100] ^= 0xff;
    let mut img = base();
    place(&mut img, 0, &e10);
    place(&mut img, e10.len() as u64, &e11);
    let d = open(&dirty(img, GUID)).unwrap();
    assert_eq!(d.replayed_log_entries(), 1);
    let mut want = vec![0u8; 8 * MIB as usize];
    want[..MIB as usize].fill(1);
    want[3 * MIB as usize..4 * MIB as usize].fill(3);
    assert!(read_all(&d) == want);
}

/// Recomputes an entry's checksum after an edit.
fn reseal(e: &mut [u8]) {
    e[4..8].fill(0);
    let c = crc32c(e);
    e[4..8].copy_from_slice(&c.to_le_bytes());
}

fn refused(entry: Vec<u8>, want: &str) {
    let mut img = base();
    place(&mut img, 0, &entry);
    let img = dirty(img, GUID);
    let e = open(&img).err().expect("corrupt log accepted").to_string();
    assert!(
        e.starts_with("log.vhdx: ") && e.contains(want),
        "want '{want}': {e}"
    );
    assert!(!e.contains('\n'));
    // Writing the replay back refuses it the same way, leaving the file as it was.
    let s = mem(img.clone());
    assert!(replay_in_place(s.as_ref(), "log.vhdx").is_err());
    assert!(s.contents() == img);
}

#[test]
fn corrupt_entries_are_refused() {
    let (e10, _) = entries(0);
    // A data sector whose sequence number does not match (checksum right).
    let mut e = e10.clone();
    e[4096 + 4] ^= 1;
    reseal(&mut e);
    refused(e, "wrong signature or sequence number");
    // Descriptor signature.
    let mut e = e10.clone();
    e[64..68].copy_from_slice(b"dsec");
    reseal(&mut e);
    refused(e, "neither a data nor a zero descriptor");
    // Unaligned target.
    let mut e = e10.clone();
    e[64 + 16] = 8;
    reseal(&mut e);
    refused(e, "not 4 KiB aligned");
    // Into the header section and into the log itself.
    let hdr = encode_entry(
        &GUID,
        10,
        0,
        7 * MIB,
        7 * MIB,
        &[data(64 << 10, bat_sector(&[]))],
    );
    refused(hdr, "header section");
    let into_log = encode_entry(
        &GUID,
        10,
        0,
        7 * MIB,
        7 * MIB,
        &[LogWrite::Zero {
            offset: LOG,
            len: K4,
        }],
    );
    refused(into_log, "into the log itself");
    // The file is shorter than the entry says it was when the entry was written.
    let short = encode_entry(
        &GUID,
        10,
        0,
        9 * MIB,
        9 * MIB,
        &[data(BAT, bat_sector(&[]))],
    );
    refused(short, "truncated");
    // An absurd file size.
    let huge = encode_entry(
        &GUID,
        10,
        0,
        7 * MIB,
        u64::MAX,
        &[data(BAT, bat_sector(&[]))],
    );
    refused(huge, "asks for a file of");
}

#[test]
fn hostile_logs_end_quickly() {
    // Every sector claims to start an entry spanning the whole log, with a bad
    // checksum: the search gives up instead of checksumming the log 256 times.
    let mut img = base();
    let mut h = vec![0u8; K4 as usize];
    h[..4].copy_from_slice(b"loge");
    h[8..12].copy_from_slice(&(LOG_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&7u64.to_le_bytes());
    h[32..48].copy_from_slice(&GUID);
    for k in 0..LOG_LEN / K4 {
        place(&mut img, k * K4, &h);
    }
    let t = std::time::Instant::now();
    let e = open(&dirty(img, GUID)).err().unwrap().to_string();
    assert!(e.contains("too many overlapping entries"), "{e}");
    assert!(t.elapsed().as_secs() < 5);
    // Random garbage with the right signature here and there: errors or opens,
    // never panics.
    let mut x = 0x1234_5678_9abc_def0u64;
    for round in 0..60 {
        let mut img = with_both();
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (LOG + x % LOG_LEN) as usize;
            img[at] ^= (x >> 32) as u8 | 1;
            if round % 3 == 0 {
                let s = LOG as usize + ((x >> 20) % (LOG_LEN / K4)) as usize * K4 as usize;
                img[s..s + 4].copy_from_slice(b"loge");
                img[s + 32..s + 48].copy_from_slice(&GUID);
            }
        }
        if let Ok(d) = open(&img) {
            let _ = read_all(&d);
            let _ = d.check();
        }
    }
}
