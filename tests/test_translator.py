"""The single-translator variant through the real pipeline steps (train, generate)."""

from pathlib import Path

import pyarrow.parquet as pq

from cyclegan_core.config import config_from_dict
from cyclegan_core.pipeline import step_generate, step_ingest, step_train
from tests.conftest import tiny_settings


def test_variant_trains_and_generates_both_directions(tmp_path: Path, collections):
    raw = tiny_settings(tmp_path / "work", *collections)
    raw["model"].update({"arch": "translator", "translator_directions": "both"})
    raw["train"].update({"steps": 2})
    raw["runtime"].update({"num_threads": 1})
    cfg = config_from_dict(raw)
    step_ingest(cfg)
    trained = step_train(cfg)
    assert not trained.reused and trained.steps == 2
    assert (Path(trained.model_dir) / "losses.png").exists()  # the variant's own loss curves
    assert step_train(cfg).reused
    result = step_generate(cfg)
    assert result.rows == {"AtoB": 24, "BtoA": 24}
    table = pq.read_table(Path(cfg.paths.generated) / "BtoA")
    assert all(len(b) > 0 for b in table.column("reconstruction").to_pylist())
