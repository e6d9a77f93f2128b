#!/usr/bin/env bash
# The static tier through the server: CLIENTS curl processes, each on one keep-alive connection, post 1,000-text
# base64 `/v1/embeddings` requests to potion-base-8M for SECONDS; prints texts/s (wall) and texts per server CPU-second.
# Usage: scripts/static-tier.sh   (env: BIN=target/release/deposium-embed, CLIENTS=8, SECONDS_=15, PORT=11499)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/deposium-embed}"
CLIENTS="${CLIENTS:-8}"
SECONDS_="${SECONDS_:-15}"
PORT="${PORT:-11499}"
STS="${STS:-../shared/data/sts/STSBenchmark_test.tsv}"
work=$(mktemp -d)
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
python3 - "$STS" "$work/body.json" <<'PY'
import json, sys
rows = [l.split('\t') for l in open(sys.argv[1], encoding='utf-8').read().splitlines()[1:]]
texts = [t for r in rows for t in r[1:3]][:1000]
json.dump({"model": "potion-base-8M", "input": texts, "encoding_format": "base64"}, open(sys.argv[2], "w"))
PY
"$BIN" serve --model potion-base-8M --port "$PORT" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "localhost:$PORT/health" >/dev/null && break; sleep 0.2; done
url="http://localhost:$PORT/v1/embeddings"
# One curl per client: the same POST repeated on one connection (each URL gets its own -o).
args=(-s -H 'content-type: application/json' --data-binary "@$work/body.json")
for _ in $(seq 2000); do args+=("$url" -o /dev/null); done
curl "${args[@]:0:8}" # warm-up
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
inputs() { curl -s "localhost:$PORT/metrics" | awk '/^deposium_model_inputs_total\{model="potion-base-8M"/ {print $2}'; }
pids=()
for _ in $(seq "$CLIENTS"); do curl "${args[@]}" & pids+=($!); done
sleep 2
n0=$(inputs); c0=$(cpu); t0=$(date +%s.%N)
sleep "$SECONDS_"
n1=$(inputs); c1=$(cpu); t1=$(date +%s.%N)
kill "${pids[@]}" 2>/dev/null || true
wait "${pids[@]}" 2>/dev/null || true
python3 - "$n0" "$n1" "$c0" "$c1" "$t0" "$t1" "$(getconf CLK_TCK)" "$CLIENTS" <<'PY'
import sys
n0, n1, c0, c1, t0, t1, hz, clients = map(float, sys.argv[1:])
texts, wall, cpu = n1 - n0, t1 - t0, (c1 - c0) / hz
print(f"clients {clients:.0f}: {texts:.0f} texts in {wall:.1f} s = {texts / wall:,.0f} texts/s; "
      f"server CPU {cpu:.2f} s = {texts / cpu:,.0f} texts per server CPU-second")
PY
