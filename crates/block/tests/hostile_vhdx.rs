//! Corrupt and hostile VHDX images get clear errors naming the file and the problem
//! (logs to replay: tests/vhdx_log.rs);
//! nothing panics and nothing allocates by a size read from the file. The images are
//! built here, field by field, after the MS-VHDX layout.

use block::storage::MemStorage;
use block::vhdx::header::{guid, set_checksum, BAT_REGION, METADATA_REGION};
use block::vhdx::{VhdxDisk, VhdxKind};
use block::{Disk, DiskError};

const MIB: u64 = 1 << 20;
const H1: usize = 64 << 10;
const H2: usize = 128 << 10;
const R1: usize = 192 << 10;
const R2: usize = 256 << 10;
const BAT_AT: u64 = 2 * MIB;
const META_AT: u64 = 3 * MIB;
const DATA_AT: u64 = 4 * MIB;

const FILE_PARAMETERS: [u8; 16] = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
const PAGE83: [u8; 16] = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
const LOGICAL_SECTOR: [u8; 16] = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
const PHYSICAL_SECTOR: [u8; 16] = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// A fully present BAT entry for a block at `off`.
fn present(off: u64) -> u64 {
    off | 6
}

/// A VHDX image to build: headers with sequence numbers 1 and 2, a 1 MiB log at
/// 1 MiB, the BAT region at 2 MiB and the metadata region at 3 MiB (both 1 MiB),
/// payload blocks from 4 MiB.
struct Img {
    size: u64,
    block_size: u32,
    logical: u32,
    flags: u32,
    bat: Vec<u64>,
    /// (file offset, bytes) written after the metadata.
    data: Vec<(u64, Vec<u8>)>,
}

impl Img {
    /// A dynamic 3.5 MiB disk in 1 MiB blocks: block 0 at 4 MiB filled with 1, block 1
    /// not present, block 2 zero, block 3 (half used) at 5 MiB filled with 2.
    fn dynamic() -> Img {
        Img {
            size: 3 * MIB + MIB / 2,
            block_size: MIB as u32,
            logical: 512,
            flags: 0,
            bat: vec![present(DATA_AT), 0, 2, present(DATA_AT + MIB)],
            data: vec![
                (DATA_AT, vec![1; MIB as usize]),
                (DATA_AT + MIB, vec![2; (MIB / 2) as usize]),
            ],
        }
    }

    fn build(&self) -> Vec<u8> {
        let end = self
            .data
            .iter()
            .map(|(o, d)| o + d.len() as u64)
            .max()
            .unwrap_or(0)
            .max(META_AT + (64 << 10) + 4096);
        let mut b = vec![0u8; end as usize];
        b[..8].copy_from_slice(b"vhdxfile");
        for (at, seq) in [(H1, 1), (H2, 2)] {
            b[at..at + 4].copy_from_slice(b"head");
            put64(&mut b, at + 8, seq);
            put16(&mut b, at + 66, 1);
            put32(&mut b, at + 68, MIB as u32);
            put64(&mut b, at + 72, MIB);
            set_checksum(&mut b[at..at + 4096]);
        }
        for at in [R1, R2] {
            b[at..at + 4].copy_from_slice(b"regi");
            put32(&mut b, at + 8, 2);
            for (i, (id, off)) in [(BAT_REGION, BAT_AT), (METADATA_REGION, META_AT)]
                .into_iter()
                .enumerate()
            {
                let e = at + 16 + 32 * i;
                b[e..e + 16].copy_from_slice(&id);
                put64(&mut b, e + 16, off);
                put32(&mut b, e + 24, MIB as u32);
                put32(&mut b, e + 28, 1);
            }
            set_checksum(&mut b[at..at + (64 << 10)]);
        }
        let m = META_AT as usize;
        b[m..m + 8].copy_from_slice(b"metadata");
        let items: [([u8; 16], u32, u32); 5] = [
            (FILE_PARAMETERS, 0, 8),
            (VIRTUAL_DISK_SIZE, 8, 8),
            (PAGE83, 16, 16),
            (LOGICAL_SECTOR, 32, 4),
            (PHYSICAL_SECTOR, 36, 4),
        ];
        put16(&mut b, m + 10, items.len() as u16);
        for (i, (id, off, len)) in items.iter().enumerate() {
            let e = m + 32 + 32 * i;
            b[e..e + 16].copy_from_slice(id);
            put32(&mut b, e + 16, (64 << 10) + off);
            put32(&mut b, e + 20, *len);
            put32(&mut b, e + 24, if i == 0 { 4 } else { 6 });
        }
        let v = m + (64 << 10);
        put32(&mut b, v, self.block_size);
        put32(&mut b, v + 4, self.flags);
        put64(&mut b, v + 8, self.size);
        b[v + 16..v + 32].copy_from_slice(&[7; 16]);
        put32(&mut b, v + 32, self.logical);
        put32(&mut b, v + 36, 4096);
        for (i, &e) in self.bat.iter().enumerate() {
            put64(&mut b, BAT_AT as usize + 8 * i, e);
        }
        for (o, d) in &self.data {
            b[*o as usize..*o as usize + d.len()].copy_from_slice(d);
        }
        b
    }
}

