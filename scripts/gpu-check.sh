#!/usr/bin/env bash
# GPU checks of ssgan on a machine with one or more NVIDIA GPUs: builds with `--features cuda`
# and runs the GPU tests of crates/ssgan-model/tests/cuda.rs, each of which prints a PASS or
# FAIL line with its numbers:
#   - the model's discriminator loss and gradients on cuda:0 against the CPU;
#   - NCCL all-reduce (f32 and bf16 in place on the device, and through the host) and
#     broadcast across every visible GPU, one thread per GPU;
#   - the differentiable all-reduce's backward over NCCL;
#   - synchronized batch norm across the GPUs against one GPU with the whole batch.
# Everything printed also goes to the log file ($SSGAN_GPU_LOG, default
# gpu-check-<UTC time>.log). Exits non-zero when a build fails or a check fails.
#
# Needs: the NVIDIA driver for CUDA 13 (R580 or newer), the CUDA 13 toolkit's nvcc on PATH (or
# CUDA_ROOT), libnccl.so.2, and cargo. The first build compiles candle's CUDA kernels, which
# takes several minutes; later runs reuse target/.
set -euo pipefail
cd "$(dirname "$0")/.."

log="${SSGAN_GPU_LOG:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ).log}"
exec > >(tee -a "$log") 2>&1
started=$(date +%s)
echo "ssgan GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), log $log"

if ! command -v nvidia-smi >/dev/null; then
  echo "FAIL setup: nvidia-smi not found; this script needs a machine with NVIDIA GPUs"
  exit 1
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1)"
  export CUDA_COMPUTE_CAP="${cap//./}"
fi
if ! command -v nvcc >/dev/null && [ -n "${CUDA_ROOT:-}" ]; then
  export PATH="$CUDA_ROOT/bin:$PATH"
fi
if ! command -v nvcc >/dev/null; then
  echo "FAIL setup: nvcc not found; put the CUDA 13 toolkit's bin on PATH or set CUDA_ROOT"
  exit 1
fi
nvcc --version | tail -n 1
echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"

echo "== build (--release --features cuda)"
cargo build --release --features cuda -p ssgan-cli
cargo test --release --features cuda -p ssgan-model --test cuda --no-run

echo "== GPU tests"
status=0
# One test at a time: the NCCL tests each use every GPU. A hung collective fails through the
# communicator's 60 s watchdog; the outer timeout is a backstop.
timeout 300 cargo test --release --features cuda -p ssgan-model --test cuda -- \
  --nocapture --test-threads=1 || status=$?
timeout 120 cargo test --release --features cuda -p ssgan-model --test mixed_precision || status=$?

# TODO(gpu-bench): benchmark the scaled-up 128x128 model's step at per-GPU batch 64 and 128 next
# to a PyTorch reference on the same GPU (images/s, ratio, MFU against the bf16 peak). There is
# nothing to compare yet, because ssgan-model lacks the resnet128-scaled architecture and
# `ssgan bench step` runs on the CPU only. Add both, then call them here.
echo "NOT RUN benchmark: resnet128-scaled and a GPU step benchmark do not exist yet"

elapsed=$(( $(date +%s) - started ))
if [ "$status" -eq 0 ]; then
  echo "gpu-check finished in ${elapsed} s: all GPU tests passed"
else
  echo "gpu-check finished in ${elapsed} s: GPU tests failed (exit status $status)"
fi
exit "$status"
