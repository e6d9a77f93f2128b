#!/usr/bin/env bash
# make container-test: build the Dockerfile with podman (no registry needed) and run the image as a pod would:
# read-only root, the converted-graphs volume, nofile/nproc limits, port on 127.0.0.1 only. Checks /health,
# /api/embed and /v1/embeddings vectors against the host binary's (bit for bit), the uid (non-root), and a clean
# SIGTERM within the drain timeout. Prints image size, build, start and stop times.
#
# Base image: a local Debian bookworm minbase (debootstrap → podman import), made once and kept as
# $BASE_IMAGE. The image's binary, ONNX Runtime and models come from the host (Dockerfile target `prebuilt`).
# Needs root (podman with runc and cgroupfs, as on this machine kind); installs podman, runc and debootstrap
# with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEPOSIUM_HOME="${DEPOSIUM_HOME:-$HOME/.cache/deposium}"
BIN="${BIN:-target/release/deposium-embed}"
IMAGE="${IMAGE:-localhost/deposium-embed:test}"
BASE_IMAGE="${BASE_IMAGE:-localhost/deposium-debian:bookworm}"
CACHE="${CONTAINER_CACHE:-/var/tmp/deposium-container}"
PORT="${CONTAINER_PORT:-11535}"
HOST_PORT="${HOST_REF_PORT:-11536}"
NAME="deposium-container-test-$$"
VOLUME="$NAME-converted"
DRAIN_SECS=30
PODMAN=(podman --runtime /usr/sbin/runc --cgroup-manager cgroupfs)
T_ALL=$(date +%s.%N)
mkdir -p "$CACHE"

say() { printf '== %s\n' "$*"; }
fail() { printf 'container-test: FAILED: %s\n' "$*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

[ -x "$BIN" ] || fail "$BIN not found: run 'cargo build --release' first"

# 1. Tools.
if ! command -v podman >/dev/null || [ ! -x /usr/sbin/runc ] || ! command -v debootstrap >/dev/null; then
  say "installing podman runc debootstrap"
  apt-get install -y podman runc debootstrap >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y podman runc debootstrap >/dev/null; }
fi

# 2. Base image (cached).
if ! podman image exists "$BASE_IMAGE"; then
  say "making $BASE_IMAGE with debootstrap (once)"
  rootfs="$CACHE/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$CACHE"
  debootstrap --variant=minbase bookworm "$rootfs" >"$CACHE/debootstrap.log" 2>&1 \
    || fail "debootstrap failed: see $CACHE/debootstrap.log"
  # What debian:bookworm-slim leaves out too: package lists and caches, docs.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

