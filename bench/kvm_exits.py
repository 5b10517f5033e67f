#!/usr/bin/env python3
"""Measurements behind bench/kvm-exits.sh (run that script, not this one).

The guest is guests/outloop.c: `count=N` one-byte writes to port 0x80 (no device
behind it, so each write is one VM exit to the VMM and straight back), then a reset
through the i8042. The same ELF boots on both VMMs: hako enters it at e_entry by
the Linux 64-bit boot protocol, QEMU's -kernel through its Xen PVH note (after
SeaBIOS and QEMU's PVH option ROM).

Exit rate: each VMM runs the guest with a small and a large N, best of --runs wall
times each; exits/s = (N_large - N_small) / (t_large - t_small), which cancels
start-up, firmware and shutdown costs. The same from the VMM's CPU time (user +
system, all threads) gives exits per CPU second, which a busy machine disturbs less.
Start-up: wall time from spawning the VMM to the first byte the guest writes to the
serial port (hako's first guest instruction is ~20 guest instructions earlier).
Memory: the VMM's resident set (VmRSS, split into anonymous/file/shmem) sampled
while a long-running guest with 128 MiB of RAM spins in its loop; the guest itself
touches well under 1 MiB of its RAM, so this is the VMM's own footprint.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time


def run_to_end(cmd, limit):
    """Runs cmd to completion; returns (wall seconds, CPU seconds) or raises.

    CPU seconds are the process's user + system time (all its threads, vCPU time in
    the host kernel included): less disturbed than wall time on a busy machine."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=err)
        timer = threading.Timer(limit, p.kill)
        timer.start()
        try:
            out = p.stdout.read().decode(errors="replace")
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        elapsed = time.monotonic() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0 or "outloop: done" not in out:
            err.seek(0)
            raise RuntimeError(f"{cmd[0]} failed (status {p.returncode}):\n{out}\n"
                               f"{err.read().decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime


def best(cmd, runs, limit):
    """The lowest wall time and the lowest CPU time of `runs` runs."""
    results = [run_to_end(cmd, limit) for _ in range(runs)]
    return min(r[0] for r in results), min(r[1] for r in results)


def first_byte(cmd, limit):
    """Seconds from spawning cmd to the first byte on its stdout; then kills it."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        b = p.stdout.read(1)
        t = time.monotonic() - start
        if not b:
            raise RuntimeError(f"{cmd[0]} printed nothing")
        if t > limit:
            raise RuntimeError(f"{cmd[0]} took {t:.1f}s to print")
        return t
    finally:
        p.kill()
        p.wait()


def rss(cmd, settle):
    """Peak VmRSS and its parts (KiB) of cmd's process while the guest runs."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    peak = None
    try:
        # Wait for the guest to be running (it prints before its loop).
        p.stdout.read(1)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and p.poll() is None:
            fields = {}
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        k, _, v = line.partition(":")
                        if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                            fields[k] = int(v.split()[0])
            except OSError:
                break
            if fields and (peak is None or fields.get("VmRSS", 0) > peak.get("VmRSS", 0)):
                peak = fields
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
    if peak is None:
        raise RuntimeError(f"{cmd[0]} exited before its memory could be read")
    return peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hako")
    ap.add_argument("--qemu")
    ap.add_argument("--guest", required=True)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=200000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memory-mib", type=int, default=128)
    args = ap.parse_args()

    mem = args.memory_mib
    vmms = {}
    if args.hako:
        vmms["hako"] = lambda n: [args.hako, "run", "--kernel", args.guest, "--accel", "kvm",
                                  "--memory", f"{mem}M", "--cmdline", f"count={n}"]
    if args.qemu:
        vmms["qemu"] = lambda n: [args.qemu, "-accel", "kvm", "-cpu", "host", "-M", "pc",
                                  "-m", f"{mem}M", "-display", "none", "-serial", "stdio",
                                  "-monitor", "none", "-no-reboot", "-nodefaults",
                                  "-kernel", args.guest, "-append", f"count={n}"]
    results = {}
    for name, cmd in vmms.items():
        r = {}
        try:
            t_small, cpu_small = best(cmd(args.small), args.runs, 300)
            t_large, cpu_large = best(cmd(args.large), args.runs, 900)
            exits = args.large - args.small
            r["exits_per_s"] = exits / (t_large - t_small) if t_large > t_small else float("nan")
            r["exits_per_cpu_s"] = (exits / (cpu_large - cpu_small)
                                    if cpu_large > cpu_small else float("nan"))
            r["us_per_exit"] = 1e6 / r["exits_per_s"]
            r["t_small"], r["t_large"] = t_small, t_large
            r["startup_s"] = min(first_byte(cmd(0), 300) for _ in range(args.runs))
            r["rss"] = rss(cmd(10**12), 1.5)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"{name}: skipped: {e}", file=sys.stderr)
            continue
        results[name] = r

    print(f"guest: {args.guest} (port 0x80 write loop), {mem} MiB RAM, "
          f"N = {args.small} and {args.large}, best of {args.runs}")
    print(f"{'':28}" + "".join(f"{n:>16}" for n in results))
    rows = [
        ("VM exits per second", lambda r: f"{r['exits_per_s']:,.0f}"),
        ("microseconds per exit", lambda r: f"{r['us_per_exit']:.2f}"),
        ("VM exits per CPU second", lambda r: f"{r['exits_per_cpu_s']:,.0f}"),
        (f"wall s, N={args.small}", lambda r: f"{r['t_small']:.3f}"),
        (f"wall s, N={args.large}", lambda r: f"{r['t_large']:.3f}"),
        ("start to first output, ms", lambda r: f"{r['startup_s'] * 1000:.1f}"),
        ("VMM RSS, MiB", lambda r: f"{r['rss'].get('VmRSS', 0) / 1024:.1f}"),
        ("  anon / file / shmem, MiB", lambda r: "{:.1f}/{:.1f}/{:.1f}".format(
            r["rss"].get("RssAnon", 0) / 1024, r["rss"].get("RssFile", 0) / 1024,
            r["rss"].get("RssShmem", 0) / 1024)),
    ]
    for label, fmt in rows:
        print(f"{label:28}" + "".join(f"{fmt(r):>16}" for r in results.values()))
    if "hako" in results and "qemu" in results:
        h, q = results["hako"], results["qemu"]
        print(f"ratio hako/qemu: exits per second {h['exits_per_s'] / q['exits_per_s']:.2f} "
              f"(per CPU second {h['exits_per_cpu_s'] / q['exits_per_cpu_s']:.2f}; above 1.0: "
              f"hako exits faster); start-up {h['startup_s'] / q['startup_s']:.3f}; "
              f"RSS {h['rss']['VmRSS'] / q['rss']['VmRSS']:.3f} (below 1.0: hako smaller)")
    if os.path.exists("/sys/module/kvm_pvm"):
        print("note: /dev/kvm here is PVM-backed (kvm_pvm): the guest's supervisor code is "
              "emulated by the host kernel, so both rates include that emulation of the "
              "loop's dec/jnz.")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
