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
