//! `hako img convert -O vpc` and `-O vhdx`, checked against qemu-img in the same run:
//! the images hako writes have the virtual size qemu-img gives the same request,
//! pass `qemu-img check` (vhdx; qemu-img has no check for vpc, so there `compare` is
//! the test), compare identical to the source with qemu-img and with hako, read back
//! through qemu-img and through hako's own reader, and leave zero blocks unallocated.
//! Skipped, with a message, where qemu-img is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// xorshift64*, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A sparse raw file of `size` bytes: random 64 KiB runs between holes, two whole
/// 2 MiB blocks of zeroes (one of them written, not a hole), random bytes at the end.
fn random_raw(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut data = vec![0u8; size];
    for chunk in data.chunks_mut(64 << 10) {
        if rng.next() % 3 == 0 {
            chunk.iter_mut().for_each(|b| *b = rng.next() as u8);
        }
    }
    for b in [1usize, 2] {
        if let Some(z) = data.get_mut(b << 21..(b + 1) << 21) {
            z.fill(0);
        }
    }
    let last = size - 700;
    data[last..].iter_mut().for_each(|b| *b = rng.next() as u8);
    std::fs::write(path, &data).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let bs = block::storage::FileStorage::new(f);
    use block::storage::Storage;
    for (k, chunk) in data.chunks(64 << 10).enumerate() {
        if chunk.iter().all(|&b| b == 0) && k != 48 {
            let _ = bs.punch_hole((k as u64) << 16, chunk.len() as u64);
        }
    }
    data
}

fn virtual_size(img: &Path, fmt: &str) -> u64 {
    let q = json(&ok(
        qemu(&["info", "-f", fmt, "--output", "json", s(img)]),
        "qemu-img info",
    ));
    q["virtual-size"].as_u64().unwrap()
}

/// The virtual size and cluster size qemu-img itself gives `create -f FMT SIZE`.
fn qemu_create(d: &Dir, fmt: &str, size: u64, opts: &str) -> serde_json::Value {
    let p = d.p(&format!("ref.{fmt}"));
    let mut args = vec!["create", "-q", "-f", fmt];
    if !opts.is_empty() {
        args.extend_from_slice(&["-o", opts]);
    }
    let sz = size.to_string();
    args.extend_from_slice(&[s(&p), &sz]);
    ok(qemu(&args), "qemu-img create");
    let q = json(&ok(
        qemu(&["info", "-f", fmt, "--output", "json", s(&p)]),
        "qemu-img info",
    ));
    std::fs::remove_file(&p).unwrap();
    q
}

/// qemu-img and hako both find `img` identical to the raw `src`, and both read back
/// `data` followed by zeroes up to the image's size.
fn same_content(d: &Dir, src: &Path, img: &Path, fmt: &str, data: &[u8]) {
    let c = qemu(&["compare", "-f", "raw", "-F", fmt, s(src), s(img)]);
    let out = String::from_utf8_lossy(&c.stdout);
    assert_eq!(code(&c), 0, "qemu-img compare {fmt}: {out}");
    assert!(out.contains("Images are identical."), "{out}");
    let h = hako(&["compare", "-f", "raw", "-F", fmt, s(src), s(img)]);
    assert_eq!(code(&h), 0, "hako compare {fmt}: {h:?}");
    for (tool, back) in [("qemu-img", d.p("q.raw")), ("hako", d.p("h.raw"))] {
        let args = ["convert", "-f", fmt, "-O", "raw", s(img), s(&back)];
        if tool == "hako" {
            ok(hako(&args), "hako convert back");
        } else {
            ok(qemu(&args), "qemu-img convert back");
        }
        let got = std::fs::read(&back).unwrap();
        assert!(got[..data.len()] == *data, "{tool} reads {fmt} back");
        assert!(got[data.len()..].iter().all(|&b| b == 0), "{tool} tail");
        std::fs::remove_file(&back).unwrap();
    }
}

/// Bytes qemu-img's map reports as holding no data in a VHD (its unallocated blocks;
/// qemu-img 7.2's VHDX driver reports no allocation status at all).
fn unallocated_vpc(img: &Path) -> u64 {
    let m = json(&ok(
        qemu(&["map", "-f", "vpc", "--output", "json", s(img)]),
        "qemu-img map",
    ));
    m.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == false)
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

