#!/usr/bin/env bash
# The main job: build hako, fetch Debian's stock cloud kernel and busybox (cached
# under ~/.cache/hako), and boot them with --accel auto to a shell on this terminal.
#
#   scripts/run-default-guest.sh                       # interactive shell; Ctrl-A x quits
#   scripts/run-default-guest.sh --cmd 'uname -a'      # run a command, print it, power off
#   scripts/run-default-guest.sh -- --cpus 2 --accel emu   # extra `hako run` flags after --
set -euo pipefail
cd "$(dirname "$0")/.."

CMD=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cmd) CMD="$2"; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

cargo build --release -q -p hako
eval "$(scripts/default-guest.sh --print-env)"
CMDLINE="console=ttyS0 quiet"
if [ -n "$CMD" ]; then
    # The guest's /init runs hako.cmd (base64 of a shell script) and powers off.
    CMDLINE="$CMDLINE hako.cmd=$(printf '%s' "$CMD" | base64 -w0)"
fi
# --accel auto unless the extra flags name an accelerator (a flag given twice is
# an error).
ACCEL=(--accel auto)
for a in "${EXTRA[@]}"; do
    case "$a" in --accel|--accel=*) ACCEL=() ;; esac
done
exec target/release/hako run --kernel "$KERNEL" --initrd "$INITRD" --memory 512M \
    --cmdline "$CMDLINE" "${ACCEL[@]}" "${EXTRA[@]}"
