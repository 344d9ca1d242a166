"""LoRA dropout on CPU, drawn with fewer random numbers than ``nn.Dropout``.

torch's CPU dropout draws one Bernoulli sample per element through a scalar generator
call, and a LoRA layer applies dropout to its input on every projection, so on a CPU
the draws are a visible part of a training step. Two cheaper draws, same distribution:

* :class:`FastDropout` replaces ``nn.Dropout`` where peft's own forward still runs: one
  64-bit random draw feeds four 15-bit words;
* :func:`drop_positions` draws only the positions that are dropped (about ``p * n``
  uniforms), for the torch path of :mod:`backend.training.cpu.lora`;
* :func:`draw_seed` seeds the native hashed mask (:mod:`backend.training.cpu.native`).

All of them take their randomness from torch's default generator, so ``torch.manual_seed``
and a checkpoint's saved RNG state reproduce the masks.
"""

from __future__ import annotations

import math

import torch


class FastDropout(torch.nn.Module):
    """A drop-in for ``nn.Dropout`` on CPU that draws its mask from 15-bit random words.

    One 64-bit random draw feeds four 15-bit words (low 15 bits of each int16 lane), so
    the generator runs a quarter as often. The drop probability becomes
    ``round(p * 32768) / 32768`` (0.05 -> 0.049988) and the kept values are scaled by
    ``1 / (1 - that)``, so the expectation stays exact.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.threshold = round(self.p * 32768)
        self.scale = 32768 / (32768 - self.threshold) if self.threshold < 32768 else 0.0

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x):
        if not self.training or self.threshold == 0:
            return x
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        lanes = words.view(torch.int16)[:n].view(x.shape)
        keep = torch.bitwise_and(lanes, 0x7FFF) >= self.threshold
        return x.mul(keep).mul_(self.scale)


def use_fast_lora_dropout(model) -> int:
    """Swap peft's LoRA dropout modules for :class:`FastDropout` ones. Dropout has no
    parameters, so the adapter files are unchanged. Returns the count."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for key, layer in list(dropouts.items()):
            if type(layer) is torch.nn.Dropout and layer.p > 0:
                dropouts[key] = FastDropout(layer.p)
                swapped += 1
    return swapped


def drop_positions(n: int, p: float, device=None):
    """Sorted flat indices of the elements that i.i.d. Bernoulli(``p``) dropout drops
    among ``n``: the gaps between drops are geometric, ``floor(ln U / ln(1 - p))``, so
    only about ``p * n`` uniforms are drawn. ``U`` is ``(k + 1) / 2^31`` for a 31-bit
    random ``k``; the largest gap that can be drawn is then 418 at ``p = 0.05``, a
    truncation of the geometric tail of ``0.95^419 < 1e-9``."""
    if p <= 0 or n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if p >= 1:
        return torch.arange(n, device=device)
    log_keep = math.log1p(-p)
    parts, start = [], 0
    while start < n:
        left = n - start
        count = int(left * p + 8 * math.sqrt(left * p * (1 - p)) + 64)
        words = torch.empty(count, dtype=torch.int32, device=device).random_(0, 2**31)
        gaps = words.to(torch.float64).add_(1).mul_(2.0**-31).log_().div_(log_keep).floor_()
        positions = gaps.add_(1).cumsum_(0).add_(start - 1).to(torch.int64)
        inside = int(torch.searchsorted(positions, n))
        parts.append(positions[:inside])
        if inside < count:
            break
        start = int(positions[-1]) + 1
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def draw_seed() -> int:
    """A seed (63 bits) for the native hashed dropout mask, from torch's default generator."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