/// Blocks `hako img check` counts as allocated.
fn allocated_blocks(img: &Path) -> u64 {
    let c = json(&ok(
        hako(&["check", "--output", "json", s(img)]),
        "hako check",
    ));
    c["allocated-clusters"].as_u64().unwrap()
}

/// Bytes in blocks of `block` (of an image of `size`) that hold no data.
fn zero_block_bytes(data: &[u8], size: u64, block: u64) -> u64 {
    (0..size.div_ceil(block))
        .map(|i| {
            let lo = (i * block) as usize;
            let hi = (((i + 1) * block).min(size)) as usize;
            let part = &data[lo.min(data.len())..hi.min(data.len())];
            if part.iter().all(|&b| b == 0) {
                hi as u64 - lo as u64
            } else {
                0
            }
        })
        .sum()
}

fn convert(src: &Path, out: &Path, fmt: &str, opts: &[&str]) {
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", fmt];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[s(src), s(out)]);
    ok(hako(&args), &format!("hako convert -O {fmt} {opts:?}"));
}

#[test]
fn vpc_output_has_qemu_img_sizes_and_reads_back_identically() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    // Not multiples of the 2 MiB block, nor of a CHS cylinder.
    for (i, size) in [
        (7 << 20) + (20 << 10) + 512,
        (12 << 20) + 4096,
        (100 << 20) + 512 * 3,
    ]
    .into_iter()
    .enumerate()
    {
        let src = d.p("src.raw");
        let data = random_raw(&src, size, 11 + i as u64);
        let out = d.p("out.vhd");
        convert(&src, &out, "vpc", &[]);
        // The size qemu-img gives the same request (rounded up to the CHS geometry).
        let want = qemu_create(&d, "vpc", size as u64, "")["virtual-size"]
            .as_u64()
            .unwrap();
        assert!(want >= size as u64);
        assert_eq!(virtual_size(&out, "vpc"), want, "{size}");
        // qemu-img 7.2 has no check for vpc (status 63); one that does must pass it.
        let c = qemu(&["check", "-f", "vpc", s(&out)]);
        assert!(matches!(code(&c), 0 | 63), "qemu-img check: {c:?}");
        assert_eq!(code(&hako(&["check", s(&out)])), 0);
        same_content(&d, &src, &out, "vpc", &data);
        let zero = zero_block_bytes(&data, want, 2 << 20);
        assert!(zero >= 4 << 20, "the source has zero blocks");
        assert_eq!(
            unallocated_vpc(&out),
            zero,
            "{size}: zero blocks stay unallocated"
        );
        assert_eq!(allocated_blocks(&out), (want - zero).div_ceil(2 << 20));
        let info = json(&ok(
            hako(&["info", "--output", "json", s(&out)]),
            "hako info",
        ));
        assert_eq!(info["format"], "vpc");
        assert_eq!(info["virtual-size"], want);
        assert_eq!(info["cluster-size"], 2 << 20);
        // The file holds the allocated blocks and little else.
        let blocks = (want - zero_block_bytes(&data, want, 2 << 20)).div_ceil(2 << 20);
        let len = std::fs::metadata(&out).unwrap().len();
        assert!(len <= blocks * ((2 << 20) + 4096) + 8192, "{len}");
    }
}

#[test]
fn vpc_fixed_and_force_size() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let src = d.p("src.raw");
    let size = (5 << 20) + (20 << 10);
    let data = random_raw(&src, size, 3);
    let out = d.p("fixed.vhd");
    convert(&src, &out, "vpc", &["-o", "subformat=fixed"]);
    let want = qemu_create(&d, "vpc", size as u64, "subformat=fixed")["virtual-size"]
        .as_u64()
        .unwrap();
    assert_eq!(virtual_size(&out, "vpc"), want);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), want + 512);
    same_content(&d, &src, &out, "vpc", &data);
    // hako probes a fixed VHD from its footer (qemu-img would call it raw).
    let info = json(&ok(
        hako(&["info", "--output", "json", s(&out)]),
        "hako info",
    ));
    assert_eq!(info["format"], "vpc");
    assert_eq!(
        info["format-specific"]["data"]["subformat"], "fixed",
        "{info}"
    );
    // force_size keeps the size exactly, as qemu-img's (creator qem2).
    for sub in ["dynamic", "fixed"] {
        let out = d.p(&format!("forced-{sub}.vhd"));
        let o = format!("subformat={sub},force_size=on");
        convert(&src, &out, "vpc", &["-o", &o]);
        let q = qemu_create(&d, "vpc", size as u64, &o)["virtual-size"]
            .as_u64()
            .unwrap();
        assert_eq!(q, size as u64);
        assert_eq!(virtual_size(&out, "vpc"), size as u64, "{sub}");
        same_content(&d, &src, &out, "vpc", &data);
    }
}

