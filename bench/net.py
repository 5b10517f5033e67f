#!/usr/bin/env python3
"""Benchmark: TCP throughput of virtio-net, `hako run --accel emu` against
`qemu-system-x86_64 -accel tcg`, on the same Debian cloud kernel and busybox
initramfs, in the same run, over two backends:

  - user: user-mode networking (libslirp in both), a host forward of
    127.0.0.1:H to the guest's port 5001, and the guest reaching the host's
    loopback through 10.0.2.2;
  - tap: a TAP device in a network namespace this script creates (and deletes),
    192.168.80.1 on the host side, 192.168.80.2 in the guest (QEMU with
    vhost=off: both VMMs move every frame in user space).

In each direction one TCP stream carries N MiB (default 64) of random data,
timed on the host from connect (or accept) until the guest side has closed:
  guest -> host: the guest serves the file with busybox `nc -l -p 5001`, the
    host reads it to the end;
  host -> guest: the host serves it, the guest reads it with `nc HOST PORT | wc -c`
    (and reports the byte count, which must match).
Reports MiB/s, medians over --runs, and the ratio hako / qemu (above 1.0:
Hakobune is faster).

Usage: bench/net.py [--runs N] [--mib N] [--backends user,tap] [--hako PATH]
The tap backend needs root (ip netns, a TAP device); without it only user runs.
Only loopback and the namespace's own link are used; every wait is bounded.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_PORT = 5001
TAP = "hkbtap0"
HOST_IP, GUEST_IP = "192.168.80.1", "192.168.80.2"
BOOT_LIMIT = 300  # s: boot, dd and the transfers of one VM
XFER_LIMIT = 240  # s: one transfer


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


# ---- the host end of the transfers (run in the namespace for tap) -------------

def peer_g2h(host, port, nbytes, limit):
    """Connects to the guest's listener (retrying until it listens) and reads
    everything; returns the transfer's bytes and seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            s = socket.create_connection((host, port), timeout=10)
        except OSError:
            time.sleep(0.2)
            continue
        s.settimeout(60)
        t0 = time.monotonic()
        got = 0
        try:
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got += len(b)
        except OSError:
            pass
        t1 = time.monotonic()
        s.close()
        if got == 0:
            # user networking accepts for the guest before it listens: retry.
            time.sleep(0.2)
            continue
        return {"bytes": got, "seconds": t1 - t0}
    return {"error": f"no transfer from {host}:{port} within {limit} s"}


