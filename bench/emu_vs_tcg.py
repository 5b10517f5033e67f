#!/usr/bin/env python3
"""Benchmark: `hako run --accel emu` against `qemu-system-x86_64 -accel tcg` on the
same Debian cloud kernel and busybox initramfs, in the same run.

Reports, for each and as ratios (hako / qemu; below 1.0 means Hakobune is faster):
  - wall time from process start to the guest's /init ("init reached" line)
  - wall time of a CPU-bound busybox workload, measured inside the guest with
    /proc/uptime (sha256 of 16 MiB and a shell arithmetic loop)
  - total wall time until the VMM exits after power-off
and the emulator's instructions per second when hako reports them (HAKO_EMU_STATS).

Usage: bench/emu_vs_tcg.py [--runs N] [--hako PATH]
"""
import argparse
import base64
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKLOAD = r"""
t0=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/zero bs=1M count=16 2>/dev/null | sha256sum >/dev/null
i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
t1=$(cut -d' ' -f1 /proc/uptime)
echo "bench: uptime_at_start=$t0 workload_seconds=$(awk "BEGIN{print $t1-$t0}")"
"""


def guest():
    out = subprocess.run([os.path.join(REPO, "scripts/default-guest.sh"), "--print-env"],
                         check=True, capture_output=True, text=True).stdout
    env = dict(l.split("=", 1) for l in out.strip().splitlines())
    return env["KERNEL"], env["INITRD"]


def run(cmd, env=None, limit=900):
    """Runs cmd; returns (seconds to 'init reached', total seconds, stdout, stderr)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=env)
    t_init = None
    out = []
    for line in iter(p.stdout.readline, b""):
        s = line.decode(errors="replace")
        out.append(s)
        if t_init is None and "init reached" in s:
            t_init = time.monotonic() - start
        if time.monotonic() - start > limit:
            p.kill()
            break
    err = p.stderr.read().decode(errors="replace")
    p.wait()
    return t_init, time.monotonic() - start, "".join(out), err


def parse(out):
    m = re.search(r"workload_seconds=([0-9.]+)", out)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hako", default=os.path.join(REPO, "target/release/hako"))
    a = ap.parse_args()
    if not os.path.exists(a.hako):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "hako"], cwd=REPO, check=True)
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        sys.exit("qemu-system-x86_64 not found: run scripts/install-deps.sh")
    kernel, initrd = guest()
    cmd64 = base64.b64encode(WORKLOAD.encode()).decode()
    cmdline = f"console=ttyS0 quiet hako.cmd={cmd64}"
    hako_cmd = [a.hako, "run", "--accel", "emu", "--memory", "512M", "--kernel", kernel,
                "--initrd", initrd, "--cmdline", cmdline]
    qemu_cmd = [qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-nodefaults",
                "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append", cmdline]
    env = dict(os.environ, HAKO_EMU_STATS="1")
    res = {"hako": [], "qemu": []}
    ips = []
    for i in range(a.runs):
        for name, cmd in (("hako", hako_cmd), ("qemu", qemu_cmd)):
            t_init, total, out, err = run(cmd, env=env)
            w = parse(out)
            if t_init is None or w is None:
                print(f"{name} run {i}: guest did not finish the workload\n{out[-2000:]}\n{err[-2000:]}",
                      file=sys.stderr)
                continue
            res[name].append((t_init, w, total))
            # HAKO_EMU_STATS=1: "emu stats: vcpu N icount=... X MIPS" every 2 s per vCPU.
            mips = [float(x) for x in re.findall(r"vcpu 0 icount=\d+ rip=\S+ ([0-9.]+) MIPS", err)]
            busy = [x for x in mips if x > 1.0]  # skip intervals the vCPU spent halted
            if name == "hako" and busy:
                ips.append(statistics.mean(busy) * 1e6)
            print(f"{name} run {i}: init {t_init:.2f}s, workload {w:.2f}s, total {total:.2f}s")
    if not res["hako"] or not res["qemu"]:
        sys.exit("not enough successful runs to compare")

    def med(name, k):
        return statistics.median(r[k] for r in res[name])

    print()
    print(f"{'metric':<28}{'hako emu':>12}{'qemu tcg':>12}{'ratio':>10}")
    for k, label in ((0, "wall to /init (s)"), (1, "busybox workload (s)"), (2, "total wall (s)")):
        h, q = med("hako", k), med("qemu", k)
        print(f"{label:<28}{h:>12.2f}{q:>12.2f}{h / q:>10.2f}")
    if ips:
        print(f"emulator instructions/s while busy (vCPU 0): {statistics.median(ips):.3e}")


if __name__ == "__main__":
    main()
