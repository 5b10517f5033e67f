//! Multiboot v1 kernels and the test devices (isa-debug-exit, debugcon): the
//! `guests/multiboot/mbinfo` kernel booted on every accelerator and on QEMU, and
//! bad images and device flags turned into one-line errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{accel_flags, accels, hako, run_watchdog, Run};
use test_guests::expected::{self, MBINFO_EXIT_STATUS};
use test_guests::multiboot::{build, Placement};

const MEM_MIB: u64 = 128;
const ARGS: &str = "hello world";
const MODULES: [(&str, &[u8]); 2] = [("one.txt", b"first module"), ("two.bin", b"second\n\x01")];

/// The two module files in `dir`, as (path, contents).
fn modules(dir: &Path) -> Vec<(String, &'static [u8])> {
    MODULES
        .iter()
        .map(|(name, data)| {
            let p = dir.join(name);
            std::fs::write(&p, data).unwrap();
            (p.to_str().unwrap().to_owned(), *data)
        })
        .collect()
}

/// `hako run` of `kernel` with a watchdog, with `--memory 128M` unless `extra` says.
fn hako_run(kernel: &Path, accel: &str, extra: &[&str]) -> Run {
    let mut cmd = hako();
    cmd.args(["run", "--kernel", kernel.to_str().unwrap()])
        .args(accel_flags(accel));
    if !extra.contains(&"--memory") {
        cmd.args(["--memory", &format!("{MEM_MIB}M")]);
    }
    cmd.args(extra);
    run_watchdog(&mut cmd, Duration::from_secs(60))
}

#[test]
fn multiboot_kernel_same_output_and_exit_status_on_every_accel() {
    let dir = tempfile::tempdir().unwrap();
    let mods = modules(dir.path());
    let mod_list = format!("{},{}", mods[0].0, mods[1].0);
    let mods_ref: Vec<(&str, &[u8])> = mods.iter().map(|(p, d)| (p.as_str(), *d)).collect();
    // ELF32 by program headers, by the header's address fields, and the same kernel
    // as an ELF64 file (which QEMU's -kernel refuses).
    for placement in [
        Placement::ProgramHeaders,
        Placement::AddressFields,
        Placement::Elf64,
    ] {
        let elf = build("mbinfo", placement).expect("build guests/multiboot/mbinfo.c");
        let kernel = elf.to_str().unwrap();
        let want = expected::mbinfo(kernel, ARGS, MEM_MIB, &mods_ref);
        let mut outputs: Vec<(&str, String)> = Vec::new();
        for accel in accels() {
            let o = hako_run(
                &elf,
                accel,
                &[
                    "--cmdline",
                    ARGS,
                    "--initrd",
                    &mod_list,
                    "--device",
                    "isa-debug-exit",
                    "--device",
                    "debugcon",
                ],
            );
            let what = format!("{placement:?} on {accel}");
            assert!(
                !o.timed_out,
                "{what}: timed out\n{}\n{}",
                o.stdout, o.stderr
            );
            assert_eq!(
                o.code,
                Some(MBINFO_EXIT_STATUS),
                "{what}: exit status\nstdout:\n{}\nstderr:\n{}",
                o.stdout,
                o.stderr
            );
            assert_eq!(o.stdout, want, "{what}");
            // Debug-console text on stderr, flushed at exit although its last line has
            // no newline (the PVM warning of --accel kvm may come first).
            assert!(
                o.stderr.ends_with(expected::mbinfo_debugcon()),
                "{what}: stderr:\n{}",
                o.stderr
            );
            outputs.push((accel, o.stdout));
        }
        for w in outputs.windows(2) {
            assert_eq!(w[0].1, w[1].1, "{} and {} disagree", w[0].0, w[1].0);
        }
    }
}

#[test]
fn multiboot_modules_may_be_given_as_repeated_flags_and_debug_exit_moved() {
    // --initrd twice instead of comma-separated; isa-debug-exit at QEMU's other
    // common place (iobase=0xf4,iosize=4), which the kernel is told by `exitport=`.
    let dir = tempfile::tempdir().unwrap();
    let mods = modules(dir.path());
    let mods_ref: Vec<(&str, &[u8])> = mods.iter().map(|(p, d)| (p.as_str(), *d)).collect();
    let elf = build("mbinfo", Placement::ProgramHeaders).unwrap();
    let args = "exitport=244";
    let o = hako_run(
        &elf,
        "emu",
        &[
            "--cmdline",
            args,
            "--initrd",
            &mods[0].0,
            "--initrd",
            &mods[1].0,
            "--device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ],
    );
    assert_eq!(
        o.code,
        Some(MBINFO_EXIT_STATUS),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    // Without debugcon the port reads as all ones, and nothing reaches stderr.
    assert_eq!(
        o.stdout,
        expected::mbinfo(elf.to_str().unwrap(), args, MEM_MIB, &mods_ref)
            .replace("readback=0xe9", "readback=0xff")
    );
    assert!(!o.stderr.contains("debug console"), "{}", o.stderr);
}

#[test]
fn multiboot_kernel_without_debug_exit_halts_and_hako_exits_0() {
    let elf = build("mbinfo", Placement::ProgramHeaders).unwrap();
    let o = hako_run(&elf, "emu", &["--cmdline", ""]);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("mbinfo: exit value 0x21\n"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("mbinfo: mods=0\n"), "{}", o.stdout);
}

/// The memory-map lines of `out` as (base, length, type).
fn mmap(out: &str) -> Vec<(u64, u64, u32)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("mbinfo: mmap "))
        .map(|l| {
            let f: Vec<&str> = l.split([' ', '=']).collect();
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            (hex(f[1]), hex(f[3]), f[5].parse().unwrap())
        })
        .collect()
}

