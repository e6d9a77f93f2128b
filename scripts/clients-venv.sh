#!/usr/bin/env bash
# What the client tests (tests/clients.rs) need: the Python venv ${DEPOSIUM_HOME:-~/.cache/deposium}/venv-clients
# with the versions pinned in tests/clients/requirements.txt, and Debian's chromium for the /docs page test.
# Idempotent: a stamp holds the hash of the requirements and of the Python version; the venv is re-created when
# either changes. pip's cache lives under DEPOSIUM_HOME too. Prints nothing when all is there; PYTHON picks the
# interpreter (default python3, >= 3.9).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${DEPOSIUM_HOME:-$HOME/.cache/deposium}"
VENV="$HOME_DIR/venv-clients"
REQ="$ROOT/tests/clients/requirements.txt"
PY="${PYTHON:-python3}"

die() { echo "clients-venv: $*" >&2; exit 1; }

[ -f "$REQ" ] || die "missing $REQ"
command -v "$PY" >/dev/null || die "$PY not found: install Python >= 3.9 (Debian: apt-get install python3 python3-venv)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || die "$("$PY" -V 2>&1) is too old: the clients need Python >= 3.9 (set PYTHON=...)"

stamp="$({ sha256sum "$REQ" | cut -d' ' -f1; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"

# Debian's chromium for the /docs page test (tests/clients.rs drives it headless).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "clients-venv: installing chromium (apt-get) for the /docs page test" >&2
    apt_log="$(mktemp)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$apt_log" 2>&1; then
      tail -n 20 "$apt_log" >&2
      die "apt-get install chromium failed"
    fi
    rm -f "$apt_log"
  else
    die "chromium not found: install Debian's chromium (apt-get install chromium), the /docs page test runs it"
  fi
fi

mkdir -p "$HOME_DIR"
# One maker at a time (concurrent `cargo test` runs share the venv).
exec 9>"$HOME_DIR/.venv-clients.lock"
flock 9

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

echo "clients-venv: creating $VENV (tests/clients/requirements.txt changed or venv missing)" >&2
rm -rf "$VENV"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$PY" -m venv "$VENV" >"$log" 2>&1; then
  cat "$log" >&2
  die "python -m venv failed (Debian: apt-get install python3-venv)"
fi
export PIP_CACHE_DIR="$HOME_DIR/pip-cache" PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VENV/bin/python" -m pip install --quiet --no-input -r "$REQ" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  rm -rf "$VENV"
  die "pip install -r $REQ failed (needs PyPI; log above)"
fi
echo "$stamp" >"$VENV/.stamp"
echo "clients-venv: ready ($("$VENV/bin/python" -V 2>&1), $(grep -c '==' "$REQ") pinned packages)" >&2
