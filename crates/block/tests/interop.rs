//! Interoperability with QEMU's tools (Debian's `qemu-utils`): images written here
//! pass `qemu-img check` and read back identically through `qemu-img`; images QEMU
//! writes (plain, with a backing file, compressed with zlib and zstd) read back
//! identically here. Skipped, with a message, where qemu-img is not installed.

mod common;

use block::qcow2::{Compression, CreateOptions};
use block::storage::FileStorage;
use block::{open, BackingPolicy, Disk, ImageFormat, OpenOptions, Qcow2Disk};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have_qemu() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok()
        && Command::new("qemu-io").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIP: qemu-img/qemu-io not found (install qemu-utils to run interop tests)");
    }
    ok
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What qemu-img reads from an image, via conversion to raw.
fn qemu_read(img: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("qemu-read.raw");
    run("qemu-img", &["convert", "-O", "raw", s(img), s(&out)]);
    std::fs::read(out).unwrap()
}

fn hako_read(img: &Path, format: ImageFormat) -> Vec<u8> {
    let d = open(
        img,
        &OpenOptions {
            format: Some(format),
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut v = vec![0u8; d.size() as usize];
    d.read_at(&mut v, 0).unwrap();
    v
}

fn create_file(path: &Path, o: CreateOptions) -> Qcow2Disk {
    let f = std::fs::File::create_new(path).unwrap();
    Qcow2Disk::create(&FileStorage::new(f), &o).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    Qcow2Disk::open(Box::new(FileStorage::new(f)), s(path), false).unwrap()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn our_images_pass_qemu_check_and_read_identically() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    for (name, o) in [
        (
            "v3-64k.qcow2",
            CreateOptions {
                size: 24 << 20,
                ..Default::default()
            },
        ),
        (
            "v3-512.qcow2",
            CreateOptions {
                size: 6 << 20,
                cluster_bits: 9,
                refcount_order: 6,
                ..Default::default()
            },
        ),
        (
            "v2-4k.qcow2",
            CreateOptions {
                size: 8 << 20,
                cluster_bits: 12,
                version: 2,
                ..Default::default()
            },
        ),
    ] {
        let p = dir.path().join(name);
        let d = create_file(&p, o);
        let mut model = vec![0u8; d.size() as usize];
        random_ops(&d, &mut model, &mut Rng(11), 200, 150_000);
        d.resize(d.size() + (1 << 20)).unwrap();
        model.resize(d.size() as usize, 0);
        // Shrink into the middle of a cluster.
        d.resize(d.size() - (3 << 19) - 1536).unwrap();
        model.truncate(d.size() as usize);
        drop(d);
        run("qemu-img", &["check", s(&p)]);
        assert!(
            qemu_read(&p, dir.path()) == model,
            "{name}: qemu reads different data"
        );
    }
}

#[test]
fn our_compressed_images_read_in_qemu() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    for comp in [Compression::Zlib, Compression::Zstd] {
        let p = dir.path().join(format!("{comp:?}.qcow2"));
        let d = create_file(
            &p,
            CreateOptions {
                size: 4 << 20,
                compression: comp,
                ..Default::default()
            },
        );
        let mut model = vec![0u8; 4 << 20];
        for c in 0..64u64 {
            let data: Vec<u8> = (0..65536u64).map(|i| ((i * c / 97) % 13) as u8).collect();
            d.write_compressed(c * 65536, &data).unwrap();
            model[(c * 65536) as usize..((c + 1) * 65536) as usize].copy_from_slice(&data);
        }
        drop(d);
        run("qemu-img", &["check", s(&p)]);
        assert!(qemu_read(&p, dir.path()) == model, "{comp:?}");
    }
}

fn qemu_io(img: &Path, fmt: &str, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(s(img));
    run("qemu-io", &args);
}

#[test]
fn qemu_images_read_identically_here() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let base = dir.path().join("base.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", s(&base), "20M"],
    );
    qemu_io(
        &base,
        "qcow2",
        &[
            "write -P 0x11 0 3M",
            "write -P 0x22 5M 100k",
            "write -z 1M 64k",
        ],
    );
    assert_eq!(
        hako_read(&base, ImageFormat::Qcow2),
        qemu_read(&base, dir.path())
    );

    // Overlay with a backing file, written by qemu-io.
    let top = dir.path().join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            s(&top),
            "24M",
        ],
    );
    qemu_io(
        &top,
        "qcow2",
        &[
            "write -P 0x33 2M 4k",
            "write -P 0x44 19M 2M",
            "discard 0 64k",
        ],
    );
    let ours = hako_read(&top, ImageFormat::Qcow2);
    assert!(ours == qemu_read(&top, dir.path()), "overlay differs");

    // Raw backing file.
    let rbase = dir.path().join("base.raw");
    std::fs::write(
        &rbase,
        (0..3u32 << 20)
            .map(|i| (i % 241) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let rtop = dir.path().join("rtop.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            s(&rtop),
            "4M",
        ],
    );
    qemu_io(&rtop, "qcow2", &["write -P 0x55 100k 5k"]);
    assert!(hako_read(&rtop, ImageFormat::Qcow2) == qemu_read(&rtop, dir.path()));

    // Compressed by qemu-img convert -c, zlib and zstd.
    for ct in ["zlib", "zstd"] {
        let c = dir.path().join(format!("c-{ct}.qcow2"));
        run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("compression_type={ct}"),
                s(&top),
                s(&c),
            ],
        );
        assert!(
            hako_read(&c, ImageFormat::Qcow2) == ours,
            "{ct} compressed image differs"
        );
    }

    // Writing into a QEMU image here keeps it clean for qemu-img check.
    let d = open(
        &top,
        &OpenOptions {
            format: Some(ImageFormat::Qcow2),
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = ours.clone();
    random_ops(d.as_ref(), &mut model, &mut Rng(77), 100, 200_000);
    drop(d);
    run("qemu-img", &["check", s(&top)]);
    assert!(qemu_read(&top, dir.path()) == model);
}

#[test]
fn probed_image_does_not_open_its_backing_file() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let secret: PathBuf = dir.path().join("secret.raw");
    std::fs::write(&secret, b"host secret").unwrap();
    let top = dir.path().join("guest-disk.img");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&secret),
            "-F",
            "raw",
            s(&top),
            "1M",
        ],
    );
    let probed = OpenOptions::default();
    let e = open(&top, &probed)
        .err()
        .expect("probed image with backing must not open");
    assert!(e.to_string().contains("refusing"), "{e}");
    assert!(open(
        &top,
        &OpenOptions {
            backing: BackingPolicy::Trust,
            ..Default::default()
        }
    )
    .is_ok());
    assert!(open(
        &top,
        &OpenOptions {
            format: Some(ImageFormat::Qcow2),
            ..Default::default()
        }
    )
    .is_ok());
}
