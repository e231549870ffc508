"""The robust cycle score F(q(G(x))): a generator that hides its source in a faint signal of the
translation (Chu et al. 2017) passes the plain cycle bound and fails the robust one; honest ones do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from cyclegan_core import pipeline
from cyclegan_core.config import RunThresholds, SampleThresholds, config_from_dict
from cyclegan_core.gate import run_failures, sample_failures
from cyclegan_core.generate import GENERATED_SCHEMA
from cyclegan_core.images import encode_png, to_tensor, to_uint8
from cyclegan_core.ingest import manifest_images, read_manifest
from cyclegan_core.metrics import cycle_errors, perturb
from cyclegan_core.scoring import robust_cycle_psnr
from cyclegan_core.storage import sha256_bytes
from cyclegan_core.validate import read_validated, validate
from tests.conftest import tiny_settings

NOISE, JPEG = 8 / 255, 75


def _background(t: torch.Tensor) -> torch.Tensor:
    """A fixed target-like picture (a horizontal ramp) of ``t``'s shape."""
    return torch.linspace(-0.6, 0.6, t.shape[-1]).expand_as(t)


class Hide(nn.Module):
    """G_AB of a steganographic CycleGAN: the background plus the source at 2% amplitude (about +-2.5 grey levels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (_background(x) + 0.02 * x).clamp(-1, 1)


class Reveal(nn.Module):
    """G_BA that decodes :class:`Hide` exactly."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return ((y - _background(y)) / 0.02).clamp(-1, 1)


class Negate(nn.Module):
    """An honest, content-carrying translation: black and white swapped (``smooth``: then a 3x3 mean, lossy)."""

    def __init__(self, smooth: bool = False):
        super().__init__()
        self.smooth = smooth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = -x
        return nn.functional.avg_pool2d(y, 3, 1, 1, count_include_pad=False) if self.smooth else y


def _digits(channels: int = 1, n: int = 24) -> np.ndarray:
    from sklearn.datasets import load_digits

    imgs = np.stack([np.kron(np.round(im * 255 / 16), np.ones((2, 2))) for im in load_digits().images[:n]])
    return np.repeat(imgs.astype(np.uint8)[..., None], channels, axis=3)


