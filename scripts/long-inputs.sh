#!/usr/bin/env bash
# The int8 / int4 engine against this machine's peak, in one window (issue 19): cpu_peak (../shared/scripts; on a
# CPU without AVX-512 VNNI, scripts/cpu_peak_avx2.c, the kernels' AVX2 path's vpmaddubsw peak) before and after,
# then `deposium-embed bench` on short texts (1, 5), ~251-token texts (1 and 32, 2 threads and 1), and one text at
# the 2,048-token limit. Prints a markdown table: ms per text, GMAC/s over EmbeddingGemma's 101.4 M
# multiply-adds per token in its layers (attention not counted), and the share of the int8 peak read before; the
# fastest call beside the median (a noisy host only adds time).
# Usage: scripts/long-inputs.sh [MODEL...]  (default: embeddinggemma embeddinggemma:int4; env BIN, OUT=/tmp/long-inputs)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/deposium-embed}"
OUT="${OUT:-/tmp/long-inputs}"
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(embeddinggemma embeddinggemma:int4)
mkdir -p "$OUT"
if grep -qw avx512_vnni /proc/cpuinfo; then
  gcc -O3 -march=native -fopenmp ../shared/scripts/cpu_peak.c -o "$OUT/cpu_peak"
  kind=VNNI
else
  gcc -O3 -mavx2 -mfma -fopenmp scripts/cpu_peak_avx2.c -o "$OUT/cpu_peak"
  kind=AVX2
fi
peak() { OMP_NUM_THREADS=$1 "$OUT/cpu_peak" | awk '/int8|VNNI/ {print $(NF-1)}'; }
p1=$(peak 1); p2=$(peak 2)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-); $kind peak before: 1 thread $p1, 2 threads $p2 GMAC/s"
common=(--iters 10 --warmup 2 --min-seconds 2 --max-seconds 8)
for m in "${models[@]}"; do
  tag=$(echo "$m" | tr ':' '-')
  "$BIN" bench --model "$m" --threads 2 --scenarios short,long --batches 1,5,32 "${common[@]}" --json "$OUT/$tag-t2.json" --out "$OUT/r" >/dev/null
  "$BIN" bench --model "$m" --threads 1 --scenarios long --batches 1 "${common[@]}" --json "$OUT/$tag-t1.json" --out "$OUT/r" >/dev/null
  if "$BIN" bench --help | grep -q -- --long-tokens; then  # (binaries before the flag: no 2,048-token row)
    "$BIN" bench --model "$m" --threads 2 --scenarios long --long-tokens 2048 --batches 1 --iters 3 --warmup 1 \
      --min-seconds 2 --max-seconds 20 --json "$OUT/$tag-2048.json" --out "$OUT/r" >/dev/null
  fi
done
q1=$(peak 1); q2=$(peak 2)
echo "$kind peak after: 1 thread $q1, 2 threads $q2 GMAC/s"
python3 - "$OUT" "$p1" "$p2" "$kind" "${models[@]}" <<'PY'
import json, sys
out, p1, p2, kind, models = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5:]
MACS = 101.4e6
print(f"| model | threads | texts × tokens | ms/text (median) | fastest | GMAC/s (layers, median) | share of {kind} peak |")
print("|---|---|---|---|---|---|---|")
for m in models:
    tag = m.replace(":", "-")
    for suffix, threads, peak in (("t2", 2, p2), ("t1", 1, p1), ("2048", 2, p2)):
        try:
            results = json.load(open(f"{out}/{tag}-{suffix}.json"))
        except FileNotFoundError:
            continue
        for r in results:
            for s in r["scenarios"]:
                tok, ms, fastest = s["mean_tokens_per_text"], s["ms_per_text"]["p50"], s["ms_per_text"]["min"]
                g = MACS * tok / (ms / 1e3) / 1e9
                print(f"| {m} | {threads} | {s['batch']} × {tok:.0f} | {ms:.1f} | {fastest:.1f} | {g:.0f} | {100 * g / peak:.0f} % |")
PY
