//! Stable-toolchain fuzzing: replays the cargo-fuzz corpora and regressions in `fuzz/`,
//! then mutates the seeds deterministically and feeds every mutant to the same entry
//! point the fuzz target uses (qcow2, VDI, VHD, VMDK, VHDX and OVF targets; the VDI, VHD, VMDK and VHDX seeds are
//! joined by images qemu-img makes at test time, when it is installed). `HAKO_FUZZ_ITERS` sets the number of mutants, `HAKO_FUZZ_SEED` the generator seed.

mod common;

use block::fuzz::{fuzz_image, fuzz_ovf, fuzz_vdi, fuzz_vhdx, fuzz_vmdk, fuzz_vpc};
use block::Disk;
use common::Rng;
use std::path::PathBuf;

fn inputs(sub: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(sub);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README"))
        .map(|p| {
            let d = std::fs::read(&p).unwrap();
            (p, d)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn corpus_and_regressions_do_not_crash() {
    let seeds = inputs("corpus/qcow2_image");
    assert!(seeds.len() >= 5, "seed corpus missing");
    for (p, d) in seeds.iter().chain(inputs("regressions").iter()) {
        eprintln!("{}", p.display());
        fuzz_image(d);
    }
}

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x200,
    0x10000,
    0x8000_0000_0000_0000,
    0x4000_0000_0000_0000,
    0x00ff_ffff_ffff_fe00,
    u64::MAX,
    0x7fff_ffff,
    0x8000_0000_0000_0200,
];

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    mutate_endian(seed, rng, false)
}

/// Mutates like [`mutate`]; with `both_endian`, 64- and 32-bit values are written in
/// either byte order (VDI is little-endian).
fn mutate_endian(seed: &[u8], rng: &mut Rng, both_endian: bool) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        if d.is_empty() {
            break;
        }
        match rng.below(5) {
            0 => {
                let i = rng.below(d.len() as u64) as usize;
                d[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(d.len() as u64) as usize;
                d[i] = rng.next() as u8;
            }
            2 | 3 => {
                // A 64-bit value at an 8-aligned place: table entries and header fields.
                let i = (rng.below(d.len() as u64 / 8) * 8) as usize;
                let v = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
                let v = if rng.below(2) == 0 {
                    v
                } else {
                    v ^ (rng.next() & 0xffff_fe00)
                };
                let end = (i + 8).min(d.len());
                let bytes = if both_endian && rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                d[i..end].copy_from_slice(&bytes[..end - i]);
            }
            _ => {
                let n = rng.below(d.len() as u64 + 1) as usize;
                d.truncate(n);
            }
        }
    }
    d
}