@torch.inference_mode()
def _cycle(g: nn.Module, f: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored translation G(x) and reconstruction F(G(x)), uint8 as generate writes them."""
    y = to_uint8(g(to_tensor(x)))
    return y, to_uint8(f(to_tensor(y)))


def _plain_and_robust(g: nn.Module, f: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, rec = _cycle(g, f, x)
    ids = [f"s{i}" for i in range(len(x))]
    return cycle_errors(x, rec)[1], robust_cycle_psnr(f, x, y, ids, NOISE, JPEG, seed=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_perturb_is_seeded_noise_of_the_set_level_then_jpeg(channels):
    rng = np.random.default_rng(0)
    x = rng.integers(40, 216, (4, 32, 32, channels), dtype=np.uint8)  # away from 0/255: no clipping
    a = perturb(x, NOISE, None, seed=3)
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert np.array_equal(a, perturb(x, NOISE, None, seed=3)) and not np.array_equal(a, perturb(x, NOISE, None, 4))
    rms = np.sqrt(((a.astype(float) - x) ** 2).mean()) / 255
    assert rms == pytest.approx(NOISE, rel=0.05)  # the rounding adds 1/sqrt(12) levels, well inside this
    b = perturb(x, NOISE, JPEG, seed=3)
    assert b.dtype == np.uint8 and b.shape == x.shape and np.array_equal(b, perturb(x, NOISE, JPEG, seed=3))
    assert not np.array_equal(a, b)  # JPEG changed the noised bytes
    assert np.array_equal(perturb(x, 0.0, None, seed=3), x)  # both stages off: unchanged
    assert perturb(x[:0], NOISE, JPEG, seed=3).shape == (0, 32, 32, channels)


def test_hiding_generator_passes_the_plain_cycle_and_fails_the_robust_one():
    x = _digits()
    plain, robust = _plain_and_robust(Hide(), Reveal(), x)
    assert plain.min() > 25 and robust.max() < 10  # measured: plain ~27 dB, robust ~5.6 dB

    t = SampleThresholds(min_cycle_psnr=20, min_robust_cycle_psnr=20)
    for p, r in zip(plain, robust, strict=True):
        m = {"cycle_l1": 0.0, "cycle_psnr": float(p), "cycle_psnr_robust": float(r), "cycle_ssim": 1.0,
             "realism": 0.5}
        why = sample_failures(m, t)
        assert len(why) == 1 and why[0].startswith("cycle_psnr_robust ") and why[0].endswith(" < 20.0")
        assert sample_failures(m, SampleThresholds(min_cycle_psnr=20)) == []  # the plain bound alone is fooled

    fig = {"mean_cycle_psnr": float(plain.mean()), "mean_cycle_psnr_robust": float(robust.mean())}
    assert run_failures("AtoB", fig, RunThresholds(min_mean_cycle_psnr=20)) == []
    assert run_failures("AtoB", fig, RunThresholds(min_mean_cycle_psnr=20, min_mean_robust_cycle_psnr=20)) == [
        f"AtoB.mean_cycle_psnr_robust = {robust.mean():.4g} < 20.0 (validate.run.AtoB.min_mean_robust_cycle_psnr)"]


@pytest.mark.parametrize("channels", [1, 3])
def test_honest_generators_keep_their_robust_cycle(channels):
    x = _digits(channels)
    # Lossless translation both ways: the plain cycle is exact (capped); the robust one is only as low as
    # the perturbation itself (8/255 noise alone is 30 dB), far above a bound that stops the hiding one.
    plain, robust = _plain_and_robust(nn.Identity(), nn.Identity(), x)
    assert (plain == 100.0).all() and robust.min() > 25
    # A lossy translation that carries the content (inverted, smoothed on the way back): the robust cycle
    # stays within a fraction of a dB of the plain one.
    plain, robust = _plain_and_robust(Negate(), Negate(smooth=True), x)
    assert plain.mean() > 15 and np.abs(plain - robust).max() < 1.0
    t = SampleThresholds(min_robust_cycle_psnr=20)
    assert sample_failures({"cycle_l1": 0.0, "cycle_psnr": 100.0, "cycle_psnr_robust": 28.0, "cycle_ssim": 1.0,
                            "realism": 0.5}, t) == []


def test_unmeasured_robust_bounds_fail_by_name():
    m = {"cycle_l1": 0.0, "cycle_psnr": 30.0, "cycle_psnr_robust": None, "cycle_ssim": 1.0, "realism": 0.5}
    assert sample_failures(m, SampleThresholds()) == []  # off by default
    assert sample_failures(m, SampleThresholds(min_robust_cycle_psnr=20)) == [
        "cycle_psnr_robust not measured (validate had no model), bound 20.0"]
    fig = {"mean_cycle_psnr": 30.0, "mean_cycle_psnr_robust": None}
    assert run_failures("BtoA", fig, RunThresholds()) == []
    assert run_failures("BtoA", fig, RunThresholds(min_mean_robust_cycle_psnr=0.0)) == [
        "BtoA.mean_cycle_psnr_robust: not measured (no model or no held-out samples), bound 0.0 "
        "(validate.run.BtoA.min_mean_robust_cycle_psnr)"]


def _write_generated(cfg, g: nn.Module, f: nn.Module) -> None:
    """``generated/`` as generate writes it, made by the stand-in generators (AtoB: g then f; BtoA: f then g)."""
    for direction, domain, fwd, back in (("AtoB", "A", g, f), ("BtoA", "B", f, g)):
        man = read_manifest(pipeline.manifest_path(cfg, domain))
        src = manifest_images(man)
        out, rec = _cycle(fwd, back, src)
        rows = []
        for i, r in enumerate(man.to_pylist()):
            img = encode_png(out[i])
            rows.append({"sample_id": sha256_bytes(img), "direction": direction, "source_id": r["sample_id"],
                         "source_relpath": r["relpath"], "source_uri": r["uri"], "split": r["split"],
                         "label": r["label"], "source_image": r["image"], "image": img,
                         "reconstruction": encode_png(rec[i]), "model_fingerprint": "f" * 64,
                         "created_at": "2026-01-01T00:00:00+00:00"})
        folder = Path(cfg.paths.generated) / direction
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=GENERATED_SCHEMA), folder / "part-00000.parquet")


def _use_generators(monkeypatch, g: nn.Module, f: nn.Module) -> None:
    """What validate loads from ``model_dir``: the stand-ins instead of a trained model."""
    monkeypatch.setattr("cyclegan_core.models.load_generators",
                        lambda model_dir, device: (nn.ModuleDict({"G_AB": g, "G_BA": f}), {}))


def test_validate_scores_the_robust_cycle_and_the_gate_drops_the_hiding_model(tmp_path, collections, monkeypatch):
    torch.set_num_threads(1)
    bounds = {"sample": {"AtoB": {"min_cycle_psnr": 20.0, "min_robust_cycle_psnr": 20.0}},
              "run": {"AtoB": {"min_mean_cycle_psnr": 20.0, "min_mean_robust_cycle_psnr": 20.0}}}
    cfg = config_from_dict(tiny_settings(tmp_path / "work", *collections, validate=bounds))
    pipeline.step_ingest(cfg)
    _write_generated(cfg, Hide(), Reveal())
    _use_generators(monkeypatch, Hide(), Reveal())
    args = (cfg, pipeline.manifest_path(cfg, "A"), pipeline.manifest_path(cfg, "B"), cfg.paths.generated)

    result = validate(*args, tmp_path / "validated", model_dir=tmp_path / "model")
    rows = read_validated(tmp_path / "validated", "AtoB").to_pylist()
    assert min(r["cycle_psnr"] for r in rows) > 20 and max(r["cycle_psnr_robust"] for r in rows) < 10
    assert all(not r["passed"] and r["fail_reason"].startswith("cycle_psnr_robust ") for r in rows)
    fig = result.figures["AtoB"]
    assert fig["dropped_by"] == {"cycle_psnr_robust": len(rows)} and fig["mean_cycle_psnr"] > 20
    assert fig["p10_cycle_psnr_robust"] <= fig["p50_cycle_psnr_robust"] <= fig["p90_cycle_psnr_robust"] < 10
    assert result.failures == [f"AtoB.mean_cycle_psnr_robust = {fig['mean_cycle_psnr_robust']:.4g} < 20.0 "
                               "(validate.run.AtoB.min_mean_robust_cycle_psnr)"]
    schema = read_validated(tmp_path / "validated", "AtoB").schema.names
    assert schema[schema.index("cycle_psnr") + 1] == "cycle_psnr_robust"
    from cyclegan_core.storage import read_json

    summary = read_json(result.summary)
    assert summary["robust_cycle"] == {"noise_std": NOISE, "jpeg_quality": JPEG, "seed": 0, "measured": True}
    from cyclegan_core.report import markdown_report

    report = markdown_report(summary)
    assert f"| cycle PSNR dB through noise + JPEG, mean (p10) | {fig['mean_cycle_psnr_robust']:.2f} (" in report

    # The same rows scored again give the same figures (the noise is seeded per sample).
    again = validate(*args, tmp_path / "again", model_dir=tmp_path / "model")
    assert read_validated(tmp_path / "again", "AtoB").to_pylist() == rows and again.failures == result.failures

    # Without the model there is no figure: null in the table, and the set bounds fail by name.
    blind = validate(*args, tmp_path / "blind")
    assert all(r["cycle_psnr_robust"] is None for r in read_validated(tmp_path / "blind", "AtoB").to_pylist())
    assert blind.figures["AtoB"]["dropped_by"] == {"cycle_psnr_robust": len(rows)}
    assert blind.failures == ["AtoB.mean_cycle_psnr_robust: not measured (no model or no held-out samples), "
                              "bound 20.0 (validate.run.AtoB.min_mean_robust_cycle_psnr)"]

    # An honest (lossless) model under the same bounds passes: its robust cycle is the perturbation's own cost.
    _write_generated(cfg, nn.Identity(), nn.Identity())
    _use_generators(monkeypatch, nn.Identity(), nn.Identity())
    honest = validate(*args, tmp_path / "honest", model_dir=tmp_path / "model")
    assert honest.passed and honest.figures["AtoB"]["dropped"] == 0
    assert honest.figures["AtoB"]["p10_cycle_psnr_robust"] > 25
