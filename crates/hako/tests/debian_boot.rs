//! End to end: Debian's stock cloud kernel with the busybox initramfs of
//! scripts/default-guest.sh boots under `hako run --accel emu` (with the translator
//! on 1 and 4 vCPUs, and interpreting only), computes, and powers off; its results
//! must equal the host's.

mod common;

use std::time::Duration;

use common::{boot_ok, host, repo};

#[test]
fn debian_kernel_boots_on_emu_and_computes_like_the_host() {
    boots_and_computes("emu", 1);
}

#[test]
fn debian_kernel_boots_on_emu_with_4_cpus() {
    boots_and_computes("emu", 4);
}

#[test]
fn debian_kernel_boots_on_the_interpreter_alone() {
    boots_and_computes("emu-interp", 1);
}

fn boots_and_computes(accel: &str, cpus: u32) {
    let script = r#"echo "mul=$((123456789*987654321))"
echo -n hakobune | sha256sum
awk 'BEGIN{x=1; for(i=1;i<=20;i++) x=x*1.5+1/i; printf "float=%.9f\n", x}'
md5sum /init
cat /proc/cpuinfo | grep -c ^processor
"#;
    let n = cpus.to_string();
    let out = &boot_ok(accel, script, &["--cpus", &n], Duration::from_secs(360));
    assert!(
        out.lines().any(|l| l.trim() == n),
        "want {cpus} processors\n{out}"
    );
    assert!(out.contains("hako-guest: init reached"), "{out}");
    assert!(out.contains("mul=121932631112635269"), "{out}");
    let sha = host("printf hakobune | sha256sum");
    assert!(
        out.contains(sha.split_whitespace().next().unwrap()),
        "want {sha}\n{out}"
    );
    let mut x = 1.0f64;
    for i in 1..=20 {
        x = x * 1.5 + 1.0 / i as f64;
    }
    assert!(
        out.contains(&format!("float={x:.9}")),
        "want float={x:.9}\n{out}"
    );
    let md5 = host(&format!(
        "md5sum {}",
        repo().join("scripts/guest-init.sh").display()
    ));
    assert!(
        out.contains(md5.split_whitespace().next().unwrap()),
        "want {md5}\n{out}"
    );
    assert!(out.contains("hako-guest: exit status 0"), "{out}");
}
