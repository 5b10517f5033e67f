//! Corrupt and hostile images get clear errors naming the file and the problem.

mod common;

use block::qcow2::CreateOptions;
use block::storage::{FileStorage, MemStorage};
use block::{open, Disk, DiskError, ImageFormat, OpenOptions, Qcow2Disk};
use std::path::Path;

/// A fresh 64 KiB-cluster image: header, refcount table (0x10000), refcount block
/// (0x20000), L1 table (0x30000).
fn image(size: u64) -> Vec<u8> {
    let s = MemStorage::new(Vec::new(), 1 << 30);
    Qcow2Disk::create(
        &s,
        &CreateOptions {
            size,
            ..Default::default()
        },
    )
    .unwrap();
    s.contents()
}

fn put64(img: &mut [u8], off: usize, v: u64) {
    img[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

fn open_err(img: Vec<u8>) -> String {
    match Qcow2Disk::open(Box::new(MemStorage::new(img, 1 << 30)), "evil.qcow2", true) {
        Ok(_) => panic!("hostile image opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn header_defects_are_named() {
    let mut img = image(1 << 30);
    put64(&mut img, 40, 0x7000_0000); // L1 past the end
    let e = open_err(img);
    assert!(
        e.contains("evil.qcow2") && e.contains("L1 table") && e.contains("past the end"),
        "{e}"
    );

    let mut img = image(1 << 30);
    put64(&mut img, 48, 0); // refcount table over the header
    let e = open_err(img);
    assert!(e.contains("refcount table") && e.contains("header"), "{e}");

    let mut img = image(1 << 30);
    put64(&mut img, 24, 1 << 62); // absurd virtual size
    let e = open_err(img);
    assert!(e.contains("virtual size") && e.contains("absurd"), "{e}");

    let mut img = image(1 << 30);
    img[20..24].copy_from_slice(&40u32.to_be_bytes()); // 1 TiB clusters
    let e = open_err(img);
    assert!(e.contains("cluster_bits"), "{e}");

    let img = image(1 << 30);
    for cut in [0usize, 3, 50, 100, 0x10000, 0x20000 + 7, 0x30000] {
        let e = open_err(img[..cut].to_vec());
        assert!(e.contains("evil.qcow2"), "cut {cut}: {e}");
    }
}

#[test]
fn table_defects_fail_reads_not_the_process() {
    // L1 entry pointing past the end of the file.
    let mut img = image(1 << 30);
    put64(&mut img, 0x30000, (1 << 63) | 0x4000_0000);
    let d = Qcow2Disk::open(Box::new(MemStorage::new(img, 1 << 30)), "evil.qcow2", true).unwrap();
    let mut b = [0u8; 512];
    let e = d.read_at(&mut b, 0).unwrap_err().to_string();
    assert!(e.contains("evil.qcow2") && e.contains("L2 table"), "{e}");
    // Other L1 entries still work.
    d.read_at(&mut b, 1 << 29).unwrap();
    let r = d.check().unwrap();
    assert!(r.corruptions > 0);

    // An unaligned L2 entry and a garbage compressed cluster.
    let mut img = image(1 << 20);
    img.resize(0x50000, 0);
    put64(&mut img, 0x30000, (1 << 63) | 0x40000);
    put64(&mut img, 0x40000, (1 << 63) | 0x10200);
    put64(&mut img, 0x40008, (1 << 62) | 0x48000 | (3 << 54));
    img[0x48000..0x48800].fill(0xee);
    let d = Qcow2Disk::open(Box::new(MemStorage::new(img, 1 << 30)), "evil.qcow2", true).unwrap();
    let e = d.read_at(&mut b, 0).unwrap_err().to_string();
    assert!(e.contains("unaligned"), "{e}");
    let e = d.read_at(&mut b, 0x10000).unwrap_err().to_string();
    assert!(e.contains("compressed cluster"), "{e}");
}

#[test]
fn refcount_damage_is_found_by_check() {
    // Refcount of the L1 table cluster zeroed: corruption (a write could reuse it).
    let mut img = image(1 << 20);
    img[0x20000 + 6..0x20000 + 8].copy_from_slice(&0u16.to_be_bytes());
    let d = Qcow2Disk::open(Box::new(MemStorage::new(img, 1 << 30)), "m", true).unwrap();
    let r = d.check().unwrap();
    assert_eq!(r.corruptions, 1, "{:?}", r.messages);
    // A refcount without a reference: a leak, which repair removes.
    let mut img = image(1 << 20);
    img.resize(0x50000, 0);
    img[0x20000 + 8..0x20000 + 10].copy_from_slice(&1u16.to_be_bytes());
    let d = Qcow2Disk::open(Box::new(MemStorage::new(img, 1 << 30)), "m", false).unwrap();
    let r = d.check().unwrap();
    assert_eq!((r.corruptions, r.leaks.clone()), (0, vec![(4, 1, 0)]));
    assert_eq!(d.repair_leaks(&r).unwrap(), 1);
    assert!(d.check().unwrap().leaks.is_empty());
}

fn write_qcow2(path: &Path, backing: Option<&str>, fmt: Option<&str>) {
    let f = std::fs::File::create(path).unwrap();
    Qcow2Disk::create(
        &FileStorage::new(f),
        &CreateOptions {
            size: 1 << 20,
            backing_file: backing.map(Into::into),
            backing_format: fmt.map(Into::into),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn backing_loops_and_missing_backing_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    write_qcow2(&a, Some("b.qcow2"), Some("qcow2"));
    write_qcow2(&b, Some("a.qcow2"), Some("qcow2"));
    let o = OpenOptions {
        format: Some(ImageFormat::Qcow2),
        read_only: true,
        ..Default::default()
    };
    let e = open(&a, &o).err().unwrap().to_string();
    assert!(e.contains("loops"), "{e}");
    let e = block::info::inspect_chain(&a, Some(ImageFormat::Qcow2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("loops"), "{e}");

    // A loop through a hard link (another name for the same file).
    let h = dir.path().join("h.qcow2");
    write_qcow2(&h, Some("h-link.qcow2"), Some("qcow2"));
    std::fs::hard_link(&h, dir.path().join("h-link.qcow2")).unwrap();
    let e = open(&h, &o).err().unwrap().to_string();
    assert!(e.contains("loops"), "{e}");

    let c = dir.path().join("c.qcow2");
    write_qcow2(&c, Some("nowhere.qcow2"), Some("qcow2"));
    let e = open(&c, &o).err().unwrap().to_string();
    assert!(e.contains("c.qcow2") && e.contains("not found"), "{e}");

    let d = dir.path().join("d.qcow2");
    write_qcow2(&d, Some("a.qcow2"), Some("qed"));
    let e = open(&d, &o).err().unwrap();
    assert!(matches!(e, DiskError::UnsupportedImage { .. }), "{e}");
}

#[test]
fn probed_raw_image_cannot_become_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("guest.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let d = open(&p, &OpenOptions::default()).unwrap();
    assert_eq!(d.format(), "raw");
    let e = d.write_at(b"QFI\xfb", 0).unwrap_err().to_string();
    assert!(e.contains("probed as raw"), "{e}");
    d.write_at(b"QFI\xfc", 0).unwrap();
    d.write_at(b"QFI\xfb", 512).unwrap();
    drop(d);
    let explicit = OpenOptions {
        format: Some(ImageFormat::Raw),
        ..Default::default()
    };
    open(&p, &explicit)
        .unwrap()
        .write_at(b"QFI\xfb", 0)
        .unwrap();
}
