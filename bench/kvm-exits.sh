#!/usr/bin/env bash
# VM-exit benchmark on KVM: guests/outloop.c (N port writes to port 0x80, one exit
# each) under `hako run --accel kvm` and `qemu-system-x86_64 -accel kvm`, reported as
# exits per second for both and their ratio; plus hako's start-up time to the
# guest's first output and the VMM's resident memory beside a 128 MiB guest.
# Not a test: it asserts nothing about speed. See bench/kvm_exits.py for the method.
#
# Usage: bench/kvm-exits.sh [--runs N] [--large N] [--small N]
# Environment: HAKO=path (default target/release/hako, built if missing unless
# NO_BUILD=1), QEMU=path (default qemu-system-x86_64 on PATH).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    echo "kvm-exits: skipped: /dev/kvm is missing or not accessible" >&2
    exit 0
fi
for tool in gcc python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "kvm-exits: skipped: $tool is not installed (scripts/install-deps.sh)" >&2
        exit 0
    fi
done

target="${CARGO_TARGET_DIR:-$repo/target}"
hako="${HAKO:-$target/release/hako}"
if [ ! -x "$hako" ] && [ "${NO_BUILD:-0}" != 1 ]; then
    echo "kvm-exits: building hako (release)..." >&2
    cargo build --release -q -p hako >&2 || true
fi
hako_arg=()
if [ -x "$hako" ]; then
    hako_arg=(--hako "$hako")
else
    echo "kvm-exits: hako not found at $hako: measuring QEMU only" >&2
fi

qemu="${QEMU:-$(command -v qemu-system-x86_64 || true)}"
qemu_arg=()
if [ -n "$qemu" ] && [ -x "$qemu" ]; then
    qemu_arg=(--qemu "$qemu")
else
    echo "kvm-exits: qemu-system-x86_64 not found (apt-get install qemu-system-x86 qemu-utils): measuring hako only" >&2
fi
if [ ${#hako_arg[@]} -eq 0 ] && [ ${#qemu_arg[@]} -eq 0 ]; then
    echo "kvm-exits: skipped: neither hako nor QEMU is available" >&2
    exit 0
fi

guest="$(cargo run -q --release -p test-guests -- outloop)"
exec python3 "$repo/bench/kvm_exits.py" --guest "$guest" "${hako_arg[@]}" "${qemu_arg[@]}" "$@"
