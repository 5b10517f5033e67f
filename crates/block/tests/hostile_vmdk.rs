//! VMDK sparse and stream images built by hand (including a streamOptimized layout with
//! the grain directory in a footer, as VMware's OVA exports have it), and hostile
//! variants: clear errors naming the file, no panic, no unbounded allocation, no other
//! file opened.

use block::storage::MemStorage;
use block::{Disk, DiskError, VmdkDisk};
use std::io::Write;

const GRAIN_SECTORS: u64 = 8;
const GB: usize = 4096;
const GTES: usize = 512;

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn header(capacity: u64, flags: u32, gd_sector: u64, version: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..4].copy_from_slice(b"KDMV");
    put32(&mut h, 4, version);
    put32(&mut h, 8, flags);
    put64(&mut h, 12, capacity);
    put64(&mut h, 20, GRAIN_SECTORS);
    put64(&mut h, 28, 1); // descriptor at sector 1
    put64(&mut h, 36, 1);
    put32(&mut h, 44, GTES as u32);
    put64(&mut h, 56, gd_sector);
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77] = u8::from(flags & (1 << 16) != 0);
    h
}

fn descriptor(kind: &str) -> Vec<u8> {
    let mut d = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"{kind}\"\n\n# Extent description\nRW 64 SPARSE \"x.vmdk\"\n"
    )
    .into_bytes();
    d.resize(512, 0);
    d
}

