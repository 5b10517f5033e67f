#!/usr/bin/env python3
"""Benchmark: virtio-blk throughput and SMP boot time, `hako run` against
`qemu-system-x86_64` on the same accelerator class, in the same run:
`--accel emu` vs `-accel tcg` always; `--accel kvm` vs `-accel kvm` only on a host
whose /dev/kvm is usable and hardware-backed (not PVM, where a stock kernel's
supervisor code is emulated by the host kernel and boot takes many minutes).

Guest: Debian's cloud kernel and the default busybox initramfs (scripts/default-guest.sh)
with bench/tools/blkbench.c (built with `gcc -static` and appended as a second cpio
archive, cached under ~/.cache/hako/bench), `--cpus 2`, 512 MiB, one raw virtio-blk disk
(/dev/vda) filled with data before each run. Inside the guest, blkbench measures with
CLOCK_MONOTONIC, one request in flight, O_DIRECT:
  - sequential write and read of 256 MiB in 1 MiB requests (MB/s = 10^6 bytes/s)
  - 4 KiB random write and read at fixed-seed offsets in that range (IOPS)
and checks the data it reads back. Boot: wall time from process start to the guest's
"init reached" line, and the guest's own uptime when /init runs the benchmark.
The same phases are also timed on the host from the serial lines (a cross-check of
the guest clock; only meaningful for phases of a second or more). Figures are medians over --runs; ratio = hako / qemu (below 1.0 is
faster for times, above 1.0 is faster for rates). Asserts nothing about speed.

Usage: bench/blk_vs_qemu.py [--runs N] [--hako PATH] [--only hako|qemu]
                            [--seq-mib N] [--rand-ops N] [--hako-timeout S]
"""
import argparse
import base64
import gzip
import hashlib
import json
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(os.environ.get("HAKO_CACHE", os.path.expanduser("~/.cache/hako")), "bench")
PHASES = ("seq_write", "seq_read", "rand_write", "rand_read")

GUEST_CMD = r"""
echo "bench: uptime_at_init=$(cut -d' ' -f1 /proc/uptime)"
echo "bench: cpus_online=$(cat /sys/devices/system/cpu/online)"
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ ! -b /dev/vda ]; then echo "bench: no /dev/vda (block devices: $(ls /sys/block))"; exit 4; fi
/bin/blkbench /dev/vda {seq_mib} {rand_ops}
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sha(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()[:16]


def default_guest():
    out = subprocess.run([os.path.join(REPO, "scripts/default-guest.sh"), "--print-env"],
                         check=True, capture_output=True, text=True).stdout
    env = dict(l.split("=", 1) for l in out.strip().splitlines() if "=" in l)
    return env["KERNEL"], env["INITRD"]


def build_blkbench():
    """Compiles bench/tools/blkbench.c statically; cached by source hash."""
    src = os.path.join(REPO, "bench/tools/blkbench.c")
    with open(src, "rb") as f:
        code = f.read()
    out = os.path.join(CACHE, f"blkbench-{sha(code)}")
    if not os.path.exists(out):
        gcc = shutil.which("gcc") or sys.exit("gcc not found (needed to build bench/tools/blkbench.c)")
        r = subprocess.run([gcc, "-static", "-O2", "-Wall", "-o", out + ".tmp", src],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"cannot build blkbench statically (is libc6-dev installed?):\n{r.stderr}")
        os.replace(out + ".tmp", out)
        prune("blkbench-", out)
    return out


def prune(prefix, keep):
    """Removes the cache's older builds of the same kind."""
    for name in os.listdir(CACHE):
        path = os.path.join(CACHE, name)
        if name.startswith(prefix) and path != keep and not name.endswith(".tmp"):
            os.unlink(path)


