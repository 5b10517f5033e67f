//! What each guest prints, computed independently of any accelerator, so tests of
//! every crate can compare a run's serial output byte for byte (see guests/README.md).

/// The checksum of guests/hello.c's ALU loop, computed natively.
pub fn hello_checksum() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut carries: u32 = 0;
    for i in 0u64..4096 {
        let prev = h;
        h ^= i;
        h = h.wrapping_mul(0x100_0000_01b3);
        h = h.rotate_left(13);
        h = h.wrapping_add(prev);
        carries += u32::from(h < prev);
        if i % 7 == 3 {
            h ^= h / (i | 1);
        }
        h = h.wrapping_sub((prev >> 58) * 0x9e37);
    }
    h ^ u64::from(carries)
}

/// `hello` booted with `cmdline`.
pub fn hello(cmdline: &str) -> String {
    format!(
        "hello: cmdline=\"{cmdline}\"\nhello: checksum=0x{:016x}\nhello: resetting\n",
        hello_checksum()
    )
}

/// `triple` (then the machine shuts down).
pub fn triple() -> String {
    "triple: faulting\n".to_string()
}

/// `smp` on a machine with `cpus` CPUs booted with `cpus=<cpus>`.
pub fn smp(cpus: u32) -> String {
    let mut s = format!("smp: BSP 0, starting {} APs\n", cpus - 1);
    for ap in 1..cpus {
        s += &format!("smp: AP {ap} up, ticket {}\n", ap - 1);
    }
    s + &format!("smp: total={cpus} CPUs\n")
}

/// `outloop` booted with `count=<count>`.
pub fn outloop(count: u64) -> String {
    format!("outloop: count={count}\noutloop: done\n")
}

/// `xmodify` on a machine with at least 2 CPUs.
pub fn xmodify() -> String {
    "xmodify: starting the writer CPU\nxmodify: 300 rewrites seen in order\n".to_string()
}

/// `jitcheck` booted with `cpus=<cpus>` on a machine with that many CPUs.
pub fn jitcheck(cpus: u32) -> String {
    format!(
        "jitcheck: #DE at the DIV, iteration 1999\n\
         jitcheck: #GP at the load, iteration 2000, sum 14000\n\
         jitcheck: #PF 16 pages faulted in, sum exact\n\
         jitcheck: self-modifying code: 0 stale calls\n\
         jitcheck: timer interrupt taken in a tight loop\n\
         jitcheck: pushf/cli/popf: 0 wrong\n\
         jitcheck: locked counter {} (exact)\n\
         jitcheck: done\n",
        cpus * 200_000
    )
}

/// `multiboot/mbinfo` on this VMM with `--memory <mem_mib>M`, booted as `kernel`
/// with `--cmdline <args>` and the modules (path, contents), in that order; the
/// memory map is the one `boot` builds (the ECAM reservation included). The
/// debug-console text goes to stderr: see [`mbinfo_debugcon`].
pub fn mbinfo(kernel: &str, args: &str, mem_mib: u64, modules: &[(&str, &[u8])]) -> String {
    let mut s = String::from("mbinfo: magic=0x2badb002 (ok) protected=1 paging=0 interrupts=0\n");
    s += &format!(
        "mbinfo: mem_lower=639 KiB mem_upper={} KiB\n",
        (mem_mib - 1) * 1024
    );
    s += "mbinfo: top of upper memory is RAM\n";
    s += &format!("mbinfo: cmdline=\"{kernel} {args}\"\n");
    s += &format!("mbinfo: mods={}\n", modules.len());
    for (i, (path, data)) in modules.iter().enumerate() {
        let shown: String = data
            .iter()
            .take(48)
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        s += &format!(
            "mbinfo: mod {i} size={} page_aligned=1 string=\"{path}\" data=\"{shown}\"\n",
            data.len()
        );
    }
    let mmap = [
        (0u64, 0x9fc00u64, 1u32),
        (0x9fc00, 0x60400, 2),
        (0x10_0000, (mem_mib - 1) << 20, 1),
        (0xb000_0000, 0x10_0000, 2),
    ];
    for (base, len, ty) in mmap {
        s += &format!("mbinfo: mmap base=0x{base:016x} length=0x{len:016x} type={ty}\n");
    }
    s += "mbinfo: loader=\"hakobune\"\n";
    s += "mbinfo: debugcon readback=0xe9\n";
    s += "mbinfo: exit value 0x21\n";
    s
}

/// What `mbinfo` writes to the debug console (port 0x402); no newline at the end.
pub fn mbinfo_debugcon() -> &'static str {
    "mbinfo: hello from the debug console\nmbinfo: no newline at the end"
}

/// The exit status `mbinfo` asks for through isa-debug-exit: (0x21 << 1) | 1.
pub const MBINFO_EXIT_STATUS: i32 = 0x43;

/// `multiboot/testdev` with `--device pc-testdev --device isa-debug-exit`: every
/// check passes (then it exits with [`TESTDEV_EXIT_STATUS`]).
pub fn testdev() -> String {
    [
        "multiboot magic = 0x2badb002",
        "scratch dword = 0x12345678",
        "scratch word at 0xe2 = 0x1234",
        "scratch byte at 0xe9 = 0x56",
        "scratch after byte and word writes = 0xab34cdef",
        "word in a flushed page = 0x600dcafe",
        "flush port reads = 0x00000000",
        "iomem before writes = 0x00000000",
        "iomem dword = 0x1122aa44",
        "iomem byte = 0x11",
        "iomem last word = 0xbeef",
        "level line: interrupts (handler lowers the line) = 0x01",
        "edge line: interrupts for two rising edges = 0x02",
        "irq port reads = 0x00",
        "spurious interrupts = 0x00",
        "0 failures",
    ]
    .iter()
    .map(|l| format!("testdev: {l}\n"))
    .collect()
}

/// The exit status `testdev` asks for when every check passed: (0x10 << 1) | 1.
pub const TESTDEV_EXIT_STATUS: i32 = 0x21;
