"""The validation metrics against known values and independent computations, and the report pieces."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from cyclegan_core.config import ConfigError, RunThresholds, SampleThresholds
from cyclegan_core.gate import run_failures, sample_failures
from cyclegan_core.judges import inception_features, load_inception
from cyclegan_core.metrics import (
    conformal_realism,
    cycle_errors,
    frechet_distance,
    kernel_inception_distance,
    mmd2_unbiased,
    ssim,
)
from cyclegan_core.report import epoch_curves, markdown_report


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 SSIM as scikit-image computes it (gaussian_weights=True, sigma 1.5, truncate 3.5,
    use_sample_covariance=False, data_range 1), written independently with scipy on 2-D float images."""
    from scipy.ndimage import gaussian_filter

    def filt(a):
        return gaussian_filter(a, sigma=1.5, truncate=3.5, mode="reflect")

    c1, c2 = 0.01**2, 0.03**2
    ux, uy = filt(x), filt(y)
    vx, vy, vxy = filt(x * x) - ux * ux, filt(y * y) - uy * uy, filt(x * y) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = 5  # (window 11 - 1) / 2: the border is left out, as skimage does
    return float(s[pad:-pad, pad:-pad].mean())


def test_ssim_matches_known_values_and_an_independent_implementation():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    assert np.allclose(ssim(x, x), 1.0, atol=1e-12)

    # Two flat images: only the luminance term is left, (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.2, 0.6
    fa = np.full((1, 16, 16, 1), round(a * 255), np.uint8)
    fb = np.full((1, 16, 16, 1), round(b * 255), np.uint8)
    a, b = round(a * 255) / 255, round(b * 255) / 255
    assert ssim(fa, fb)[0] == pytest.approx((2 * a * b + 1e-4) / (a * a + b * b + 1e-4), abs=1e-12)

    # Natural-ish content: a digit against its blurred, noised self.
    from sklearn.datasets import load_digits

    digit = np.kron(load_digits().images[0], np.ones((4, 4))) / 16.0
    noisy = np.clip(digit + rng.normal(0, 0.1, digit.shape), 0, 1)
    u8 = [np.round(im * 255).astype(np.uint8) for im in (digit, noisy, 1 - digit)]
    ours = ssim(np.stack([u8[0], u8[0]])[..., None], np.stack([u8[1], u8[2]])[..., None])
    ref = [_ssim_reference(u8[0] / 255.0, u8[i] / 255.0) for i in (1, 2)]
    assert ours == pytest.approx(ref, abs=1e-9)
    assert 0.2 < ours[0] < 0.95 and ours[1] < 0  # inverted content anti-correlates

    # RGB averages channels; images smaller than the window still get a figure.
    rgb = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.allclose(ssim(rgb, rgb), 1.0) and ssim(rgb, 255 - rgb).max() < 0.5


def test_cycle_errors_psnr_l1():
    x = np.zeros((2, 8, 8, 1), np.uint8)
    y = x.copy()
    y[0] = 51  # 0.2 everywhere: MSE 0.04 -> PSNR 13.98 dB, L1 0.2
    l1, psnr = cycle_errors(x, y)
    assert l1 == pytest.approx([0.2, 0.0]) and psnr[0] == pytest.approx(10 * math.log10(1 / 0.04))
    assert psnr[1] == 100.0  # identical images are capped, not infinite


def test_kid_is_the_unbiased_polynomial_mmd_and_adapts_its_subset():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(9, 5)) + 0.3

    def k(a, b):
        return (a @ b / 5 + 1) ** 3

    brute = (sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
             + sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / 72
             - 2 * sum(k(a, b) for a in x for b in y) / 63)
    assert mmd2_unbiased(x, y) == pytest.approx(brute, rel=1e-12)

    same = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), subset_size=100)
    shifted = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 1.0,
                                        subset_size=100)
    assert abs(same[0]) < 3 * same[1] + 1e-3 and shifted[0] > 10 * abs(same[0]) and same[2] == 100
    # Fewer samples than the subset size: the subset shrinks to the smaller set.
    small = kernel_inception_distance(rng.normal(size=(30, 8)), rng.normal(size=(50, 8)), subset_size=1000)
    assert small[2] == 30 and small[1] > 0
    whole = kernel_inception_distance(x, y[:7], subset_size=1000)
    assert whole == (pytest.approx(mmd2_unbiased(x, y[:7])), 0.0, 7)
    assert kernel_inception_distance(x[:1], y) is None


def test_frechet_distance_known_shift():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20000, 3))
    y = rng.normal(size=(20000, 3)) + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(x, y) == pytest.approx(5.0, rel=0.03)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-4)
    assert frechet_distance(x[:1], y) is None


