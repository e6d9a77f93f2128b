# deposium-embed: `make serve` (fetch what is missing, build, serve EmbeddingGemma int8 on :11435) and `make test`.
SHELL := /bin/bash
export DEPOSIUM_HOME ?= $(HOME)/.cache/deposium
PORT ?= 11435
HOST ?= 127.0.0.1
BIN := target/release/deposium-embed
MODELS ?= embeddinggemma,potion-base-8M

.PHONY: fetch build serve test lint report soak fuzz release lint-deploy clean-cache

fetch:
	scripts/fetch.sh

build:
	cargo build --release

serve: fetch build
	$(BIN) serve --model $(MODELS) --host $(HOST) --port $(PORT)

# Formatting (rustfmt.toml) and clippy with warnings as errors; .ci/run runs it before the tests.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: fetch
	scripts/clients-venv.sh
	cargo test --workspace --all-targets -- --test-threads=2

# Eval + bench of fp32, int8, int4 and potion-base-8M, then the decision report in docs/.
report: fetch build
	scripts/report.sh

# Soak: the release server with both models under SOAK_CONCURRENCY clients for SOAK_DURATION (loopback only):
# every request answered, every vector equal to its single-request reference, RSS growth < 5% after warm-up,
# latency per route. Report: results/soak.json + results/soak.md; exits non-zero when a check fails.
SOAK_DURATION ?= 600s
SOAK_CONCURRENCY ?= 64
soak: fetch build
	cargo build --release -p deposium-soak
	target/release/deposium-soak --bin $(BIN) --model embeddinggemma --model potion-base-8M \
		--duration $(SOAK_DURATION) --concurrency $(SOAK_CONCURRENCY) --out results/soak

# Mixed load: 8 clients flood potion-base-8M with 1,000-text requests beside EmbeddingGemma single texts and SciFact
# documents; phases of SOAK_PHASE (EmbeddingGemma alone, potion alone, both): p50/p95/p99, texts/s, RSS →
# results/soak-mixed.{json,md}. Exits 1 on a lost request or a vector off its reference (cosine < 0.99999).
.PHONY: soak-mixed container-test
SOAK_PHASE ?= 60s
soak-mixed: fetch build
	cargo build --release -p deposium-soak
	target/release/deposium-soak --scenario mixed --bin $(BIN) --phase $(SOAK_PHASE) --out results/soak-mixed

# Build the Dockerfile with podman (local Debian base, the host's release binary and models) and run it read-only
# as a pod would: /health, vectors equal to the host binary's, non-root, SIGTERM drain (scripts/container-test.sh).
container-test: fetch build
	scripts/container-test.sh

# Hostile-input fuzzing (proptest, in-process router, real potion-base-8M): FUZZ_SECONDS per target (default 600).
FUZZ_SECONDS ?= 600
fuzz: fetch
	FUZZ_SECONDS=$(FUZZ_SECONDS) cargo test -p deposium-server --test fuzz -- --test-threads=1 --nocapture

# Release tarball dist/deposium-embed-<version>-linux-x86_64.tar.gz: x86-64-v3 and x86-64-v4 builds (fat LTO),
# a launcher that picks one, ONNX Runtime beside them, licenses. Runs on a clean machine with no env vars.
release:
	scripts/release.sh

# Lint the Dockerfile (hadolint) and check deploy/kubernetes against the Kubernetes schemas; tools from PyPI.
lint-deploy:
	deploy/lint.sh

clean-cache:
	rm -rf "$(DEPOSIUM_HOME)/converted"
