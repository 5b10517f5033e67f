#!/usr/bin/env bash
# Benchmarks `hako img` and the block layer against qemu-img, in the same run on the
# same files, and prints ratios (hako / qemu; above 1 means hako is faster).
#
#  1. convert throughput, qcow2 -> raw and raw -> qcow2, on SIZE_MIB of data
#     (default 384 MiB: 3/4 random data, 1/4 zeroes);
#  2. convert throughput from the read-only import formats to raw: VDI (dynamic), VHD
#     (dynamic and fixed), VMDK (monolithicSparse and streamOptimized, the latter
#     inflating zlib grains), images made by qemu-img from the same data; and raw to
#     streamOptimized VMDK (zlib-compressing every grain);
#  3. 4 KiB strided random reads and writes on a qcow2 image with 4 KiB clusters (so the
#     L2 tables do not fit one cache line of metadata), cold L2 cache (first COUNT
#     requests after open) and warm (the next COUNT), against `qemu-img bench` with the
#     same pattern (-s 4k -S STEP, depth 1, -t writeback). Cold writes allocate a
#     cluster each and evict a dirty L2 table each: the writeback cache's case;
#  4. convert -c (compressed qcow2) of CMP_MIB of half text, half base64 (compressing
#     to about 40%; default 256 MiB), raw
#     -> qcow2, both tools with their default -m (8 parallel streams), hako also with
#     -m 1 (one compressing thread).
#
# Sections 3 and 4 report the median of 3 runs, 1 and 2 the best of 3.
#
# usage: bench/img.sh [SIZE_MIB]      (needs qemu-img and bc; builds hako in release
#        mode unless HAKO=/path/to/hako is set; COUNT=requests per I/O phase;
#        SECTIONS=convert,import,randio,compress selects sections, default all)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-384}
COUNT=${COUNT:-50000}
CMP_MIB=${CMP_MIB:-256}
SECTIONS=${SECTIONS:-convert,import,randio,compress}
want() { case ",$SECTIONS," in *",$1,"*) return 0;; esac; return 1; }
STEP=$((4096 * 7919))          # odd multiple of 4 KiB: visits every 4 KiB block
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
command -v qemu-img >/dev/null || { echo "bench/img.sh: qemu-img not found (install qemu-utils)"; exit 1; }

if [ -z "${HAKO:-}" ]; then
  cargo build -q --release -p hako
  HAKO=$CARGO_TARGET_DIR/release/hako
