#!/usr/bin/env python3
"""Prints one benchmark row of scripts/gpu-check.sh: images/s of `ssgan bench step` and of
the PyTorch reference at one batch size, their ratio, and each one's model FLOP utilisation
(MFU) against the GPU's dense bf16 peak.

The two implementations run the same model, so both MFU figures use the model FLOPs per step
that `ssgan bench step` reports. That count covers convolutions and linear layers, with a
backward pass counted as twice its forward (crates/ssgan-model/src/flops.rs). The peak comes from SSGAN_GPU_BF16_PEAK_TFLOPS, or
from the GPU's name for the GPUs listed in PEAK_TFLOPS.

Usage: gpu_bench_report.py BATCH SSGAN_JSON TORCH_JSON   (TORCH_JSON may be missing)
"""

import json
import os
import subprocess
import sys

# Dense bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s.
PEAK_TFLOPS = {"H200": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "A100": 312.0}


def gpu_name():
    query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"]
    try:
        return subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown GPU"


def peak_tflops(name):
    if os.environ.get("SSGAN_GPU_BF16_PEAK_TFLOPS"):
        return float(os.environ["SSGAN_GPU_BF16_PEAK_TFLOPS"])
    matches = [peak for key, peak in PEAK_TFLOPS.items() if key in name]
    return matches[0] if matches else None


def read(path):
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def mfu(flops, seconds, peak):
    if peak is None:
        return "MFU unknown (set SSGAN_GPU_BF16_PEAK_TFLOPS)"
    return f"MFU {100 * flops / seconds / (peak * 1e12):.1f} %"


def main():
    batch, ours_path, torch_path = sys.argv[1], sys.argv[2], sys.argv[3]
    name = gpu_name()
    peak = peak_tflops(name)
    ours = read(ours_path)
    if ours is None:
        print(f"FAIL benchmark batch {batch}: `ssgan bench step` gave no result")
        return 1
    flops = ours["model_flops_per_step"]
    peak_text = "unknown" if peak is None else f"{peak}"
    print(f"BENCH batch {batch} on {name} (bf16 peak {peak_text} TFLOP/s), "
          f"{flops / 1e12:.2f} model TFLOP per step")
    print(f"  ssgan:   {ours['images_per_second']:.1f} images/s, step "
          f"{ours['step_seconds_median']:.3f} s, {mfu(flops, ours['step_seconds_median'], peak)}")
    reference = read(torch_path)
    if reference is None:
        print("  pytorch: no result, so no ratio")
        return 0
    print(f"  pytorch: {reference['images_per_second']:.1f} images/s, step "
          f"{reference['step_seconds_median']:.3f} s, "
          f"{mfu(flops, reference['step_seconds_median'], peak)}, "
          f"torch {reference['torch_version']}, peak memory "
          f"{reference.get('peak_device_bytes', 0) / 2**30:.1f} GiB")
    ratio = ours["images_per_second"] / reference["images_per_second"]
    print(f"  ratio ssgan / pytorch images/s: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
