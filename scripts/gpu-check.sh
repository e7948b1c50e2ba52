#!/usr/bin/env bash
# GPU checks of ssgan on a machine with one or more NVIDIA GPUs: builds with `--features cuda`
# and runs the GPU tests of crates/ssgan-model/tests/cuda.rs, each of which prints a PASS or
# FAIL line with its numbers:
#   - the model's discriminator loss and gradients on cuda:0 against the CPU;
#   - NCCL all-reduce (f32 and bf16 in place on the device, and through the host) and
#     broadcast across every visible GPU, one thread per GPU;
#   - the differentiable all-reduce's backward over NCCL;
#   - synchronized batch norm across the GPUs against one GPU with the whole batch.
# Then it times the scaled-up 128x128 model's step (bf16) at batch 64 and 128 on cuda:0 next
# to benches/ssgan128_step_pytorch.py on the same GPU. For each batch it prints images/s, the
# ratio and the model FLOP utilisation against the GPU's bf16 peak (scripts/gpu_bench_report.py).
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

echo "== step benchmark: resnet128-scaled (configs/imagenet128-scaled.toml), bf16, noise images"
bench_dir="$(mktemp -d)"
for batch in 64 128; do
  # The preset rotates 512 of 1024 images' worth (half the batch); keep that share per GPU.
  rotated=$((batch / 2))
  timeout 240 target/release/ssgan bench step --config configs/imagenet128-scaled.toml \
    --synthetic --device cuda:0 --batch-size "$batch" --warmup 2 --steps 5 --json \
    --set loss.rotated_batch_size="$rotated" --set model.precision='"bf16"' \
    --set model.init='"normal"' >"$bench_dir/ssgan-$batch.json" || status=$?
  if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    timeout 240 python3 benches/ssgan128_step_pytorch.py --device cuda:0 --batch "$batch" \
      --rotated "$rotated" --bf16 --warmup 2 --steps 5 >"$bench_dir/torch-$batch.json" || status=$?
  else
    echo "NOT RUN PyTorch reference at batch $batch: python3 has no CUDA-enabled torch (pip install torch)"
  fi
  python3 scripts/gpu_bench_report.py "$batch" "$bench_dir/ssgan-$batch.json" \
    "$bench_dir/torch-$batch.json" || status=$?
done
rm -rf "$bench_dir"

elapsed=$(( $(date +%s) - started ))
if [ "$status" -eq 0 ]; then
  echo "gpu-check finished in ${elapsed} s: all GPU tests passed"
else
  echo "gpu-check finished in ${elapsed} s: GPU tests failed (exit status $status)"
fi
exit "$status"
