//! `hako img` as qemu-img users expect it, checked against qemu-img in the same run:
//! VDI, VHD and VMDK images qemu-img makes from random data read back identically, `info`,
//! `compare` and `map` agree with qemu-img's, and probed overlays open their backing
//! chain. Skipped, with a message, where qemu-img is not installed.

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
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

/// `map --output json` of hako and of qemu-img agree; qemu-img before 10 prints no
/// `compressed` key, so it is compared only when qemu-img has it.
fn assert_same_map(mut hako: serde_json::Value, qemu: serde_json::Value, what: &str) {
    let qemu_has = qemu
        .as_array()
        .and_then(|a| a.first())
        .is_some_and(|e| e.get("compressed").is_some());
    if !qemu_has {
        for e in hako.as_array_mut().into_iter().flatten() {
            e.as_object_mut().map(|o| o.remove("compressed"));
        }
    }
    assert_eq!(hako, qemu, "{what}");
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

/// A raw file of `size` bytes: random 64 KiB blocks between holes, a partial block
/// at the end, and a block of zeroes that is written (not a hole).
fn random_raw(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut data = vec![0u8; size];
    for (k, chunk) in data.chunks_mut(64 << 10).enumerate() {
        if rng.next() % 3 == 0 || k == 0 {
            chunk.iter_mut().for_each(|b| *b = rng.next() as u8);
        }
    }
    let last = size - 1000;
    data[last..].iter_mut().for_each(|b| *b = rng.next() as u8);
    std::fs::write(path, &data).unwrap();
    // Punch the zero runs out so the source is sparse as a real disk export would be.
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let bs = block::storage::FileStorage::new(f);
    use block::storage::Storage;
    for (k, chunk) in data.chunks(64 << 10).enumerate() {
        if chunk.iter().all(|&b| b == 0) && k % 2 == 0 {
            let _ = bs.punch_hole((k as u64) << 16, chunk.len() as u64);
        }
    }
    data
}

/// The formats qemu-img writes that hako reads, with their variants.
const VARIANTS: &[(&str, &[&str])] = &[
    ("vdi", &[]),
    ("vdi", &["-o", "static=on"]),
    ("vpc", &[]),
    ("vpc", &["-o", "subformat=fixed"]),
    ("vmdk", &[]),
    ("vmdk", &["-o", "subformat=streamOptimized"]),
    ("vmdk", &["-o", "subformat=monolithicFlat"]),
    ("vmdk", &["-o", "subformat=twoGbMaxExtentSparse"]),
    ("vmdk", &["-o", "subformat=twoGbMaxExtentFlat"]),
];

#[test]
fn vdi_vhd_and_vmdk_made_by_qemu_img_read_back_identically() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let raw = d.p("src.raw");
    // 5 MiB + 12 KiB: not a whole number of VDI or VHD blocks.
    let data = random_raw(&raw, (5 << 20) + (12 << 10), 42);
    for (k, (fmt, opts)) in VARIANTS.iter().enumerate() {
        let img = d.p(&format!("img{k}.{fmt}"));
        let mut args = vec!["convert", "-O", fmt];
        args.extend_from_slice(opts);
        args.extend([s(&raw), s(&img)]);
        ok(qemu(&args), "qemu-img convert");
        let what = format!("{fmt} {opts:?}");

        // info: format probed, virtual size as qemu-img reports it.
        let q = json(&ok(
            qemu(&["info", "--output", "json", "-f", fmt, s(&img)]),
            "qemu-img info",
        ));
        let h = json(&ok(
            hako(&["info", "--output", "json", s(&img)]),
            "hako info",
        ));
        assert_eq!(h["format"], *fmt, "{what}");
        assert_eq!(h["virtual-size"], q["virtual-size"], "{what}");
        assert_eq!(h["cluster-size"], q["cluster-size"], "{what}");
        if *fmt == "vmdk" {
            let key = "create-type";
            assert_eq!(
                h["format-specific"]["data"][key], q["format-specific"]["data"][key],
                "{what}"
            );
        }

        // convert: the same bytes qemu-img reads.
        let ours = d.p("ours.raw");
        let theirs = d.p("theirs.raw");
        ok(
            hako(&["convert", "-O", "raw", s(&img), s(&ours)]),
            "hako convert",
        );
        ok(
            qemu(&["convert", "-f", fmt, "-O", "raw", s(&img), s(&theirs)]),
            "qemu-img convert",
        );
        let a = std::fs::read(&ours).unwrap();
        assert_eq!(a, std::fs::read(&theirs).unwrap(), "{what}");
        assert_eq!(&a[..data.len()], &data[..], "{what}");
        assert!(a[data.len()..].iter().all(|&b| b == 0), "{what}");

        // ... and to qcow2, which qemu-img compares equal to the source.
        let q2 = d.p("ours.qcow2");
        ok(
            hako(&["convert", "-O", "qcow2", s(&img), s(&q2)]),
            "hako convert -O qcow2",
        );
        let c = qemu(&["compare", "-f", fmt, "-F", "qcow2", s(&img), s(&q2)]);
        assert_eq!(code(&c), 0, "{what}: {}", stdout(&c));

        // check: clean.
        let c = hako(&["check", s(&img)]);
        assert_eq!(code(&c), 0, "{what}: {}", stdout(&c));

        // compare: agrees with qemu-img, identical and after one byte changes.
        let h = hako(&["compare", s(&img), s(&raw)]);
        let q = qemu(&["compare", "-f", fmt, "-F", "raw", s(&img), s(&raw)]);
        assert_eq!((code(&h), stdout(&h)), (code(&q), stdout(&q)), "{what}");
        assert_eq!(code(&h), 0);
        let changed = d.p("changed.raw");
        let mut b = data.clone();
        b[(3 << 20) + 777] ^= 0x40;
        std::fs::write(&changed, &b).unwrap();
        let h = hako(&["compare", s(&img), s(&changed)]);
        let q = qemu(&["compare", "-f", fmt, "-F", "raw", s(&img), s(&changed)]);
        assert_eq!((code(&h), stdout(&h)), (code(&q), stdout(&q)), "{what}");
        assert_eq!(code(&h), 1);
        assert!(stdout(&h).contains("Content mismatch at offset 3146240!"));

        // map: extents cover the disk in order; for dynamic VDI and VMDK, exactly
        // qemu-img's.
        let m = json(&ok(hako(&["map", "--output", "json", s(&img)]), "hako map"));
        let mut pos = 0u64;
        for e in m.as_array().unwrap() {
            assert_eq!(e["start"].as_u64().unwrap(), pos, "{what}");
            pos += e["length"].as_u64().unwrap();
        }
        assert_eq!(Some(pos), h_size(&img), "{what}");
        if (*fmt == "vdi" && opts.is_empty()) || *fmt == "vmdk" {
            let q = json(&ok(
                qemu(&["map", "--output", "json", "-f", fmt, s(&img)]),
                "qemu-img map",
            ));
            assert_same_map(m, q, &what);
        }
        // Read-only formats cannot be written.
        let o = hako(&["resize", s(&img), "+1M"]);
        assert_ne!(code(&o), 0);
        assert!(String::from_utf8_lossy(&o.stderr).contains("read-only"));
    }
    let o = hako(&["convert", "-O", "vdi", s(&raw), s(&d.p("x.vdi"))]);
    assert_ne!(code(&o), 0);
    assert!(
        !d.p("x.vdi").exists(),
        "a refused output must not be created"
    );
}

