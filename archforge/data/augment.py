"""Light data augmentation on whole batches of tensors, on the training device.

No per-sample Python: a batch of ``B`` images is shifted by per-sample random offsets
with one ``gather`` (random crop of the zero-padded image, the classic CIFAR/MNIST
augmentation) and optionally mirrored with one ``where``. Images are already
normalised, so the padding uses each channel's normalised black, ``-mean / std``
(what zero-padding the raw image gives).

Horizontal flipping is off by default: it turns a handwritten 2 into something that is
not a 2. Turn it on for natural images (``AugmentConfig(hflip=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class AugmentConfig:
    """``crop_padding``: maximum shift in pixels (0 disables); ``hflip``: mirror half the images."""

    crop_padding: int = 2
    hflip: bool = False

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip


def default_augment(input_shape: Sequence[int]) -> AugmentConfig:
    """Shift by up to 1/8 of the image side (8×8 → 1, 28×28 → 3, 32×32 → 4 pixels); no flip."""
    side = min(int(input_shape[-2]), int(input_shape[-1]))
    return AugmentConfig(crop_padding=max(1, side // 8), hflip=False)


class BatchAugment:
    """Callable applying an :class:`AugmentConfig` to ``(B, C, H, W)`` batches with its own RNG.

    The generator lives on ``device`` and is seeded with ``seed``, so the sequence of
    augmentations is reproducible and independent of the global RNG.
    """

    def __init__(self, config: AugmentConfig, mean: Sequence[float], std: Sequence[float], *, device: torch.device | str = "cpu", seed: int = 0):
        self.config = config
        self.device = torch.device(device)
        self.fill = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.crop_padding > 0:
            x = random_shift(x, self.config.crop_padding, self.fill.to(x.dtype), self.generator)
        if self.config.hflip:
            x = random_hflip(x, self.generator)
        return x


def random_shift(x: torch.Tensor, padding: int, fill: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop of the ``padding``-padded batch at the original size: a shift of ``-p..p`` pixels per sample."""
    b, c, h, w = x.shape
    p = padding
    hp, wp = h + 2 * p, w + 2 * p
    padded = fill.expand(b, c, hp, wp).clone()
    padded[:, :, p:p + h, p:p + w] = x
    offsets = torch.randint(0, 2 * p + 1, (2, b), device=x.device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(padded.view(b, c, hp * wp), 2, index).view(b, c, h, w)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half (in expectation) of the batch left-right."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
