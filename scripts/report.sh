#!/usr/bin/env bash
# The decision report: STS eval + latency bench of EmbeddingGemma fp32 / int8 / int4 and potion-base-8M, then
# docs/eval-report.md with plots. Each model is benched in its own process (clean peak RSS).
# Retrieval (RETRIEVAL_TASKS, default SciFact: 5,183 documents, slow for fp32) with the models' query/document
# prompts; EmbeddingGemma int8/int4 also measure their document cosines to fp32 (--fidelity-to), and int8 and int4 run
# once more without prompts (results/<model>-noprompt/). RETRIEVAL_TASKS= skips retrieval.
# Usage: scripts/report.sh [MODEL...]   (env: RESULTS=results, THREADS=2, BIN=target/release/deposium-embed,
#        RETRIEVAL_TASKS=SciFact, NOPROMPT_MODELS="embeddinggemma embeddinggemma:int4")
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/deposium-embed}"
RESULTS="${RESULTS:-results}"
THREADS="${THREADS:-$(nproc)}"
RETRIEVAL_TASKS="${RETRIEVAL_TASKS-SciFact}"
NOPROMPT_MODELS="${NOPROMPT_MODELS-embeddinggemma embeddinggemma:int4}"
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(embeddinggemma:fp32 embeddinggemma embeddinggemma:int4 potion-base-8M)
for m in "${models[@]}"; do
  echo "== eval $m" >&2
  "$BIN" eval --model "$m" --out "$RESULTS"
  if [ -n "$RETRIEVAL_TASKS" ]; then
    echo "== eval $m: $RETRIEVAL_TASKS" >&2
    fid=()
    case "$m" in embeddinggemma:fp32) ;; embeddinggemma*) fid=(--fidelity-to embeddinggemma:fp32) ;; esac
    "$BIN" eval --model "$m" --tasks "$RETRIEVAL_TASKS" "${fid[@]}" --out "$RESULTS"
  fi
  echo "== bench $m" >&2
  "$BIN" bench --model "$m" --threads "$THREADS" --out "$RESULTS"
done
if [ -n "$RETRIEVAL_TASKS" ]; then
  for m in $NOPROMPT_MODELS; do
    echo "== eval $m: $RETRIEVAL_TASKS without prompts" >&2
    "$BIN" eval --model "$m" --tasks "$RETRIEVAL_TASKS" --no-prompts --out "$RESULTS"
  done
fi
"$BIN" report --results "$RESULTS" --out docs --references docs/reference-points.json
echo "report: docs/eval-report.md" >&2
