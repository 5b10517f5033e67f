#!/usr/bin/env python3
"""Benchmark: host memory of idle guests, `hako run --accel emu` against
`qemu-system-x86_64 -accel tcg`, on the same Debian cloud kernel and busybox
initramfs, in the same run.

Four 512 MiB guests run at once in each configuration; once all are at their
idle shell they settle (--settle seconds, default 60), then the host memory of
the four VMM processes is summed: PSS (proportional set size, from
/proc/PID/smaps_rollup: a page shared by n processes counts 1/n in each, so
pages KSM merged across the guests count once) and RSS.

  hako          --memory 512M
  hako+reclaim  --memory 512M,mergeable=on --balloon 0  (free page reporting, KSM)
  qemu          -machine mem-merge=off
  qemu+reclaim  -machine mem-merge=on -device virtio-balloon-pci,free-page-reporting=on

For the +reclaim configurations ksmd runs (/sys/kernel/mm/ksm/run=1, with a
faster pages_to_scan and sleep_millisecs); the previous KSM settings are put
back at the end, and ksmd is stopped for the others (it only ever merges memory
the VMM marked mergeable). --touch MiB makes each guest fill and delete that much
of its tmpfs before idling, so that free page reporting has freed memory to give
back. Reports MiB per configuration (medians over --runs) and the ratios hako /
qemu (below 1.0: Hakobune uses less) and reclaim / plain.

Usage: bench/density.py [--runs N] [--settle S] [--touch MiB] [--vms N] [--hako PATH]
KSM needs root (the script runs without it, with a note, and merges nothing).
"""
import argparse
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KSM = "/sys/kernel/mm/ksm"
KSM_FAST = {"pages_to_scan": "4000", "sleep_millisecs": "20"}
BOOT_LIMIT = 300  # s: all guests at their idle shell
CONFIGS = ("hako", "hako+reclaim", "qemu", "qemu+reclaim")


def guest():
    out = subprocess.run([os.path.join(REPO, "scripts/default-guest.sh"), "--print-env"],
                         check=True, capture_output=True, text=True).stdout
    env = dict(l.split("=", 1) for l in out.strip().splitlines())
    return env["KERNEL"], env["INITRD"]


def read(path):
    with open(path) as f:
        return f.read().strip()


def write(path, value):
    with open(path, "w") as f:
        f.write(value)


class Ksm:
    """ksmd's settings, changed for the merging configurations and put back."""

    def __init__(self):
        self.keys = ("run", "pages_to_scan", "sleep_millisecs")
        try:
            self.saved = {k: read(f"{KSM}/{k}") for k in self.keys}
            write(f"{KSM}/pages_to_scan", self.saved["pages_to_scan"])
            self.usable = True
        except OSError as e:
            print(f"KSM not usable here ({e}): nothing will be merged", file=sys.stderr)
            self.saved, self.usable = {}, False

    def set(self, on):
        if not self.usable:
            return
        if on:
            for k, v in KSM_FAST.items():
                write(f"{KSM}/{k}", v)
        write(f"{KSM}/run", "1" if on else "0")

    def stats(self):
        if not self.usable:
            return ""
        shared, sharing = (int(read(f"{KSM}/{k}")) for k in ("pages_shared", "pages_sharing"))
        return f"KSM {shared * 4 // 1024} MiB shared by {sharing * 4 // 1024} MiB"

    def restore(self):
        # run first: ksmd stops (if it was off) before its scan rate goes back.
        for k in ("run", "pages_to_scan", "sleep_millisecs"):
            if k in self.saved:
                try:
                    write(f"{KSM}/{k}", self.saved[k])
                except OSError as e:
                    print(f"cannot restore {KSM}/{k}={self.saved[k]}: {e}", file=sys.stderr)


def smaps(pid):
    """(PSS, RSS) of a process in KiB."""
    pss = rss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def command(config, a, kernel, initrd, cmdline):
    if config.startswith("hako"):
        cmd = [a.hako, "run", "--accel", "emu", "--kernel", kernel, "--initrd", initrd,
               "--cmdline", cmdline]
        if config == "hako+reclaim":
            return cmd + ["--memory", "512M,mergeable=on", "--balloon", "0"]
        return cmd + ["--memory", "512M"]
    cmd = [a.qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-nodefaults",
           "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append", cmdline]
    if config == "qemu+reclaim":
        return cmd + ["-machine", "mem-merge=on",
                      "-device", "virtio-balloon-pci,free-page-reporting=on"]
    return cmd + ["-machine", "mem-merge=off"]


