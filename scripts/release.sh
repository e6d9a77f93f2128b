#!/usr/bin/env bash
# Release tarball: dist/deposium-embed-<version>-linux-x86_64.tar.gz, runnable on a clean Linux x86-64 machine
# (glibc as recent as the build machine's symbols need: README.txt in the tarball says which; Debian 12 builds
# need 2.34) with no environment variables: ONNX Runtime is bundled beside the binaries, where
# deposium-embed looks for it first.
#
#   scripts/release.sh                       build and package (make release)
#   scripts/release.sh --package-only BIN [--v4 BIN4] [--out DIR]
#                                            package binaries that are already built (the tarball test uses this)
#
# The build: two binaries of the same code, fat LTO, one codegen unit, symbols stripped, in their own target
# directories (target/dist/x86-64-v3, target/dist/x86-64-v4) so that the everyday `cargo build --release` stays
# as fast as it is:
#   deposium-embed-v3   -C target-cpu=x86-64-v3 (AVX2, FMA: Haswell/Zen 1 and later)
#   deposium-embed-v4   -C target-cpu=x86-64-v4 (AVX-512: Skylake-SP/Zen 4 and later)
#   deposium-embed      launcher: runs -v4 when the CPU has AVX-512, else -v3 (DEPOSIUM_CPU=v3|v4 forces one)
# Each binary checks the CPU first thing and exits with a clear message instead of SIGILL.
#
# Env: DEPOSIUM_HOME (where scripts/fetch.sh keeps onnxruntime), DIST_DIR (default dist), CARGO_BUILD_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOME_DIR="${DEPOSIUM_HOME:-$HOME/.cache/deposium}"
ORT_VERSION=1.31.1
ORT_DIR="$HOME_DIR/onnxruntime"
TRIPLE=x86_64-unknown-linux-gnu

say() { printf '\033[1m[release]\033[0m %s\n' "$*" >&2; }
die() { printf '[release] ERROR: %s\n' "$*" >&2; exit 1; }

package_only=0 bin_v3="" bin_v4="" out="${DIST_DIR:-$ROOT/dist}"
while [ $# -gt 0 ]; do
  case "$1" in
    --package-only) package_only=1; bin_v3="${2:?--package-only needs a binary}"; shift 2 ;;
    --v4) bin_v4="${2:?--v4 needs a binary}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ "$(uname -m)" = x86_64 ] || die "x86_64 only (this is $(uname -m))"
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$VERSION" ] || die "no version in Cargo.toml [workspace.package]"
NAME="deposium-embed-$VERSION-linux-x86_64"

# ONNX Runtime and its license files, as scripts/fetch.sh leaves them.
if [ ! -f "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ]; then
  say "onnxruntime $ORT_VERSION not in $ORT_DIR: fetching it"
  scripts/fetch.sh ort
fi
for f in "libonnxruntime.so.$ORT_VERSION" LICENSE ThirdPartyNotices.txt; do
  [ -f "$ORT_DIR/$f" ] || die "$ORT_DIR/$f missing: delete $ORT_DIR and run scripts/fetch.sh ort"
done

# The crates compiled into the binary (normal dependencies of deposium-embed on x86_64 Linux) and their licenses,
# from the lock file the binaries were just built with.
crate_list() { # [--offline]
  cargo metadata --format-version 1 --locked "$@" --filter-platform "$TRIPLE" 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
pk = {p["id"]: p for p in m["packages"]}
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
root = next(p["id"] for p in m["packages"] if p["name"] == "deposium-embed")
seen, todo = set(), [root]
while todo:
    i = todo.pop()
    if i in seen:
        continue
    seen.add(i)
    for d in nodes[i]["deps"]:
        if any(k["kind"] is None for k in d["dep_kinds"]):
            todo.append(d["pkg"])
print("Rust crates compiled into deposium-embed (name version license repository):")
for i in sorted(seen, key=lambda i: (pk[i]["name"], pk[i]["version"])):
    p = pk[i]
    print(p["name"], p["version"], p.get("license") or "see " + str(p.get("license_file")), p.get("repository") or "")
'
}

if [ $package_only = 0 ]; then
  command -v cargo >/dev/null || die "cargo not found"
  export CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_INCREMENTAL=false
  for level in v3 v4; do
    say "building x86-64-$level (fat LTO, 1 codegen unit; minutes)"
    # --target: RUSTFLAGS then apply to the binary only, not to build scripts, which run here.
    CARGO_TARGET_DIR="$ROOT/target/dist/x86-64-$level" RUSTFLAGS="-C target-cpu=x86-64-$level" \
      cargo build --release --locked --target "$TRIPLE" --bin deposium-embed
  done
  bin_v3="$ROOT/target/dist/x86-64-v3/$TRIPLE/release/deposium-embed"
  bin_v4="$ROOT/target/dist/x86-64-v4/$TRIPLE/release/deposium-embed"
  crates=$(crate_list) || die "cargo metadata failed: cannot list the crates' licenses (Cargo.lock out of date?)"
else
  crates=$(crate_list --offline) || { say "warning: cargo metadata failed; licenses/rust-crates.txt left out"; crates=""; }
fi
[ -x "$bin_v3" ] || die "$bin_v3: not an executable"
[ -z "$bin_v4" ] || [ -x "$bin_v4" ] || die "$bin_v4: not an executable"

work=$(mktemp -d "${TMPDIR:-/tmp}/deposium-release.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage="$work/$NAME"
mkdir -p "$stage/licenses/onnxruntime"
say "packaging $NAME"
install -m 0755 "$bin_v3" "$stage/deposium-embed-v3"
[ -z "$bin_v4" ] || install -m 0755 "$bin_v4" "$stage/deposium-embed-v4"
if command -v strip >/dev/null; then
  for b in "$stage"/deposium-embed-v*; do strip --strip-unneeded "$b"; done
fi
install -m 0644 "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" "$stage/libonnxruntime.so.1"
install -m 0644 "$ORT_DIR/LICENSE" "$stage/licenses/onnxruntime/LICENSE"
install -m 0644 "$ORT_DIR/ThirdPartyNotices.txt" "$stage/licenses/onnxruntime/ThirdPartyNotices.txt"
install -m 0644 LICENSE NOTICE "$stage/"
[ -z "$crates" ] || printf '%s\n' "$crates" > "$stage/licenses/rust-crates.txt"

cat > "$stage/deposium-embed" <<'SH'
#!/bin/sh
# deposium-embed launcher: the x86-64-v4 (AVX-512) build when this CPU has AVX-512, else the x86-64-v3 (AVX2) one.
# DEPOSIUM_CPU=v3 or DEPOSIUM_CPU=v4 forces one.
d=$(dirname "$(readlink -f "$0")")
level=${DEPOSIUM_CPU:-}
if [ -z "$level" ]; then
  level=v3
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  if [ -x "$d/deposium-embed-v4" ]; then
    level=v4
    for f in avx512f avx512dq avx512cd avx512bw avx512vl; do
      case " $flags " in *" $f "*) ;; *) level=v3 ;; esac
    done
  fi