/// Recomputes the checksums of both headers and both region tables.
fn refresh(b: &mut [u8]) {
    for (at, len) in [(H1, 4096), (H2, 4096), (R1, 64 << 10), (R2, 64 << 10)] {
        set_checksum(&mut b[at..at + len]);
    }
}

fn mem(b: Vec<u8>) -> Box<MemStorage> {
    let n = b.len() as u64;
    Box::new(MemStorage::new(b, n))
}

fn open(b: Vec<u8>) -> block::disk::Result<VhdxDisk> {
    VhdxDisk::open(mem(b), "evil.vhdx", true)
}

fn err(b: Vec<u8>) -> String {
    match open(b) {
        Ok(_) => panic!("hostile VHDX opened"),
        Err(e) => {
            let s = e.to_string();
            assert!(
                s.starts_with("evil.vhdx: "),
                "error does not name the file: {s}"
            );
            s
        }
    }
}

/// Asserts that the image is refused with an error containing `want`.
fn expect(b: Vec<u8>, want: &str) {
    let e = err(b);
    assert!(e.contains(want), "expected '{want}' in: {e}");
}

fn read_all(d: &dyn Disk) -> block::disk::Result<Vec<u8>> {
    let mut v = vec![0u8; d.size() as usize];
    d.read_at(&mut v, 0)?;
    Ok(v)
}

/// Edits the first region table entry `i` (0 BAT, 1 metadata) in both copies.
fn set_region(b: &mut [u8], i: usize, off: u64, len: u32) {
    for at in [R1, R2] {
        put64(b, at + 32 + 32 * i, off);
        put32(b, at + 40 + 32 * i, len);
    }
    refresh(b);
}

#[test]
fn good_image_reads_as_built() {
    let img = Img::dynamic();
    let b = img.build();
    assert_eq!(
        block::open::probe_bytes(&b[..512], &[]),
        block::ImageFormat::Vhdx
    );
    let d = open(b).unwrap();
    assert_eq!(d.size(), img.size);
    assert_eq!(d.kind(), VhdxKind::Dynamic);
    assert_eq!(d.block_size(), MIB);
    assert_eq!(d.sector_sizes(), (512, 4096));
    assert_eq!(d.page83(), [7; 16]);
    let v = read_all(&d).unwrap();
    let m = MIB as usize;
    assert!(v[..m].iter().all(|&x| x == 1));
    assert!(v[m..3 * m].iter().all(|&x| x == 0));
    assert!(v[3 * m..].iter().all(|&x| x == 2));
    // A read across block boundaries.
    let mut buf = vec![9u8; 4096];
    d.read_at(&mut buf, MIB - 2048).unwrap();
    assert!(buf[..2048].iter().all(|&x| x == 1) && buf[2048..].iter().all(|&x| x == 0));
    let e = d.map_extent(0, d.size()).unwrap();
    assert_eq!((e.len, e.data, e.offset), (MIB, true, Some(DATA_AT)));
    let e = d.map_extent(MIB, d.size() - MIB).unwrap();
    assert!(e.zero && !e.data && !e.present && e.len == MIB);
    let e = d.map_extent(2 * MIB, d.size() - 2 * MIB).unwrap();
    assert!(e.zero && !e.data && e.present);
    let r = d.check();
    assert_eq!(r.corruptions, 0, "{:?}", r.errors);
    assert_eq!((r.total_blocks, r.allocated_blocks), (4, 2));
    assert_eq!(r.image_end_offset, DATA_AT + MIB + MIB / 2);
    assert!(d.write_at(&[1], 0).is_err());
}