def one_run(config, a, kernel, initrd, ksm, tmp):
    """Runs a.vms guests of `config` at once; returns (PSS MiB, RSS MiB) summed."""
    script = ""
    if a.touch:
        script += (f"dd if=/dev/urandom of=/tmp/fill bs=1M count={a.touch} 2>/dev/null\n"
                   "rm /tmp/fill\n")
    script += "echo bench: ready\nwhile :; do sleep 1000; done\n"
    cmdline = "console=ttyS0 quiet hako.cmd=" + base64.b64encode(script.encode()).decode()
    ksm.set(config.endswith("+reclaim"))
    vms = []
    try:
        for i in range(a.vms):
            out = os.path.join(tmp, f"{config}-{i}.out")
            with open(out, "wb") as o:
                p = subprocess.Popen(command(config, a, kernel, initrd, cmdline),
                                     stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT)
            vms.append((p, out))
        end = time.monotonic() + BOOT_LIMIT
        waiting = list(vms)
        while waiting:
            if time.monotonic() > end:
                print(f"{config}: guests not ready within {BOOT_LIMIT} s", file=sys.stderr)
                return None
            for p, out in list(waiting):
                with open(out, errors="replace") as f:
                    text = f.read()
                if "bench: ready" in text:
                    waiting.remove((p, out))
                elif p.poll() is not None:
                    print(f"{config}: a VMM exited\n{text[-2000:]}", file=sys.stderr)
                    return None
            time.sleep(0.2)
        time.sleep(a.settle)
        samples = []
        for _ in range(3):
            tot = [0, 0]
            for p, _ in vms:
                pss, rss = smaps(p.pid)
                tot[0] += pss
                tot[1] += rss
            samples.append(tot)
            time.sleep(1)
        note = ksm.stats() if config.endswith("+reclaim") else ""
        pss = statistics.median(s[0] for s in samples) / 1024
        rss = statistics.median(s[1] for s in samples) / 1024
        return pss, rss, note
    finally:
        for p, _ in vms:
            p.terminate()
        for p, _ in vms:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        ksm.set(False)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle", type=int, default=60, help="seconds idle before measuring")
    ap.add_argument("--touch", type=int, default=0, help="MiB each guest fills and frees first")
    ap.add_argument("--vms", type=int, default=4)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--hako", default=os.path.join(REPO, "target/release/hako"))
    a = ap.parse_args()
    a.settle = max(0, min(a.settle, 600))
    if not os.path.exists(a.hako):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "hako"], cwd=REPO, check=True)
    a.qemu = shutil.which("qemu-system-x86_64")
    if not a.qemu:
        sys.exit("qemu-system-x86_64 not found: run scripts/install-deps.sh")
    kernel, initrd = guest()
    configs = a.configs.split(",")
    res = {c: [] for c in configs}
    ksm = Ksm()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(a.runs):
                for c in configs:
                    r = one_run(c, a, kernel, initrd, ksm, tmp)
                    if r:
                        res[c].append(r)
                        print(f"{c} run {i}: {a.vms} guests PSS {r[0]:.0f} MiB, "
                              f"RSS {r[1]:.0f} MiB {r[2]}", flush=True)
    finally:
        ksm.restore()

    def med(c, k):
        return statistics.median(r[k] for r in res[c]) if res.get(c) else None

    print()
    print(f"{a.vms} idle 512 MiB guests, {a.settle} s settled"
          + (f", {a.touch} MiB filled and freed" if a.touch else "")
          + f"; medians of {a.runs} runs (MiB, summed over the VMM processes)")
    print(f"{'configuration':<15}{'PSS':>8}{'RSS':>8}{'per VM':>8}")
    for c in configs:
        if med(c, 0) is None:
            print(f"{c:<15}no successful run")
            continue
        print(f"{c:<15}{med(c, 0):>8.0f}{med(c, 1):>8.0f}{med(c, 0) / a.vms:>8.0f}")
    print()
    print(f"{'ratio (PSS)':<28}{'value':>8}")
    for label, x, y in (("hako / qemu", "hako", "qemu"),
                        ("hako+reclaim / qemu+reclaim", "hako+reclaim", "qemu+reclaim"),
                        ("hako+reclaim / hako", "hako+reclaim", "hako"),
                        ("qemu+reclaim / qemu", "qemu+reclaim", "qemu")):
        if med(x, 0) and med(y, 0):
            print(f"{label:<28}{med(x, 0) / med(y, 0):>8.2f}")


if __name__ == "__main__":
    main()
