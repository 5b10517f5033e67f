#!/usr/bin/env python3
"""Benchmark: live migration and snapshots, `hako` on emu against QEMU TCG, on the
same Debian cloud kernel and busybox initramfs (an idle shell), in the same run.

Reports, for each and as ratios (hako / qemu; below 1.0 means Hakobune is faster):
  - migration of an idle 512 MiB guest over loopback TCP: downtime (the source's
    pause to the destination running: hako's `migrate` report, QEMU's
    `query-migrate` "downtime") and total migration time;
  - a snapshot of an idle 256 MiB guest: save time (hako `ctl snapshot`, QEMU
    `migrate "exec:cat > FILE"`), and restore to running (process start until the
    guest runs again: hako `run --restore`, QEMU `-incoming "exec:cat FILE"`,
    polled through their control sockets; and hako's own figure from its log).
Targets: downtime <= 20 ms idle, restore <= 5 ms to running.

Usage: bench/migrate.py [--runs N] [--hako PATH]
Only loopback and Unix sockets are used.
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = "echo bench: ready; while :; do sleep 1000; done\n"


def guest():
    out = subprocess.run([os.path.join(REPO, "scripts/default-guest.sh"), "--print-env"],
                         check=True, capture_output=True, text=True).stdout
    env = dict(l.split("=", 1) for l in out.strip().splitlines())
    return env["KERNEL"], env["INITRD"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_file_text(path, text, limit=240):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            with open(path, errors="replace") as f:
                if text in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    sys.exit(f"timed out waiting for {text!r} in {path}")


def wait_path(path, limit=60):
    end = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > end:
            sys.exit(f"{path} never appeared")
        time.sleep(0.001)


class Qmp:
    def __init__(self, path, limit=60):
        wait_path(path, limit)
        self.s = socket.socket(socket.AF_UNIX)
        end = time.monotonic() + limit
        while True:
            try:
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.001)
        self.f = self.s.makefile("rw")
        self.f.readline()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error']}")

    def wait_migration(self, limit=300):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            r = self.cmd("query-migrate")
            if r.get("status") == "completed":
                return r
            if r.get("status") in ("failed", "cancelled"):
                raise RuntimeError(f"qemu migration {r}")
            time.sleep(0.005)
        raise RuntimeError("qemu migration timed out")


def ctl(hako, sock, *args):
    out = subprocess.run([hako, "ctl", "--api-socket", sock, "--json", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else {}


def hako_boot(hako, d, name, kernel, initrd, cmdline, mem):
    out = os.path.join(d, name + ".out")
    sock = os.path.join(d, name + ".sock")
    p = subprocess.Popen([hako, "run", "--accel", "emu", "--memory", mem, "--kernel", kernel,
                          "--initrd", initrd, "--cmdline", cmdline, "--api-socket", sock],
                         stdout=open(out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_file_text(out, "bench: ready")
    return p, sock


def qemu_args(qemu, kernel, initrd, cmdline, mem, serial, qmp):
    return [qemu, "-accel", "tcg", "-m", mem, "-nographic", "-nodefaults", "-no-reboot",
            "-serial", f"file:{serial}", "-kernel", kernel, "-initrd", initrd,
            "-append", cmdline, "-qmp", f"unix:{qmp},server=on,wait=off"]


def wait_running_hako(hako, sock, limit=60):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if ctl(hako, sock, "info").get("state") == "running":
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.001)
    sys.exit("the restored hako VM never ran")


def bench_hako(hako, kernel, initrd, cmdline, d):
    r = {}
    src, ssock = hako_boot(hako, d, "mig-src", kernel, initrd, cmdline, "512M")
    port = free_port()
    dsock = os.path.join(d, "mig-dst.sock")
    dst = subprocess.Popen([hako, "run", "--accel", "emu", "--incoming", f"tcp:127.0.0.1:{port}",
                            "--api-socket", dsock], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    time.sleep(0.3)
    rep = ctl(hako, ssock, "migrate", f"tcp:127.0.0.1:{port}")
    r["downtime_ms"], r["migrate_total_ms"] = rep["downtime_ms"], rep["total_ms"]
    src.wait(60)
    ctl(hako, dsock, "stop")
    dst.wait(60)

    src, ssock = hako_boot(hako, d, "snap-src", kernel, initrd, cmdline, "256M")
    snap = os.path.join(d, "hako-snap")
    t = time.monotonic()
    ctl(hako, ssock, "snapshot", snap, "--stay-paused")
    r["save_ms"] = (time.monotonic() - t) * 1e3
    ctl(hako, ssock, "stop")
    src.wait(60)
    rsock = os.path.join(d, "restored.sock")
    log = os.path.join(d, "restored.err")
    t = time.monotonic()
    p = subprocess.Popen([hako, "run", "--restore", snap, "--api-socket", rsock],
                         stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                         stdin=subprocess.DEVNULL, env=dict(os.environ, HAKO_LOG="hako=info"))
    wait_running_hako(hako, rsock)
    r["restore_wall_ms"] = (time.monotonic() - t) * 1e3
    ctl(hako, rsock, "stop")
    p.wait(60)
    m = re.search(r"restored .* in ([0-9.]+) ms", open(log).read())
    r["restore_internal_ms"] = float(m.group(1)) if m else None
    return r


def bench_qemu(qemu, kernel, initrd, cmdline, d):
    r = {}
    port = free_port()
    s_ser, s_qmp = os.path.join(d, "q-src.out"), os.path.join(d, "q-src.qmp")
    d_qmp = os.path.join(d, "q-dst.qmp")
    src = subprocess.Popen(qemu_args(qemu, kernel, initrd, cmdline, "512", s_ser, s_qmp),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    wait_file_text(s_ser, "bench: ready")
    dst = subprocess.Popen(qemu_args(qemu, kernel, initrd, cmdline, "512", os.devnull, d_qmp)
                           + ["-incoming", f"tcp:127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    qd = Qmp(d_qmp)
    qs = Qmp(s_qmp)
    qs.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    m = qs.wait_migration()
    r["downtime_ms"], r["migrate_total_ms"] = float(m["downtime"]), float(m["total-time"])
    for q, p in ((qs, src), (qd, dst)):
        q.cmd("quit")
        p.wait(60)

    s_ser, s_qmp = os.path.join(d, "q-snap.out"), os.path.join(d, "q-snap.qmp")
    src = subprocess.Popen(qemu_args(qemu, kernel, initrd, cmdline, "256", s_ser, s_qmp),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    wait_file_text(s_ser, "bench: ready")
    qs = Qmp(s_qmp)
    f = os.path.join(d, "qemu-snap")
    t = time.monotonic()
    qs.cmd("migrate", uri=f"exec:cat > {f}")
    qs.wait_migration()
    r["save_ms"] = (time.monotonic() - t) * 1e3
    qs.cmd("quit")
    src.wait(60)
    r_qmp = os.path.join(d, "q-restore.qmp")
    t = time.monotonic()
    p = subprocess.Popen(qemu_args(qemu, kernel, initrd, cmdline, "256", os.devnull, r_qmp)
                         + ["-incoming", f"exec:cat {f}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    q = Qmp(r_qmp)
    while q.cmd("query-status").get("status") != "running":
        time.sleep(0.001)
    r["restore_wall_ms"] = (time.monotonic() - t) * 1e3
    q.cmd("quit")
    p.wait(60)
    return r


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
    cmdline = "console=ttyS0 quiet hako.cmd=" + base64.b64encode(SCRIPT.encode()).decode()
    res = {"hako": [], "qemu": []}
    for i in range(a.runs):
        with tempfile.TemporaryDirectory() as d:
            h = bench_hako(a.hako, kernel, initrd, cmdline, d)
            q = bench_qemu(qemu, kernel, initrd, cmdline, d)
        print(f"run {i}: hako {h}\n       qemu {q}")
        res["hako"].append(h)
        res["qemu"].append(q)

    def med(name, k):
        v = [r[k] for r in res[name] if r.get(k) is not None]
        return statistics.median(v) if v else None

    print()
    print(f"{'metric':<34}{'hako emu':>10}{'qemu tcg':>10}{'ratio':>8}")
    for k, label in (("downtime_ms", "migration downtime (ms)"),
                     ("migrate_total_ms", "migration total (ms)"),
                     ("save_ms", "snapshot save 256M (ms)"),
                     ("restore_wall_ms", "restore to running, wall (ms)")):
        h, q = med("hako", k), med("qemu", k)
        print(f"{label:<34}{h:>10.1f}{q:>10.1f}{h / q:>8.2f}")
    ri = med("hako", "restore_internal_ms")
    if ri is not None:
        print(f"{'restore to running, in hako (ms)':<34}{ri:>10.2f}")
    print("targets: downtime <= 20 ms idle, restore <= 5 ms to running")


if __name__ == "__main__":
    main()