fn pad(v: &mut Vec<u8>) {
    v.resize(v.len().div_ceil(512) * 512, 0);
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn marker(sectors: u64, kind: u32) -> Vec<u8> {
    let mut m = vec![0u8; 512];
    put64(&mut m, 0, sectors);
    put32(&mut m, 12, kind);
    m
}

/// A monolithicSparse image (directory at sector 2, table at 3..7, grains after), or a
/// streamOptimized one with the directory after the data and a footer.
fn vmdk(grains: &[Option<u8>], stream: bool) -> Vec<u8> {
    let capacity = grains.len() as u64 * GRAIN_SECTORS;
    let flags = if stream { 3 | (3 << 16) } else { 3 };
    let mut img = header(
        capacity,
        flags,
        if stream { u64::MAX } else { 2 },
        if stream { 3 } else { 1 },
    );
    img.extend(descriptor(if stream {
        "streamOptimized"
    } else {
        "monolithicSparse"
    }));
    let mut gt = vec![0u8; GTES * 4];
    if !stream {
        img.extend(vec![0u8; 512]); // directory, filled below
        img.extend(vec![0u8; GTES * 4]); // table, filled below
    }
    for (i, g) in grains.iter().enumerate() {
        let Some(byte) = g else { continue };
        let sector = (img.len() / 512) as u32;
        put32(&mut gt, 4 * i, sector);
        let data = vec![*byte; GB];
        if stream {
            let z = zlib(&data);
            let mut gh = vec![0u8; 12];
            put64(&mut gh, 0, i as u64 * GRAIN_SECTORS);
            put32(&mut gh, 8, z.len() as u32);
            img.extend(gh);
            img.extend(z);
            pad(&mut img);
        } else {
            img.extend(data);
        }
    }
    if stream {
        img.extend(marker(4, 1));
        let gt_sector = (img.len() / 512) as u32;
        img.extend(&gt);
        img.extend(marker(1, 2));
        let gd_sector = img.len() / 512;
        let mut gd = vec![0u8; 512];
        put32(&mut gd, 0, gt_sector);
        img.extend(gd);
        img.extend(marker(1, 3));
        img.extend(header(capacity, flags, gd_sector as u64, 3));
        img.extend(vec![0u8; 512]); // end of stream
    } else {
        put32(&mut img, 1024, 3);
        img[1536..1536 + GTES * 4].copy_from_slice(&gt);
    }
    img
}

fn open(img: Vec<u8>) -> block::disk::Result<VmdkDisk> {
    let n = img.len() as u64;
    VmdkDisk::open(Box::new(MemStorage::new(img, n)), "evil.vmdk", true)
}

fn err(img: Vec<u8>) -> String {
    match open(img) {
        Ok(_) => panic!("hostile VMDK opened"),
        Err(e) => e.to_string(),
    }
}

fn read_all(d: &dyn Disk) -> block::disk::Result<Vec<u8>> {
    let mut v = vec![0u8; d.size() as usize];
    d.read_at(&mut v, 0)?;
    Ok(v)
}

#[test]
fn sparse_and_footer_streams_read_as_built() {
    let grains = [Some(1), None, Some(2), Some(0), None, Some(3)];
    for stream in [false, true] {
        let d = open(vmdk(&grains, stream)).unwrap();
        assert_eq!(d.size(), (grains.len() * GB) as u64);
        assert_eq!(
            d.create_type(),
            if stream {
                "streamOptimized"
            } else {
                "monolithicSparse"
            }
        );
        let v = read_all(&d).unwrap();
        for (i, g) in grains.iter().enumerate() {
            let want = g.unwrap_or(0);
            assert!(
                v[i * GB..(i + 1) * GB].iter().all(|&b| b == want),
                "grain {i}"
            );
        }
        let r = d.check();
        assert_eq!((r.corruptions, r.allocated_blocks), (0, 4), "{r:?}");
        // Unallocated grains show as such.
        let e = d.map_extent(GB as u64, GB as u64).unwrap();
        assert!(!e.present && e.zero && !e.data);
    }
}

#[test]
fn header_defects_are_named() {
    let good = vmdk(&[Some(1), None], false);
    for cut in [0usize, 100, 511, 600, 1025] {
        let e = err(good[..cut].to_vec());
        assert!(e.contains("evil.vmdk"), "cut {cut}: {e}");
    }
    let mut img = good.clone();
    put64(&mut img, 20, 3); // grain size not a power of two
    assert!(err(img).contains("grain size"));
    let mut img = good.clone();
    put64(&mut img, 20, 1 << 40);
    assert!(err(img).contains("grain size"));
    let mut img = good.clone();
    put32(&mut img, 44, 0);
    assert!(err(img).contains("grain table entries"));
    let mut img = good.clone();
    put64(&mut img, 12, u64::MAX); // absurd capacity
    assert!(err(img).contains("absurd"));
    let mut img = good.clone();
    put64(&mut img, 12, 1 << 40); // a directory far larger than the file
    let e = err(img);
    assert!(
        e.contains("grain directory") && e.contains("past the end"),
        "{e}"
    );
    let mut img = good.clone();
    put64(&mut img, 56, 1 << 50); // directory offset past the end
    assert!(err(img).contains("grain directory"));
    let mut img = good.clone();
    put64(&mut img, 28, 1 << 40); // descriptor outside the file
    assert!(err(img).contains("descriptor"));
    let mut img = good.clone();
    put32(&mut img, 4, 9);
    assert!(matches!(open(img), Err(DiskError::UnsupportedImage { .. })));

    // A stream whose footer is missing or disagrees with the header.
    let s = vmdk(&[Some(1)], true);
    let cut = s.len() - 1024;
    let mut t = s[..cut].to_vec();
    t.extend(vec![0u8; 1024]);
    assert!(err(t).contains("footer"));
    let mut t = s.clone();
    put64(&mut t, cut + 12, 999);
    assert!(err(t).contains("footer"));

    let e = VmdkDisk::open(Box::new(MemStorage::new(good, 1 << 20)), "x", false)
        .err()
        .unwrap();
    assert!(e.to_string().contains("read-only"), "{e}");
}

#[test]
fn descriptors_naming_other_files_are_refused() {
    // A differencing disk naming a parent, and extents in other files: not opened.
    for text in [
        "parentCID=0badc0de\nparentFileNameHint=\"/etc/shadow\"\n",
        "createType=\"monolithicFlat\"\nRW 64 FLAT \"/etc/shadow\" 0\n",
        "RW 64 SPARSE \"x.vmdk\"\nRW 64 SPARSE \"../../other.vmdk\"\n",
    ] {
        let mut img = vmdk(&[Some(1)], false);
        let mut d = text.as_bytes().to_vec();
        d.resize(512, 0);
        img[512..1024].copy_from_slice(&d);
        let e = open(img).err().unwrap();
        assert!(
            matches!(e, DiskError::UnsupportedImage { .. }),
            "{text}: {e}"
        );
    }
    // A bare text descriptor file (extents elsewhere) is recognised and refused.
    let mut t = descriptor("twoGbMaxExtentSparse");
    t.truncate(200);
    let e = open(t).err().unwrap();
    assert!(e.to_string().contains("descriptor files"), "{e}");
}

#[test]
fn table_and_grain_defects_fail_reads_and_show_in_check() {
    // Grain table entry past the end; directory entry past the end.
    let mut img = vmdk(&[Some(1), Some(2), None], false);
    put32(&mut img, 1536 + 4, 1 << 30);
    let d = open(img).unwrap();
    let mut b = vec![0u8; GB];
    d.read_at(&mut b, 0).unwrap();
    let e = d.read_at(&mut b, GB as u64).unwrap_err().to_string();
    assert!(e.contains("evil.vmdk") && e.contains("grain 1"), "{e}");
    assert_eq!(d.check().corruptions, 1);

    let mut img = vmdk(&[Some(1)], false);
    put32(&mut img, 1024, 1 << 30);
    let d = open(img).unwrap();
    let e = d.read_at(&mut b, 0).unwrap_err().to_string();
    assert!(e.contains("grain table"), "{e}");
    assert!(d.check().corruptions > 0);

    // Compressed grains: garbage data, a wrong LBA, an absurd size, a bomb.
    let s = vmdk(&[Some(7), Some(8)], true);
    let g0 = 1024; // first grain header (sector 2)
    let mut t = s.clone();
    t[g0 + 14] ^= 0xff;
    t[g0 + 15] ^= 0xff;
    let d = open(t).unwrap();
    let e = d.read_at(&mut b, 0).unwrap_err().to_string();
    assert!(e.contains("corrupt") || e.contains("inflates"), "{e}");
    d.read_at(&mut b, GB as u64).unwrap();
    assert!(b.iter().all(|&x| x == 8));
    assert_eq!(d.check().corruptions, 1);
    let mut t = s.clone();
    put64(&mut t, g0, 77);
    assert!(open(t)
        .unwrap()
        .read_at(&mut b, 0)
        .unwrap_err()
        .to_string()
        .contains("sector 77"));
    let mut t = s.clone();
    put32(&mut t, g0 + 8, u32::MAX);
    assert!(open(t)
        .unwrap()
        .read_at(&mut b, 0)
        .unwrap_err()
        .to_string()
        .contains("size"));

    // A grain inflating far past the grain size is cut off, not buffered.
    let bomb = zlib(&vec![0u8; 64 << 20]);
    let mut t = s[..g0].to_vec();
    let mut gh = vec![0u8; 12];
    put32(&mut gh, 8, bomb.len() as u32);
    t.extend(gh);
    t.extend(&bomb);
    pad(&mut t);
    let gt_sector = (t.len() / 512) as u32;
    let mut gt = vec![0u8; GTES * 4];
    put32(&mut gt, 0, 2);
    t.extend(marker(4, 1));
    let gt_sector = gt_sector + 1;
    t.extend(gt);
    let gd_sector = t.len() / 512 + 1;
    t.extend(marker(1, 2));
    let mut gd = vec![0u8; 512];
    put32(&mut gd, 0, gt_sector);
    t.extend(gd);
    t.extend(marker(1, 3));
    t.extend(header(
        2 * GRAIN_SECTORS,
        3 | (3 << 16),
        gd_sector as u64,
        3,
    ));
    t.extend(vec![0u8; 512]);
    let d = open(t).unwrap();
    let e = d.read_at(&mut b, 0).unwrap_err().to_string();
    assert!(e.contains("size") || e.contains("inflates"), "{e}");
}

#[test]
fn hand_built_footer_stream_reads_the_same_in_qemu_img() {
    // Cross-checks the footer layout above against qemu-img, where it is installed.
    if std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: qemu-img not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let grains = [Some(1), None, Some(2), Some(9)];
    let img = dir.path().join("s.vmdk");
    std::fs::write(&img, vmdk(&grains, true)).unwrap();
    let out = dir.path().join("s.raw");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(&img)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let d = open(std::fs::read(&img).unwrap()).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), read_all(&d).unwrap());
}