#[test]
fn vhdx_output_passes_qemu_img_check_and_compare() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let src = d.p("src.raw");
    let size = (19 << 20) + (20 << 10) + 512;
    let data = random_raw(&src, size, 7);
    for (sub, opts) in [
        ("dynamic", &[][..]),
        ("dynamic", &["-o", "block_size=1M"][..]),
        ("fixed", &["-o", "subformat=fixed"][..]),
    ] {
        let out = d.p("out.vhdx");
        convert(&src, &out, "vhdx", opts);
        let c = qemu(&["check", "-f", "vhdx", s(&out)]);
        assert_eq!(code(&c), 0, "qemu-img check {opts:?}: {c:?}");
        let q = json(&ok(
            qemu(&["info", "-f", "vhdx", "--output", "json", s(&out)]),
            "qemu-img info",
        ));
        assert_eq!(q["virtual-size"], size as u64, "{opts:?}");
        let block = if opts.is_empty() {
            // qemu-img's own default for this size.
            let r = qemu_create(&d, "vhdx", size as u64, "");
            assert_eq!(q["cluster-size"], r["cluster-size"]);
            r["cluster-size"].as_u64().unwrap()
        } else if sub == "fixed" {
            q["cluster-size"].as_u64().unwrap()
        } else {
            assert_eq!(q["cluster-size"], 1 << 20);
            1 << 20
        };
        assert_eq!(code(&hako(&["check", s(&out)])), 0);
        same_content(&d, &src, &out, "vhdx", &data);
        let info = json(&ok(
            hako(&["info", "--output", "json", s(&out)]),
            "hako info",
        ));
        assert_eq!(info["format-specific"]["data"]["subformat"], sub, "{info}");
        let blocks = (size as u64).div_ceil(block);
        let zero = zero_block_bytes(&data, size as u64, block) / block;
        let want = if sub == "fixed" {
            blocks
        } else {
            blocks - zero
        };
        assert_eq!(
            allocated_blocks(&out),
            want,
            "{opts:?}: zero blocks stay unallocated"
        );
        // Header section, log, metadata, BAT (1 MiB each here), then the blocks.
        let len = std::fs::metadata(&out).unwrap().len();
        assert_eq!(len, (4 << 20) + want * block, "{opts:?}");
        std::fs::remove_file(&out).unwrap();
    }
    // A large sparse disk: qemu-img's 16 MiB blocks above 1 GiB, data far apart.
    let big = d.p("big.raw");
    let f = std::fs::File::create(&big).unwrap();
    let big_size = (1u64 << 30) + (48 << 20);
    f.set_len(big_size).unwrap();
    use std::os::unix::fs::FileExt;
    for at in [0u64, (1 << 30) + 12345, big_size - 4096] {
        f.write_all_at(&[0xa5; 4096], at).unwrap();
    }
    let out = d.p("big.vhdx");
    convert(&big, &out, "vhdx", &[]);
    assert_eq!(code(&qemu(&["check", "-f", "vhdx", s(&out)])), 0);
    let q = json(&ok(
        qemu(&["info", "-f", "vhdx", "--output", "json", s(&out)]),
        "qemu-img info",
    ));
    assert_eq!(q["cluster-size"], 16 << 20);
    let c = qemu(&["compare", "-f", "raw", "-F", "vhdx", s(&big), s(&out)]);
    assert_eq!(code(&c), 0, "{c:?}");
    assert_eq!(allocated_blocks(&out), 3);
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        (4 << 20) + 3 * (16 << 20)
    );
}