/// (mem_lower, mem_upper) as printed.
fn mem_sizes(out: &str) -> (u64, u64) {
    let l = out
        .lines()
        .find_map(|l| l.strip_prefix("mbinfo: mem_lower="))
        .unwrap_or_else(|| panic!("no mem_lower in {out}"));
    let f: Vec<&str> = l.split([' ', '=']).collect();
    (f[0].parse().unwrap(), f[3].parse().unwrap())
}

/// The end of the memory that starts at 1 MiB: the RAM entry there and the
/// entries that follow it without a gap (firmware keeps its tables at the top).
fn memory_top(map: &[(u64, u64, u32)]) -> u64 {
    let mut end = 0x10_0000;
    for &(base, len, ty) in map {
        if base == end && (base != 0x10_0000 || ty == 1) {
            end = base + len;
        }
    }
    end
}

fn qemu(
    kernel: &Path,
    append: &str,
    initrd: &str,
    debugcon: &Path,
) -> Option<(Option<i32>, String)> {
    let chardev = format!("file,id=dbg,path={}", debugcon.display());
    let mut child = match Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-M", "pc", "-m", &format!("{MEM_MIB}M")])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", append, "-initrd", initrd])
        .args(["-device", "isa-debug-exit"])
        .args([
            "-chardev",
            &chardev,
            "-device",
            "isa-debugcon,iobase=0x402,chardev=dbg",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => {
            eprintln!("skipped: qemu-system-x86_64 is not installed");
            return None;
        }
    };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn multiboot_kernel_on_qemu_prints_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mods = modules(dir.path());
    let mod_list = format!("{},{}", mods[0].0, mods[1].0);
    let dbg = dir.path().join("debugcon.txt");
    for placement in [Placement::ProgramHeaders, Placement::AddressFields] {
        let elf: PathBuf = build("mbinfo", placement).unwrap();
        let Some((code, theirs)) = qemu(&elf, ARGS, &mod_list, &dbg) else {
            return;
        };
        assert_eq!(
            code,
            Some(MBINFO_EXIT_STATUS),
            "QEMU {placement:?}:\n{theirs}"
        );
        let ours = hako_run(
            &elf,
            "emu",
            &[
                "--cmdline",
                ARGS,
                "--initrd",
                &mod_list,
                "--device",
                "isa-debug-exit",
                "--device",
                "debugcon",
            ],
        );
        assert_eq!(ours.code, Some(MBINFO_EXIT_STATUS), "{}", ours.stderr);
        let ours = ours.stdout;

        // Lines that legitimately differ, compared below by what they mean:
        // - the memory map is the firmware's: SeaBIOS reserves the top 128 KiB of
        //   low RAM for its ACPI tables and lists ranges this VMM does not have
        //   (0xF0000 BIOS, 0xFFFC0000 flash, a 64-bit hole); this VMM's ACPI tables
        //   sit in the reserved 0xE0000 area instead;
        // - mem_upper follows the map (RAM from 1 MiB up to the first reserved range);
        // - boot_loader_name is "qemu" there and "hakobune" here.
        let same = |out: &str| -> Vec<String> {
            out.lines()
                .filter(|l| {
                    !l.starts_with("mbinfo: mmap ")
                        && !l.starts_with("mbinfo: mem_lower=")
                        && !l.starts_with("mbinfo: loader=")
                })
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            same(&ours),
            same(&theirs),
            "{placement:?}\nours:\n{ours}\nQEMU:\n{theirs}"
        );
        assert!(theirs.contains("mbinfo: loader=\"qemu\"\n"), "{theirs}");
        assert!(ours.contains("mbinfo: loader=\"hakobune\"\n"), "{ours}");

        let (our_map, their_map) = (mmap(&ours), mmap(&theirs));
        let (our_lower, our_upper) = mem_sizes(&ours);
        let (their_lower, their_upper) = mem_sizes(&theirs);
        assert_eq!(our_lower, their_lower, "mem_lower");
        for (who, map, lower, upper) in [
            ("ours", &our_map, our_lower, our_upper),
            ("QEMU", &their_map, their_lower, their_upper),
        ] {
            // Each loader's mem_* agree with its own map...
            assert_eq!(map[0], (0, lower << 10, 1), "{who}: {map:x?}");
            assert!(
                map.contains(&(0x10_0000, upper << 10, 1)),
                "{who}: {map:x?}"
            );
            // ...and the memory from 1 MiB ends at the machine's memory size.
            assert_eq!(memory_top(map), MEM_MIB << 20, "{who}: {map:x?}");
        }

        // QEMU's debug console also carries SeaBIOS's log; the kernel's text is last.
        let text = std::fs::read_to_string(&dbg).unwrap();
        assert!(text.ends_with(expected::mbinfo_debugcon()), "{text}");
    }
}