#[test]
fn fixed_flag_and_writable_open() {
    let mut img = Img::dynamic();
    img.flags = 1;
    assert_eq!(open(img.build()).unwrap().kind(), VhdxKind::Fixed);
    let e = VhdxDisk::open(mem(img.build()), "evil.vhdx", false)
        .err()
        .unwrap();
    assert!(e.to_string().contains("read-only"), "{e}");
}

#[test]
fn truncated_files_are_refused() {
    let b = Img::dynamic().build();
    for len in [
        0,
        7,
        8,
        100,
        H1 + 10,
        H2 + 4096,
        R1 + 100,
        R2 + 100,
        2 << 20,
        (3 << 20) + 100,
    ] {
        let e = err(b[..len].to_vec());
        assert!(
            e.contains("too short") || e.contains("past the end") || e.contains("identifier"),
            "{len}: {e}"
        );
    }
    // Cut inside the metadata items.
    let e = err(b[..(3 << 20) + (64 << 10) + 20].to_vec());
    assert!(e.contains("past the end"), "{e}");
    // Cut inside the last data block: opens, but reading it fails.
    let d = open(b[..b.len() - 1].to_vec()).unwrap();
    let e = read_all(&d).unwrap_err().to_string();
    assert!(
        e.contains("block 3") && e.contains("outside the file"),
        "{e}"
    );
    assert_eq!(d.check().corruptions, 1);
}

#[test]
fn header_checksums_and_sequence_numbers() {
    let b = Img::dynamic().build();
    // One bad header: the other is used.
    for at in [H1, H2] {
        let mut c = b.clone();
        c[at + 100] ^= 1;
        assert!(open(c).is_ok());
    }
    let mut c = b.clone();
    c[H1 + 100] ^= 1;
    c[H2 + 200] ^= 1;
    expect(c, "neither VHDX header");
    let mut c = b.clone();
    c[..8].copy_from_slice(b"vhdxfilf");
    expect(c, "identifier");
    // The higher sequence number wins: header 1 (made current) names a log, here one
    // without a valid entry (nothing became durable), so there is nothing to replay
    // and the image reads as built (tests/vhdx_log.rs replays real entries).
    let mut c = b.clone();
    put64(&mut c, H1 + 8, 3);
    c[H1 + 48] = 1;
    refresh(&mut c);
    let d = open(c.clone()).unwrap();
    assert_eq!(d.replayed_log_entries(), 0);
    assert!(read_all(&d).unwrap() == read_all(&open(b.clone()).unwrap()).unwrap());
    put64(&mut c, H1 + 8, 1);
    refresh(&mut c);
    assert!(open(c.clone()).is_ok());
    // Equal sequence numbers, different headers.
    put64(&mut c, H1 + 8, 2);
    refresh(&mut c);
    expect(c, "same sequence number");
    // Unknown versions.
    let mut c = b.clone();
    put16(&mut c, H2 + 66, 2);
    refresh(&mut c);
    expect(c, "header version 2");
    let mut c = b.clone();
    put16(&mut c, H2 + 64, 1);
    refresh(&mut c);
    expect(c, "log version 1");
}

