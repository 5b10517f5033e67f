//! VHDX images left with a log to replay, checked against qemu-img: a VHDX made by
//! `qemu-img convert` gets log entries written here after MS-VHDX 2.3 (new blocks
//! appended to the file, the BAT updated through the log, a sector zeroed and one
//! replaced), as an interrupted Hyper-V or qemu would leave it. hako reads it with the
//! log applied in memory (`info`, `convert`, `check`; the file untouched), qemu-img
//! (which refuses to open it read-only) replays it with `check -r all` and reads the
//! same disk, and `hako img check -r all` writes the replay into the file, which
//! qemu-img then checks clean and finds identical to its own replay. A torn head entry
//! is skipped by both; a corrupt entry is refused by both. Skipped, with a message,
//! where qemu-img is not installed.

use block::storage::{FileStorage, Storage};
use block::vhdx::header::{crc32c, read_header, read_regions, set_checksum};
use block::vhdx::log::{encode_entry, LogWrite};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;
const K4: u64 = 4096;
const GUID: [u8; 16] = *b"hako-log-test-01";

fn hako(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hako"))
        .arg("img")
        .args(args)
        .output()
        .expect("run hako")
}

fn qemu(args: &[&str]) -> Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img")
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn have_qemu() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIP: qemu-img not found; install qemu-utils");
    }
    ok
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad json {e}: {out}"))
}

struct Dir(tempfile::TempDir);
impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn p(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// What the test needs to know of qemu-img's image.
struct Layout {
    bytes: Vec<u8>,
    bat: u64,
    log: u64,
    log_len: u64,
    /// Where guest block 0 is stored.
    block0: u64,
    /// Where the appended blocks go (1 MiB aligned end of the file).
    end: u64,
    /// Offset of the current header.
    header: usize,
}

/// An 8 MiB VHDX in 1 MiB blocks made by qemu-img, block 0 full of 1s.
fn qemu_base(d: &Dir) -> Layout {
    let raw = d.p("base.raw");
    let mut v = vec![0u8; 8 * MIB as usize];
    v[..MIB as usize].fill(1);
    std::fs::write(&raw, &v).unwrap();
    let img = d.p("base.vhdx");
    ok(
        qemu(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "block_size=1M,log_size=1M",
            s(&raw),
            s(&img),
        ]),
        "qemu-img convert",
    );
    let st = FileStorage::new(std::fs::File::open(&img).unwrap());
    let len = st.len().unwrap();
    let h = read_header(&st, "base", len).unwrap();
    let regions = read_regions(&st, "base").unwrap();
    let bytes = std::fs::read(&img).unwrap();
    let le64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let e0 = le64(regions.bat.offset as usize);
    assert_eq!(e0 & 7, 6, "block 0 is stored");
    let header = if le64((64 << 10) + 8) == h.sequence {
        64 << 10
    } else {
        128 << 10
    };
    Layout {
        bat: regions.bat.offset,
        log: h.log_offset,
        log_len: u64::from(h.log_length),
        block0: e0 & !(MIB - 1),
        end: len.next_multiple_of(MIB),
        header,
        bytes,
    }
}

fn data(offset: u64, data: Vec<u8>) -> LogWrite {
    LogWrite::Data {
        offset,
        data: data.into_boxed_slice(),
    }
}

/// The first BAT sector of `l` with blocks `extra` (index, offset) fully present.
fn bat_sector(l: &Layout, extra: &[(usize, u64)]) -> Vec<u8> {
    let mut b = l.bytes[l.bat as usize..(l.bat + K4) as usize].to_vec();
    for &(i, off) in extra {
        b[8 * i..8 * i + 8].copy_from_slice(&(off | 6).to_le_bytes());
    }
    b
}

/// Entry 10 maps block 3 to a block appended at the end of the file; entry 11 maps
/// block 5 to another, zeroes the first 8 KiB of block 0 and replaces one sector of
/// block 3. Returns the dirty image's bytes and the disk they should read as, with
/// both entries and with entry 10 only.
fn dirty(l: &Layout, tamper: impl Fn(&mut Vec<u8>, &mut Vec<u8>)) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (b3, b5) = (l.end, l.end + MIB);
    let file_end = l.end + 2 * MIB;
    let mut e10 = encode_entry(
        &GUID,
        10,
        0,
        file_end,
        file_end,
        &[data(l.bat, bat_sector(l, &[(3, b3)]))],
    );
    let mut e11 = encode_entry(
        &GUID,
        11,
        0,
        file_end,
        file_end,
        &[
            data(l.bat, bat_sector(l, &[(3, b3), (5, b5)])),
            LogWrite::Zero {
                offset: l.block0,
                len: 2 * K4,
            },
            data(b3 + 3 * K4, vec![0xee; K4 as usize]),
        ],
    );
    tamper(&mut e10, &mut e11);
    let mut img = l.bytes.clone();
    img.resize(l.end as usize, 0);
    img.extend(vec![3u8; MIB as usize]);
    img.extend(vec![5u8; MIB as usize]);
    for (at, e) in [(0u64, &e10), (e10.len() as u64, &e11)] {
        assert!(at + e.len() as u64 <= l.log_len);
        let o = (l.log + at) as usize;
        img[o..o + e.len()].copy_from_slice(e);
    }
    let h = l.header;
    img[h + 48..h + 64].copy_from_slice(&GUID);
    set_checksum(&mut img[h..h + 4096]);
    let mut only10 = vec![0u8; 8 * MIB as usize];
    only10[..MIB as usize].fill(1);
    only10[3 * MIB as usize..4 * MIB as usize].fill(3);
    let mut both = only10.clone();
    both[..2 * K4 as usize].fill(0);
    both[(3 * MIB + 3 * K4) as usize..(3 * MIB + 4 * K4) as usize].fill(0xee);
    both[5 * MIB as usize..6 * MIB as usize].fill(5);
    (img, both, only10)
}

