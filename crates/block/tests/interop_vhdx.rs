//! VHDX images made by QEMU's tools (`qemu-img create/convert -f vhdx`, written by
//! `qemu-io`), dynamic and fixed, read back here exactly as qemu-img reads them, pass
//! the structural check and report their format. Skipped, with a message, where
//! qemu-img is not installed.

mod common;

use block::info::inspect;
use block::{open, probe, ImageFormat, OpenOptions, VhdxDisk};
use common::Rng;
use std::path::Path;
use std::process::Command;

fn have_qemu() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok()
        && Command::new("qemu-io").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIP: qemu-img/qemu-io not found (install qemu-utils to run interop tests)");
    }
    ok
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qemu_read(img: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("qemu-read.raw");
    run(
        "qemu-img",
        &["convert", "-f", "vhdx", "-O", "raw", s(img), s(&out)],
    );
    std::fs::read(out).unwrap()
}

/// Opens `img` (format probed) and reads all of it; also checks the map walk covers
/// the disk and that ranges reported zero read as zeroes.
fn hako_read(img: &Path) -> Vec<u8> {
    assert_eq!(probe(img).unwrap(), ImageFormat::Vhdx);
    let opts = OpenOptions {
        read_only: true,
        ..Default::default()
    };
    let d = open(img, &opts).unwrap();
    assert_eq!(d.format(), "vhdx");
    let mut v = vec![0u8; d.size() as usize];
    d.read_at(&mut v, 0).unwrap();
    let mut pos = 0;
    while pos < d.size() {
        let e = d.map_extent(pos, d.size() - pos).unwrap();
        assert!(e.len > 0);
        if e.zero {
            assert!(v[pos as usize..(pos + e.len) as usize]
                .iter()
                .all(|&b| b == 0));
        }
        pos += e.len;
    }
    v
}

fn check_clean(img: &Path) -> VhdxDisk {
    let f = std::fs::File::open(img).unwrap();
    let st = Box::new(block::storage::FileStorage::new(f));
    let d = VhdxDisk::open(st, s(img), true).unwrap();
    let r = d.check();
    assert_eq!(r.corruptions, 0, "{:?}", r.errors);
    d
}

/// Random data with zero runs, not a multiple of the block size.
fn random_raw(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut v = vec![0u8; size];
    for (i, chunk) in v.chunks_mut(256 << 10).enumerate() {
        if i % 3 != 1 {
            chunk.iter_mut().for_each(|b| *b = rng.next() as u8);
        }
    }
    std::fs::write(path, &v).unwrap();
    v
}

#[test]
fn qemu_converted_vhdx_reads_identically() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.raw");
    let data = random_raw(&raw, (11 << 20) + 3 * 512, 5);
    for (sub, bs, kind) in [
        ("dynamic", None, block::vhdx::VhdxKind::Dynamic),
        ("fixed", None, block::vhdx::VhdxKind::Fixed),
        ("dynamic", Some("1M"), block::vhdx::VhdxKind::Dynamic),
        ("fixed", Some("2M"), block::vhdx::VhdxKind::Fixed),
    ] {
        let img = dir
            .path()
            .join(format!("{sub}-{}.vhdx", bs.unwrap_or("auto")));
        let mut o = format!("subformat={sub}");
        if let Some(bs) = bs {
            o.push_str(&format!(",block_size={bs}"));
        }
        run(
            "qemu-img",
            &["convert", "-O", "vhdx", "-o", &o, s(&raw), s(&img)],
        );
        let ours = hako_read(&img);
        assert!(
            ours == data,
            "{sub} {bs:?}: content differs from the source"
        );
        assert!(
            ours == qemu_read(&img, dir.path()),
            "{sub}: differs from qemu"
        );
        let d = check_clean(&img);
        assert_eq!(d.kind(), kind);
        assert_eq!(d.sector_sizes().0, 512);
        let i = inspect(&img, None).unwrap();
        assert_eq!(i.format, ImageFormat::Vhdx);
        assert_eq!(i.virtual_size, data.len() as u64);
        assert_eq!(i.cluster_size, Some(d.block_size()));
        assert_eq!(
            i.subformat,
            Some(if sub == "fixed" { "fixed" } else { "dynamic" })
        );
        if let Some(bs) = bs {
            assert_eq!(
                d.block_size(),
                bs.trim_end_matches('M').parse::<u64>().unwrap() << 20
            );
        }
    }
}

#[test]
fn qemu_created_and_written_vhdx_reads_identically() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in ["dynamic", "fixed"] {
        let img = dir.path().join(format!("w-{sub}.vhdx"));
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vhdx",
                "-o",
                &format!("subformat={sub},block_size=1M"),
                s(&img),
                "20M",
            ],
        );
        // Freshly created: reads as zeroes.
        assert!(hako_read(&img).iter().all(|&b| b == 0));
        let mut args = vec!["-f", "vhdx"];
        for c in [
            "write -P 0x11 0 3M",
            "write -P 0x22 9M 100k",
            "write -z 1M 64k",
            "write -P 0x33 19M 1M",
            "write -P 0x44 4095k 2k",
        ] {
            args.extend(["-c", c]);
        }
        args.push(s(&img));
        run("qemu-io", &args);
        let ours = hako_read(&img);
        assert_eq!(ours.len(), 20 << 20);
        assert!(ours[0..4096].iter().all(|&b| b == 0x11));
        assert!(ours[9 << 20..(9 << 20) + 4096].iter().all(|&b| b == 0x22));
        assert!(
            ours == qemu_read(&img, dir.path()),
            "{sub}: differs from qemu"
        );
        let d = check_clean(&img);
        assert!(d.check().allocated_blocks >= 5);
        // Writable opens are refused.
        let e = open(
            &img,
            &OpenOptions {
                format: Some(ImageFormat::Vhdx),
                ..Default::default()
            },
        )
        .err()
        .expect("vhdx must not open writable");
        assert!(e.to_string().contains("read-only"), "{e}");
    }
}