#[test]
fn region_table_checksums() {
    let b = Img::dynamic().build();
    let mut c = b.clone();
    c[R1 + 40] ^= 0x10;
    assert!(open(c.clone()).is_ok(), "second copy not used");
    c[R2 + 40] ^= 0x10;
    expect(c, "neither VHDX region table");
}

#[test]
fn overlapping_or_misplaced_regions_are_refused() {
    let b = Img::dynamic().build();
    let cases: [(usize, u64, u32, &str); 6] = [
        (0, META_AT, MIB as u32, "overlaps"),
        (1, BAT_AT, 2 * MIB as u32, "overlaps"),
        (
            0,
            MIB,
            MIB as u32,
            "VHDX log (0x100000, 1048576 bytes) overlaps BAT region",
        ),
        (0, 512 << 10, MIB as u32, "aligned"),
        (0, BAT_AT + 4096, MIB as u32, "aligned"),
        (1, META_AT, 4096, "aligned"),
    ];
    for (i, off, len, want) in cases {
        let mut c = b.clone();
        set_region(&mut c, i, off, len);
        let e = err(c);
        assert!(e.contains(want), "{i} {off:#x} {len}: {e}");
    }
    let mut c = b.clone();
    set_region(&mut c, 1, !(MIB - 1), MIB as u32);
    expect(c, "past the end");
    // Too many entries, an unknown required region, a missing BAT.
    let mut c = b.clone();
    put32(&mut c, R1 + 8, 5000);
    put32(&mut c, R2 + 8, 5000);
    refresh(&mut c);
    expect(c, "5000 entries");
    let mut c = b.clone();
    for at in [R1, R2] {
        c[at + 16] ^= 0xff;
    }
    refresh(&mut c);
    assert!(matches!(
        open(c.clone()),
        Err(DiskError::UnsupportedImage { .. })
    ));
    for at in [R1, R2] {
        put32(&mut c, at + 44, 0);
    }
    refresh(&mut c);
    expect(c, "lacks the BAT");
}

#[test]
fn absurd_sizes_are_refused() {
    for (size, want) in [
        (1u64 << 62, "virtual size"),
        (MIB + 100, "virtual size"),
        // Legal but needs a BAT far larger than its region.
        (64 << 40, "more than its region"),
    ] {
        let mut img = Img::dynamic();
        img.size = size;
        let e = err(img.build());
        assert!(e.contains(want), "{size}: {e}");
    }
    for bs in [0u32, 4096, 512 << 10, 3 << 20, 512 << 20, u32::MAX] {
        let mut img = Img::dynamic();
        img.block_size = bs;
        expect(img.build(), "block size");
    }
    for ls in [0u32, 1024, 4097] {
        let mut img = Img::dynamic();
        img.logical = ls;
        expect(img.build(), "logical sector size");
    }
    // A BAT region of 4 GiB - 1 MiB (the largest a region entry holds) at the end of a
    // small file: refused by the in-memory limit, nothing is allocated.
    let mut img = Img::dynamic();
    img.size = 64 << 40;
    let mut c = img.build();
    set_region(&mut c, 0, 8 * MIB, !(MIB as u32 - 1));
    expect(c, "larger than");
    // Large enough region, but the BAT runs past the end of the file.
    let mut img = Img::dynamic();
    img.size = 1 << 40;
    let mut c = img.build();
    set_region(&mut c, 0, 8 * MIB, 16 * MIB as u32);
    expect(c, "past the end");
}

#[test]
fn bad_bat_entries_fail_reads_and_check() {
    let cases: [(u64, &str); 5] = [
        (present(1 << 40), "outside the file"),
        (present(0), "outside the file"),
        (present(!0xfffff), "outside the file"),
        (7, "partially present"),
        (4, "invalid state 4"),
    ];
    for (entry, want) in cases {
        let mut img = Img::dynamic();
        img.bat[1] = entry;
        let d = open(img.build()).unwrap();
        let e = read_all(&d).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("block 1"), "{entry:#x}: {e}");
        assert!(d.map_extent(MIB, 10).is_err());
        // Other blocks still read.
        let mut buf = [0u8; 16];
        d.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [1; 16]);
        let r = d.check();
        assert_eq!(r.corruptions, 1, "{:?}", r.errors);
        assert!(r.errors[0].contains(want));
    }
    // Blocks over the metadata region or over each other.
    let mut img = Img::dynamic();
    img.bat[1] = present(META_AT);
    let r = open(img.build()).unwrap().check();
    assert!(
        r.errors.iter().any(|e| e.contains("metadata region")),
        "{:?}",
        r.errors
    );
    let mut img = Img::dynamic();
    img.bat[1] = present(DATA_AT);
    let r = open(img.build()).unwrap().check();
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("blocks 0 and 1 overlap")),
        "{:?}",
        r.errors
    );
}

