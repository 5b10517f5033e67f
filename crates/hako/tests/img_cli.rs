//! `hako img` end to end: create/info/check/convert/resize, exit statuses, bad input,
//! the probing safety rule, and agreement with qemu-img where it is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hako(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hako"))
        .arg("img")
        .args(args)
        .output()
        .expect("run hako")
}

fn ok(args: &[&str]) -> String {
    let o = hako(args);
    assert!(
        o.status.success(),
        "hako img {args:?}: {}{}",
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
        eprintln!("SKIP (qemu part): qemu-img not found; install qemu-utils");
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

/// Writes guest data through the block layer (as a VM would).
fn write_pattern(path: &Path, fmt: block::ImageFormat, at: u64, len: usize, byte: u8) {
    let d = block::open(
        path,
        &block::OpenOptions {
            format: Some(fmt),
            ..Default::default()
        },
    )
    .unwrap();
    d.write_at(&vec![byte; len], at).unwrap();
    d.flush().unwrap();
}

#[test]
fn create_info_check_resize() {
    let d = Dir::new();
    let img = d.p("disk.qcow2");
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&img),
        "10M",
    ]);
    let v = json(&ok(&["info", "--output", "json", s(&img)]));
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual-size"], 10 << 20);
    assert_eq!(v["cluster-size"], 4096);
    assert_eq!(v["format-specific"]["data"]["compat"], "1.1");
    write_pattern(&img, block::ImageFormat::Qcow2, 12345, 100_000, 7);
    let out = ok(&["check", s(&img)]);
    assert!(out.contains("No errors were found"), "{out}");
    ok(&["resize", s(&img), "+1M"]);
    let v = json(&ok(&["info", "--output=json", s(&img)]));
    assert_eq!(v["virtual-size"], 11 << 20);
    let o = hako(&["resize", s(&img), "5M"]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--shrink"));
    ok(&["resize", "--shrink", s(&img), "5M"]);
    assert_eq!(code(&hako(&["check", s(&img)])), 0);
    ok(&["resize", s(&img), "11M"]);

    let raw = d.p("disk.raw");
    ok(&["create", "-f", "raw", s(&raw), "1M"]);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 1 << 20);
    ok(&["resize", "-f", "raw", "--shrink", s(&raw), "-512k"]);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 512 << 10);
    assert_eq!(code(&hako(&["check", s(&raw)])), 63);

    if have_qemu() {
        let q = Command::new("qemu-img")
            .args(["check", s(&img)])
            .output()
            .unwrap();
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stdout));
        let q = Command::new("qemu-img")
            .args(["info", "--output=json", s(&img)])
            .output()
            .unwrap();
        let qv = json(&String::from_utf8_lossy(&q.stdout));
        assert_eq!(qv["virtual-size"], 11 << 20);
    }
}

#[test]
fn check_exit_status_tells_leaks_and_corruption() {
    let d = Dir::new();
    let img = d.p("x.qcow2");
    ok(&["create", "-q", "-f", "qcow2", s(&img), "1M"]);
    // Layout: header, refcount table, refcount block (0x20000), L1. Mark cluster 4 used
    // without any reference: a leak.
    let mut b = std::fs::read(&img).unwrap();
    b.resize(0x50000, 0);
    b[0x20008..0x2000a].copy_from_slice(&1u16.to_be_bytes());
    std::fs::write(&img, &b).unwrap();
    let o = hako(&["check", s(&img)]);
    assert_eq!(code(&o), 3, "{}", String::from_utf8_lossy(&o.stdout));
    let v = json(&String::from_utf8_lossy(
        &hako(&["check", "--output", "json", s(&img)]).stdout,
    ));
    assert_eq!(v["leaks"], 1);
    let out = ok(&["check", "-r", "leaks", s(&img)]);
    assert!(
        out.contains("1 leaked clusters") && out.contains("No errors"),
        "{out}"
    );
    assert_eq!(code(&hako(&["check", s(&img)])), 0);
    // Refcount of the L1 table cluster zeroed: corruption.
    let mut b = std::fs::read(&img).unwrap();
    b[0x20006..0x20008].copy_from_slice(&0u16.to_be_bytes());
    std::fs::write(&img, &b).unwrap();
    let o = hako(&["check", s(&img)]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn convert_round_trips_and_is_sparse() {
    let d = Dir::new();
    let src = d.p("src.qcow2");
    ok(&["create", "-q", "-f", "qcow2", s(&src), "64M"]);
    write_pattern(&src, block::ImageFormat::Qcow2, 1 << 20, 3 << 20, 0x5a);
    write_pattern(&src, block::ImageFormat::Qcow2, 40 << 20, 4096, 0xa5);
    let raw = d.p("out.raw");
    ok(&["convert", "-f", "qcow2", "-O", "raw", s(&src), s(&raw)]);
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(bytes.len(), 64 << 20);
    assert!(bytes[(1 << 20)..(4 << 20)].iter().all(|&x| x == 0x5a));
    assert!(bytes[..(1 << 20)].iter().all(|&x| x == 0));
    assert_eq!(bytes[40 << 20], 0xa5);
    {
        use std::os::unix::fs::MetadataExt;
        let used = std::fs::metadata(&raw).unwrap().blocks() * 512;
        assert!(used < 16 << 20, "raw output not sparse: {used} bytes used");
    }
    for extra in [
        &[][..],
        &["-c"][..],
        &["-c", "-o", "compression_type=zstd"][..],
    ] {
        let q = d.p("back.qcow2");
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&raw), s(&q)]);
        ok(&args);
        assert_eq!(code(&hako(&["check", s(&q)])), 0);
        let again = d.p("again.raw");
        ok(&["convert", "-O", "raw", s(&q), s(&again)]);
        assert!(std::fs::read(&again).unwrap() == bytes, "{extra:?}");
        if have_qemu() {
            let c = Command::new("qemu-img")
                .args(["compare", s(&raw), s(&q)])
                .output()
                .unwrap();
            assert!(
                c.status.success(),
                "{extra:?}: {}",
                String::from_utf8_lossy(&c.stdout)
            );
        }
        std::fs::remove_file(&q).unwrap();
    }
}

