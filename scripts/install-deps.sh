#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use. Idempotent.
#   gcc, binutils: build the freestanding test guests
#   qemu-system-x86 + qemu-utils: the reference for benchmarks and interop tests
#     (installed together at the same version: the machine image may carry a newer
#     qemu-utils than Debian's qemu-system-x86 accepts)
#   e2fsprogs: mkfs.ext4/debugfs for disk images in the end-to-end tests
#   acpica-tools: iasl, to check the DSDT
#   gdb: the client of the GDB-server tests
#   libslirp0: user-mode networking (`--net user` loads it at run time)
#   iproute2: network namespaces and TAP addresses in the networking tests
#   passt: a `--net stream` peer in the interop tests
#   iputils-ping: host-to-guest ping in the TAP test
#   chromium + chromium-driver: the browser of the web console test
#     (crates/hako/tests/web_console.rs drives it headless over DevTools)
#   npm: fetches xterm.js for the web console (crates/hakod/web, `npm ci`;
#     embedded in the binary at build time)
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v ld >/dev/null || missing+=(binutils)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v iasl >/dev/null || missing+=(acpica-tools)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v gdb >/dev/null || missing+=(gdb)
command -v ip >/dev/null || missing+=(iproute2)
command -v passt >/dev/null || missing+=(passt)
command -v ping >/dev/null || missing+=(iputils-ping)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v npm >/dev/null || missing+=(npm)
ls /usr/lib/x86_64-linux-gnu/libslirp.so.0 >/dev/null 2>&1 || missing+=(libslirp0)
if [ ${#missing[@]} -gt 0 ] || ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-io >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    [ ${#missing[@]} -gt 0 ] && $SUDO apt-get install -y -q "${missing[@]}"
    if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-io >/dev/null; then
        V=$(apt-cache policy qemu-system-x86 | awk '/Candidate/{print $2}')
        $SUDO apt-get install -y -q --allow-downgrades qemu-system-x86="$V" qemu-utils="$V" \
            qemu-system-common="$V" qemu-block-extra="$V" \
            || $SUDO apt-get install -y -q qemu-system-x86 qemu-utils
    fi
fi
# The web console's xterm.js (npm packages pinned by package-lock.json), unless
# node_modules has them already; the cache is ~/.cache/hako/npm.
WEB="$(cd "$(dirname "$0")/.." && pwd)/crates/hakod/web"
if [ ! -f "$WEB/node_modules/@xterm/xterm/lib/xterm.js" ] \
    || [ ! -f "$WEB/node_modules/@xterm/addon-fit/lib/addon-fit.js" ]; then
    (cd "$WEB" && npm_config_cache="${npm_config_cache:-$HOME/.cache/hako/npm}" \
        npm ci --no-audit --no-fund --loglevel=error)
fi