def build_initrd(base_initrd, blkbench):
    """The default initramfs with a second cpio archive holding /bin/blkbench appended
    (the kernel unpacks concatenated archives in order)."""
    with open(base_initrd, "rb") as f:
        base = f.read()
    with open(blkbench, "rb") as f:
        binary = f.read()
    out = os.path.join(CACHE, f"initramfs-blk-{sha(base, binary)}.cpio.gz")
    if os.path.exists(out):
        return out
    with tempfile.TemporaryDirectory() as root:
        os.chmod(root, 0o755)  # mkcpio writes "." too: keep / world-readable
        os.mkdir(os.path.join(root, "bin"), 0o755)
        dst = os.path.join(root, "bin", "blkbench")
        shutil.copyfile(blkbench, dst)
        os.chmod(dst, 0o755)
        extra = out + ".extra"
        subprocess.run([sys.executable, os.path.join(REPO, "scripts/mkcpio.py"), root, extra], check=True)
    with open(extra, "rb") as f:
        tail = f.read()
    os.unlink(extra)
    gzip.decompress(tail)  # sanity: the appended member is a complete gzip stream
    with open(out + ".tmp", "wb") as f:
        f.write(base + tail)
    os.replace(out + ".tmp", out)
    prune("initramfs-blk-", out)
    return out


def make_disk(path, mib):
    """A fully written raw image (no holes), so reads go to real file data."""
    block = (b"hakobench-fill\n" * 70000)[: 1 << 20]
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)


def run(cmd, timeout):
    """Runs cmd with a hard deadline. Returns (lines [(host_seconds, text)], stderr, rc, timed_out)."""
    start = time.monotonic()
    env = dict(os.environ, HAKO_EMU_STATS="1")  # hako prints instructions/s where it supports it
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    q = queue.Queue()
    err = []

    def reader():
        for raw in iter(p.stdout.readline, b""):
            q.put((time.monotonic() - start, raw.decode(errors="replace").rstrip("\r\n")))
        q.put(None)

    def err_reader():
        for raw in iter(p.stderr.readline, b""):
            err.append(raw.decode(errors="replace"))

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=err_reader, daemon=True)]
    for t in threads:
        t.start()
    lines, timed_out = [], False
    while True:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            timed_out = True
            break
        try:
            item = q.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if item is None:
            break
        lines.append(item)
    if timed_out:
        p.kill()
    rc = p.wait()
    for t in threads:
        t.join(timeout=5)
    total = time.monotonic() - start
    return lines, "".join(err), rc, timed_out, total


def parse(lines, total):
    """Extracts figures from one run's serial output; returns (dict, error or None)."""
    r = {"total": total}
    begins = {}
    for t, s in lines:
        if "init reached" in s and "t_init" not in r:
            r["t_init"] = t
            m = re.search(r"(\d+) cpus", s)
            r["cpus"] = int(m.group(1)) if m else None
        if m := re.search(r"bench: uptime_at_init=([0-9.]+)", s):
            r["uptime_init"] = float(m.group(1))
        if m := re.search(r"blkbench: start .* odirect=(\d)", s):
            r["odirect"] = int(m.group(1))
        if m := re.search(r"bench: cpus_online=(\S+)", s):
            r["cpus_online"] = m.group(1)
        if m := re.search(r"blkbench: begin phase=(\w+)", s):
            begins[m.group(1)] = t
        if m := re.search(r"blkbench: result phase=(\w+) bytes=(\d+) ops=(\d+) ns=(\d+)", s):
            ph, nbytes, ops = m.group(1), int(m.group(2)), int(m.group(3))
            secs = max(int(m.group(4)), 1) / 1e9
            r[ph] = nbytes / secs / 1e6 if ph.startswith("seq") else ops / secs
            if ph in begins:
                hs = max(t - begins[ph], 1e-3)
                r["host_" + ph] = nbytes / hs / 1e6 if ph.startswith("seq") else ops / hs
        if m := re.search(r"blkbench: done verify_errors=(\d+)", s):
            r["verify_errors"] = int(m.group(1))
        if m := re.search(r"hako-guest: exit status (\d+)", s):
            r["exit"] = int(m.group(1))
    if "t_init" not in r:
        return r, "the guest never reached /init"
    missing = [p for p in PHASES if p not in r]
    if missing:
        return r, f"no result for {', '.join(missing)}"
    if r.get("verify_errors"):
        return r, f"blkbench read back wrong data ({r['verify_errors']} sectors)"
    return r, None


