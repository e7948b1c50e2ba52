#!/usr/bin/env python3
"""Time a torchvision input pipeline on an image folder, to compare with `ssgan bench data`.

Install: pip install torch torchvision pillow

Each image is decoded by Pillow, resized so that its shorter side is SIZE (bilinear, with
antialiasing), center-cropped to SIZE x SIZE and converted to a float tensor in [0, 1]. These
are torchvision's Resize, CenterCrop and ToTensor, the usual PyTorch recipe for 128x128 GAN
training. Batches come from a DataLoader over a shuffled list of every PNG and JPEG file in
the folder tree. It prints one line of JSON with the keys of `ssgan bench data --json`.

    python3 benches/data_pytorch.py --folder /data/imagenet/train --size 128 \
        --batch-size 64 --warmup 1 --batches 5 --workers 2

--workers 0 decodes in the timing process itself, like `ssgan --threads 1`; --workers N
uses N loader processes, like N threads of ssgan's rayon pool. Loader processes work ahead
of the consumer, so single batches can arrive at once: images_per_second is the measured
images over the whole timed span, not over the median batch. The batches that the workers
finished during the warm-up still count, up to 2 x workers of them, and they flatter
PyTorch. Time many batches to keep that share small.

NOTE: not run in the ssgan repository's CI, because torch is not installed there.
"""

import argparse
import json
import os
import statistics
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(root):
    """Returns the PNG and JPEG files below `root`, sorted, skipping dot names."""
    files = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in names:
            if not name.startswith(".") and name.lower().endswith(EXTENSIONS):
                files.append(os.path.join(folder, name))
    return sorted(files)


class FolderImages(Dataset):
    """Images of a folder tree, resized and center-cropped to `size`."""

    def __init__(self, files, size):
        self.files = files
        self.transform = transforms.Compose(
            [
                transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
            ]
        )

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        with Image.open(self.files[index]) as image:
            return self.transform(image.convert("RGB"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", required=True, help="root of the image folder tree")
    parser.add_argument("--size", type=int, default=128, help="output side in pixels")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches")
    parser.add_argument("--batches", type=int, default=5, help="timed batches")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    files = list_images(args.folder)
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        FolderImages(files, args.size),
        batch_size=args.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=args.workers,
        drop_last=True,
    )
    batches = iter(loader)
    for _ in range(args.warmup):
        next(batches)
    seconds = []
    started = time.perf_counter()
    for _ in range(args.batches):
        start = time.perf_counter()
        next(batches)
        seconds.append(time.perf_counter() - start)
    total = time.perf_counter() - started
    median = statistics.median(seconds)
    print(
        json.dumps(
            {
                "images_per_second": args.batch_size * args.batches / total,
                "batch_seconds_median": median,
                "batch_seconds_min": min(seconds),
                "batch_seconds_max": max(seconds),
                "batch_size": args.batch_size,
                "measured_batches": len(seconds),
                "warmup_batches": args.warmup,
                "data_path": args.folder,
                "dataset_images": len(files),
                "image_size": args.size,
                "workers": args.workers,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