def test_conformal_realism_is_uniform_on_real_targets_and_ranks_translations():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=999)
    assert conformal_realism(np.array([-10.0, 10.0]), reference) == pytest.approx([0.5 / 1000, 999.5 / 1000])
    assert conformal_realism(np.array([np.median(reference)]), reference)[0] == pytest.approx(0.5, abs=0.002)
    # Fresh real samples from the same distribution: realism is uniform, mean 0.5, 10th percentile 0.1.
    fresh = conformal_realism(rng.normal(size=20000), reference)
    # (the 999-sample reference is itself random: its empirical CDF is off by up to a few percent)
    assert fresh.mean() == pytest.approx(0.5, abs=0.03) and np.percentile(fresh, 10) == pytest.approx(0.1, abs=0.03)
    # Less target-like samples score lower; no reference gives NaN (not a silent pass or fail).
    assert conformal_realism(rng.normal(size=2000) - 1.0, reference).mean() < 0.3
    assert np.isnan(conformal_realism(np.array([0.0]), np.zeros(0))).all()


def test_sample_and_run_failures_name_figure_value_and_bound():
    m = {"cycle_l1": 0.3, "cycle_psnr": 10.0, "cycle_ssim": 0.2, "identity_l1": 0.5, "realism": 0.1,
         "label_ok": False}
    assert sample_failures(m, SampleThresholds()) == []
    t = SampleThresholds(min_cycle_psnr=12, max_cycle_l1=0.2, min_cycle_ssim=0.5, max_identity_l1=0.4,
                         min_realism=0.2, require_label_ok=True)
    assert [f.split(" ")[0] for f in sample_failures(m, t)] == [
        "cycle_psnr", "cycle_l1", "cycle_ssim", "identity_l1", "realism", "label_ok"]

    fig = {"mean_cycle_psnr": 20.0, "mean_cycle_ssim": 0.8, "mean_realism": 0.6, "label_accuracy": 0.7,
           "labelled": 10, "pass_rate": 0.95, "fid_domain_features": 3.0, "kid_domain_features": 0.2,
           "fid_inception": None}
    assert run_failures("AtoB", fig, RunThresholds()) == []
    out = run_failures("AtoB", fig, RunThresholds(min_mean_cycle_ssim=0.9, max_fid_domain=2.5,
                                                  max_kid_domain=0.1, max_fid_inception=10.0))
    assert out == [
        "AtoB.mean_cycle_ssim = 0.8 < 0.9 (validate.run.AtoB.min_mean_cycle_ssim)",
        "AtoB.fid_domain_features = 3 > 2.5 (validate.run.AtoB.max_fid_domain)",
        "AtoB.kid_domain_features = 0.2 > 0.1 (validate.run.AtoB.max_kid_domain)",
        "AtoB.fid_inception: not measured (no held-out samples or no feature extractor), bound 10.0 "
        "(validate.run.AtoB.max_fid_inception)",
    ]


class _StubInception(torch.nn.Module):
    """Same call convention as NVIDIA's TorchScript inception-2015-12-05.pt: float [0, 255] NCHW in."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        f = torch.nn.functional.adaptive_avg_pool2d(x / 255.0, 4).flatten(1)
        return f if return_features else f.sum(1)


def test_inception_weights_are_local_only(tmp_path):
    assert load_inception(None) is None
    missing = tmp_path / "nowhere" / "inception-2015-12-05.pt"
    with pytest.raises(ConfigError, match=r"validate.inception_weights: .*nowhere.*file not found"):
        load_inception(str(missing))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a TorchScript model"):
        load_inception(str(junk))
    path = tmp_path / "stub.pt"
    torch.jit.script(_StubInception()).save(str(path))
    model = load_inception(str(path))
    feats = inception_features(model, np.zeros((5, 16, 16, 1), np.uint8))
    assert feats.shape == (5, 48)  # gray is repeated to 3 channels, as Inception expects


def test_epoch_curves_average_the_logged_steps(tmp_path):
    src = tmp_path / "losses.tsv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["step", "lr", "G_AB", "D_A"])
        for step in range(5, 55, 5):  # 10 rows, steps 5..50
            w.writerow([step, 0.001, step, 1.0])
    # 100 samples at batch 5: 20 steps per epoch -> epochs of steps 1-20, 21-40, 41-50 (half).
    epoch_curves(src, tmp_path / "epoch.tsv", samples_per_epoch=100, batch_size=5)
    with open(tmp_path / "epoch.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [float(r["G_AB"]) for r in rows] == [12.5, 32.5, 47.5]
    assert [r["step"] for r in rows] == ["20", "40", "50"] and float(rows[2]["fraction"]) == 0.5


def test_markdown_report_states_the_gate_and_each_failure():
    fig = {"generated": 10, "passed": 9, "dropped": 1, "held_out": 4, "pass_rate": 0.75, "mean_cycle_psnr": 18.2,
           "p10_cycle_psnr": 15.0, "dropped_by": {"cycle_psnr": 1}, "label_accuracy": None}
    failure = "AtoB.mean_cycle_psnr = 18.2 < 19.0 (validate.run.AtoB.min_mean_cycle_psnr)"
    summary = {"passed": False, "failures": [failure], "directions": {"AtoB": fig, "BtoA": fig}}
    text = markdown_report(summary)
    assert "Gate: FAILED" in text and "`AtoB.mean_cycle_psnr = 18.2 < 19.0" in text
    assert "| cycle PSNR dB, mean (p10) | 18.20 (15.00) | 18.20 (15.00) |" in text
    assert "| label accuracy: translations | n/a | n/a |" in text and "cycle_psnr 1" in text
    assert "Gate: passed" in markdown_report({**summary, "passed": True, "failures": []})