#[test]
fn backing_chains_and_the_probing_rule() {
    let d = Dir::new();
    let base = d.p("base.qcow2");
    let top = d.p("top.qcow2");
    ok(&["create", "-q", "-f", "qcow2", s(&base), "8M"]);
    write_pattern(&base, block::ImageFormat::Qcow2, 0, 1 << 20, 1);
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    write_pattern(&top, block::ImageFormat::Qcow2, 4096, 4096, 2);
    let v = json(&ok(&[
        "info",
        "--output",
        "json",
        "--backing-chain",
        "-f",
        "qcow2",
        s(&top),
    ]));
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["backing-filename"], "base.qcow2");
    assert_eq!(v[0]["virtual-size"], 8 << 20);

    // Probed: `hako img` follows qemu-img and opens the recorded backing chain.
    let out = d.p("flat.raw");
    ok(&["convert", "-O", "raw", s(&top), s(&out)]);
    let b = std::fs::read(&out).unwrap();
    assert!(b[..4096].iter().all(|&x| x == 1) && b[4096..8192].iter().all(|&x| x == 2));
    ok(&["convert", "-f", "qcow2", "-O", "raw", s(&top), s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), b);

    // A raw guest disk holding a qcow2 header that names a host file: the disk of
    // `hako run --disk` (strict rule) does not open it.
    let secret = d.p("secret");
    std::fs::write(&secret, b"host secret").unwrap();
    let evil = d.p("guest.img");
    ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&secret),
        "-F",
        "raw",
        s(&evil),
        "1M",
    ]);
    let strict = block::OpenOptions {
        read_only: true,
        backing: block::BackingPolicy::Strict,
        ..Default::default()
    };
    let e = block::open(&evil, &strict)
        .err()
        .expect("strict rule refuses");
    assert!(e.to_string().contains("refusing"), "{e}");
}

