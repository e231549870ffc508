"""The downstream-utility step: its statistics on sets whose value is known, a user's own model, the skip
without labels, and (slow) an untrained model's translations failing ``min_utility_gain`` so nothing is published."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cyclegan_core import pipeline
from cyclegan_core.classifiers import content_half
from cyclegan_core.config import ConfigError, config_from_dict
from cyclegan_core.default_data import render_digit, typed_fonts
from cyclegan_core.gate import GateFailed
from cyclegan_core.utility import ARMS, few_per_class, interval, measure_direction, model_factory
from tests.conftest import tiny_settings

CALLS: list[tuple] = []


def counting_model(channels: int, classes: int, height: int, width: int) -> nn.Module:
    """A user's factory (``utility.model: tests.test_utility:counting_model``)."""
    CALLS.append((channels, classes, height, width))
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, classes))


def _typed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    fonts = typed_fonts()
    labels = np.arange(n) % 10
    return np.stack([render_digit(int(k), fonts[i % len(fonts)], 32, rng)[:, :, None]
                     for i, k in enumerate(labels)]), labels


def _sets(published: tuple[np.ndarray, np.ndarray]) -> dict:
    real, test = _typed(400, 1), _typed(200, 2)
    return {"real": real, "published": published, "all": published, "source": published, "test": test}


def test_interval_adds_seed_and_test_set_variance():
    per_seed = np.array([0.5, 0.6, 0.7])
    per_sample = np.array([1.0, 0.0] * 50)
    iv = interval(per_seed, per_sample)
    se = np.sqrt(np.var(per_seed, ddof=1) / 3 + np.var(per_sample, ddof=1) / 100)
    assert iv["mean"] == pytest.approx(0.6)
    assert iv["high"] - iv["mean"] == pytest.approx(1.959964 * se, rel=1e-5)
    assert iv["seeds"] == [0.5, 0.6, 0.7]
    assert interval(np.array([0.8, 0.8]), np.array([1.0, 1.0]))["low"] == pytest.approx(0.8)


def test_few_per_class_draws_that_many_of_each_class_by_seed():
    labels = np.array([0] * 30 + [1] * 5 + [2] * 20)
    idx = few_per_class(labels, 10, seed=0)
    assert np.bincount(labels[idx]).tolist() == [10, 5, 10]
    assert not np.array_equal(idx, few_per_class(labels, 10, seed=1))
    assert np.array_equal(idx, few_per_class(labels, 10, seed=0))


def test_halves_are_stable_and_balanced():
    ids = [f"{i:064x}" for i in range(2000)]
    halves = [content_half(s, "test") for s in ids]
    assert halves == [content_half(s, "test") for s in ids]
    assert 0.45 < halves.count("evaluation") / len(ids) < 0.55
    assert {content_half(s, "train") for s in ids} == {"classifier", "judge"}


def _cfg(tmp_path: Path, **utility) -> object:
    raw = tiny_settings(tmp_path, tmp_path / "A", tmp_path / "B")
    raw["utility"] = {"steps": 120, "seeds": 2, "labels_per_class": 2, **utility}
    return config_from_dict(raw)


def test_helpful_translations_gain_and_noise_does_not(tmp_path):
    """Known answers: 'translations' that are real target images help the few-label classifier beyond the
    interval; pure noise with labels does not, so a bound of 0 on the lower end would fail it."""
    torch.set_num_threads(1)
    cfg = _cfg(tmp_path)
    good = measure_direction(cfg, _sets(_typed(400, 3)))
    assert set(ARMS) <= set(good)
    assert good["utility_gain"]["low"] > 0.05, good["utility_gain"]
    assert good["transfer_gain"]["mean"] == pytest.approx(0.0)  # sources are the same images here
    assert good["all_real"]["mean"] > good["few_real"]["mean"]
    assert len(good["utility_gain"]["per_class"]) == 10 and good["evaluated_on"] == 200
    rng = np.random.default_rng(0)
    noise = (rng.integers(0, 256, (400, 32, 32, 1), dtype=np.uint8), np.arange(400) % 10)
    bad = measure_direction(cfg, _sets(noise))
    assert bad["utility_gain"]["low"] < 0.0, bad["utility_gain"]
    assert bad["published_only"]["mean"] < 0.3


def test_a_users_model_factory_is_used_and_a_bad_one_is_a_clear_error(tmp_path):
    CALLS.clear()
    cfg = _cfg(tmp_path, model="tests.test_utility:counting_model", steps=5, seeds=1)
    out = measure_direction(cfg, _sets(_typed(40, 3)))
    assert CALLS and CALLS[0] == (1, 10, 32, 32) and len(CALLS) == len(ARMS)
    assert 0.0 <= out["few_real"]["mean"] <= 1.0
    with pytest.raises(ConfigError, match="utility.model='tests.nowhere:f': cannot import"):
        model_factory("tests.nowhere:f")


def test_collections_without_labels_skip_the_step_and_still_publish(tmp_path, collections):
    a, b = collections
    for folder in (a, b):
        (folder / "labels.csv").unlink()
    raw = tiny_settings(tmp_path / "work", a, b, utility={"run": {"AtoB": {"min_utility_gain": 0.5}}})
    cfg = config_from_dict(raw)
    for step in (pipeline.step_ingest, pipeline.step_train, pipeline.step_generate, pipeline.step_validate):
        step(cfg)
    result = pipeline.step_utility(cfg)
    assert not result.ran and result.passed
    assert "has no labels" in result.figures["AtoB"]["skipped"]
    assert pipeline.step_publish(cfg).rows["AtoB"] > 0
    report = (Path(cfg.paths.reports) / "report.md").read_text(encoding="utf-8")
    assert "not measured:" in report