def peer_h2g(bind, port, nbytes, limit, ready):
    """Listens, serves `nbytes` to the first client to connect, and waits until it
    has closed; returns bytes and seconds from accept to its close."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((bind, port))
    ls.listen(1)
    ls.settimeout(limit)
    ready()
    blob = os.urandom(nbytes)
    try:
        c, _ = ls.accept()
    except OSError:
        return {"error": f"nobody connected to {bind}:{port} within {limit} s"}
    c.settimeout(60)
    t0 = time.monotonic()
    try:
        c.sendall(blob)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    except OSError as e:
        return {"error": f"serving the guest: {e}"}
    t1 = time.monotonic()
    c.close()
    ls.close()
    return {"bytes": nbytes, "seconds": t1 - t0}


def peer_main(a):
    """`--peer g2h|h2g ADDR PORT BYTES`: one host end, result as JSON on stdout."""
    kind, addr, port, nbytes = a.peer[0], a.peer[1], int(a.peer[2]), int(a.peer[3])
    if kind == "g2h":
        r = peer_g2h(addr, port, nbytes, XFER_LIMIT)
    else:
        r = peer_h2g(addr, port, nbytes, XFER_LIMIT, lambda: print("listening", flush=True))
    print(json.dumps(r), flush=True)


class Peer:
    """A host end as a subprocess (`ip netns exec NS` in front for tap)."""

    def __init__(self, prefix, kind, addr, port, nbytes):
        self.p = subprocess.Popen(prefix + [sys.executable, os.path.abspath(__file__), "--peer",
                                            kind, addr, str(port), str(nbytes)],
                                  stdout=subprocess.PIPE, text=True)
        if kind == "h2g":
            line = self.p.stdout.readline()
            if line.strip() != "listening":
                raise RuntimeError(f"h2g peer did not start: {line!r}")

    def result(self, limit=XFER_LIMIT + 30):
        try:
            out, _ = self.p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return {"error": "peer timed out"}
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else {"error": "peer printed nothing"}


# ---- the VMs -----------------------------------------------------------------

class Vm:
    """A VMM process whose console is read on a thread."""

    def __init__(self, cmd):
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.out = []
        self.err = []
        self.lock = threading.Lock()
        for stream, sink in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()

    def _drain(self, stream, sink):
        for line in iter(stream.readline, b""):
            with self.lock:
                sink.append(line.decode(errors="replace"))

    def text(self):
        with self.lock:
            return "".join(self.out)

    def wait_for(self, needle, limit):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            t = self.text()
            if needle in t:
                return t
            if self.p.poll() is not None:
                time.sleep(0.2)
                t = self.text()
                return t if needle in t else None
            time.sleep(0.05)
        return None

    def stop(self, limit=60):
        try:
            self.p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()

    def tail(self):
        with self.lock:
            return "".join(self.out)[-1500:] + "\n" + "".join(self.err)[-1500:]


def script(host, port, mib, tap):
    """The guest's part: make the blob, serve it, then fetch the host's."""
    s = ""
    if tap:
        s += (f"ifconfig eth0 {GUEST_IP} netmask 255.255.255.0 up\n"
              f"n=0; until ping -c 1 -W 1 {HOST_IP} >/dev/null 2>&1 || [ $n -ge 60 ]; do "
              "n=$((n+1)); sleep 0.5; done\n")
    s += (f"dd if=/dev/urandom of=/tmp/blob bs=1M count={mib} 2>/dev/null\n"
          "echo bench: serving\n"
          f"nc -l -p {GUEST_PORT} < /tmp/blob\n"
          "echo bench: served\n"
          "rm /tmp/blob\n"
          "n=0; got=0\n"
          "while [ $n -lt 50 ]; do\n"
          f"  got=$(nc {host} {port} < /dev/null | wc -c)\n"
          "  [ \"$got\" -gt 0 ] && break\n"
          "  n=$((n+1)); sleep 0.2\n"
          "done\n"
          "echo bench: h2g_bytes=$got\n")
    return s


def one_run(vmm, backend, a, kernel, initrd, ns):
    """Boots one VM, does both transfers; returns (g2h MiB/s, h2g MiB/s) or None."""
    nbytes = a.mib << 20
    tap = backend == "tap"
    prefix = ["ip", "netns", "exec", ns] if tap else []
    h2g_port = free_port()
    fwd = free_port()
    host = HOST_IP if tap else "10.0.2.2"
    cmd64 = base64.b64encode(script(host, h2g_port, a.mib, tap).encode()).decode()
    cmdline = f"console=ttyS0 quiet hako.cmd={cmd64}" + (" hako.dhcp=off" if tap else "")
    if vmm == "hako":
        net = (f"tap,ifname={TAP}" if tap
               else f"user,hostfwd=tcp:127.0.0.1:{fwd}-:{GUEST_PORT}")
        cmd = [a.hako, "run", "--accel", "emu", "--memory", "512M", "--kernel", kernel,
               "--initrd", initrd, "--cmdline", cmdline, "--net", net]
    else:
        netdev = (f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off" if tap
                  else f"user,id=n0,hostfwd=tcp:127.0.0.1:{fwd}-:{GUEST_PORT}")
        cmd = [a.qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-nodefaults",
               "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
               "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"]
    h2g = None
    if not tap:
        h2g = Peer([], "h2g", "127.0.0.1", h2g_port, nbytes)
    vm = Vm(prefix + cmd)
    try:
        if tap:
            end = time.monotonic() + 60
            while subprocess.run(prefix + ["ip", "link", "show", TAP],
                                 capture_output=True).returncode != 0:
                if time.monotonic() > end or vm.p.poll() is not None:
                    print(f"{vmm} {backend}: no {TAP}\n{vm.tail()}", file=sys.stderr)
                    return None
                time.sleep(0.02)
            subprocess.run(prefix + ["ip", "addr", "add", f"{HOST_IP}/24", "dev", TAP], check=True)
            subprocess.run(prefix + ["ip", "link", "set", TAP, "up"], check=True)
            h2g = Peer(prefix, "h2g", HOST_IP, h2g_port, nbytes)
        if vm.wait_for("bench: serving", BOOT_LIMIT) is None:
            print(f"{vmm} {backend}: the guest never served\n{vm.tail()}", file=sys.stderr)
            return None
        g2h = Peer(prefix, "g2h", GUEST_IP if tap else "127.0.0.1",
                   GUEST_PORT if tap else fwd, nbytes).result()
        out = vm.wait_for("bench: h2g_bytes=", XFER_LIMIT + 30)
        r = h2g.result()
        h2g = None
        if "error" in g2h or "error" in r or out is None:
            print(f"{vmm} {backend}: g2h {g2h}, h2g {r}\n{vm.tail()}", file=sys.stderr)
            return None
        got = int(out.split("bench: h2g_bytes=")[1].split()[0])
        if g2h["bytes"] != nbytes or got != nbytes:
            print(f"{vmm} {backend}: moved {g2h['bytes']} and {got} bytes, not {nbytes}",
                  file=sys.stderr)
            return None
        return (g2h["bytes"] / g2h["seconds"] / 2**20, r["bytes"] / r["seconds"] / 2**20)
    finally:
        if h2g is not None:
            h2g.p.kill()
            h2g.p.wait()
        vm.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=64, help="MiB per transfer")
    ap.add_argument("--backends", default="user,tap")
    ap.add_argument("--hako", default=os.path.join(REPO, "target/release/hako"))
    ap.add_argument("--peer", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer:
        return peer_main(a)
    if not os.path.exists(a.hako):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "hako"], cwd=REPO, check=True)
    a.qemu = shutil.which("qemu-system-x86_64")
    if not a.qemu:
        sys.exit("qemu-system-x86_64 not found: run scripts/install-deps.sh")
    kernel, initrd = guest()
    backends = a.backends.split(",")
    ns = f"hako-bench-net-{os.getpid()}"
    if "tap" in backends:
        if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
            print("tap: cannot create a network namespace (needs root); skipped", file=sys.stderr)
            backends.remove("tap")
            ns = None
    else:
        ns = None
    res = {(b, v): [] for b in backends for v in ("hako", "qemu")}
    try:
        for i in range(a.runs):
            for b in backends:
                for v in ("hako", "qemu"):
                    r = one_run(v, b, a, kernel, initrd, ns)
                    if r:
                        res[(b, v)].append(r)
                        print(f"{v} {b} run {i}: guest->host {r[0]:.1f} MiB/s, "
                              f"host->guest {r[1]:.1f} MiB/s", flush=True)
    finally:
        if ns:
            subprocess.run(["ip", "netns", "del", ns])
    print()
    print(f"{a.mib} MiB per transfer, medians of {a.runs} runs")
    print(f"{'backend':<9}{'direction':<16}{'hako emu':>10}{'qemu tcg':>10}{'ratio':>8}")
    for b in backends:
        if not res[(b, "hako")] or not res[(b, "qemu")]:
            print(f"{b:<9}not enough successful runs")
            continue
        for k, label in ((0, "guest->host"), (1, "host->guest")):
            h = statistics.median(r[k] for r in res[(b, "hako")])
            q = statistics.median(r[k] for r in res[(b, "qemu")])
            print(f"{b:<9}{label + ' MiB/s':<16}{h:>10.1f}{q:>10.1f}{h / q:>8.2f}")


if __name__ == "__main__":
    main()