fn h_size(img: &Path) -> Option<u64> {
    json(&stdout(&hako(&["info", "--output", "json", s(img)])))["virtual-size"].as_u64()
}

#[test]
fn compare_exit_statuses_and_messages_match_qemu_img() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let a = d.p("a.raw");
    let data = random_raw(&a, 2 << 20, 7);
    let aq = d.p("a.qcow2");
    ok(qemu(&["convert", "-O", "qcow2", s(&a), s(&aq)]), "convert");
    let longer = d.p("longer.raw");
    let mut l = data.clone();
    l.resize(3 << 20, 0);
    std::fs::write(&longer, &l).unwrap();
    let longer_data = d.p("longer-data.raw");
    l[(5 << 19) + 3] = 9;
    std::fs::write(&longer_data, &l).unwrap();
    let empty_q = d.p("empty.qcow2");
    ok(
        qemu(&["create", "-f", "qcow2", s(&empty_q), "2M"]),
        "create",
    );
    let zero_raw = d.p("zero.raw");
    std::fs::write(&zero_raw, vec![0u8; 2 << 20]).unwrap();
    let missing = d.p("missing.raw");
    let cases: Vec<Vec<&str>> = vec![
        vec![s(&a), s(&aq)],
        vec![s(&aq), s(&a)],
        vec!["-s", s(&a), s(&aq)],
        vec![s(&a), s(&longer)],
        vec!["-s", s(&a), s(&longer)],
        vec![s(&longer_data), s(&a)],
        vec![s(&zero_raw), s(&empty_q)],
        vec!["-s", s(&zero_raw), s(&empty_q)],
        vec!["-s", s(&empty_q), s(&empty_q)],
        vec![s(&a), s(&empty_q)],
        vec!["-q", s(&a), s(&empty_q)],
        vec![s(&a), s(&missing)],
    ];
    let mut seen = std::collections::BTreeSet::new();
    for c in &cases {
        let mut args = vec!["compare"];
        args.extend(c);
        let h = hako(&args);
        let q = qemu(&args);
        assert_eq!(
            (code(&h), stdout(&h)),
            (code(&q), stdout(&q)),
            "compare {c:?}"
        );
        seen.insert(code(&h));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn probed_overlays_open_their_backing_chain_and_map_like_qemu_img() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let raw = d.p("base.raw");
    let data = random_raw(&raw, 4 << 20, 3);
    let base = d.p("base.qcow2");
    ok(
        qemu(&["convert", "-O", "qcow2", s(&raw), s(&base)]),
        "convert",
    );
    let top = d.p("top.qcow2");
    ok(
        qemu(&[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            s(&top),
        ]),
        "create overlay",
    );
    let io = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x33 1M 64k", s(&top)])
        .output();
    if io.is_err() {
        eprintln!("SKIP (part): qemu-io not found");
        return;
    }
    ok(io.unwrap(), "qemu-io write");
    let mut expect = data.clone();
    expect[1 << 20..(1 << 20) + (64 << 10)].fill(0x33);

    // Probed, with a recorded backing format: opens like qemu-img, no warning.
    let out = d.p("flat.raw");
    let o = hako(&["convert", "-O", "raw", s(&top), s(&out)]);
    assert!(String::from_utf8_lossy(&o.stderr).is_empty(), "{o:?}");
    ok(o, "convert probed overlay");
    assert_eq!(std::fs::read(&out).unwrap(), expect);
    let h = hako(&["compare", s(&top), s(&raw)]);
    let q = qemu(&["compare", s(&top), s(&raw)]);
    assert_eq!((code(&h), stdout(&h)), (code(&q), stdout(&q)));
    assert_eq!(code(&h), 1);
    let v = json(&ok(
        hako(&["info", "--output", "json", "--backing-chain", s(&top)]),
        "info chain",
    ));
    assert_eq!(v.as_array().unwrap().len(), 2);
    let hm = json(&ok(hako(&["map", "--output", "json", s(&top)]), "hako map"));
    let qm = json(&ok(qemu(&["map", "--output", "json", s(&top)]), "qemu map"));
    assert_same_map(hm, qm, "overlay");
    let hm = ok(hako(&["map", s(&top)]), "hako map");
    let qm = ok(qemu(&["map", s(&top)]), "qemu map");
    assert_eq!(hm, qm);

    // No recorded backing format: probed, with a warning, as qemu-img does.
    let nofmt = d.p("nofmt.qcow2");
    {
        let f = std::fs::File::create(&nofmt).unwrap();
        block::Qcow2Disk::create(
            &block::storage::FileStorage::new(f),
            &block::qcow2::CreateOptions {
                size: 4 << 20,
                backing_file: Some("base.qcow2".into()),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let o = hako(&["convert", "-O", "raw", s(&nofmt), s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ok(o, "convert overlay without backing format");
    assert!(
        err.contains("does not record the format") && err.contains("base.qcow2"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let h = hako(&["compare", s(&nofmt), s(&raw)]);
    assert_eq!((code(&h), stdout(&h).trim()), (0, "Images are identical."));
}

/// A read-only loop device, detached when dropped.
struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn p2v_convert_from_a_block_device_skips_zeroes() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let raw = d.p("disk.raw");
    let data = random_raw(&raw, 4 << 20, 11);
    let Ok(o) = Command::new("losetup")
        .args(["-f", "--show", "-r"])
        .arg(&raw)
        .output()
    else {
        eprintln!("SKIP: losetup not found");
        return;
    };
    if !o.status.success() {
        eprintln!(
            "SKIP: no loop device (needs root): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    let dev = Loop(String::from_utf8_lossy(&o.stdout).trim().to_string());
    let info = json(&ok(hako(&["info", "--output", "json", &dev.0]), "info"));
    assert_eq!(info["virtual-size"], data.len() as u64);
    let out = d.p("p2v.qcow2");
    ok(
        hako(&["convert", "-O", "qcow2", &dev.0, s(&out)]),
        "convert",
    );
    let c = qemu(&["compare", "-f", "raw", "-F", "qcow2", &dev.0, s(&out)]);
    assert_eq!(code(&c), 0, "{}", stdout(&c));
    let h = hako(&["compare", &dev.0, s(&out)]);
    assert_eq!(code(&h), 0, "{}", stdout(&h));
    // Zero blocks were not written: the qcow2 holds about the data only.
    let q = json(&ok(
        qemu(&["info", "--output", "json", s(&out)]),
        "qemu info",
    ));
    let nonzero = data
        .chunks(64 << 10)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64;
    let used = q["actual-size"].as_u64().unwrap();
    assert!(
        used < (nonzero + 8) * (64 << 10),
        "{used} bytes for {nonzero} data clusters"
    );
}

#[test]
fn vmdk_stream_output_passes_qemu_img_check_and_compare() {
    if !have_qemu() {
        return;
    }
    let d = Dir::new();
    let raw = d.p("src.raw");
    // Random blocks between holes, and a size that is not a whole number of grains.
    let data = random_raw(&raw, (3 << 20) + (20 << 10) + 512, 5);
    let out = d.p("export.vmdk");
    ok(
        hako(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            s(&raw),
            s(&out),
        ]),
        "hako convert -O vmdk",
    );
    let c = qemu(&["check", "-f", "vmdk", s(&out)]);
    assert_eq!(code(&c), 0, "{}", stdout(&c));
    let q = json(&ok(
        qemu(&["info", "--output", "json", s(&out)]),
        "qemu-img info",
    ));
    assert_eq!(q["format"], "vmdk");
    assert_eq!(q["virtual-size"], data.len() as u64);
    assert_eq!(
        q["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    let c = qemu(&["compare", "-f", "raw", "-F", "vmdk", s(&raw), s(&out)]);
    assert_eq!(
        (code(&c), stdout(&c).trim()),
        (0, "Images are identical."),
        "qemu-img compare"
    );
    let h = hako(&["compare", s(&raw), s(&out)]);
    assert_eq!((code(&h), stdout(&h).trim()), (0, "Images are identical."));
    // Holes stay out of the stream; qemu-img reads exactly the source.
    let back = d.p("back.raw");
    ok(
        qemu(&["convert", "-f", "vmdk", "-O", "raw", s(&out), s(&back)]),
        "qemu-img convert back",
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let m = json(&ok(qemu(&["map", "--output", "json", s(&out)]), "qemu map"));
    let zero_chunks = data
        .chunks(64 << 10)
        .filter(|c| c.iter().all(|&b| b == 0))
        .count();
    let unallocated: u64 = m
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["present"] == false)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(unallocated, zero_chunks as u64 * (64 << 10));
    // Only streamOptimized is written.
    let o = hako(&["convert", "-O", "vmdk", s(&raw), s(&d.p("x.vmdk"))]);
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("streamOptimized"));
}