def kvm_check(hako):
    """(usable for a stock kernel, reason)."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user"
    pvm = os.path.isdir("/sys/module/kvm_pvm")
    usable = True
    if os.path.exists(hako):
        try:
            rep = json.loads(subprocess.run([hako, "host", "--json"], capture_output=True, text=True,
                                            timeout=30).stdout)
            pvm = pvm or bool(rep["kvm"]["pvm"])
            usable = bool(rep["kvm"]["usable"])
        except (ValueError, KeyError, TypeError, OSError, subprocess.SubprocessError):
            pass
    if pvm:
        return False, ("/dev/kvm is served by PVM (kvm_pvm): a stock kernel's supervisor code is "
                       "emulated instruction by instruction in the host kernel, so its boot takes "
                       "many minutes on both VMMs and measures PVM, not the VMM")
    if not usable:
        return False, "/dev/kvm is not usable (see `hako host`)"
    return True, ""


ROWS = [  # key, label, format, rate (higher is better)
    ("t_init", "wall to /init (s)", "{:.2f}", False),
    ("uptime_init", "guest uptime at /init (s)", "{:.2f}", False),
    ("seq_write", "seq write 1M (MB/s)", "{:.1f}", True),
    ("seq_read", "seq read 1M (MB/s)", "{:.1f}", True),
    ("rand_write", "rand write 4K (IOPS)", "{:.0f}", True),
    ("rand_read", "rand read 4K (IOPS)", "{:.0f}", True),
    ("host_seq_write", "  host-timed seq write", "{:.1f}", True),
    ("host_seq_read", "  host-timed seq read", "{:.1f}", True),
    ("host_rand_write", "  host-timed rand write", "{:.0f}", True),
    ("host_rand_read", "  host-timed rand read", "{:.0f}", True),
    ("total", "total wall (s)", "{:.2f}", False),
    ("ips", "emulator instructions/s", "{:.3g}", True),
]


def table(title, hname, qname, res):
    def med(name, k):
        vals = [r[k] for r in res[name] if r.get(k) is not None]
        return statistics.median(vals) if vals else None

    print()
    print(f"{title}: medians over successful runs (hako {len(res['hako'])}, qemu {len(res['qemu'])}; "
          "boot rows also count runs that reached /init but failed later)")
    print(f"{'metric':<28}{hname:>12}{qname:>12}{'ratio':>9}")
    for k, label, fmt, _ in ROWS:
        h, q = med("hako", k), med("qemu", k)
        if h is None and q is None and k == "ips":
            continue
        hs = fmt.format(h) if h is not None else "n/a"
        qs = fmt.format(q) if q is not None else "n/a"
        ratio = f"{h / q:.2f}" if h is not None and q else "n/a"
        print(f"{label:<28}{hs:>12}{qs:>12}{ratio:>9}")


def last_lines(lines, err, n=12):
    out = [s for _, s in lines][-n:]
    errl = err.strip().splitlines()[-n:]
    return "\n  ".join(["stdout:"] + out + ["stderr:"] + errl)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hako", default=os.path.join(target, "release/hako"))
    ap.add_argument("--only", choices=("hako", "qemu"), help="run one side only")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--seq-mib", type=int, default=256)
    ap.add_argument("--rand-ops", type=int, default=4000)
    ap.add_argument("--disk-mib", type=int, default=256)
    ap.add_argument("--hako-timeout", type=float, default=1200, help="seconds per hako run")
    ap.add_argument("--qemu-timeout", type=float, default=600, help="seconds per qemu run")
    a = ap.parse_args()
    if a.disk_mib < a.seq_mib:
        sys.exit("--disk-mib must be at least --seq-mib")
    os.makedirs(CACHE, exist_ok=True)
    qemu = shutil.which("qemu-system-x86_64")
    if a.only != "hako" and not qemu:
        sys.exit("qemu-system-x86_64 not found: run scripts/install-deps.sh")
    if a.only != "qemu" and not os.path.exists(a.hako):
        log(f"building hako ({a.hako} not found)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "hako"], cwd=REPO, check=True)
    kernel, base_initrd = default_guest()
    initrd = build_initrd(base_initrd, build_blkbench())
    cmd64 = base64.b64encode(GUEST_CMD.format(seq_mib=a.seq_mib, rand_ops=a.rand_ops).encode()).decode()
    cmdline = f"console=ttyS0 quiet hako.cmd={cmd64}"
    disk = os.path.join(CACHE, f"disk-{os.getpid()}.img")

    pairs = [("emu", "tcg")]
    kvm_ok, why = kvm_check(a.hako)
    if kvm_ok:
        pairs.append(("kvm", "kvm"))
    print(f"guest: {os.path.basename(kernel)}, --cpus {a.cpus}, 512 MiB, virtio-blk raw {a.disk_mib} MiB; "
          f"seq {a.seq_mib} MiB, {a.rand_ops} random 4K ops")
    if not kvm_ok:
        print(f"kvm vs qemu -accel kvm: skipped: {why}")

    for haccel, qaccel in pairs:
        hako_cmd = [a.hako, "run", "--accel", haccel, "--memory", "512M", "--cpus", str(a.cpus),
                    "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline,
                    "--disk", f"{disk},format=raw"]
        qemu_cmd = [qemu or "qemu-system-x86_64", "-accel", qaccel, "-m", "512", "-smp", str(a.cpus),
                    "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
                    "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
                    "-drive", f"file={disk},format=raw,if=virtio"]
        sides = [("hako", hako_cmd, a.hako_timeout), ("qemu", qemu_cmd, a.qemu_timeout)]
        if a.only:
            sides = [s for s in sides if s[0] == a.only]
        res = {"hako": [], "qemu": []}
        failures = {}
        for i in range(a.runs):
            for name, cmd, limit in sides:
                if failures.get(name, 0) >= 2 and not any("seq_read" in r for r in res[name]):
                    continue  # failed twice without a single success: stop trying this side
                make_disk(disk, a.disk_mib)
                try:
                    lines, err, rc, timed_out, total = run(cmd, limit)
                finally:
                    os.unlink(disk)
                r, problem = parse(lines, total)
                if timed_out:
                    problem = f"timed out after {limit:.0f}s ({problem or 'benchmark finished but VMM did not exit'})"
                elif problem is None and rc != 0:
                    problem = f"exit status {rc}"
                label = f"{name} {haccel if name == 'hako' else qaccel} run {i}"
                if problem:
                    failures[name] = failures.get(name, 0) + 1
                    log(f"{name} did not finish ({label}): {problem}\n  {last_lines(lines, err)}")
                    if "t_init" in r:  # the boot figures still count
                        res[name].append({k: r[k] for k in ("t_init", "uptime_init") if k in r})
                        log(f"{label}: keeping its boot figures (init {r['t_init']:.2f}s)")
                    continue
                if r.get("cpus") != a.cpus:
                    log(f"{label}: warning: guest saw {r.get('cpus')} cpus (online: {r.get('cpus_online')})")
                if r.get("odirect") == 0:
                    log(f"{label}: warning: O_DIRECT refused in the guest; buffered I/O with fsync")
                if m := re.search(r"instructions_per_second=([0-9.e+]+)", err):
                    r["ips"] = float(m.group(1))
                res[name].append(r)
                print(f"{label}: init {r['t_init']:.2f}s (uptime {r.get('uptime_init', float('nan')):.2f}s, "
                      f"{r.get('cpus')} cpus), seq w/r {r['seq_write']:.1f}/{r['seq_read']:.1f} MB/s, "
                      f"rand w/r {r['rand_write']:.0f}/{r['rand_read']:.0f} IOPS, total {r['total']:.1f}s",
                      flush=True)
        table(f"hako --accel {haccel} vs qemu -accel {qaccel}", f"hako {haccel}", f"qemu {qaccel}", res)


if __name__ == "__main__":
    main()
