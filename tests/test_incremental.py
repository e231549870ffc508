"""Nightly runs over collections that grow: rows are reused per source and model, new files are
translated alone, removed files leave the next version, and the model policy decides retraining."""

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cyclegan_core import pipeline
from cyclegan_core.config import config_from_dict
from cyclegan_core.images import encode_png
from tests.conftest import tiny_settings


def add_files(root: Path, start: int, count: int, split: str = "train") -> list[str]:
    """Add ``count`` real scanned digits (from index ``start``) to collection ``root``, with labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rels = []
    with open(root / "labels.csv", "a", newline="") as f:
        w = csv.writer(f)
        for i in range(start, start + count):
            rel = f"{split}/new_{i:04d}.png"
            img = np.round(digits.images[i] * 255 / 16).astype(np.uint8)[:, :, None]
            (root / rel).write_bytes(encode_png(img))
            w.writerow([rel, int(digits.target[i])])
            rels.append(rel)
    return rels


def published(cfg) -> pd.DataFrame:
    return pd.read_parquet(f"{cfg.paths.published}/data")


def version_diff(cfg) -> dict:
    return json.loads((Path(cfg.paths.reports) / "version_diff.json").read_text())


def shard_bytes(cfg) -> dict[str, bytes]:
    root = Path(cfg.paths.generated)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.parquet")}


@pytest.mark.slow
def test_growing_collection_translates_only_new_files(tmp_path, collections):
    a, b = collections
    cfg = config_from_dict(tiny_settings(tmp_path / "work", a, b))
    first = pipeline.run_all(cfg)
    assert first["generate"]["translated"] == {"AtoB": 24, "BtoA": 24}
    before = published(cfg)
    fp = first["train"]["fingerprint"]
    diff = version_diff(cfg)  # against nothing: every row is added
    assert diff["first_version"] and diff["directions"]["AtoB"]["added"]["total"] == 24

    # Nothing changed: nothing is trained or translated, and the shards are the same bytes.
    shards = shard_bytes(cfg)
    assert pipeline.step_train(cfg).reused
    again = pipeline.step_generate(cfg)
    assert again.translated == {"AtoB": 0, "BtoA": 0} and again.reused == {"AtoB": 24, "BtoA": 24}
    assert shard_bytes(cfg) == shards

    # Two new training files in A (2/18 = 11% <= retrain_growth 0.25) and one held-out file gone from B.
    new = add_files(a, 30, 2)
    gone = sorted((b / "test").glob("*.png"))[0]
    gone.unlink()
    second = pipeline.run_all(cfg)
    assert second["train"]["reused"] and second["train"]["fingerprint"] == fp
    assert second["generate"]["translated"] == {"AtoB": 2, "BtoA": 0}
    assert second["publish"]["rows"] == {"AtoB": 26, "BtoA": 23}
    diff = version_diff(cfg)  # the publish diffed itself against the version it replaced
    assert not diff["first_version"]
    assert diff["directions"]["AtoB"]["added"] == {"total": 2, "train": 2}
    assert diff["directions"]["AtoB"]["added_sources"] == sorted(
        r.source_id for r in published(cfg).itertuples() if r.source_uri.endswith(tuple(new)))
    assert diff["directions"]["BtoA"]["removed"] == {"total": 1, "test": 1}
    assert diff["directions"]["AtoB"]["unchanged"]["total"] == 24
    assert diff["directions"]["BtoA"]["changed"]["total"] == 0
    after = published(cfg)
    added = after[~after.sample_id.isin(before.sample_id)]
    assert len(added) == 2 and sorted(added.source_uri.str.rsplit("/", n=2).str[-2:].str.join("/")) == new
    assert set(after.model_fingerprint) == {fp}  # every row says which model made it
    removed = set(before.sample_id) - set(after.sample_id)
    assert len(removed) == 1 and before.set_index("sample_id").loc[removed.pop(), "source_uri"].endswith(gone.name)
    # Rows that stayed are the same rows (same translation, same time stamp).
    kept = before[before.sample_id.isin(after.sample_id)].set_index("sample_id").sort_index()
    cols = ["image", "created_at", "cycle_psnr"]
    assert kept[cols].equals(after.set_index("sample_id").loc[kept.index, cols])

    # A requested retrain trains on the current data and translates everything with the new model.
    third = pipeline.run_all(cfg, retrain=True)
    assert not third["train"]["reused"] and third["train"]["fingerprint"] != fp
    assert third["generate"]["translated"] == {"AtoB": 26, "BtoA": 23}
    assert set(published(cfg).model_fingerprint) == {third["train"]["fingerprint"]}
    diff = version_diff(cfg)  # a new model: every kept source's translation changed
    assert diff["directions"]["AtoB"]["changed"]["total"] == 26 and diff["directions"]["AtoB"]["added"]["total"] == 0


def test_retrain_policies(tmp_path, collections):
    a, b = collections
    raw = tiny_settings(tmp_path / "work", a, b)
    cfg = config_from_dict(raw)
    pipeline.step_ingest(cfg)
    trained = pipeline.step_train(cfg)
    add_files(a, 40, 6)  # 6 new of 18 training samples in A: 33%
    pipeline.step_ingest(cfg)

    def choice(**orchestrate):
        return pipeline.choose_model(config_from_dict({**raw, "orchestrate": orchestrate}))

    assert choice(retrain="on_growth", retrain_growth=0.25).train
    kept = choice(retrain="on_growth", retrain_growth=0.5)
    assert not kept.train and kept.fingerprint == trained.fingerprint and "A +6/-0" in kept.reason
    assert not choice(retrain="on_request").train
    on_change = choice(retrain="on_change")
    assert on_change.train and "on_change" in on_change.reason
    req = config_from_dict({**raw, "orchestrate": {"retrain": "on_request"}})
    assert pipeline.choose_model(req, retrain=True).train
    # Kept models translate: generation uses the model the policy chose.
    assert pipeline.current_model_dir(req).name == trained.fingerprint


def test_config_changes_retrain_or_regenerate(tmp_path, collections):
    raw = tiny_settings(tmp_path / "work", *collections)
    cfg = config_from_dict(raw)
    pipeline.step_ingest(cfg)
    trained = pipeline.step_train(cfg)
    pipeline.step_generate(cfg)

    # A generation setting that can change pixels: every row is translated again, nothing is trained.
    regen = config_from_dict({**raw, "generate": {**raw["generate"], "batch_size": 3}})
    assert pipeline.step_train(regen).reused
    result = pipeline.step_generate(regen)
    assert result.translated == {"AtoB": 24, "BtoA": 24} and result.model_fingerprint == trained.fingerprint
    # Only where rows go: resharded, nothing translated.
    reshard = config_from_dict({**raw, "generate": {**raw["generate"], "batch_size": 3, "shards": 3}})
    resharded = pipeline.step_generate(reshard)
    assert resharded.translated == {"AtoB": 0, "BtoA": 0} and len(resharded.shards["AtoB"]) == 3
    assert len(list((Path(reshard.paths.generated) / "AtoB").glob("*.parquet"))) == 3

    # A training setting: a new model is trained, whatever the growth policy.
    changed = config_from_dict({**raw, "train": {**raw["train"], "lr": 1e-4}})
    choice = pipeline.choose_model(changed)
    assert choice.train and "no stored model" in choice.reason