#[test]
fn parallel_and_out_of_order_conversion() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let src = d.p("src.raw");
    let data = random_raw(&src, (21 << 20) + 512, 9);
    for fmt in ["vpc", "vhdx"] {
        for m in [&["-m", "1"][..], &["-W", "-m", "16"][..]] {
            let out = d.p(&format!("par.{fmt}"));
            convert(&src, &out, fmt, m);
            if fmt == "vhdx" {
                assert_eq!(code(&qemu(&["check", "-f", fmt, s(&out)])), 0);
            }
            assert_eq!(code(&hako(&["check", s(&out)])), 0, "{fmt} {m:?}");
            same_content(&d, &src, &out, fmt, &data);
            std::fs::remove_file(&out).unwrap();
        }
    }
}

#[test]
fn bad_vpc_and_vhdx_output_requests_fail_clearly() {
    let d = Dir::new();
    let small = d.p("small.raw");
    std::fs::write(&small, vec![1u8; 4096]).unwrap();
    let big = d.p("big.qcow2");
    ok(
        hako(&["create", "-q", "-f", "qcow2", s(&big), "3T"]),
        "create",
    );
    let huge = d.p("huge.qcow2");
    ok(
        hako(&["create", "-q", "-f", "qcow2", s(&huge), "65T"]),
        "create",
    );
    for (input, fmt, opts, want) in [
        (&big, "vpc", "", "too large for a VHD (at most 2040 GiB)"),
        (&huge, "vhdx", "", "too large for a VHDX (at most 64 TiB)"),
        (
            &small,
            "vhdx",
            "block_size=3M",
            "not a power of two from 1 MiB to 256 MiB",
        ),
        (
            &small,
            "vpc",
            "subformat=differencing",
            "unsupported option 'subformat=differencing'",
        ),
        (
            &small,
            "vhdx",
            "force_size=on",
            "'force_size' is for vpc images",
        ),
        (
            &small,
            "vpc",
            "block_size=1M",
            "'block_size' is for vhdx images",
        ),
        (&small, "vpc", "force_size=maybe", "takes on or off"),
    ] {
        let mut args = vec!["convert", "-q", "-O", fmt];
        if !opts.is_empty() {
            args.extend_from_slice(&["-o", opts]);
        }
        let out = d.p("x.out");
        args.extend_from_slice(&[s(input), s(&out)]);
        let o = hako(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 1, "{fmt} {opts}: {err}");
        assert!(err.contains(want), "{fmt} {opts}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // Compression is for qcow2 only.
    let o = hako(&["convert", "-c", "-O", "vhdx", s(&small), s(&d.p("c.vhdx"))]);
    assert_eq!(code(&o), 1);
}

#[test]
fn create_makes_empty_vpc_and_vhdx_images() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    for (fmt, opts) in [
        ("vpc", ""),
        ("vpc", "subformat=fixed"),
        ("vhdx", ""),
        ("vhdx", "subformat=fixed,block_size=2M"),
    ] {
        let p = d.p(&format!("new.{fmt}"));
        let mut args = vec!["create", "-q", "-f", fmt];
        if !opts.is_empty() {
            args.extend_from_slice(&["-o", opts]);
        }
        args.extend_from_slice(&[s(&p), "10M"]);
        ok(hako(&args), "hako create");
        let want = qemu_create(&d, fmt, 10 << 20, opts);
        let got = json(&ok(
            qemu(&["info", "-f", fmt, "--output", "json", s(&p)]),
            "qemu-img info",
        ));
        assert_eq!(got["virtual-size"], want["virtual-size"], "{fmt} {opts}");
        if fmt == "vhdx" {
            assert_eq!(got["cluster-size"], want["cluster-size"], "{fmt} {opts}");
            assert_eq!(code(&qemu(&["check", "-f", fmt, s(&p)])), 0);
        }
        assert_eq!(code(&hako(&["check", "-f", fmt, s(&p)])), 0);
        let zeros = d.p("zeros.raw");
        std::fs::File::create(&zeros)
            .unwrap()
            .set_len(want["virtual-size"].as_u64().unwrap())
            .unwrap();
        let c = qemu(&["compare", "-f", "raw", "-F", fmt, s(&zeros), s(&p)]);
        assert_eq!(code(&c), 0, "{fmt} {opts} reads as zeroes: {c:?}");
    }
    let o = hako(&["create", "-f", "vdi", s(&d.p("x.vdi")), "1M"]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not created"));
    let o = hako(&[
        "create",
        "-f",
        "vhdx",
        "-b",
        "base.raw",
        s(&d.p("x.vhdx")),
        "1M",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot have a backing file"));
}