fi
[ -x "$d/deposium-embed-$level" ] || { echo "deposium-embed: $d/deposium-embed-$level is not in this package" >&2; exit 1; }
exec "$d/deposium-embed-$level" "$@"
SH
chmod 0755 "$stage/deposium-embed"

glibc=$(objdump -T "$stage"/deposium-embed-v* "$stage/libonnxruntime.so.1" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1 | cut -d_ -f2)
cat > "$stage/README.txt" <<EOF
deposium-embed $VERSION for Linux x86-64 (glibc ${glibc:-2.28} or newer)

  ./deposium-embed pull embeddinggemma          # from the Hugging Face Hub (HF_TOKEN for gated models)
  ./deposium-embed serve --model embeddinggemma --host 0.0.0.0 --port 11435
  ./deposium-embed embed --model NAME=/path/to/model "some text"

deposium-embed      launcher: runs deposium-embed-v4 on CPUs with AVX-512, else deposium-embed-v3
deposium-embed-v3   x86-64-v3 build (AVX2 + FMA: Intel Haswell / AMD Zen and later)
deposium-embed-v4   x86-64-v4 build (AVX-512)
libonnxruntime.so.1 ONNX Runtime $ORT_VERSION, found beside the binaries (override: DEPOSIUM_ORT_LIB)

Models are kept in \${DEPOSIUM_HOME:-~/.cache/deposium}/models. Licenses: LICENSE (deposium-embed, Apache-2.0),
NOTICE (models: read it before you ship a model), licenses/onnxruntime/ (MIT, and its third-party notices).
EOF

# What the binaries need from the system: the C library and nothing else (ONNX Runtime is loaded at run time).
for b in "$stage"/deposium-embed-v*; do
  bad=$(ldd "$b" 2>/dev/null | awk '{print $1}' | grep -vE '^(linux-vdso\.so|/lib64/ld-linux-x86-64\.so|libc\.so|libm\.so|libgcc_s\.so|libdl\.so|libpthread\.so|librt\.so|ld-linux-x86-64\.so)' || true)
  [ -z "$bad" ] || die "$(basename "$b") links libraries a clean machine may lack: $bad"
done

mkdir -p "$out"
[ "$out" != "$ROOT/dist" ] || [ -e "$out/.gitignore" ] || printf '*\n' > "$out/.gitignore"  # build output, not source
tarball="$out/$NAME.tar.gz"
tar -C "$work" --owner=0 --group=0 --numeric-owner --sort=name --mtime="@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" \
  -cf - "$NAME" | gzip -6 -n > "$tarball.tmp"
mv "$tarball.tmp" "$tarball"
(cd "$out" && sha256sum "$NAME.tar.gz" > "$NAME.tar.gz.sha256")
say "$tarball ($(du -h "$tarball" | cut -f1); needs glibc ${glibc:-?}+)"
echo "$tarball"
