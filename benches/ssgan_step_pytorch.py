#!/usr/bin/env python3
"""Times the SS-GAN training step of the 32x32 model in PyTorch, for comparison with
`ssgan bench step`.

The model, losses and step follow the Rust implementation: a ResNet generator of width 2*ch
with self-modulated batch norm (32 hidden units, biased batch variance) and zero-insertion
upsampling, a ResNet discriminator of width ch with spectral norm on every weight and a 4-way
rotation head, the hinge loss plus rotation cross-entropy (weights 0.2 for the generator and
1.0 for the discriminator), Adam, and n_dis discriminator steps per generator step. The
discriminator step scores [x, x_rot, g, g_rot] in one pass with fakes made under no_grad; the
generator step scores [g, g_rot] with the discriminator's weights frozen. Real images are
uniform noise in [0, 1] because only the time of the step is measured.

By default the generator zero-inserts and then convolves, as compare_gan's model is written.
`--fused-upsample` computes the same function as one stride-2 conv_transpose2d, which skips
the products with inserted zeros, as the Rust kernels do.

Install (CPU): pip install torch numpy
Run:          python3 benches/ssgan_step_pytorch.py --ch 128 --batch 64 --rotated 64 --n-dis 2 --threads 2

Prints one line of JSON with images_per_second, step_seconds_median and peak_rss_bytes.
"""

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm


def upsample_zeros(x):
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h, 2, w, 2)
    out[:, :, :, 0, :, 0] = x
    return out.reshape(n, c, 2 * h, 2 * w)


class SelfModulatedBN(nn.Module):
    def __init__(self, channels, z_dim, hidden=32):
        super().__init__()
        self.hidden = nn.Linear(z_dim, hidden)
        self.gamma = nn.Linear(hidden, channels)
        self.beta = nn.Linear(hidden, channels)
        nn.init.ones_(self.gamma.bias)
        self.eps = 1e-5

    def forward(self, x, z):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x * x).mean(dim=(0, 2, 3), keepdim=True) - mean * mean
        x_hat = (x - mean) * torch.rsqrt(var.clamp_min(0) + self.eps)
        h = F.relu(self.hidden(z))
        gamma = self.gamma(h)[:, :, None, None]
        beta = self.beta(h)[:, :, None, None]
        return x_hat * gamma + beta


def upsampled_conv(conv, x, fused):
    """conv(upsample_zeros(x)), optionally as the equivalent stride-2 transposed conv."""
    if not fused:
        return conv(upsample_zeros(x))
    kernel = conv.weight.flip(2, 3).transpose(0, 1)
    pad = conv.padding[0]
    return F.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=pad, output_padding=1)