#[test]
fn bad_input_gets_clear_errors() {
    let d = Dir::new();
    let img = d.p("bad.qcow2");
    ok(&["create", "-q", "-f", "qcow2", s(&img), "1G"]);
    let mut b = std::fs::read(&img).unwrap();
    b[40..48].copy_from_slice(&0x7000_0000u64.to_be_bytes()); // L1 past the end
    std::fs::write(&img, &b).unwrap();
    let o = hako(&["info", s(&img)]);
    assert_eq!(code(&o), 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.qcow2") && err.contains("L1 table"),
        "{err}"
    );
    // Truncated.
    std::fs::write(&img, &b[..60]).unwrap();
    let o = hako(&["check", "-f", "qcow2", s(&img)]);
    assert_eq!(code(&o), 1);
    let o = hako(&["create", "-f", "qcow2", s(&d.p("x")), "12Q"]);
    assert_eq!(code(&o), 1);
    let o = hako(&["info", s(&d.p("missing.qcow2"))]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.qcow2"));
}

/// A source for the parallel convert tests: compressible text, incompressible
/// clusters, zero runs and holes, and a size that ends inside a cluster.
fn mixed_source(path: &Path) -> Vec<u8> {
    let size = (24usize << 20) + 7 * 512;
    let mut b = vec![0u8; size];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (i, c) in b.chunks_mut(64 << 10).enumerate() {
        match i % 9 {
            // Zero clusters, and holes in the file below.
            2 | 5 => {}
            // Incompressible: stored uncompressed even with -c.
            7 => c.iter_mut().for_each(|v| *v = rnd() as u8),
            _ => {
                let words = [&b"disk "[..], b"image ", b"qcow2 ", b"hako ", b"cluster "];
                let mut k = 0;
                while k < c.len() {
                    let w = words[(rnd() % 5) as usize];
                    let n = w.len().min(c.len() - k);
                    c[k..k + n].copy_from_slice(&w[..n]);
                    k += n;
                }
            }
        }
    }
    std::fs::write(path, &b).unwrap();
    b
}

fn qemu_accepts(img: &Path, src: &Path) {
    let c = Command::new("qemu-img")
        .args(["check", s(img)])
        .output()
        .unwrap();
    assert!(c.status.success(), "qemu-img check {img:?}: {c:?}");
    let c = Command::new("qemu-img")
        .args(["compare", "-f", "raw", s(src), s(img)])
        .output()
        .unwrap();
    assert!(c.status.success(), "qemu-img compare {img:?}: {c:?}");
}

#[test]
fn convert_in_parallel_streams_is_deterministic() {
    let d = Dir::new();
    let src = d.p("src.raw");
    let data = mixed_source(&src);
    let qemu = have_qemu();
    for extra in [
        &["-c"][..],
        &["-c", "-o", "compression_type=zstd"][..],
        &[][..],
    ] {
        let mut first: Option<Vec<u8>> = None;
        // Without -W the output is the same bytes whatever the number of streams
        // (the default is 8); compression runs on all of them.
        for m in [None, Some("1"), Some("2"), Some("16")] {
            let out = d.p("out.qcow2");
            let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2"];
            args.extend_from_slice(extra);
            if let Some(m) = m {
                args.extend_from_slice(&["-m", m]);
            }
            args.extend_from_slice(&[s(&src), s(&out)]);
            ok(&args);
            let bytes = std::fs::read(&out).unwrap();
            match &first {
                None => {
                    assert_eq!(code(&hako(&["check", s(&out)])), 0, "{extra:?}");
                    if qemu {
                        qemu_accepts(&out, &src);
                    }
                    if !extra.is_empty() {
                        let info = json(&ok(&["check", "--output", "json", s(&out)]));
                        let n = info["compressed-clusters"].as_u64().unwrap_or(0);
                        assert!(n > 100, "{extra:?}: {n} compressed clusters: {info}");
                        assert!(bytes.len() < data.len() / 2, "{extra:?}: {}", bytes.len());
                    }
                    first = Some(bytes);
                }
                Some(f) => assert!(*f == bytes, "{extra:?} -m {m:?} differs from -m 8"),
            }
            std::fs::remove_file(&out).unwrap();
        }
    }
    // -W (out-of-order writes): accepted with every output, as qemu-img; the content
    // is the same, the qcow2 layout may differ.
    for (fmt, extra) in [
        ("qcow2", &["-c"][..]),
        ("qcow2", &[][..]),
        ("raw", &[][..]),
        ("vmdk", &["-o", "subformat=streamOptimized"][..]),
    ] {
        let out = d.p("w.out");
        let mut args = vec!["convert", "-q", "-W", "-m", "16", "-f", "raw", "-O", fmt];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&src), s(&out)]);
        ok(&args);
        if fmt != "raw" {
            assert_eq!(code(&hako(&["check", s(&out)])), 0, "-W {fmt} {extra:?}");
        }
        let back = d.p("w.raw");
        ok(&["convert", "-O", "raw", s(&out), s(&back)]);
        let got = std::fs::read(&back).unwrap();
        assert!(got[..data.len()] == data[..], "-W {fmt} {extra:?}");
        assert!(got[data.len()..].iter().all(|&b| b == 0));
        if qemu && fmt == "qcow2" {
            qemu_accepts(&out, &src);
        }
        std::fs::remove_file(&out).unwrap();
    }
    // -m outside 1..16 (or not a number) fails as in qemu-img, with its message.
    for bad in ["0", "17", "-3", "many"] {
        let o = hako(&["convert", "-m", bad, "-O", "raw", s(&src), s(&d.p("x.raw"))]);
        assert_eq!(code(&o), 1, "-m {bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(
                "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16"
            ),
            "-m {bad}: {err}"
        );
        if qemu {
            let q = Command::new("qemu-img")
                .args(["convert", "-m", bad, "-O", "raw", s(&src), s(&d.p("q.raw"))])
                .output()
                .unwrap();
            assert_eq!(q.status.code(), Some(1), "qemu-img -m {bad}");
        }
    }
    // The hex and octal forms qemu-img's strtol accepts.
    ok(&[
        "convert",
        "-q",
        "-m",
        "0x10",
        "-O",
        "raw",
        s(&src),
        s(&d.p("x.raw")),
    ]);
    assert!(std::fs::read(d.p("x.raw")).unwrap() == data);
}