/// Reads an image back as raw with hako or qemu-img.
fn read_back(d: &Dir, img: &Path, tool: &str) -> Vec<u8> {
    let out = d.p("back.raw");
    let args = ["convert", "-f", "vhdx", "-O", "raw", s(img), s(&out)];
    if tool == "hako" {
        ok(hako(&args), "hako convert");
    } else {
        ok(qemu(&args), "qemu-img convert");
    }
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    v
}

#[test]
fn a_pending_log_reads_as_qemu_img_replays_it() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let l = qemu_base(&d);
    let (img, want, _) = dirty(&l, |_, _| {});
    let path = d.p("dirty.vhdx");
    std::fs::write(&path, &img).unwrap();
    // qemu-img will not open it read-only.
    assert_ne!(code(&qemu(&["info", "-f", "vhdx", s(&path)])), 0);
    // hako reads it with the log applied in memory, and leaves the file alone.
    let info = json(&ok(
        hako(&["info", "--output", "json", s(&path)]),
        "hako info",
    ));
    assert_eq!(info["dirty-flag"], true, "{info}");
    assert_eq!(info["format-specific"]["data"]["pending-log-entries"], 2);
    assert!(read_back(&d, &path, "hako") == want);
    let c = hako(&["check", s(&path)]);
    assert_eq!(code(&c), 0, "{c:?}");
    assert!(String::from_utf8_lossy(&c.stderr).contains("2 entries not yet applied"));
    assert!(
        std::fs::read(&path).unwrap() == img,
        "read-only use changed the file"
    );
    // qemu-img's replay gives the same disk.
    let q = d.p("qemu.vhdx");
    std::fs::write(&q, &img).unwrap();
    ok(
        qemu(&["check", "-r", "all", "-f", "vhdx", s(&q)]),
        "qemu-img check -r all",
    );
    assert!(
        read_back(&d, &q, "qemu-img") == want,
        "qemu-img's replay differs"
    );
    // hako's replay into the file: qemu-img finds it clean and identical to its own.
    let h = d.p("hako.vhdx");
    std::fs::write(&h, &img).unwrap();
    let out = ok(hako(&["check", "-r", "all", s(&h)]), "hako check -r all");
    assert!(out.contains("2 VHDX log entries replayed"), "{out}");
    assert_eq!(code(&qemu(&["check", "-f", "vhdx", s(&h)])), 0);
    let c = qemu(&["compare", "-f", "vhdx", "-F", "vhdx", s(&h), s(&q)]);
    assert_eq!(code(&c), 0, "{c:?}");
    assert!(read_back(&d, &h, "qemu-img") == want);
    let info = json(&ok(hako(&["info", "--output", "json", s(&h)]), "info"));
    assert_eq!(info["dirty-flag"], false, "{info}");
    // A second repair has nothing left to do.
    let out = ok(hako(&["check", "-r", "all", s(&h)]), "hako check -r all");
    assert!(!out.contains("replayed"), "{out}");
}

#[test]
fn a_torn_head_is_skipped_as_qemu_img_skips_it() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let l = qemu_base(&d);
    // Entry 11's last sector did not reach the disk: its checksum fails.
    let (img, _, want) = dirty(&l, |_, e11| {
        let n = e11.len();
        e11[n - 10] ^= 0x55;
    });
    let path = d.p("torn.vhdx");
    std::fs::write(&path, &img).unwrap();
    assert!(read_back(&d, &path, "hako") == want);
    ok(
        qemu(&["check", "-r", "all", "-f", "vhdx", s(&path)]),
        "qemu-img check -r all",
    );
    assert!(read_back(&d, &path, "qemu-img") == want);
}

#[test]
fn a_corrupt_log_is_refused_by_both() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let l = qemu_base(&d);
    // Entry 11's first data sector carries the wrong sequence number; its checksum
    // is made right again, so the entry claims to be complete.
    let (img, _, _) = dirty(&l, |_, e11| {
        e11[4096 + 4] ^= 1;
        e11[4..8].fill(0);
        let c = crc32c(e11);
        e11[4..8].copy_from_slice(&c.to_le_bytes());
    });
    let path = d.p("bad.vhdx");
    std::fs::write(&path, &img).unwrap();
    for args in [
        &["info", s(&path)][..],
        &["convert", "-O", "raw", s(&path), s(&d.p("x.raw"))][..],
        &["check", "-r", "all", s(&path)][..],
    ] {
        let o = hako(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 1, "{args:?}: {err}");
        assert!(
            err.contains("VHDX log entry 11") && err.contains("sequence number"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert!(
        std::fs::read(&path).unwrap() == img,
        "a refused replay changed the file"
    );
    assert_ne!(
        code(&qemu(&["check", "-r", "all", "-f", "vhdx", s(&path)])),
        0,
        "qemu-img accepted the corrupt log"
    );
}