#[test]
fn mutated_seeds_do_not_crash() {
    let iters: u64 = std::env::var("HAKO_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let seeds = inputs("corpus/qcow2_image");
    let seed = std::env::var("HAKO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234u64);
    let mut rng = Rng(seed | 1);
    for i in 0..iters {
        let (_, seed) = &seeds[rng.below(seeds.len() as u64) as usize];
        let m = mutate(seed, &mut rng);
        if let Ok(p) = std::env::var("HAKO_FUZZ_CURRENT") {
            // Long runs: keep the input in flight, to catch hangs.
            std::fs::write(p, &m).unwrap();
        }
        let t = std::time::Instant::now();
        let r = std::panic::catch_unwind(|| fuzz_image(&m));
        if t.elapsed().as_secs() >= 5 {
            // Not a failure (machines are shared), but worth a look when fuzzing long.
            let out = std::env::temp_dir().join(format!("hako-fuzz-slow-{i}"));
            std::fs::write(&out, &m).unwrap();
            eprintln!(
                "mutant {i} took {:?}; saved to {}",
                t.elapsed(),
                out.display()
            );
        }
        if i % 20000 == 0 {
            eprintln!("{i} mutants");
        }
        if r.is_err() {
            let out = std::env::temp_dir().join(format!("hako-fuzz-crash-{i}"));
            std::fs::write(&out, &m).unwrap();
            panic!("mutant {i} crashed; input saved to {}", out.display());
        }
    }
}

/// Small images made by qemu-img, as extra seeds (none if it is not installed).
fn qemu_seeds(format: &str) -> Vec<(PathBuf, Vec<u8>)> {
    use std::process::Command;
    if Command::new("qemu-img").arg("--version").output().is_err() {
        eprintln!("SKIP (qemu seeds): qemu-img not found");
        return Vec::new();
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.raw");
    let mut data = vec![0u8; 96 << 10];
    let mut rng = Rng(7);
    let (head, rest) = data.split_at_mut(64 << 10);
    for b in head[..8192].iter_mut().chain(rest.iter_mut()) {
        *b = rng.next() as u8;
    }
    std::fs::write(&raw, &data).unwrap();
    let variants: &[&[&str]] = match format {
        "vdi" => &[&[], &["-o", "static=on"]],
        "vmdk" => &[&[], &["-o", "subformat=streamOptimized"]],
        // 1 MiB blocks keep the images at about 5 MiB.
        "vhdx" => &[
            &["-o", "subformat=dynamic,block_size=1M"],
            &["-o", "subformat=fixed,block_size=1M"],
        ],
        _ => &[&[], &["-o", "subformat=fixed"]],
    };
    let mut v = Vec::new();
    for (k, opts) in variants.iter().enumerate() {
        let out = dir.path().join(format!("seed{k}.{format}"));
        let mut c = Command::new("qemu-img");
        c.args(["convert", "-O", format])
            .args(*opts)
            .arg(&raw)
            .arg(&out);
        assert!(
            c.status().unwrap().success(),
            "qemu-img convert -O {format}"
        );
        v.push((out.clone(), std::fs::read(&out).unwrap()));
    }
    v
}

fn replay_and_mutate(target: &str, format: &str, entry: fn(&[u8])) {
    let mut seeds = inputs(&format!("corpus/{target}"));
    assert!(seeds.len() >= 3, "seed corpus for {target} missing");
    seeds.extend(qemu_seeds(format));
    for (p, d) in &seeds {
        eprintln!("{}", p.display());
        entry(d);
    }
    let iters: u64 = std::env::var("HAKO_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let seed = std::env::var("HAKO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234u64);
    let mut rng = Rng(seed | 1);
    for i in 0..iters {
        let (_, s) = &seeds[rng.below(seeds.len() as u64) as usize];
        let m = mutate_endian(s, &mut rng, true);
        if std::panic::catch_unwind(|| entry(&m)).is_err() {
            let out = std::env::temp_dir().join(format!("hako-fuzz-{target}-crash-{i}"));
            std::fs::write(&out, &m).unwrap();
            panic!(
                "{target} mutant {i} crashed; input saved to {}",
                out.display()
            );
        }
    }
}

#[test]
fn vdi_corpus_and_mutants_do_not_crash() {
    replay_and_mutate("vdi_image", "vdi", fuzz_vdi);
}

#[test]
fn vpc_corpus_and_mutants_do_not_crash() {
    replay_and_mutate("vpc_image", "vpc", fuzz_vpc);
}

#[test]
fn vmdk_corpus_and_mutants_do_not_crash() {
    replay_and_mutate("vmdk_image", "vmdk", fuzz_vmdk);
}

#[test]
fn vhdx_corpus_and_mutants_do_not_crash() {
    // The hand-made seeds are valid images, so mutants start from deep inside.
    for (p, d) in inputs("corpus/vhdx_image") {
        let n = d.len() as u64;
        let s = Box::new(block::storage::MemStorage::new(d, n));
        let disk = block::VhdxDisk::open(s, "seed", true)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(disk.check().corruptions, 0, "{}", p.display());
        let pending = p.ends_with("pending-log");
        assert_eq!(disk.replayed_log_entries(), if pending { 2 } else { 0 });
        if pending {
            // The log maps block 0 and rewrites two of its sectors.
            let e = disk.map_extent(0, disk.size()).unwrap();
            assert!(e.data && e.len == 1 << 20, "{e:?}");
            let mut b = vec![1u8; 4096];
            disk.read_at(&mut b, 0).unwrap();
            assert!(b.iter().all(|&x| x == 0), "zeroed by the log");
        }
    }
    replay_and_mutate("vhdx_image", "vhdx", fuzz_vhdx);
}

/// Text mutations for the OVF parsers: byte edits, truncation, and XML fragments
/// spliced in at random places.
fn mutate_text(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    const BITS: [&[u8]; 12] = [
        b"<",
        b">",
        b"</Item>",
        b"<Item>",
        b"ovf:id=\"file1\"",
        b"&amp;",
        b"<![CDATA[",
        b"${x}",
        b"byte * 2^64",
        b"99999999999999999999",
        b"ovf:/disk/",
        b"\xff\xfe",
    ];
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(d.len() as u64 + 1) as usize;
        match rng.below(4) {
            0 if !d.is_empty() => {
                let i = i.min(d.len() - 1);
                d[i] = rng.next() as u8;
            }
            1 => d.truncate(i),
            2 if i < d.len() => {
                let n = (rng.below(64) as usize).min(d.len() - i);
                d.drain(i..i + n);
            }
            _ => {
                let b = BITS[rng.below(BITS.len() as u64) as usize];
                d.splice(i..i, b.iter().copied());
            }
        }
    }
    d
}

#[test]
fn ovf_corpus_and_mutants_do_not_crash() {
    let seeds = inputs("corpus/ovf_descriptor");
    assert!(seeds.len() >= 3, "seed corpus for ovf_descriptor missing");
    for (p, d) in &seeds {
        eprintln!("{}", p.display());
        fuzz_ovf(d);
        let text = String::from_utf8_lossy(d);
        if p.extension().is_some_and(|e| e == "ovf") {
            let o = block::ovf::parse_ovf(&text, "seed")
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!o.disks.is_empty(), "{}", p.display());
        } else {
            block::ovf::parse_manifest(&text, "seed").unwrap();
        }
    }
    let iters: u64 = std::env::var("HAKO_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng(0x0f0f_5eed | 1);
    for i in 0..iters {
        let (_, s) = &seeds[rng.below(seeds.len() as u64) as usize];
        let m = mutate_text(s, &mut rng);
        if std::panic::catch_unwind(|| fuzz_ovf(&m)).is_err() {
            let out = std::env::temp_dir().join(format!("hako-fuzz-ovf-crash-{i}"));
            std::fs::write(&out, &m).unwrap();
            panic!("ovf mutant {i} crashed; input saved to {}", out.display());
        }
    }
}