#[test]
fn sector_bitmap_entries_are_skipped() {
    // 256 MiB blocks with 512-byte sectors: chunk ratio 16, so BAT entry 16 is a sector
    // bitmap entry and payload block 16 is entry 17.
    let mut img = Img::dynamic();
    img.block_size = 256 << 20;
    img.size = 16 * (256 << 20) + 4096;
    img.bat = vec![0; 18];
    img.bat[16] = present(BAT_AT);
    img.bat[17] = present(DATA_AT);
    img.data = vec![(DATA_AT, vec![5; 4096])];
    let d = open(img.build()).unwrap();
    let mut buf = vec![0u8; 8192];
    d.read_at(&mut buf, img.size - 8192).unwrap();
    assert!(buf[..4096].iter().all(|&x| x == 0));
    assert!(buf[4096..].iter().all(|&x| x == 5));
    let r = d.check();
    assert_eq!(
        (r.corruptions, r.allocated_blocks, r.total_blocks),
        (0, 1, 17)
    );
    // The BAT is one entry short.
    img.bat.pop();
    let mut c = img.build();
    c.truncate(BAT_AT as usize + 17 * 8);
    c.resize(BAT_AT as usize + 17 * 8, 0);
    assert!(open(c).is_err());
}

#[test]
fn bad_metadata_is_refused() {
    let b = Img::dynamic().build();
    let m = META_AT as usize;
    let mut c = b.clone();
    c[m] = b'M';
    expect(c, "metadata table signature");
    // Has a parent: differencing disks are not supported yet.
    let mut img = Img::dynamic();
    img.flags = 2;
    let e = open(img.build()).err().unwrap();
    assert!(matches!(e, DiskError::UnsupportedImage { .. }));
    assert!(
        e.to_string().contains("differencing VHDX") && e.to_string().contains("not supported yet")
    );
    // Missing item (the virtual disk size renamed to an unknown optional one).
    let mut c = b.clone();
    c[m + 64] ^= 0xff;
    put32(&mut c, m + 64 + 24, 2);
    expect(c.clone(), "lacks the virtual disk size");
    // ... which is required.
    put32(&mut c, m + 64 + 24, 4);
    assert!(matches!(open(c), Err(DiskError::UnsupportedImage { .. })));
    // An item outside its region, or inside the table, or too short, or listed twice.
    for (off, len, want) in [
        (MIB as u32 - 4, 8, "outside its region"),
        (100, 8, "outside its region"),
        (64 << 10, 2 << 20, "outside its region"),
        (64 << 10, 4, "expected 8"),
    ] {
        let mut c = b.clone();
        put32(&mut c, m + 64 + 16, off);
        put32(&mut c, m + 64 + 20, len);
        expect(c, want);
    }
    let mut c = b.clone();
    c.copy_within(m + 32..m + 48, m + 64);
    expect(c, "twice");
    let mut c = b.clone();
    put16(&mut c, m + 10, 3000);
    expect(c, "3000 entries");
}

#[test]
fn empty_disk_opens() {
    let mut img = Img::dynamic();
    img.size = 0;
    img.bat.clear();
    img.data.clear();
    let d = open(img.build()).unwrap();
    assert_eq!(d.size(), 0);
    assert_eq!(read_all(&d).unwrap(), Vec::<u8>::new());
    assert_eq!(d.check().total_blocks, 0);
}
