//! Corrupt and hostile VDI and VHD images get clear errors naming the file and the
//! problem; nothing panics and nothing allocates by a size read from the file.

use block::storage::MemStorage;
use block::{open, Disk, DiskError, ImageFormat, OpenOptions, VdiDisk, VpcDisk};

const U: u32 = 0xffff_ffff;
const BS: usize = 4096;

fn put32le(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put32be(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64be(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// A VDI image with 4 KiB blocks: header, block map at 0x200, data at 0x400; block
/// `n` of the data area is filled with byte `n + 1`.
fn vdi(kind: u32, bmap: &[u32], allocated: usize) -> Vec<u8> {
    let mut h = vec![0u8; 0x400];
    h[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
    put32le(&mut h, 0x40, 0xbeda_107f);
    put32le(&mut h, 0x44, 0x0001_0001);
    put32le(&mut h, 0x48, 0x190);
    put32le(&mut h, 0x4c, kind);
    put32le(&mut h, 0x154, 0x200);
    put32le(&mut h, 0x158, 0x400);
    put32le(&mut h, 0x168, 512);
    h[0x170..0x178].copy_from_slice(&((bmap.len() * BS) as u64).to_le_bytes());
    put32le(&mut h, 0x178, BS as u32);
    put32le(&mut h, 0x180, bmap.len() as u32);
    put32le(&mut h, 0x184, allocated as u32);
    for (i, &e) in bmap.iter().enumerate() {
        put32le(&mut h, 0x200 + 4 * i, e);
    }
    for n in 0..allocated {
        h.extend(std::iter::repeat_n(n as u8 + 1, BS));
    }
    h
}

fn checksum(b: &[u8], skip: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)));
    !sum
}

fn footer(kind: u32, size: u64, dyn_off: u64) -> Vec<u8> {
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    put32be(&mut f, 8, 2);
    put32be(&mut f, 12, 0x0001_0000);
    put64be(&mut f, 16, dyn_off);
    f[28..32].copy_from_slice(b"qem2");
    put64be(&mut f, 40, size);
    put64be(&mut f, 48, size);
    f[56..60].copy_from_slice(&[0, 1, 16, 63]);
    put32be(&mut f, 60, kind);
    let c = checksum(&f, 64);
    put32be(&mut f, 64, c);
    f
}

fn refresh_footer(f: &mut [u8]) {
    let c = checksum(&f[..512], 64);
    put32be(f, 64, c);
}

/// A dynamic VHD with 4 KiB blocks: footer copy, dynamic header at 512, table at
/// 1536, then the blocks (bitmap sector, data filled with `n + 1`), then the footer.
fn vhd(bat: &[u32], allocated: usize) -> Vec<u8> {
    let foot = footer(3, (bat.len() * BS) as u64, 512);
    let mut img = foot.clone();
    let mut d = vec![0u8; 1024];
    d[..8].copy_from_slice(b"cxsparse");
    put64be(&mut d, 8, u64::MAX);
    put64be(&mut d, 16, 1536);
    put32be(&mut d, 24, 0x0001_0000);
    put32be(&mut d, 28, bat.len() as u32);
    put32be(&mut d, 32, BS as u32);
    let c = checksum(&d, 36);
    put32be(&mut d, 36, c);
    img.extend(d);
    let mut t = vec![0u8; (4 * bat.len()).div_ceil(512) * 512];
    for (i, &e) in bat.iter().enumerate() {
        put32be(&mut t, 4 * i, e);
    }
    img.extend(t);
    for n in 0..allocated {
        let mut bitmap = vec![0u8; 512];
        bitmap[0] = 0xff;
        img.extend(bitmap);
        img.extend(std::iter::repeat_n(n as u8 + 1, BS));
    }
    img.extend(foot);
    img
}

fn mem(b: Vec<u8>) -> Box<MemStorage> {
    let n = b.len() as u64;
    Box::new(MemStorage::new(b, n))
}

fn vdi_err(img: Vec<u8>) -> String {
    match VdiDisk::open(mem(img), "evil.vdi", true) {
        Ok(_) => panic!("hostile VDI opened"),
        Err(e) => e.to_string(),
    }
}

fn vpc_err(img: Vec<u8>) -> String {
    match VpcDisk::open(mem(img), "evil.vhd", true) {
        Ok(_) => panic!("hostile VHD opened"),
        Err(e) => e.to_string(),
    }
}

fn read_all(d: &dyn Disk) -> block::disk::Result<Vec<u8>> {
    let mut v = vec![0u8; d.size() as usize];
    d.read_at(&mut v, 0)?;
    Ok(v)
}

#[test]
fn good_images_read_as_built() {
    let d = VdiDisk::open(mem(vdi(1, &[1, U, 0xffff_fffe, 0], 2)), "ok.vdi", true).unwrap();
    let v = read_all(&d).unwrap();
    assert!(v[..BS].iter().all(|&x| x == 2));
    assert!(v[BS..3 * BS].iter().all(|&x| x == 0));
    assert!(v[3 * BS..].iter().all(|&x| x == 1));
    assert_eq!(d.check().corruptions, 0);

    let d = VpcDisk::open(mem(vhd(&[U, 4], 1)), "ok.vhd", true).unwrap();
    assert_eq!(d.size(), 2 * BS as u64);
    let v = read_all(&d).unwrap();
    // The first bitmap byte covers 8 sectors = the whole first 4 KiB block.
    assert!(v[..BS].iter().all(|&x| x == 0) && v[BS..].iter().all(|&x| x == 1));
    assert_eq!(d.check().corruptions, 0);
}

#[test]
fn vdi_header_defects_are_named() {
    let good = vdi(1, &[0, U], 1);
    for cut in [0usize, 0x43, 0x100, 0x1d7, 0x201] {
        let e = vdi_err(good[..cut].to_vec());
        assert!(e.contains("evil.vdi"), "cut {cut}: {e}");
    }
    let mut img = good.clone();
    img[0x40] ^= 1;
    assert!(vdi_err(img).contains("signature"));

    let mut img = good.clone();
    put32le(&mut img, 0x154, 0x7fff_0000); // block map past the end
    let e = vdi_err(img);
    assert!(e.contains("block map") && e.contains("past the end"), "{e}");

    let mut img = good.clone();
    put32le(&mut img, 0x180, u32::MAX); // 4 billion blocks: a 16 GiB map
    img[0x170..0x178].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = vdi_err(img);
    assert!(e.contains("past the end"), "{e}");

    let mut img = good.clone();
    put32le(&mut img, 0x178, 3000);
    assert!(vdi_err(img).contains("block size"));

    let mut img = good.clone();
    img[0x170..0x178].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert!(vdi_err(img).contains("does not fit"));

    let mut img = good.clone();
    put32le(&mut img, 0x154, 0x10); // block map over the header
    assert!(vdi_err(img).contains("overlaps the header"));

    let mut img = good.clone();
    put32le(&mut img, 0x4c, 4);
    let e = VdiDisk::open(mem(img), "evil.vdi", true).err().unwrap();
    assert!(matches!(e, DiskError::UnsupportedImage { .. }), "{e}");

    let e = VdiDisk::open(mem(good), "evil.vdi", false).err().unwrap();
    assert!(e.to_string().contains("read-only"), "{e}");
}

#[test]
fn vdi_table_defects_fail_reads_and_show_in_check() {
    // Entry beyond the image's blocks; two blocks sharing one data block; a block past
    // the end of a truncated file.
    let d = VdiDisk::open(mem(vdi(1, &[0, 0, 77, 1], 1)), "evil.vdi", true).unwrap();
    let mut b = [0u8; 512];
    d.read_at(&mut b, 0).unwrap();
    let e = d.read_at(&mut b, 2 * BS as u64).unwrap_err().to_string();
    assert!(
        e.contains("evil.vdi") && e.contains("block map entry 2"),
        "{e}"
    );
    let e = d.read_at(&mut b, 3 * BS as u64).unwrap_err().to_string();
    assert!(e.contains("past the end"), "{e}");
    let r = d.check();
    assert!(r.corruptions >= 3, "{r:?}");
    assert!(r.errors.iter().any(|m| m.contains("shares")), "{r:?}");
    assert!(r.errors.iter().any(|m| m.contains("records")), "{r:?}");
}

#[test]
fn vpc_footer_and_header_defects_are_named() {
    let good = vhd(&[4, U], 1);
    let mut img = good.clone();
    img[70] ^= 1; // footer checksum no longer matches
    assert!(vpc_err(img).contains("checksum"));

    let e = vpc_err(vec![0u8; 100]);
    assert!(e.contains("evil.vhd") && e.contains("too short"), "{e}");
    assert!(vpc_err(vec![0u8; 4096]).contains("conectix"));

    let mut img = good.clone();
    put64be(&mut img, 16, 1 << 40); // dynamic header past the end
    refresh_footer(&mut img);
    assert!(vpc_err(img).contains("outside the file"));

    let mut img = good.clone();
    img[512 + 40] ^= 1; // dynamic header checksum
    assert!(vpc_err(img).contains("dynamic header checksum"));

    for (field, value, expect) in [
        (16usize, 1u64 << 40, "past the end"), // table past the end
        (28, u64::from(u32::MAX) << 32, "past the end"), // 4 billion entries
        (32, 3000 << 32, "block size"),
    ] {
        let mut img = good.clone();
        if field == 16 {
            put64be(&mut img, 512 + 16, value);
        } else {
            put32be(&mut img, 512 + field, (value >> 32) as u32);
        }
        let c = checksum(&img[512..1536], 36);
        put32be(&mut img, 512 + 36, c);
        let e = vpc_err(img);
        assert!(e.contains(expect), "field {field}: {e}");
    }

    let mut img = good.clone();
    put32be(&mut img, 60, 4);
    refresh_footer(&mut img);
    let e = VpcDisk::open(mem(img), "evil.vhd", true).err().unwrap();
    assert!(matches!(e, DiskError::UnsupportedImage { .. }), "{e}");

    // A fixed disk claiming more data than the file holds.
    let mut img = vec![0u8; 4096];
    img.extend(footer(2, 1 << 20, u64::MAX));
    assert!(vpc_err(img).contains("truncated"));
}

#[test]
fn vpc_table_defects_fail_reads_and_show_in_check() {
    // Block 1 past the end of the file; block 2 overlapping block 0.
    let d = VpcDisk::open(mem(vhd(&[4, 100_000, 5], 1)), "evil.vhd", true).unwrap();
    let mut b = [0u8; 512];
    d.read_at(&mut b, 0).unwrap();
    let e = d.read_at(&mut b, BS as u64).unwrap_err().to_string();
    assert!(e.contains("evil.vhd") && e.contains("block 1"), "{e}");
    let r = d.check();
    assert!(
        r.errors.iter().any(|m| m.contains("outside the file")),
        "{r:?}"
    );
    assert!(r.errors.iter().any(|m| m.contains("overlap")), "{r:?}");
}

#[test]
fn probing_finds_the_formats_and_guarded_raw_cannot_become_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("a.vdi", vdi(1, &[0], 1), ImageFormat::Vdi),
        ("a.vhd", vhd(&[4], 1), ImageFormat::Vpc),
        (
            "f.vhd",
            [vec![7u8; 8192], footer(2, 8192, u64::MAX)].concat(),
            ImageFormat::Vpc,
        ),
    ];
    for (name, img, fmt) in &cases {
        let p = dir.path().join(name);
        std::fs::write(&p, img).unwrap();
        assert_eq!(block::probe(&p).unwrap(), *fmt, "{name}");
        let ro = OpenOptions {
            read_only: true,
            ..Default::default()
        };
        assert_eq!(open(&p, &ro).unwrap().format(), fmt.to_string());
        // Writable opening of a read-only format fails clearly.
        let e = open(&p, &OpenOptions::default()).err().unwrap().to_string();
        assert!(e.contains("read-only"), "{e}");
    }

    // A probed raw guest disk cannot plant any of these headers.
    let p = dir.path().join("guest.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let d = open(&p, &OpenOptions::default()).unwrap();
    let sig = 0xbeda_107fu32.to_le_bytes();
    let e = d.write_at(&sig, 0x40).unwrap_err().to_string();
    assert!(e.contains("vdi") && e.contains("probed as raw"), "{e}");
    let e = d.write_at(b"conectix", 0).unwrap_err().to_string();
    assert!(e.contains("vpc"), "{e}");
    let e = d.write_at(b"KDMV", 0).unwrap_err().to_string();
    assert!(e.contains("vmdk"), "{e}");
    let e = d
        .write_at(b"# Disk DescriptorFile\n", 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vmdk"), "{e}");
    let tail = (1 << 20) - 512;
    let e = d
        .write_at(&footer(2, 4096, u64::MAX), tail)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vpc"), "{e}");
    // Ordinary data there is fine, and so is a footer with a wrong checksum.
    d.write_at(&[1u8; 4096], 0).unwrap();
    let mut f = footer(2, 4096, u64::MAX);
    f[64] ^= 1;
    d.write_at(&f, tail).unwrap();
    d.write_at(&sig, 0x41).unwrap();
}