#[test]
fn descriptor_files_open_contained_extents_only() {
    use block::{open, BackingPolicy, ImageFormat, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("vm");
    std::fs::create_dir(&sub).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, vec![0x5au8; 8192]).unwrap();
    std::fs::write(sub.join("data-flat.vmdk"), vec![3u8; 8192]).unwrap();
    std::fs::write(sub.join("s.vmdk"), vmdk(&[Some(4), None], false)).unwrap();
    let write_desc = |name: &str, extents: &str| {
        let p = sub.join(name);
        let text = format!(
            "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\n{extents}"
        );
        std::fs::write(&p, text).unwrap();
        p
    };
    let given = OpenOptions {
        format: Some(ImageFormat::Vmdk),
        read_only: true,
        backing: BackingPolicy::QemuImg,
        ..Default::default()
    };
    // Flat, zero and sparse extents laid end to end.
    let good = write_desc(
        "good.vmdk",
        "RW 16 FLAT \"data-flat.vmdk\" 0\nRW 8 ZERO\nRW 16 SPARSE \"s.vmdk\"\n",
    );
    let d = open(&good, &given).unwrap();
    assert_eq!(d.size(), 40 * 512);
    let v = read_all(d.as_ref()).unwrap();
    assert!(v[..8192].iter().all(|&b| b == 3));
    assert!(v[8192..12288].iter().all(|&b| b == 0));
    assert!(v[12288..16384].iter().all(|&b| b == 4));
    assert!(v[16384..].iter().all(|&b| b == 0));

    // Probed on a guest-writable path (strict rule): no extent file is opened.
    let strict = OpenOptions {
        read_only: true,
        ..Default::default()
    };
    let e = open(&good, &strict).err().unwrap().to_string();
    assert!(e.contains("probed") && e.contains("data-flat.vmdk"), "{e}");
    // Given the format, the same descriptor opens under the strict rule too.
    let strict_given = OpenOptions {
        format: Some(ImageFormat::Vmdk),
        ..strict.clone()
    };
    open(&good, &strict_given).unwrap();

    // Absolute names and `..` are refused unless allowed.
    let abs = write_desc(
        "abs.vmdk",
        &format!("RW 16 FLAT \"{}\" 0\n", secret.display()),
    );
    let up = write_desc("up.vmdk", "RW 16 FLAT \"../secret\" 0\n");
    for p in [&abs, &up] {
        let e = open(p, &given).err().unwrap().to_string();
        assert!(e.contains("outside the descriptor's directory"), "{e}");
        let allowed = OpenOptions {
            any_extent_path: true,
            ..given.clone()
        };
        let d = open(p, &allowed).unwrap();
        assert!(read_all(d.as_ref()).unwrap().iter().all(|&b| b == 0x5a));
    }

    // Missing and short extent files, size mismatches, nonsense: clear errors.
    for (extents, expect) in [
        ("RW 16 FLAT \"nowhere.vmdk\" 0\n", "not found"),
        ("RW 64 FLAT \"data-flat.vmdk\" 0\n", "holds 8192 bytes"),
        ("RW 16 FLAT \"data-flat.vmdk\" 9\n", "holds 8192 bytes"),
        ("RW 8 SPARSE \"s.vmdk\"\n", "the descriptor says"),
        ("RW 16 SPARSE \"data-flat.vmdk\"\n", "KDMV"),
        ("RW 16 SPARSE \"good.vmdk\"\n", "descriptor file"),
        ("", "no extents"),
        ("RW 16 VMFSSPARSE \"s.vmdk\"\n", "VMFSSPARSE"),
    ] {
        let p = write_desc("bad.vmdk", extents);
        let e = open(&p, &given).err().unwrap().to_string();
        assert!(e.contains(expect), "{extents}: {e}");
    }
    let big = sub.join("big.vmdk");
    let mut text = b"# Disk DescriptorFile\n".to_vec();
    text.resize(2 << 20, b' ');
    std::fs::write(&big, text).unwrap();
    assert!(open(&big, &given)
        .err()
        .unwrap()
        .to_string()
        .contains("absurd"));
}
