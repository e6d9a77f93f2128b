# deposium-embed: `make serve` (fetch what is missing, build, serve EmbeddingGemma int8 on :11435) and `make test`.
SHELL := /bin/bash
export DEPOSIUM_HOME ?= $(HOME)/.cache/deposium
PORT ?= 11435
HOST ?= 127.0.0.1
BIN := target/release/deposium-embed
MODELS ?= embeddinggemma,potion-base-8M

.PHONY: fetch build serve test report soak release lint-deploy clean-cache

fetch:
	scripts/fetch.sh

build:
	cargo build --release

serve: fetch build
	$(BIN) serve --model $(MODELS) --host $(HOST) --port $(PORT)

test: fetch
	cargo test --workspace --all-targets -- --test-threads=2

# Eval + bench of fp32, int8, int4 and potion-base-8M, then the decision report in docs/.
report: fetch build
	scripts/report.sh

# Release tarball dist/deposium-embed-<version>-linux-x86_64.tar.gz: x86-64-v3 and x86-64-v4 builds (fat LTO),
# a launcher that picks one, ONNX Runtime beside them, licenses. Runs on a clean machine with no env vars.
release:
	scripts/release.sh

# Lint the Dockerfile (hadolint) and check deploy/kubernetes against the Kubernetes schemas; tools from PyPI.
lint-deploy:
	deploy/lint.sh

clean-cache:
	rm -rf "$(DEPOSIUM_HOME)/converted"