fi
cargo build -q --release -p block --example randio
RANDIO=$CARGO_TARGET_DIR/release/examples/randio
W=$(mktemp -d "${TMPDIR:-/tmp}/hako-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT

now() { date +%s.%N; }
# secs CMD...: wall time of a command, stdout discarded.
secs() { local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now); echo "$t1 - $t0" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
mibs() { echo "scale=1; $SIZE_MIB / $1" | bc -l; }

echo "== setup: $SIZE_MIB MiB raw image (random data, last quarter zero)"
head -c $((SIZE_MIB * 3 / 4))M /dev/urandom > "$W/in.raw"
truncate -s ${SIZE_MIB}M "$W/in.raw"
qemu-img convert -O qcow2 "$W/in.raw" "$W/in.qcow2"
sync

best() { local b=999999 t; for _ in 1 2 3; do rm -f "$W/out"; sync; t=$("$@"); b=$(echo "if ($t < $b) $t else $b" | bc -l); done; echo "$b"; }
run_conv() { secs "$@"; }
if want convert; then
echo "== convert throughput (MiB/s of virtual disk; best of 3)"
for dir in "qcow2 raw" "raw qcow2"; do
  set -- $dir
  src="$W/in.$1"
  th=$(best run_conv "$HAKO" img convert -q -f "$1" -O "$2" "$src" "$W/out")
  # -t writeback: qemu-img flushes the output at the end, as hako does (its default,
  # -t unsafe, skips that fdatasync).
  tq=$(best run_conv qemu-img convert -t writeback -f "$1" -O "$2" "$src" "$W/out")
  printf '%-13s hako %7.1f MiB/s   qemu-img %7.1f MiB/s   ratio %s\n' \
    "$1->$2" "$(mibs "$th")" "$(mibs "$tq")" "$(ratio "$tq" "$th")"
done
fi

if want import; then
echo "== convert from import formats to raw (MiB/s of virtual disk; best of 3)"
for v in "vdi -o static=off" "vpc -o subformat=dynamic" "vpc -o subformat=fixed" \
         "vmdk -o subformat=monolithicSparse" "vmdk -o subformat=streamOptimized"; do
  set -- $v
  fmt=$1; sub=${3#*=}
  qemu-img convert -O "$fmt" $2 "$3" "$W/in.raw" "$W/imp.$fmt"
  sync
  th=$(best run_conv "$HAKO" img convert -q -f "$fmt" -O raw "$W/imp.$fmt" "$W/out")
  tq=$(best run_conv qemu-img convert -t writeback -f "$fmt" -O raw "$W/imp.$fmt" "$W/out")
  printf '%-30s hako %7.1f MiB/s   qemu-img %7.1f MiB/s   ratio %s\n' \
    "$fmt ($sub)->raw" "$(mibs "$th")" "$(mibs "$tq")" "$(ratio "$tq" "$th")"
  rm -f "$W/imp.$fmt"
done
th=$(best run_conv "$HAKO" img convert -q -O vmdk -o subformat=streamOptimized "$W/in.raw" "$W/out")
tq=$(best run_conv qemu-img convert -t writeback -O vmdk -o subformat=streamOptimized "$W/in.raw" "$W/out")
printf '%-30s hako %7.1f MiB/s   qemu-img %7.1f MiB/s   ratio %s\n' \
  "raw->vmdk (streamOptimized)" "$(mibs "$th")" "$(mibs "$tq")" "$(ratio "$tq" "$th")"
fi

if want randio; then

echo "== 4 KiB strided random I/O on qcow2 (4 KiB clusters, $SIZE_MIB MiB: $((SIZE_MIB / 2)) L2 tables)"
echo "   cold: an L2 cache of 2 tables, so nearly every request misses; warm: the default"
echo "   cache, which holds every table. Median of 3 runs of COUNT requests each (cold"
echo "   writes: COUNT/50)."
qemu-img convert -O qcow2 -o cluster_size=4k "$W/in.raw" "$W/r.qcow2"
fresh() { rm -f "$W/w.qcow2"; qemu-img create -q -f qcow2 -o cluster_size=4k "$W/w.qcow2" ${SIZE_MIB}M; }
qbench() { # mode count image cache-opt -> IOPS, from the time qemu-img bench reports
  local w="" t; [ "$1" = write ] && w="-w"
  t=$(qemu-img bench -t writeback -d 1 -s 4k -S $STEP -c "$2" $w --image-opts \
    "driver=qcow2,file.filename=$3$4" |
    sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p')
  echo "$2 / $t" | bc -l
}
max() { echo "if ($1 > $2) $1 else $2" | bc -l; }
for mode in read write; do
  for cache in cold warm; do
    n=$COUNT; tables=""; qopt=""
    if [ $cache = cold ]; then
      tables=2; qopt=",l2-cache-size=8192"
      # Every cold write evicts a dirty L2 table, which costs an fdatasync in both.
      [ $mode = write ] && n=$((COUNT / 50))
    fi
    img="$W/r.qcow2"; [ $mode = write ] && img="$W/w.qcow2"
    hs=(); qs=()
    for _ in 1 2 3; do
      [ $mode = write ] && fresh
      hs+=("$("$RANDIO" "$img" $mode $n $STEP $tables | sed -n 's/^first //p')")
      [ $mode = write ] && fresh
      qs+=("$(qbench $mode $n "$img" "$qopt")")
    done
    h=$(median3 "${hs[@]}"); q=$(median3 "${qs[@]}")
    printf '%-5s %-4s hako %8.0f IOPS   qemu-img %8.0f IOPS   ratio %s\n' \
      $mode $cache "$h" "$q" "$(ratio "$h" "$q")"
  done
done
fi

if want compress; then
echo "== convert -c raw -> qcow2 (zlib), $CMP_MIB MiB of compressible text (MiB/s; median of 3)"
# Clusters compress independently, so a 2 MiB pattern repeated is as good as fresh
# data: 1 MiB of numbered text lines (compresses ~30:1) and 1 MiB of base64 (~4:3).
seq -f "%.0f: a line of compressible text for the compressed convert benchmark" \
  1 14200 | head -c 1M > "$W/seed"
head -c 786432 /dev/urandom | base64 -w 76 | head -c 1M >> "$W/seed"
for _ in $(seq $((CMP_MIB / 2))); do cat "$W/seed"; done > "$W/txt.raw"
sync
med_conv() { local a=() t; for _ in 1 2 3; do rm -f "$W/out"; sync; t=$(secs "$@"); a+=("$t"); done; median3 "${a[@]}"; }
cmibs() { echo "scale=1; $CMP_MIB / $1" | bc -l; }
tq=$(med_conv qemu-img convert -t writeback -c -O qcow2 "$W/txt.raw" "$W/out")
qsize=$(stat -c %s "$W/out")
th=$(med_conv "$HAKO" img convert -q -c -O qcow2 "$W/txt.raw" "$W/out")
hsize=$(stat -c %s "$W/out")
t1=$(med_conv "$HAKO" img convert -q -c -m 1 -O qcow2 "$W/txt.raw" "$W/out")
printf '%-30s hako %7.1f MiB/s   qemu-img %7.1f MiB/s   ratio %s\n' \
  "convert -c (default -m 8)" "$(cmibs "$th")" "$(cmibs "$tq")" "$(ratio "$tq" "$th")"
printf '%-30s hako %7.1f MiB/s   (-m 8 is %sx as fast)\n' \
  "convert -c -m 1" "$(cmibs "$t1")" "$(ratio "$t1" "$th")"
printf '%-30s hako %s bytes   qemu-img %s bytes\n' "compressed size" "$hsize" "$qsize"
fi
