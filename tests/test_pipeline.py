"""Each step on tiny real data, then the published shards read back with pandas and pyarrow."""

import json
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from cyclegan_core import pipeline
from cyclegan_core.config import config_from_dict
from cyclegan_core.gate import GateFailed
from cyclegan_core.images import decode_png
from cyclegan_core.publish import verify
from cyclegan_core.storage import sha256_bytes
from tests.conftest import tiny_settings


def test_steps_end_to_end(tiny_cfg):
    cfg = tiny_cfg
    ingested = pipeline.step_ingest(cfg)
    assert ingested["A"].samples == 24 and ingested["B"].samples == 24

    trained = pipeline.step_train(cfg)
    assert not trained.reused and trained.steps == 6
    again = pipeline.step_train(cfg)
    assert again.reused and again.fingerprint == trained.fingerprint and again.model_sha256 == trained.model_sha256

    generated = pipeline.step_generate(cfg)
    assert generated.rows == {"AtoB": 24, "BtoA": 24}

    validated = pipeline.step_validate(cfg)
    assert validated.passed
    fig = validated.figures["AtoB"]
    assert fig["held_out"] == 6 and fig["labelled"] == 6 and fig["mean_cycle_psnr"] > 0
    assert 0 <= fig["mean_realism"] <= 1 and fig["fid_domain_features"] is not None

    published = pipeline.step_publish(cfg, flow_run_id="test-run")
    assert published.rows == {"AtoB": 24, "BtoA": 24} and verify(cfg.paths.published) == []

    # pandas and pyarrow read the shards as they are.
    df = pd.read_parquet(f"{cfg.paths.published}/data")
    assert len(df) == 48 and set(df["direction"]) == {"AtoB", "BtoA"}
    row = df.iloc[0]
    img = decode_png(row["image"]["bytes"])
    assert img.shape == (16, 16, 1) and sha256_bytes(row["image"]["bytes"]) == row["sample_id"]
    assert row["flow_run_id"] == "test-run" and row["model_fingerprint"] == trained.fingerprint
    dataset = ds.dataset(f"{cfg.paths.published}/data", format="parquet")
    held_out = dataset.to_table(columns=["sample_id"], filter=(ds.field("split") == "test"))
    assert held_out.num_rows == 12
    shard = next((Path(cfg.paths.published) / "data").glob("*.parquet"))
    meta = json.loads(pq.read_schema(shard).metadata[b"huggingface"])
    assert meta["info"]["features"]["image"] == {"_type": "Image"}

    reports = Path(cfg.paths.reports)
    for name in ("metrics.json", "validation.json", "grid_AtoB.png", "grid_BtoA.png", "losses.png", "losses.tsv"):
        assert (reports / name).exists(), name
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["published"]["rows"] == {"AtoB": 24, "BtoA": 24} and metrics["gate_passed"]


def test_publishing_is_deterministic(tiny_cfg, tmp_path):
    pipeline.run_all(tiny_cfg)
    first = {p.name: p.read_bytes() for p in (tmp_path / "work" / "published" / "data").glob("*.parquet")}
    pipeline.step_generate(tiny_cfg)
    pipeline.step_validate(tiny_cfg)
    pipeline.step_publish(tiny_cfg)
    second = {p.name: p.read_bytes() for p in (tmp_path / "work" / "published" / "data").glob("*.parquet")}
    assert first == second


def test_gate_drops_samples_and_can_refuse_the_run(tmp_path, collections):
    raw = tiny_settings(tmp_path / "work", *collections)
    cfg = config_from_dict(raw)
    pipeline.run_all(cfg)

    # A per-sample bound drops rows and counts them; the run still publishes.
    psnr = sorted(pd.read_parquet(tmp_path / "work" / "validated" / "AtoB")["cycle_psnr"])
    median = psnr[len(psnr) // 2]
    raw["validate"] = {"classifier_epochs": 1, "sample": {
        "AtoB": {"min_cycle_psnr": median}, "BtoA": {}}}
    cfg = config_from_dict(raw)
    pipeline.step_validate(cfg)
    result = pipeline.step_publish(cfg)
    assert 0 < result.dropped["AtoB"] < 24 and result.rows["AtoB"] == 24 - result.dropped["AtoB"]
    assert result.dropped["BtoA"] == 0
    before = {p: p.read_bytes() for p in (tmp_path / "work" / "published").rglob("*") if p.is_file()}

    # An unreachable run-level bound publishes nothing and names the bound.
    raw["validate"]["run"] = {"AtoB": {"min_mean_cycle_psnr": 99.0}, "BtoA": {"min_label_accuracy": 1.01}}
    with pytest.raises(Exception, match="min_label_accuracy"):
        config_from_dict(raw)  # out of range is a config error, not a silent never-pass
    raw["validate"]["run"]["BtoA"] = {"min_mean_realism": 1.0}
    cfg = config_from_dict(raw)
    validated = pipeline.step_validate(cfg)
    assert not validated.passed and len(validated.failures) == 2
    assert "AtoB.mean_cycle_psnr" in validated.failures[0] and "< 99.0" in validated.failures[0]
    with pytest.raises(GateFailed, match="validate.run.AtoB.min_mean_cycle_psnr"):
        pipeline.step_publish(cfg)
    after = {p: p.read_bytes() for p in (tmp_path / "work" / "published").rglob("*") if p.is_file()}
    assert after == before
    report = json.loads((tmp_path / "work" / "reports" / "validation.json").read_text())
    assert report["passed"] is False and len(report["failures"]) == 2
