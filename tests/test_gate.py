"""The quality gate on real bundled digits: an untrained model fails the bounds in the repository's
params.yaml, a threshold edit changes the outcome, and a failed gate leaves the published version as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cyclegan_core import pipeline
from cyclegan_core.config import config_from_dict
from cyclegan_core.default_data import render_digit, typed_fonts
from cyclegan_core.gate import GateFailed
from tests.conftest import write_collection

REPO = Path(__file__).resolve().parents[1]
N, N_TEST = 150, 60


def bundled_subset(root: Path) -> tuple[Path, Path]:
    """A small subset of the bundled demo data, made the way ``cycleaug default-data`` makes it:
    scanned 8x8 handwritten digits (A) and typed digits rendered at 32x32 (B), labelled."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = [np.round(img * 255 / 16).astype(np.uint8) for img in digits.images[:N]]
    a = write_collection(root / "A", scans, [int(t) for t in digits.target[:N]], N_TEST, "hand_")
    rng = np.random.default_rng(0)
    fonts = typed_fonts()
    typed = [render_digit(i % 10, fonts[i % len(fonts)], 32, rng) for i in range(N)]
    b = write_collection(root / "B", typed, [i % 10 for i in range(N)], N_TEST, "typed_")
    return a, b


def repo_params(tmp_path: Path, a: Path, b: Path) -> dict:
    """The repository's params.yaml as it is (model, validate bounds), on the subset, barely trained."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["data"].update(domain_a=str(a), domain_b=str(b))
    raw["train"].update(steps=2)  # an untrained model
    raw["runtime"].update(checkpoint_every=1000, log_every=1)
    raw["utility"].update(steps=40, seeds=2)
    raw["paths"] = {k: (str(tmp_path / "work" / k) if not k.endswith("_url") else None) for k in raw["paths"]}
    return raw


def _published(cfg) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in Path(cfg.paths.published).rglob("*") if p.is_file()}


@pytest.mark.slow
def test_untrained_model_fails_the_real_bounds_and_an_edit_changes_the_outcome(tmp_path):
    torch.set_num_threads(1)  # the suite runs on 2 shared cores; one thread avoids oversubscription
    raw = repo_params(tmp_path, *bundled_subset(tmp_path / "raw"))
    strict = raw["validate"]
    assert strict["run"]["AtoB"]["min_mean_cycle_psnr"] > 0 and strict["run"]["BtoA"]["min_label_accuracy"] > 0

    # With every bound relaxed, the same untrained model passes and is published.
    relaxed = json.loads(json.dumps(raw))
    relaxed["validate"]["sample"] = {"AtoB": {}, "BtoA": {}}
    relaxed["validate"]["run"] = {"AtoB": {}, "BtoA": {}}
    relaxed["utility"]["run"] = {"AtoB": {}, "BtoA": {}}
    cfg = config_from_dict(relaxed)
    pipeline.step_ingest(cfg)
    pipeline.step_train(cfg)
    pipeline.step_generate(cfg)
    assert pipeline.step_validate(cfg).passed
    published = pipeline.step_publish(cfg)
    assert published.rows == {"AtoB": N, "BtoA": N}
    before = _published(cfg)

    # The repository's bounds: the untrained model fails in both directions.
    cfg = config_from_dict(raw)
    result = pipeline.step_validate(cfg)
    assert not result.passed
    failed = "\n".join(result.failures)
    for direction in ("AtoB", "BtoA"):
        fig = result.figures[direction]
        bound = raw["validate"]["run"][direction]["min_mean_cycle_psnr"]
        assert fig["mean_cycle_psnr"] < bound
        assert f"{direction}.mean_cycle_psnr = {fig['mean_cycle_psnr']:.4g} < {bound} " \
               f"(validate.run.{direction}.min_mean_cycle_psnr)" in failed
        assert f"{direction}.label_accuracy = " in failed and fig["labelled"] == N_TEST
        # Per-sample bounds drop rows, and each drop is counted by the bound that dropped it.
        assert fig["dropped"] > 0 and fig["dropped_by"].get("cycle_psnr", 0) > 0
    with pytest.raises(GateFailed, match=r"quality gate failed, nothing published[^\n]*\n  - AtoB\."):
        pipeline.step_publish(cfg)
    assert _published(cfg) == before  # the previous version is untouched

    # A person sees the same in reports/.
    reports = Path(cfg.paths.reports)
    report = (reports / "report.md").read_text(encoding="utf-8")
    assert "Gate: FAILED" in report and all(f"`{f}`" in report for f in result.failures)
    assert json.loads((reports / "validation.json").read_text())["failures"] == result.failures
    # ... and only this run's figures: the published version's metrics and loss curves are not left beside them.
    assert not (reports / "metrics.json").exists() and not (reports / "losses.png").exists()
    assert (Path(cfg.paths.published) / "README.md").exists()  # they live on in the published card

    # Editing one threshold changes the outcome: lower every bound the run failed to just under its value.
    edited = json.loads(json.dumps(raw))
    for direction in ("AtoB", "BtoA"):
        fig = result.figures[direction]
        run = edited["validate"]["run"][direction]
        run["min_mean_cycle_psnr"] = round(fig["mean_cycle_psnr"] - 0.01, 2)
        run["min_label_accuracy"] = 0.0
        run["min_mean_cycle_ssim"] = -1.0
        run["min_mean_realism"] = 0.0
        run["max_fid_domain"] = run["max_kid_domain"] = None
        run["min_pass_rate"] = 0.0
    cfg = config_from_dict(edited)
    again = pipeline.step_validate(cfg)
    assert again.passed, again.failures
    above = round(result.figures["BtoA"]["mean_cycle_psnr"] + 0.01, 2)
    edited["validate"]["run"]["BtoA"]["min_mean_cycle_psnr"] = above
    cfg = config_from_dict(edited)
    once_more = pipeline.step_validate(cfg)
    assert [f.split(" ")[0] for f in once_more.failures] == ["BtoA.mean_cycle_psnr"]
