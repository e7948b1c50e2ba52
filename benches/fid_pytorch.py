#!/usr/bin/env python3
"""Time pytorch-fid's feature extraction, to compare with `ssgan bench fid`.

Install: pip install torch torchvision pytorch-fid numpy

It runs pytorch-fid's FID InceptionV3 (pool3, 2048 features) in eval mode on the CPU. The
input is a batch of 32 x 32 images with the same gradient pattern as `ssgan bench fid`, or
the first images of a CIFAR-10 binary file. It prints one line of JSON with the same keys.

    python3 benches/fid_pytorch.py --weights pt_inception-2015-12-05-6726825d.pth \
        --batch-size 16 --warmup 1 --batches 3 --threads 2

NOTE: not run in the ssgan repository's CI, because torch is not installed there.
"""

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3


def pattern_images(count):
    """Returns uint8 images [count, 3, 32, 32] equal to ssgan's benchmark images."""
    k = np.arange(3 * 32 * 32)
    rows = [((k * 7 + index * 31) % 256).astype(np.uint8) for index in range(count)]
    return np.stack(rows).reshape(count, 3, 32, 32)


def cifar_images(path, count):
    """Reads the first `count` images of a CIFAR-10 binary file as uint8 [count, 3, 32, 32]."""
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)[:count]
    return records[:, 1:].reshape(-1, 3, 32, 32)


def install_weights(weights):
    """Links a local weights file where torch.hub looks for it, so that pytorch-fid finds
    the file in its cache instead of downloading it."""
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    target = os.path.join(checkpoints, os.path.basename(FID_WEIGHTS_URL))
    if not os.path.exists(target):
        os.symlink(os.path.abspath(weights), target)


def features(model, batch):
    """Runs pytorch-fid's pipeline (resize to 299, 2x - 1, network) on uint8 images and
    returns pool3 features [N, 2048]."""
    x = torch.from_numpy(batch).float() / 255.0
    with torch.no_grad():
        return model(x)[0].squeeze(3).squeeze(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="local pt_inception .pth (default: download it)")
    parser.add_argument("--cifar", help="CIFAR-10 binary file to read images from")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.weights:
        install_weights(args.weights)
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    if args.cifar:
        images = cifar_images(args.cifar, args.batch_size)
    else:
        images = pattern_images(args.batch_size)

    seconds = []
    for index in range(args.warmup + args.batches):
        start = time.perf_counter()
        features(model, images)
        if index >= args.warmup:
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    print(json.dumps({
        "features_per_second": args.batch_size / median,
        "batch_seconds_median": median,
        "batch_seconds_min": min(seconds),
        "batch_seconds_max": max(seconds),
        "batch_size": args.batch_size,
        "measured_batches": len(seconds),
        "warmup_batches": args.warmup,
        "dtype": "f32",
        "threads": args.threads,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
