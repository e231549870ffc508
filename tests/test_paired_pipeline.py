"""Augmenting a paired Parquet dataset N times per sample: library call, ``cycleaug paired-augment``
and the Prefect flow; outputs are deterministic, hashed in the manifest, and replay exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cyclegan_core.paired.augment import replay
from cyclegan_core.paired.io import iter_rows, read_samples, row_to_sample, sample_to_row, write_samples
from cyclegan_core.paired.pipeline import augment_paired, make_demo_input
from cyclegan_core.paired.settings import PairedConfig
from cyclegan_core.storage import sha256_file

ROOT = Path(__file__).resolve().parents[1]
TINY_DEMO = {"samples": 8, "image_size": 24, "frames": 4, "frame_rate": 8.0, "sample_rate": 4000}


def tiny_paired(root: Path, **extra) -> dict:
    return {"input": str(root / "source"), "output": str(root / "augmented"), "copies": 3, "batch_size": 4,
            "shard_rows": 10, "demo": TINY_DEMO, "mixup": {"p": 0.5}, **extra}


def test_augment_n_times_with_exact_replay_from_the_stored_rows(tmp_path):
    cfg = PairedConfig(**tiny_paired(tmp_path))
    assert make_demo_input(cfg)["made"] is True
    result = augment_paired(cfg)
    assert (result.sources, result.rows, result.shards) == (8, 24, 3)
    manifest = json.loads(Path(result.manifest).read_text())
    for shard in manifest["shards"]:
        assert sha256_file(tmp_path / "augmented" / shard["file"]) == shard["sha256"]
    df = pd.read_parquet(tmp_path / "augmented" / "data")
    assert len(df) == 24 and df.sample_id.is_unique and set(df.copy_index) == {0, 1, 2}
    assert df.groupby("source_id").size().eq(3).all()
    sources = {s.sample_id: s for s in read_samples(cfg.input)}
    ops_seen = set()
    for row in iter_rows(tmp_path / "augmented" / "data"):
        record = json.loads(row["augmentation"])
        ops_seen |= {e["op"] for e in record["ops"]}
        again = sample_to_row(replay(sources[row["source_id"]], record, sources), record, row["source_id"],
                              row["copy_index"])
        assert {k: again[k] for k in row} == row, row["sample_id"]
        assert row_to_sample(row).dropped == tuple(row["dropped"])
    assert {"geometry", "photometric", "mixup"} <= ops_seen
    first = {s["file"]: s["sha256"] for s in manifest["shards"]}
    augment_paired(cfg)  # same input and settings: the same bytes
    again = json.loads(Path(result.manifest).read_text())
    assert {s["file"]: s["sha256"] for s in again["shards"]} == first


def test_bad_input_leaves_the_previous_output(tmp_path):
    cfg = PairedConfig(**tiny_paired(tmp_path, copies=1))
    make_demo_input(cfg)
    augment_paired(cfg)
    before = sorted(p.read_bytes() for p in (tmp_path / "augmented" / "data").glob("*.parquet"))
    scenes = read_samples(cfg.input)
    write_samples([*scenes, scenes[2]], tmp_path / "dup.parquet")
    with pytest.raises(ValueError, match="scene-00002.*twice"):
        augment_paired(cfg.model_copy(update={"input": str(tmp_path / "dup.parquet")}))
    assert sorted(p.read_bytes() for p in (tmp_path / "augmented" / "data").glob("*.parquet")) == before


def _cycleaug(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_paired_augment_command(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paired": tiny_paired(tmp_path / "work", copies=2)}))
    r = _cycleaug("--params", str(params), "paired-augment", "--demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["rows"] == 16 and out["sources"] == 8
    assert Path(tmp_path / out["preview"]).stat().st_size > 0  # the demo picture, beside the Parquet data


def test_paired_augment_command_names_a_missing_input(tmp_path, capsys):
    from flows.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paired": tiny_paired(tmp_path / "work")}))
    assert main(["--params", str(params), "--set", f"paired.input={tmp_path / 'missing'}", "paired-augment"]) == 1
    err = capsys.readouterr().err
    assert "missing" in err and "no such" in err


@pytest.mark.slow
def test_paired_flow(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paired": tiny_paired(tmp_path / "work", copies=1)}))
    from flows.paired import paired_augment

    with prefect_test_harness(server_startup_timeout=120):
        state = paired_augment(params=str(params), demo=True, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["demo"]["made"] is True and result["augment"]["rows"] == 8
    assert result["augment"]["preview"] and Path(result["augment"]["preview"]).is_file()