@pytest.mark.slow
def test_untrained_translations_fail_min_utility_gain_and_publish_nothing(tmp_path):
    from tests.test_gate import bundled_subset, repo_params

    torch.set_num_threads(1)
    raw = repo_params(tmp_path, *bundled_subset(tmp_path / "raw"))
    raw["validate"]["sample"] = {"AtoB": {}, "BtoA": {}}
    raw["validate"]["run"] = {"AtoB": {}, "BtoA": {}}
    raw["utility"].update(steps=150, seeds=2)  # the repository's bounds
    cfg = config_from_dict(raw)
    for step in (pipeline.step_ingest, pipeline.step_train, pipeline.step_generate, pipeline.step_validate):
        step(cfg)
    result = pipeline.step_utility(cfg)
    assert result.ran and not result.passed
    bound = raw["utility"]["run"]["AtoB"]["min_utility_gain"]
    gain = result.figures["AtoB"]["utility_gain"]
    assert gain["low"] < bound
    assert (f"AtoB.utility_gain = {gain['mean']:+.3f} (95% interval {gain['low']:+.3f} to {gain['high']:+.3f}), "
            f"lower bound < {bound} (utility.run.AtoB.min_utility_gain)") in result.failures
    with pytest.raises(GateFailed, match=r"utility bounds failed, nothing published[^\n]*\n  - AtoB\.utility_gain"):
        pipeline.step_publish(cfg)
    assert not Path(cfg.paths.published).exists()
    reports = Path(cfg.paths.reports)
    doc = json.loads((reports / "utility.json").read_text())
    assert set(ARMS) <= set(doc["AtoB"]) and doc["passed"] is False
    assert (reports / "utility.png").exists()
    assert "Failed utility bounds" in (reports / "report.md").read_text(encoding="utf-8")


def test_training_sets_are_bounded_draws_by_sample_id(tmp_path, collections):
    """Sets larger than ``utility.max_train_samples`` (``max_eval_samples``) are drawn by sample id, the same
    whatever the order; within the bounds a set is whole and decodes to the arrays of the whole tables."""
    from cyclegan_core.generate import read_generated
    from cyclegan_core.images import decode_png
    from cyclegan_core.ingest import manifest_images, read_manifest
    from cyclegan_core.utility import _direction_sets, bounded_sample

    ids = [f"{i:064x}" for i in range(100)]
    drawn = bounded_sample(ids, 10, "s")
    assert len(drawn) == 10 and list(drawn) == sorted(drawn)
    again = bounded_sample(ids[::-1], 10, "s")
    assert sorted(ids[::-1][i] for i in again) == sorted(ids[i] for i in drawn)
    assert not np.array_equal(drawn, bounded_sample(ids, 10, "t"))
    assert np.array_equal(bounded_sample(ids, 100, "s"), np.arange(100))

    raw = tiny_settings(tmp_path / "work", *collections)
    cfg = config_from_dict(raw)
    for step in (pipeline.step_ingest, pipeline.step_train, pipeline.step_generate, pipeline.step_validate):
        step(cfg)
    manifests = {d: pipeline.manifest_path(cfg, d) for d in ("A", "B")}
    whole = _direction_sets(cfg, "AtoB", cfg.paths.generated, cfg.paths.validated, manifests)
    gen = read_generated(cfg.paths.generated, "AtoB")
    assert np.array_equal(whole["all"][0], np.stack([decode_png(b) for b in gen.column("image").to_pylist()]))
    assert np.array_equal(whole["real"][0], manifest_images(read_manifest(manifests["B"], ("train",))))
    assert len(whole["published"][0]) == len(whole["source"][0]) > 5 and len(whole["test"][0]) >= 1
    capped = config_from_dict({**raw, "utility": {**raw["utility"], "max_train_samples": 5, "max_eval_samples": 2}})
    sets = _direction_sets(capped, "AtoB", cfg.paths.generated, cfg.paths.validated, manifests)
    assert {k: len(sets[k][0]) for k in sets} == {"real": 5, "published": 5, "all": 5, "source": 5,
                                                  "test": min(2, len(whole["test"][0]))}
    for k in ("all", "published", "real"):  # each drawn sample is one of the whole set's, with its label
        label_of = {x.tobytes(): y for x, y in zip(*whole[k], strict=True)}
        assert all(label_of[x.tobytes()] == y for x, y in zip(*sets[k], strict=True))


def test_report_pictures_read_only_the_rows_they_show(tmp_path):
    from cyclegan_core.generate import read_generated
    from cyclegan_core.report import generated_rows
    from tests._published import synthetic_inputs

    gen, _ = synthetic_inputs(tmp_path, 300, size=8)
    table = read_generated(gen, "AtoB")
    wanted = set(table.column("sample_id").to_pylist()[::37])
    rows = generated_rows(gen, "AtoB", wanted, ["image"])
    assert {r["sample_id"] for r in rows} == wanted and len(rows) == len(wanted)
    by_id = dict(zip(table.column("sample_id").to_pylist(), table.column("image").to_pylist(), strict=True))
    assert all(r["image"] == by_id[r["sample_id"]] for r in rows)
