# syntax=docker/dockerfile:1.7
# deposium-embed: text embeddings on CPU (EmbeddingGemma int8 on ONNX Runtime, Model2Vec static models), port 11435.
#
# The model, either way (README "Deploy"):
#  1. Baked in at build time (default, MODELS=gemma): scripts/fetch.sh downloads EmbeddingGemma and it is
#     converted here into a self-contained int8 ONNX directory, /models/embeddinggemma-300m: the container needs
#     no network and serves in seconds.
#        docker build -t deposium-embed .
#        docker run --rm -p 11435:11435 deposium-embed
#     MODELS="gemma small" adds potion-base-8M, all-MiniLM-L6-v2 and others (then set DEPOSIUM_MODELS).
#  2. Mounted at run time: build without models (MODELS=, the image then holds ONNX Runtime only) and mount
#     a models directory at /models, laid out as scripts/fetch.sh or `deposium-embed pull` leave it:
#        docker build --build-arg MODELS= -t deposium-embed:slim .
#        docker run --rm -p 11435:11435 -v /srv/deposium/models:/models:ro \
#          -v deposium-converted:/var/lib/deposium/converted deposium-embed:slim
#     A safetensors model is converted on its first start into /var/lib/deposium/converted: keep that on a
#     volume. Fill the volume with: docker run --rm -v /srv/deposium/models:/models -e HF_TOKEN \
#       deposium-embed:slim pull embeddinggemma
#
# An image with EmbeddingGemma inside redistributes Gemma: read NOTICE (Gemma Terms of Use) before you push it.
#
# Without a registry (what `make container-test` does, scripts/container-test.sh): the target `prebuilt` takes the
# host-built release binary, ONNX Runtime and the models from a build context named `host` instead of the `build`
# and `models` stages (building Rust inside the container takes long on small machines, and a Rust toolchain image
# comes from no package registry), and RUNTIME_IMAGE names a local stand-in for debian:bookworm-slim, made with
# `debootstrap --variant=minbase bookworm DIR && tar -C DIR -c . | podman import - deposium-debian:bookworm`:
#    podman build --target prebuilt --build-arg RUNTIME_IMAGE=localhost/deposium-debian:bookworm \
#      --build-context host=DIR_WITH_deposium-embed_onnxruntime_models -t deposium-embed:test .

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG RUNTIME_IMAGE=debian:${DEBIAN_RELEASE}-slim

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# x86-64-v3 (AVX2 + FMA) by default; x86-64-v4 for AVX-512 fleets; x86-64 for any x86-64 CPU.
ARG TARGET_CPU=x86-64-v3
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_LTO=fat \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
# --target: RUSTFLAGS then apply to the binary, not to build scripts that run on the build host.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-cpu=${TARGET_CPU}" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin deposium-embed \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/deposium-embed /out/deposium-embed

FROM build AS models
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
# scripts/fetch.sh targets besides ort (always): gemma, small; empty for an image without models.
ARG MODELS=gemma
ENV DEPOSIUM_HOME=/var/lib/deposium
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN mkdir -p /models /var/lib/deposium \
 && ln -s /models /var/lib/deposium/models \
 && scripts/fetch.sh ort ${MODELS} \
 && rm -rf /var/lib/deposium/wheels
# EmbeddingGemma → the int8 ONNX directory `serve --model embeddinggemma` would otherwise build on first start.
RUN if [ -f /models/embeddinggemma-300m/model.safetensors ]; then \
      /out/deposium-embed convert --model embeddinggemma --scheme int8 --no-fidelity --out /tmp/embeddinggemma-int8 \
      && cp /models/embeddinggemma-300m/README.md /tmp/embeddinggemma-int8/ \
      && rm -rf /models/embeddinggemma-300m \
      && mv /tmp/embeddinggemma-int8 /models/embeddinggemma-300m; \
    fi

FROM ${RUNTIME_IMAGE} AS base
# Numeric uid/gid 10001 (deploy/kubernetes runs as it, runAsNonRoot needs a number).
RUN groupadd --system --gid 10001 deposium \
 && useradd --system --uid 10001 --gid deposium --home-dir /var/lib/deposium --shell /usr/sbin/nologin deposium \
 && mkdir -p /models /var/lib/deposium/converted \
 && ln -s /models /var/lib/deposium/models \
 && chown -R deposium:deposium /var/lib/deposium /models
COPY LICENSE NOTICE /opt/deposium/
ENV PATH=/opt/deposium:$PATH \
    DEPOSIUM_HOME=/var/lib/deposium \
    DEPOSIUM_MODELS=embeddinggemma \
    HOST=0.0.0.0 \
    PORT=11435
USER 10001:10001
WORKDIR /var/lib/deposium
EXPOSE 11435
# /health is 200 once every model is loaded (503 while loading). bash's /dev/tcp: no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-11435} && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/opt/deposium/deposium-embed"]
CMD ["serve"]

# The host's release binary, ONNX Runtime and models (build context `host`: deposium-embed,
# onnxruntime/{libonnxruntime.so.1.31.1,LICENSE,ThirdPartyNotices.txt}, models/): see the header.
FROM base AS prebuilt
# `--from=host` names a build context (podman/BuildKit `--build-context host=DIR`), not a stage: DL3022 is ignored.
# hadolint ignore=DL3022
COPY --from=host deposium-embed /opt/deposium/deposium-embed
# hadolint ignore=DL3022
COPY --from=host onnxruntime/libonnxruntime.so.1.31.1 /opt/deposium/libonnxruntime.so.1
# hadolint ignore=DL3022
COPY --from=host onnxruntime/LICENSE onnxruntime/ThirdPartyNotices.txt /opt/deposium/licenses/onnxruntime/
# hadolint ignore=DL3022
COPY --from=host --chown=10001:10001 models /models

# The default target: everything built in the stages above.
FROM base AS runtime
COPY --from=build /out/deposium-embed /opt/deposium/deposium-embed
# ONNX Runtime beside the binary, where deposium-embed looks first.
COPY --from=models /var/lib/deposium/onnxruntime/libonnxruntime.so.1.31.1 /opt/deposium/libonnxruntime.so.1
COPY --from=models /var/lib/deposium/onnxruntime/LICENSE /var/lib/deposium/onnxruntime/ThirdPartyNotices.txt /opt/deposium/licenses/onnxruntime/
COPY --from=models --chown=deposium:deposium /models /models
