"""Pure metrics on uint8 images and score arrays: no models, no files.

- cycle reconstruction: per-sample L1 and PSNR (:func:`cycle_errors`), SSIM (:func:`ssim`, Gaussian
  window 11, sigma 1.5, the Wang et al. 2004 settings, via ``kornia.metrics.ssim``);
- distribution distances: Frechet distance (:func:`frechet_distance`) and the unbiased KID
  (:func:`kernel_inception_distance`, polynomial kernel, in the torch-fidelity manner) on features;
- conformal realism: a judge margin ranked among the margins of held-out real targets
  (:func:`conformal_realism`, mid-rank p-value, mean 0.5 for a real sample);
- the perturbation of the robust cycle score (:func:`perturb`: Gaussian noise, then JPEG).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

PSNR_CAP = 100.0


SSIM_WINDOW = 11


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def margins(logits: np.ndarray, target: int) -> np.ndarray:
    """The judge's margin for the target class: target logit minus the other's (two classes)."""
    return logits[:, target] - logits[:, 1 - target] if len(logits) else np.zeros(0)


def conformal_realism(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mid-rank conformal p-value of "is a reference sample": (#{ref < s} + #{ref = s} / 2 + 1/2) / (n + 1).

    For a sample exchangeable with the reference its expectation is exactly 0.5; it lies strictly
    between 0 and 1 (a bound of 0 or 1 is thus never met by accident). NaN without a reference.
    """
    if len(reference) == 0:
        return np.full(len(scores), np.nan)
    ref = np.sort(reference)
    below = np.searchsorted(ref, scores, side="left")
    ties = np.searchsorted(ref, scores, side="right") - below
    return (below + 0.5 * ties + 0.5) / (len(ref) + 1.0)


def leave_one_out_realism(reference: np.ndarray) -> float | None:
    """Mean realism of the reference samples themselves, each ranked among the others (0.5 by construction)."""
    n = len(reference)
    if n < 2:
        return None
    ref = np.sort(reference)
    below = np.searchsorted(ref, reference, side="left")
    ties = np.searchsorted(ref, reference, side="right") - below - 1  # minus the sample itself
    return float(np.mean((below + 0.5 * ties + 0.5) / n))


def cycle_errors(src: np.ndarray, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean absolute error and PSNR (dB, capped at 100) on [0, 1], uint8 (N, H, W, C) in."""
    a = src.astype(np.float64) / 255.0
    b = rec.astype(np.float64) / 255.0
    l1 = np.abs(a - b).mean(axis=(1, 2, 3))
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_CAP)
    return l1, np.minimum(psnr, PSNR_CAP)


def ssim(x: np.ndarray, y: np.ndarray, window: int = SSIM_WINDOW) -> np.ndarray:
    """Per-sample SSIM of uint8 (N, H, W, C) images on [0, 1], mean over the valid map and channels.

    ``kornia.metrics.ssim`` with a Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, no epsilon
    and "valid" padding: the settings of Wang et al. 2004 and of scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False, data_range=1)``.
    Images smaller than the window use the largest odd window that fits.
    """
    from kornia.metrics import ssim as kornia_ssim

    if len(x) == 0:
        return np.zeros(0)
    side = min(x.shape[1], x.shape[2])
    win = min(window, side if side % 2 else side - 1)
    out = []
    for start in range(0, len(x), 512):
        a = torch.from_numpy(np.ascontiguousarray(x[start:start + 512])).permute(0, 3, 1, 2).double() / 255.0
        b = torch.from_numpy(np.ascontiguousarray(y[start:start + 512])).permute(0, 3, 1, 2).double() / 255.0
        out.append(kornia_ssim(a, b, win, max_val=1.0, eps=0.0, padding="valid").mean(dim=(1, 2, 3)).numpy())
    return np.concatenate(out)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float | None:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula)."""
    if len(x) < 2 or len(y) < 2:
        return None
    from scipy import linalg

    mu1, mu2 = x.mean(0), y.mean(0)
    # A small ridge keeps the product invertible when features are few or partly constant
    # (ReLU units that never fire), the usual fix in FID code.
    eps = np.eye(x.shape[1]) * 1e-6
    s1, s2 = np.cov(x, rowvar=False) + eps, np.cov(y, rowvar=False) + eps
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return max(0.0, float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018)."""
    m, n, d = len(x), len(y), x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, subset_size: int = 1000, subsets: int = 100,
                              seed: int = 0) -> tuple[float, float, int] | None:
    """KID: mean and std of the unbiased MMD^2 over random subsets, and the subset size used.

    The subset size is ``min(subset_size, len(x), len(y))`` so small held-out sets still give a
    figure (as torch-fidelity and clean-fid do, but adapting instead of refusing); when a subset is
    the whole of both sets every subset is the same and one is computed.
    """
    n = min(subset_size, len(x), len(y))
    if n < 2:
        return None
    if n == len(x) == len(y):
        return mmd2_unbiased(x, y), 0.0, n
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(x[rng.choice(len(x), n, replace=False)], y[rng.choice(len(y), n, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals)), n


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """One (H, W, C) uint8 image (gray or RGB) through an in-memory JPEG at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format="JPEG", quality=quality)
    arr = np.asarray(Image.open(buf), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def perturb(images: np.ndarray, noise_std: float, jpeg_quality: int | None,
            seed: int | Sequence[int]) -> np.ndarray:
    """q(y): additive Gaussian noise of std ``noise_std`` on [0, 1], rounded, then JPEG at ``jpeg_quality``.

    uint8 (N, H, W, C) in and out, gray or RGB. The noise comes from ``np.random.default_rng(seed)``,
    so a seed always gives the same bytes; ``noise_std`` 0 and ``jpeg_quality`` None each skip a stage.
    """
    out = np.array(images, dtype=np.uint8, copy=True)
    if noise_std > 0:
        noise = np.random.default_rng(seed).normal(0.0, noise_std * 255.0, out.shape)
        out = np.clip(np.rint(out + noise), 0, 255).astype(np.uint8)
    if jpeg_quality is not None and len(out):
        out = np.stack([_jpeg(im, jpeg_quality) for im in out])
    return out