# 3. Reference: the host binary serving the same models (it also converts EmbeddingGemma once if needed).
say "host reference server on 127.0.0.1:$HOST_PORT"
"$BIN" serve --host 127.0.0.1 --port "$HOST_PORT" --model embeddinggemma,potion-base-8M >"$CACHE/host.log" 2>&1 &
host_pid=$!
cleanup() {
  kill "$host_pid" 2>/dev/null || true
  "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
wait_health() { # URL SECONDS
  local t0=$SECONDS
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" = 200 ]; do
    [ $((SECONDS - t0)) -lt "$2" ] || return 1
    sleep 0.2
  done
}
wait_health "http://127.0.0.1:$HOST_PORT" 900 || fail "host server not healthy: $(tail -3 "$CACHE/host.log")"

# 4. Build context `host`: binary, ONNX Runtime, models (hard links where possible).
ctx="$CACHE/ctx"
rm -rf "$ctx"
mkdir -p "$ctx/onnxruntime" "$ctx/models"
gemma=$(ls -td "$DEPOSIUM_HOME"/converted/embeddinggemma-300m-int8-*/ | head -n1)
[ -f "$gemma/deposium.json" ] || fail "no converted EmbeddingGemma int8 under $DEPOSIUM_HOME/converted"
cp -al "$BIN" "$ctx/deposium-embed" 2>/dev/null || cp -a "$BIN" "$ctx/deposium-embed"
for f in libonnxruntime.so.1.31.1 LICENSE ThirdPartyNotices.txt; do
  cp -aL "$DEPOSIUM_HOME/onnxruntime/$f" "$ctx/onnxruntime/$f"
done
cp -al "$gemma" "$ctx/models/embeddinggemma-300m" 2>/dev/null || cp -a "$gemma" "$ctx/models/embeddinggemma-300m"
cp -aL "$DEPOSIUM_HOME/models/potion-base-8M" "$ctx/models/potion-base-8M"

say "podman build --target prebuilt"
t=$(date +%s.%N)
"${PODMAN[@]}" build -q --format docker --target prebuilt --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
  --build-context host="$ctx" -t "$IMAGE" . >/dev/null || fail "podman build"
build_s=$(since "$t")
size_mb=$(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{ printf "%.0f", $1 / 1e6 }')

# 5. Run as a pod would: read-only root, the converted-graphs volume, limits, loopback-only port.
say "podman run --read-only"
t=$(date +%s.%N)
# --health-interval disable: no systemd timers here; the image's HEALTHCHECK is run once by hand below.
"${PODMAN[@]}" run -d --name "$NAME" --read-only --health-interval disable -v "$VOLUME:/var/lib/deposium/converted" \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -p "127.0.0.1:$PORT:11435" \
  -e DEPOSIUM_MODELS=embeddinggemma,potion-base-8M -e DEPOSIUM_THREADS=2 "$IMAGE" >/dev/null \
  || fail "podman run"
wait_health "http://127.0.0.1:$PORT" 300 || fail "container not healthy: $("${PODMAN[@]}" logs --tail 5 "$NAME" 2>&1)"
start_s=$(since "$t")

# 6. Same requests to both: the vectors must be identical.
check() { # ROUTE BODY
  local a b
  a=$(curl -sS --fail-with-body "http://127.0.0.1:$PORT$1" -H 'content-type: application/json' -d "$2") || fail "container $1: $a"
  b=$(curl -sS --fail-with-body "http://127.0.0.1:$HOST_PORT$1" -H 'content-type: application/json' -d "$2") || fail "host $1: $b"
  python3 - "$a" "$b" "$1" <<'EOF' || exit 1
import json, sys
a, b, route = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
vec = lambda r: r["embeddings"] if "embeddings" in r else [d["embedding"] for d in r["data"]]
va, vb = vec(a), vec(b)
assert len(va) == len(vb) > 0 and all(len(x) > 0 for x in va), f"{route}: {len(va)} vs {len(vb)} vectors"
if va != vb:
    sys.exit(f"container-test: FAILED: {route}: vectors differ from the host binary's")
print(f"   {route}: {len(va)} vectors x {len(va[0])} floats, identical to the host binary's")
EOF
}
texts='["The cat sits outside.", "A man is playing guitar.", "Le chat est dehors.", ""]'
check /api/embed "{\"model\": \"embeddinggemma\", \"input\": $texts}"
check /api/embed "{\"model\": \"potion-base-8M\", \"input\": $texts}"
# OpenAI refuses empty strings (400).
check /v1/embeddings "{\"model\": \"embeddinggemma\", \"input\": [\"The cat sits outside.\", \"Paris\"], \"encoding_format\": \"float\"}"
check /v1/embeddings "{\"model\": \"potion-base-8M\", \"input\": \"one text\", \"encoding_format\": \"float\"}"

# 7. Non-root.
uid=$("${PODMAN[@]}" exec "$NAME" awk '/^Uid:/ { print $2 }' /proc/1/status)
[ "$uid" != 0 ] || fail "the server runs as root"
say "process uid $uid (non-root)"

# 8. The image's HEALTHCHECK command (bash /dev/tcp, no curl in the image).
"${PODMAN[@]}" healthcheck run "$NAME" >/dev/null || fail "HEALTHCHECK command failed"
say "HEALTHCHECK healthy"

# 9. SIGTERM while a ~600-token request is in flight: it is answered, then exit 0 within the drain timeout.
long=$(python3 -c 'import json; print(json.dumps({"model": "embeddinggemma", "input": " ".join("token%d" % i for i in range(400))}))')
curl -s -o "$CACHE/inflight.json" -w '%{http_code}' "http://127.0.0.1:$PORT/api/embed" -d "$long" >"$CACHE/inflight.code" &
curl_pid=$!
sleep 0.5
t=$(date +%s.%N)
"${PODMAN[@]}" stop -t "$DRAIN_SECS" "$NAME" >/dev/null
stop_s=$(since "$t")
wait "$curl_pid" || true
[ "$(cat "$CACHE/inflight.code")" = 200 ] || fail "in-flight request during SIGTERM got $(cat "$CACHE/inflight.code")"
say "in-flight request answered during the drain"
code=$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after SIGTERM (137 = killed after ${DRAIN_SECS}s)"
"${PODMAN[@]}" logs "$NAME" 2>&1 | grep -q "in-flight requests answered" || fail "no drain line in the log"

printf 'container-test: OK: image %s %s MB, build %ss, start to /health 200 %ss, SIGTERM to exit 0 %ss, total %ss\n' \
  "$IMAGE" "$size_mb" "$build_s" "$start_s" "$stop_s" "$(since "$T_ALL")"