/// Runs `hako run --accel emu --kernel <kernel>` with `extra`; expects a one-line
/// error and exit status 1.
fn fails(kernel: &Path, extra: &[&str]) -> String {
    let o = hako_run(kernel, "emu", extra);
    assert_eq!(
        o.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    assert_eq!(o.stderr.trim().lines().count(), 1, "one line: {}", o.stderr);
    o.stderr
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

#[test]
fn multiboot_bad_images_are_clear_errors() {
    let good = std::fs::read(build("mbinfo", Placement::ProgramHeaders).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    // The header: the first 32-bit aligned magic in the first 8 KiB.
    let at = (0..8192)
        .step_by(4)
        .find(|&i| u32_at(&good, i) == 0x1bad_b002)
        .expect("multiboot header");
    // ELF32: e_phoff at 28; the one program header's p_paddr at +12, p_filesz at +16.
    let ph = u32_at(&good, 28) as usize;

    let mut bad_sum = good.clone();
    bad_sum[at + 8] ^= 1;
    let err = fails(&put("sum.elf", &bad_sum), &[]);
    assert!(
        err.contains("sum.elf") && err.contains("bad checksum"),
        "{err}"
    );

    let mut outside = good.clone();
    outside[ph + 12..ph + 16].copy_from_slice(&0x7ff0_0000u32.to_le_bytes());
    let err = fails(&put("outside.elf", &outside), &[]);
    assert!(
        err.contains("outside guest RAM") && err.contains("0x7ff00000"),
        "{err}"
    );

    let filesz = u32_at(&good, ph + 16) as usize;
    let offset = u32_at(&good, ph + 4) as usize;
    let err = fails(&put("cut.elf", &good[..offset + filesz / 2]), &[]);
    assert!(
        err.contains("cut.elf") && err.contains("ELF") && err.contains("past the end of the file"),
        "{err}"
    );

    // Modules that do not fit.
    let big = put("big.bin", &vec![0u8; 20 << 20]);
    let err = fails(
        &put("ok.elf", &good),
        &["--memory", "16M", "--initrd", big.to_str().unwrap()],
    );
    assert!(
        err.contains("do not fit") && err.contains("more memory"),
        "{err}"
    );
}

#[test]
fn a_bzimage_with_a_stray_multiboot_magic_is_still_a_bzimage() {
    // "HdrS" at 0x202 (a Linux setup header) and a bad-checksum magic at 0x400: the
    // Linux loader judges it (and rejects this fake), not the Multiboot checksum.
    let mut b = vec![0u8; 0x2000];
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x400..0x404].copy_from_slice(&0x1bad_b002u32.to_le_bytes());
    b[0x404..0x408].copy_from_slice(&3u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake-bzimage");
    std::fs::write(&path, &b).unwrap();
    let o = hako_run(&path, "emu", &[]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    let last = o.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("malformed kernel") && last.contains("bzImage"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("booting it as the Linux bzImage"),
        "{}",
        o.stderr
    );
}

#[test]
fn debug_device_flags_are_checked() {
    let elf = build("mbinfo", Placement::ProgramHeaders).unwrap();
    for (spec, want) in [
        ("isa-debug-exit,iobase=zz", "not a number"),
        (
            "isa-debug-exit,size=4",
            "unknown isa-debug-exit option 'size'",
        ),
        ("pc-speaker", "unknown device 'pc-speaker'"),
    ] {
        let o = hako_run(&elf, "emu", &["--device", spec]);
        assert_eq!(o.code, Some(2), "{spec}: {}", o.stderr);
        assert!(o.stderr.contains(want), "{spec}: {}", o.stderr);
    }
    for (spec, want) in [
        (
            "isa-debug-exit,iobase=0x3fc",
            "cannot place it at ports 0x3fc..0x3fd",
        ),
        ("debugcon,iobase=0x40", "overlap the PIT"),
    ] {
        let err = fails(&elf, &["--device", spec]);
        assert!(err.contains(want), "{spec}: {err}");
    }
    // Two devices on the same port.
    let err = fails(
        &elf,
        &[
            "--device",
            "debugcon",
            "--device",
            "isa-debug-exit,iobase=0x402",
        ],
    );
    assert!(err.contains("overlaps"), "{err}");
}

#[test]
fn a_linux_kernel_takes_one_initrd() {
    let hello = test_guests::build("hello").unwrap();
    let err = fails(&hello, &["--initrd", "/dev/null,/dev/null"]);
    assert!(err.contains("takes one --initrd, not 2"), "{err}");
}
