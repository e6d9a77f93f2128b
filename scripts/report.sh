#!/usr/bin/env bash
# The decision report: STS eval + latency bench of EmbeddingGemma fp32 / int8 / int4 and potion-base-8M, then
# docs/eval-report.md with plots. Each model is benched in its own process (clean peak RSS).
# Usage: scripts/report.sh [MODEL...]   (env: RESULTS=results, THREADS=2, BIN=target/release/deposium-embed)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/deposium-embed}"
RESULTS="${RESULTS:-results}"
THREADS="${THREADS:-$(nproc)}"
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(embeddinggemma:fp32 embeddinggemma embeddinggemma:int4 potion-base-8M)
for m in "${models[@]}"; do
  echo "== eval $m" >&2
  "$BIN" eval --model "$m" --out "$RESULTS"
  echo "== bench $m" >&2
  "$BIN" bench --model "$m" --threads "$THREADS" --out "$RESULTS"
done
"$BIN" report --results "$RESULTS" --out docs
echo "report: docs/eval-report.md" >&2