class GeneratorBlock(nn.Module):
    fused = False

    def __init__(self, c_in, c_mid, c_out, z_dim, shortcut_kernel=3):
        super().__init__()
        self.bn1 = SelfModulatedBN(c_in, z_dim)
        self.conv_a = nn.Conv2d(c_in, c_mid, 3, padding=1)
        self.bn2 = SelfModulatedBN(c_mid, z_dim)
        self.conv_b = nn.Conv2d(c_mid, c_out, 3, padding=1)
        k = shortcut_kernel
        self.shortcut = nn.Conv2d(c_in, c_out, k, padding=k // 2)

    def forward(self, x, z):
        h = F.relu(self.bn1(x, z))
        h = upsampled_conv(self.conv_a, h, self.fused)
        h = F.relu(self.bn2(h, z))
        return self.conv_b(h) + upsampled_conv(self.shortcut, x, self.fused)


class Generator(nn.Module):
    """Linear to 4x4, one upsampling block per (c_in, c_mid, c_out) in `plan`, sBN, ReLU,
    3x3 conv and sigmoid."""

    def __init__(self, plan, z_dim=128, shortcut_kernel=3):
        super().__init__()
        self.c = plan[0][0]
        self.fc = nn.Linear(z_dim, 4 * 4 * self.c)
        blocks = [GeneratorBlock(*widths, z_dim, shortcut_kernel) for widths in plan]
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = SelfModulatedBN(plan[-1][2], z_dim)
        self.out = nn.Conv2d(plan[-1][2], 3, 3, padding=1)

    def forward(self, z):
        h = self.fc(z).reshape(z.shape[0], self.c, 4, 4)
        for block in self.blocks:
            h = block(h, z)
        return torch.sigmoid(self.out(F.relu(self.final_norm(h, z))))


class DiscriminatorBlock(nn.Module):
    def __init__(self, c_in, c_out, down, shortcut_kernel=3):
        super().__init__()
        self.conv_a = spectral_norm(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv_b = spectral_norm(nn.Conv2d(c_out, c_out, 3, padding=1))
        k = shortcut_kernel
        self.shortcut = spectral_norm(nn.Conv2d(c_in, c_out, k, padding=k // 2))
        self.down = down

    def forward(self, x):
        main = self.conv_b(F.relu(self.conv_a(F.relu(x))))
        out = main + self.shortcut(x)
        return F.avg_pool2d(out, 2) if self.down else out


class Discriminator(nn.Module):
    """One block per (c_in, c_out, downsample) in `plan`, ReLU, mean or sum over the last
    feature map, and true/fake and rotation heads."""

    def __init__(self, plan, shortcut_kernel=3, pooling="mean"):
        super().__init__()
        self.blocks = nn.ModuleList([DiscriminatorBlock(*p, shortcut_kernel) for p in plan])
        width = plan[-1][1]
        self.head = spectral_norm(nn.Linear(width, 1))
        self.rotation_head = spectral_norm(nn.Linear(width, 4))
        self.pooling = pooling

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        h = F.relu(x)
        features = h.mean(dim=(2, 3)) if self.pooling == "mean" else h.sum(dim=(2, 3))
        return self.head(features).squeeze(1), self.rotation_head(features)


def resnet32(ch):
    """The 32x32 model: generator width 2*ch, discriminator width ch."""
    g = 2 * ch
    generator = Generator([(g, g, g)] * 3)
    plan = [(3, ch, True), (ch, ch, True), (ch, ch, False), (ch, ch, False)]
    return generator, Discriminator(plan)


def rotations(tail):
    return torch.cat([torch.rot90(tail, k, (2, 3)) for k in (1, 2, 3)])


def side(images, n):
    return torch.cat([images, rotations(images[-n:])])


def rotation_ce(logits, n):
    labels = torch.arange(4, device=logits.device).repeat_interleave(n)
    return F.cross_entropy(logits, labels)


def d_step(g, d, opt_d, reals, z, n):
    with torch.no_grad():
        fakes = g(z)
    b = reals.shape[0]
    logits, rot = d(torch.cat([side(reals, n), side(fakes, n)]))
    side_len = b + 3 * n
    real_logits, fake_logits = logits[:b], logits[side_len : side_len + b]
    hinge = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    loss = hinge + 1.0 * rotation_ce(rot[b - n : side_len], n)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()


def g_step(g, d, opt_g, z, n):
    b = z.shape[0]
    logits, rot = d(side(g(z), n))
    loss = -logits[:b].mean() + 0.2 * rotation_ce(rot[b - n :], n)
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()


def timed_steps(step, warmup, steps, batch):
    """Runs `warmup` untimed and `steps` timed calls of `step` and summarises the times."""
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "implementation": "pytorch",
        "torch_version": torch.__version__,
        "images_per_second": batch / median,
        "step_seconds_median": median,
        "step_seconds_min": min(seconds),
        "step_seconds_max": max(seconds),
    }


def check_fused_upsample():
    diffs = []
    for k in (3, 1):
        conv = nn.Conv2d(5, 4, k, padding=k // 2).double()
        x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
        fused = upsampled_conv(conv, x, True)
        diffs.append((upsampled_conv(conv, x, False) - fused).abs().max().item())
    print(json.dumps({"fused_upsample_max_abs_diff": max(diffs)}))
    assert max(diffs) < 1e-12, diffs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ch", type=int, default=128, help="discriminator width; G is 2*ch")
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--rotated", type=int, default=64, help="rotated batch size (4 * n)")
    parser.add_argument("--n-dis", type=int, default=2, help="D steps per G step")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument(
        "--fused-upsample",
        action="store_true",
        help="run zero-insertion upsampling and conv as one transposed conv",
    )
    parser.add_argument("--check", action="store_true", help="check the fused form and exit")
    args = parser.parse_args()
    GeneratorBlock.fused = args.fused_upsample
    if args.check:
        check_fused_upsample()
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.rotated // 4
    g, d = resnet32(args.ch)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.0, 0.9), eps=1e-8)
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.9), eps=1e-8)

    def step():
        for _ in range(args.n_dis):
            d_step(g, d, opt_d, torch.rand(args.batch, 3, 32, 32), torch.rand(args.batch, 128) * 2 - 1, n)
        d.requires_grad_(False)
        g_step(g, d, opt_g, torch.rand(args.batch, 128) * 2 - 1, n)
        d.requires_grad_(True)

    result = {
        **timed_steps(step, args.warmup, args.steps, args.batch),
        "batch_size": args.batch,
        "rotated_batch_size": args.rotated,
        "n_dis": args.n_dis,
        "generator_width": 2 * args.ch,
        "discriminator_width": args.ch,
        "threads": torch.get_num_threads(),
        "fused_upsample": args.fused_upsample,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
