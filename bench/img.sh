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
#     to about 40%; default 256 MiB), raw -> qcow2: thread scaling, both tools with
#     -m 1, -m 2 and the default -m 8, interleaved in each round so that load from
#     other jobs hits both alike; the CPU time each used (user + sys) shows how many
#     cores it got, and the load average is printed with the figures (IDLE_WAIT=SECS
#     waits up to SECS before each pair for an idle machine, see wait_idle);
#  5. convert raw -> vpc (dynamic) and raw -> vhdx (dynamic), the export formats.
#
# Sections 3 and 4 report the median of 3 runs, 1, 2 and 5 the best of 3.
#
# usage: bench/img.sh [SIZE_MIB]      (needs qemu-img and bc; builds hako in release
#        mode unless HAKO=/path/to/hako is set; COUNT=requests per I/O phase;
#        SECTIONS=convert,import,randio,compress,export selects sections, default all;
#        RANDIO="write:cold ..." selects randio cases, default all four;
#        IDLE_WAIT=SECS for the compress section)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-384}
COUNT=${COUNT:-50000}
CMP_MIB=${CMP_MIB:-256}
SECTIONS=${SECTIONS:-convert,import,randio,compress,export}
RANDIO=${RANDIO:-read:cold read:warm write:cold write:warm}
want() { case ",$SECTIONS," in *",$1,"*) return 0;; esac; return 1; }
STEP=$((4096 * 7919))          # odd multiple of 4 KiB: visits every 4 KiB block
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
command -v qemu-img >/dev/null || { echo "bench/img.sh: qemu-img not found (install qemu-utils)"; exit 1; }

if [ -z "${HAKO:-}" ]; then
  cargo build -q --release -p hako
  HAKO=$CARGO_TARGET_DIR/release/hako
fi
cargo build -q --release -p block --example randio
RANDIO_BIN=$CARGO_TARGET_DIR/release/examples/randio
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
echo "   load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in read write; do
  for cache in cold warm; do
    case " $RANDIO " in *" $mode:$cache "*) ;; *) continue;; esac
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
      hs+=("$("$RANDIO_BIN" "$img" $mode $n $STEP $tables | sed -n 's/^first //p')")
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
# (Through files, not pipes into head: under pipefail a writer killed by SIGPIPE
# would end the script.)
seq -f "%.0f: a line of compressible text for the compressed convert benchmark" \
  1 14200 > "$W/lines"
head -c 1M "$W/lines" > "$W/seed"
head -c 786432 /dev/urandom > "$W/rnd"
base64 -w 76 "$W/rnd" > "$W/b64"
head -c 1M "$W/b64" >> "$W/seed"
rm -f "$W/lines" "$W/rnd" "$W/b64"
for _ in $(seq $((CMP_MIB / 2))); do cat "$W/seed"; done > "$W/txt.raw"
sync
cmibs() { echo "scale=1; $CMP_MIB / $1" | bc -l; }
# timed CMD...: "wall cpu" seconds (cpu = user + sys, all threads) of a command.
timed() {
  rm -f "$W/out"; sync
  /usr/bin/time -f "%e %U %S" -o "$W/time" "$@" >/dev/null
  awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$W/time"
}
# busy: CPU time all processes used in the last second, in hundredths of a core.
busy() {
  local a b
  read -ra a < /proc/stat; sleep 1; read -ra b < /proc/stat
  echo $(( (b[1] + b[2] + b[3] + b[6] + b[7] - a[1] - a[2] - a[3] - a[6] - a[7]) \
    * 100 / $(getconf CLK_TCK) ))
}
# wait_idle: waits (at most IDLE_WAIT seconds, default 0) for a second in which other
# jobs used under a quarter of a core. The kernel's autogroup scheduling shares the
# CPU between sessions, not threads: while another session is busy this one gets about
# one core however many threads it runs, so thread scaling shows only on an idle
# machine. Counts the idle starts in $idle.
idle=0; pairs=0
wait_idle() {
  local t=0
  while [ $t -lt "${IDLE_WAIT:-0}" ]; do
    if [ "$(busy)" -lt 25 ]; then idle=$((idle + 1)); return; fi
    t=$((t + 1))
  done
}
declare -A wall cpu
for _ in 1 2 3; do
  for m in 1 2 8; do
    wait_idle; pairs=$((pairs + 1))
    read -r w c < <(timed "$HAKO" img convert -q -c -m $m -O qcow2 "$W/txt.raw" "$W/out")
    wall[hako$m]+="$w "; cpu[hako$m]+="$c "
    hsize=$(stat -c %s "$W/out")
    read -r w c < <(timed qemu-img convert -t writeback -c -m $m -O qcow2 "$W/txt.raw" "$W/out")
    wall[qemu$m]+="$w "; cpu[qemu$m]+="$c "
    qsize=$(stat -c %s "$W/out")
  done
done
echo "   load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $idle of $pairs" \
  "pairs started on an idle machine (IDLE_WAIT=${IDLE_WAIT:-0}); cores = cpu / wall"
for m in 1 2 8; do
  # shellcheck disable=SC2086
  th=$(median3 ${wall[hako$m]}); tq=$(median3 ${wall[qemu$m]})
  ch=$(median3 ${cpu[hako$m]}); cq=$(median3 ${cpu[qemu$m]})
  printf '%-18s hako %6.1f MiB/s (cpu %5.2fs, %s cores)   qemu-img %6.1f MiB/s (cpu %5.2fs, %s cores)   ratio %s\n' \
    "convert -c -m $m" "$(cmibs "$th")" "$ch" "$(ratio "$ch" "$th")" \
    "$(cmibs "$tq")" "$cq" "$(ratio "$cq" "$tq")" "$(ratio "$tq" "$th")"
done
# shellcheck disable=SC2086
printf '%-22s hako %sx   qemu-img %sx\n' "scaling -m 1 -> -m 2" \
  "$(ratio "$(median3 ${wall[hako1]})" "$(median3 ${wall[hako2]})")" \
  "$(ratio "$(median3 ${wall[qemu1]})" "$(median3 ${wall[qemu2]})")"
printf '%-30s hako %s bytes   qemu-img %s bytes\n' "compressed size" "$hsize" "$qsize"
fi

if want export; then
echo "== convert raw -> vpc / vhdx (dynamic; MiB/s of virtual disk; best of 3)"
for fmt in vpc vhdx; do
  th=$(best run_conv "$HAKO" img convert -q -O $fmt "$W/in.raw" "$W/out")
  tq=$(best run_conv qemu-img convert -t writeback -O $fmt "$W/in.raw" "$W/out")
  printf '%-30s hako %7.1f MiB/s   qemu-img %7.1f MiB/s   ratio %s\n' \
    "raw->$fmt (dynamic)" "$(mibs "$th")" "$(mibs "$tq")" "$(ratio "$tq" "$th")"
done
fi
