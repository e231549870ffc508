"""Small image classifiers and the stable content-hash splits that keep their training samples apart.

Three kinds of classifier look at the same collections, and none may be trained on what another is
judged by:
- the *semantic classifier* of label-aware training (``train.semantic``), trained on the
  ``"classifier"`` half of each domain's training samples;
- validation's *label judge*, trained on the ``"judge"`` half of the target domain's training samples;
- the utility step's *downstream classifiers*, trained on real, translated or untranslated samples and
  tested on the ``"evaluation"`` half of the held-out samples, which validation never sees (it
  calibrates realism and measures FID/KID on the ``"calibration"`` half).
The halves are fixed by each sample's content hash, so they do not move when a collection grows.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import nn

from .images import to_tensor

# purpose -> the names of its two halves (index 0, index 1)
HALVES = {"train": ("classifier", "judge"), "test": ("calibration", "evaluation")}


def content_half(sample_id: str, split: str) -> str:
    """Which half of its split a sample is in, stably by content hash: see :data:`HALVES`."""
    h = hashlib.sha256(f"cycleaug-half:{split}:{sample_id}".encode()).digest()[0]
    return HALVES[split][h & 1]


def half_mask(sample_ids: list[str], split: str, half: str) -> np.ndarray:
    """Boolean mask of the samples (all of ``split``) that are in ``half``."""
    return np.asarray([content_half(s, split) == half for s in sample_ids], dtype=bool)


class SmallCNN(nn.Module):
    """A small convolutional classifier; ``features`` is its 128-d penultimate layer.

    The 4x4 adaptive pool keeps where strokes are (a digit is its layout), at any input size.
    ``blur_sigma`` > 0 puts a fixed Gaussian blur in front, part of the model, so training and
    scoring see the same thing.
    """

    FEATURES = 128

    def __init__(self, channels: int, classes: int, blur_sigma: float = 0.0):
        super().__init__()
        self.blur_sigma = float(blur_sigma)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, self.FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(self.FEATURES, classes)

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur_sigma <= 0:
            return x
        from kornia.filters import gaussian_blur2d

        radius = max(1, math.ceil(3 * self.blur_sigma))
        # "replicate" keeps the background level at the border (reflect would too; zeros would not).
        return gaussian_blur2d(x, (2 * radius + 1, 2 * radius + 1), (self.blur_sigma, self.blur_sigma),
                               border_type="replicate")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prep(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


BATCH_PIXELS = 64 * 64 * 64  # a classifier batch holds at most this many pixels (64 pictures of 64x64)


def batch_rows(height: int, width: int) -> int:
    """Pictures in a classifier training batch: 64, or as many as :data:`BATCH_PIXELS` allows (at least 4)."""
    return max(4, min(64, BATCH_PIXELS // (height * width)))


def train_classifier(images: np.ndarray, labels: np.ndarray, classes: int, epochs: int, seed: int,
                     blur_sigma: float = 0.0, noise_std: float = 0.0, max_steps: int | None = None) -> SmallCNN:
    """Fit a :class:`SmallCNN` on uint8 images (N, H, W, C) with small shifts as augmentation: ``epochs``
    passes in batches of :func:`batch_rows` (64 up to 64x64 pixels, fewer for larger pictures, so the
    activations' memory is bounded whatever the picture size), stopped after ``max_steps`` batches when that
    comes first.

    ``noise_std`` > 0 adds Gaussian pixel noise (on the [-1, 1] scale) to every batch: the semantic
    classifier of label-aware training uses it so that a generator cannot satisfy it with faint
    patterns a person would not see.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallCNN(images.shape[3], classes, blur_sigma)
    y = torch.as_tensor(labels, dtype=torch.long)  # images stay uint8: each batch is converted as it is drawn
    # Balance classes so a large domain does not make the judge lazy.
    counts = torch.bincount(y, minlength=classes).clamp(min=1).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (classes * counts))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    pad = max(1, images.shape[1] // 16)
    steps, rows = 0, batch_rows(images.shape[1], images.shape[2])
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), rows):
            if max_steps is not None and steps >= max_steps:
                return net.eval()
            steps += 1
            idx = order[start:start + rows]
            dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
            batch = torch.roll(to_tensor(images[idx.numpy()]), shifts=(dy, dx), dims=(2, 3))
            if noise_std > 0:
                batch = batch + noise_std * torch.randn(batch.shape, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss_fn(net(batch), y[idx]).backward()
            opt.step()
    return net.eval()
