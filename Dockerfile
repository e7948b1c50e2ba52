# Container image of the ssgan binary, with the run presets and the bundled CIFAR-10 sample.
#
#   docker build -t ssgan:cpu .                               # CPU build (the default)
#   docker build --build-arg VARIANT=cuda -t ssgan:cuda .     # CUDA 13 with NCCL, for GPUs
#
# The CUDA variant compiles candle's kernels for CUDA_COMPUTE_CAP (90: H100 and H200); pass
# --build-arg CUDA_COMPUTE_CAP=80 for A100. Its image needs an NVIDIA driver for CUDA 13
# (R580 or newer) on the node.
#
# NOTE: this repository's CI has no Docker daemon and no access to image registries, so
# neither variant has been built there. Build both before relying on them.

ARG RUST_VERSION=1.95
ARG CUDA_VERSION=13.0.0
# cpu or cuda.
ARG VARIANT=cpu

# CPU build.
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ssgan-cli \
    && install -m 0755 target/release/ssgan /usr/local/bin/ssgan

# CUDA build: the CUDA toolkit image with a Rust toolchain added.
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS build-cuda
ARG RUST_VERSION
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} PATH=/root/.cargo/bin:${PATH}
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl g++ libnccl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/* \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ssgan-cli --features cuda \
    && install -m 0755 target/release/ssgan /usr/local/bin/ssgan

# Runtime images. VARIANT picks one of them as the final stage.
FROM debian:bookworm-slim AS runtime-cpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/ssgan /usr/local/bin/ssgan

# The libraries the CUDA binary links (cudart, nvrtc, cublas, curand) and NCCL.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS runtime-cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libnccl2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-cuda /usr/local/bin/ssgan /usr/local/bin/ssgan

FROM runtime-${VARIANT}
COPY configs /opt/ssgan/configs
COPY data /opt/ssgan/data
WORKDIR /opt/ssgan
USER 65532:65532
ENV HOME=/tmp SSGAN_CACHE_DIR=/tmp/ssgan-cache
ENTRYPOINT ["ssgan"]
CMD ["--help"]
