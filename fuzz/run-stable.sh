#!/usr/bin/env bash
# Coverage-guided fuzzing on a stable toolchain: builds the cargo-fuzz target with the
# same SanitizerCoverage instrumentation cargo-fuzz uses (minus AddressSanitizer, which
# needs nightly; Rust code is memory-safe, panics and aborts are what we look for) and
# runs libFuzzer over a scratch copy of the seed corpus.
#
# usage: fuzz/run-stable.sh [SECONDS] [TARGET]
#   SECONDS defaults to 60; TARGET to qcow2_image (also vdi_image, vpc_image, vmdk_image,
#   vhdx_image, ovf_descriptor);
#   crashes land in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-60}
TARGET=${2:-qcow2_image}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target "$TRIPLE" --bin "$TARGET"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp corpus/"$TARGET"/* "$work/"
mkdir -p artifacts/"$TARGET"
"$CARGO_TARGET_DIR/$TRIPLE/release/$TARGET" "$work" -max_total_time="$SECS" \
  -rss_limit_mb=2048 -timeout=10 -artifact_prefix=artifacts/"$TARGET"/ -print_final_stats=1
