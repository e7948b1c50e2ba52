#!/usr/bin/env python3
"""Times the training step of the scaled-up 128x128 SS-GAN in PyTorch, for comparison with
`ssgan bench step --config configs/imagenet128-scaled.toml --synthetic`.

The model follows the Rust layout `resnet128-scaled` (crates/ssgan-model/src/arch.rs). The
generator has widths ch x (16, 16, 8, 4, 2, 1) over five upsampling blocks whose first conv
keeps the input width, 1x1 shortcuts, self-modulated batch norm and a sigmoid output. The
discriminator has widths ch x (1, 2, 4, 8, 16, 16) over six blocks (the last one keeps the
resolution), spectral norm on every weight, 1x1 shortcuts, a sum over the last feature map
and a 4-way rotation head. The losses and the step are those of benches/ssgan_step_pytorch.py, whose
building blocks this script imports. Real images are uniform noise in [0, 1].

`--bf16` runs the step under torch.autocast with bfloat16, as `model.precision = "bf16"` does
in the Rust implementation: convolutions and matmuls in bf16, weights and optimizer state in
f32. On a GPU each timed step ends with torch.cuda.synchronize().

Install: pip install torch numpy   (a CUDA build of torch for --device cuda)
Run:     python3 benches/ssgan128_step_pytorch.py --device cuda --batch 64 --rotated 64 --bf16

Prints one line of JSON with images_per_second, step_seconds_median and peak memory.
"""

import argparse
import json
import resource

import torch

from ssgan_step_pytorch import Discriminator, Generator, GeneratorBlock, d_step, g_step, timed_steps

Z_DIM = 128


def resnet128_scaled(ch):
    """The layout `resnet128-scaled`: 1x1 shortcuts, each generator block's first conv
    keeping its input width, and a sum over the discriminator's last feature map."""
    widths = [m * ch for m in (16, 16, 8, 4, 2, 1)]
    g_plan = [(a, a, b) for a, b in zip(widths[:-1], widths[1:])]
    generator = Generator(g_plan, Z_DIM, shortcut_kernel=1)
    d_widths = [3, ch, 2 * ch, 4 * ch, 8 * ch, 16 * ch, 16 * ch]
    d_plan = [(d_widths[i], d_widths[i + 1], i < 5) for i in range(6)]
    return generator, Discriminator(d_plan, shortcut_kernel=1, pooling="sum")


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())


def peak_memory(device):
    if device.type == "cuda":
        return {"peak_device_bytes": torch.cuda.max_memory_allocated(device)}
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ch", type=int, default=96, help="base width (96 in the paper)")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--rotated", type=int, default=64, help="rotated batch size (4 * n)")
    parser.add_argument("--n-dis", type=int, default=2, help="D steps per G step")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: default)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument(
        "--fused-upsample",
        action="store_true",
        help="run zero-insertion upsampling and conv as one transposed conv",
    )
    return parser.parse_args()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    n = args.rotated // 4
    GeneratorBlock.fused = args.fused_upsample
    g, d = resnet128_scaled(args.ch)
    g, d = g.to(device), d.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.0, 0.999), eps=1e-8)
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.999), eps=1e-8)

    def latent():
        return torch.rand(args.batch, Z_DIM, device=device) * 2 - 1

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            for _ in range(args.n_dis):
                reals = torch.rand(args.batch, 3, 128, 128, device=device)
                d_step(g, d, opt_d, reals, latent(), n)
            d.requires_grad_(False)
            g_step(g, d, opt_g, latent(), n)
            d.requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = {
        **timed_steps(step, args.warmup, args.steps, args.batch),
        "device": str(device),
        "bf16": args.bf16,
        "batch_size": args.batch,
        "rotated_batch_size": args.rotated,
        "n_dis": args.n_dis,
        "generator_parameters": parameter_count(g),
        "discriminator_parameters": parameter_count(d),
        "fused_upsample": args.fused_upsample,
        **peak_memory(device),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
