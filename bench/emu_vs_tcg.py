#!/usr/bin/env python3
"""Benchmark: `hako run --accel emu` against `qemu-system-x86_64 -accel tcg` on the
same Debian cloud kernel and busybox initramfs, in the same run, with --cpus 1 and 2.

Reports, for each and as ratios (hako / qemu; below 1.0 means Hakobune is faster):
  - boot: guest uptime when /init starts (the "init reached" line's /proc/uptime)
  - a CPU-bound busybox workload (sha256sum, gzip, a shell loop, awk), timed inside
    the guest with /proc/uptime; and the same commands run natively on the host by
    the same static busybox, for the "x native" figure
  - total wall time until the VMM exits after power-off, and its peak RSS
and, from HAKO_EMU_STATS, the emulator's instructions per second, blocks
translated and translation time.

Usage: bench/emu_vs_tcg.py [--runs N] [--cpus 1,2] [--hako PATH] [--jit on|off]
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
BUSYBOX = os.path.expanduser("~/.cache/hako/debian/busybox/bin/busybox")

# The CPU-bound part, run by busybox sh in the guest and natively alike.
COMMANDS = r"""
dd if=/dev/zero bs=1M count=16 2>/dev/null | sha256sum >/dev/null
seq 1 200000 | gzip -c | wc -c >/dev/null
i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
awk 'BEGIN{s=0; for(i=0;i<300000;i++) s+=i*i%7; print s}' >/dev/null
"""

WORKLOAD = (
    "echo \"bench: init_uptime=$(cut -d' ' -f1 /proc/uptime)\"\n"
    "t0=$(cut -d' ' -f1 /proc/uptime)\n" + COMMANDS +
    "t1=$(cut -d' ' -f1 /proc/uptime)\n"
    "echo \"bench: workload_seconds=$(awk \"BEGIN{print $t1-$t0}\")\"\n"
)


def guest():
    out = subprocess.run([os.path.join(REPO, "scripts/default-guest.sh"), "--print-env"],
                         check=True, capture_output=True, text=True).stdout
    env = dict(l.split("=", 1) for l in out.strip().splitlines())
    return env["KERNEL"], env["INITRD"]


def run(cmd, env=None, limit=900):
    """Runs cmd; returns (total seconds, peak RSS in KiB, stdout, stderr)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=env)
    out = []
    for line in iter(p.stdout.readline, b""):
        out.append(line.decode(errors="replace"))
        if time.monotonic() - start > limit:
            p.kill()
            break
    err = p.stderr.read().decode(errors="replace")
    _, _, ru = os.wait4(p.pid, 0)
    return time.monotonic() - start, ru.ru_maxrss, "".join(out), err


def field(out, name):
    m = re.search(name + r"=([0-9.]+)", out)
    return float(m.group(1)) if m else None


def native_seconds(runs):
    if not os.path.exists(BUSYBOX):
        return None
    times = []
    for _ in range(runs):
        t = time.monotonic()
        subprocess.run([BUSYBOX, "sh", "-c", COMMANDS], check=True, stdout=subprocess.DEVNULL)
        times.append(time.monotonic() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpus", default="1,2")
    ap.add_argument("--jit", default="on", choices=["on", "off"])
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
    env = dict(os.environ, HAKO_EMU_STATS="1")
    native = native_seconds(a.runs)
    rows = []
    for cpus in [int(c) for c in a.cpus.split(",")]:
        hako_cmd = [a.hako, "run", "--accel", "emu", "--jit", a.jit, "--memory", "512M",
                    "--cpus", str(cpus), "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline]
        qemu_cmd = [qemu, "-accel", "tcg", "-m", "512", "-smp", str(cpus), "-nographic",
                    "-no-reboot", "-nodefaults", "-serial", "stdio", "-kernel", kernel,
                    "-initrd", initrd, "-append", cmdline]
        res = {"hako": [], "qemu": []}
        stats = []
        for i in range(a.runs):
            for name, cmd in (("hako", hako_cmd), ("qemu", qemu_cmd)):
                total, rss, out, err = run(cmd, env=env)
                boot, work = field(out, "init_uptime"), field(out, "workload_seconds")
                if boot is None or work is None:
                    print(f"{name} --cpus {cpus} run {i}: the guest did not finish\n{out[-2000:]}\n"
                          f"{err[-2000:]}", file=sys.stderr)
                    continue
                res[name].append((boot, work, total, rss / 1024))
                print(f"{name} --cpus {cpus} run {i}: boot {boot:.2f}s, workload {work:.2f}s, "
                      f"total {total:.2f}s, peak RSS {rss / 1024:.0f} MiB")
                if name == "hako":
                    # "emu stats: vcpu 0 ... X MIPS blocks=N translate=T ms ..." every 2 s.
                    lines = re.findall(r"vcpu 0 icount=\d+ rip=\S+ ([0-9.]+) MIPS"
                                       r"(?: blocks=(\d+) translate=([0-9.]+)ms)?", err)
                    busy = [float(m[0]) for m in lines if float(m[0]) > 1.0]
                    last = lines[-1] if lines else ("0", "", "")
                    stats.append((statistics.mean(busy) if busy else 0.0,
                                  int(last[1] or 0), float(last[2] or 0.0)))
        if not res["hako"] or not res["qemu"]:
            sys.exit("not enough successful runs to compare")
        rows.append((cpus, res, stats))

    def med(res, name, k):
        return statistics.median(r[k] for r in res[name])

    print()
    print(f"{'--cpus':<7}{'metric':<24}{'hako emu':>10}{'qemu tcg':>10}{'ratio':>8}")
    for cpus, res, stats in rows:
        for k, label in ((0, "boot to /init (s)"), (1, "busybox workload (s)"),
                         (2, "total wall (s)"), (3, "peak RSS (MiB)")):
            h, q = med(res, "hako", k), med(res, "qemu", k)
            print(f"{cpus:<7}{label:<24}{h:>10.2f}{q:>10.2f}{h / q:>8.2f}")
        if native:
            w = med(res, "hako", 1)
            print(f"{cpus:<7}{'workload x native':<24}{w / native:>10.1f}"
                  f"{med(res, 'qemu', 1) / native:>10.1f}   (native {native:.2f}s)")
        if stats:
            mips = statistics.median(s[0] for s in stats)
            print(f"{cpus:<7}vCPU 0 while busy: {mips:.0f} MIPS, {stats[-1][1]} blocks translated "
                  f"in {stats[-1][2]:.0f} ms")


if __name__ == "__main__":
    main()
