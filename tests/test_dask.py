"""The flow on Prefect's test server: a no-change rerun is all cache hits, and ingest (in chunks of a few
files), generation, validation and publishing mapped on a 2-worker local Dask cluster write byte-identical
manifests, quarantine lists, shards (and summary.json) to the local (threaded) run."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_settings

pytestmark = pytest.mark.slow


def write_params(path: Path, work: Path, collections, **sections) -> str:
    raw = tiny_settings(work, *collections)
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def shards(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("part-*.parquet"))}


def test_rerun_is_cached_and_dask_shards_match(prefect_server, collections, tmp_path, monkeypatch):
    from flows.augment import augment

    # One time stamp for new rows in both runs, as a reproducible build would set it.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    # Something for the quarantine list: a broken file, and a copy of the first training file listed last
    # (a duplicate that the commit finds across chunks when ingest runs in chunks).
    a_train = collections[0] / "train"
    (a_train / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (a_train / "zz_copy.png").write_bytes(sorted(a_train.glob("*.png"))[0].read_bytes())
    local = write_params(tmp_path / "local.yaml", tmp_path / "local", collections)
    first = augment(params=local)
    assert first["generate"]["translated"] == {"AtoB": 24, "BtoA": 24} and not first["train"]["reused"]

    second = augment(params=local)
    assert second["train"]["reused"] and "nothing to train" in second["train"]["reason"]
    assert second["cached"] == {"generate": True, "validate": True, "publish": True}
    assert second["generate"]["translated"] == {"AtoB": 0, "BtoA": 0}
    assert second["publish"]["manifest"] == first["publish"]["manifest"]

    # A deleted output is noticed: the cached shard is generated again, not trusted.
    victim = next((tmp_path / "local" / "generated" / "AtoB").glob("part-*.parquet"))
    kept = victim.read_bytes()
    victim.unlink()
    third = augment(params=local)
    assert not third["cached"]["generate"] and victim.read_bytes() == kept

    # Same data and model folder, ingest (5 files a chunk) and generation on Dask: the same manifest and shard bytes.
    dask = write_params(tmp_path / "dask.yaml", tmp_path / "dask", collections,
                        paths={"models": str(tmp_path / "local" / "models")},
                        orchestrate={"task_runner": "dask", "dask": {"workers": 2}}, data={"ingest_chunk_files": 5})
    from cyclegan_core.config import load_config
    from cyclegan_core.pipeline import plan_ingest

    plans, _ = plan_ingest(load_config(dask))
    assert {d: len(p.chunks) for d, p in plans.items()} == {"A": 6, "B": 5}  # 26 and 24 files
    on_dask = augment(params=dask)
    for d in ("A", "B"):
        for name in ("manifest.parquet", "quarantine.csv"):
            local_file, dask_file = tmp_path / "local" / "ingest" / d / name, tmp_path / "dask" / "ingest" / d / name
            assert dask_file.read_bytes() == local_file.read_bytes(), (d, name)
        assert not (tmp_path / "dask" / "ingest" / d / ".chunks").exists()  # the staged parts are gone
    assert on_dask["ingest"] == {d: r | {"manifest": r["manifest"].replace(str(tmp_path / "local"),
                                                                           str(tmp_path / "dask")),
                                         "quarantine": r["quarantine"].replace(str(tmp_path / "local"),
                                                                               str(tmp_path / "dask"))}
                                 for d, r in first["ingest"].items()}
    assert on_dask["ingest"]["A"]["quarantined"] == 2 and on_dask["ingest"]["A"]["samples"] == 24
    quarantined = (tmp_path / "dask" / "ingest" / "A" / "quarantine.csv").read_text()
    assert "train/zz_copy.png,duplicate content of train/hand_006.png" in quarantined
    assert on_dask["train"]["reused"] and on_dask["generate"]["translated"] == {"AtoB": 24, "BtoA": 24}
    assert shards(tmp_path / "dask" / "generated") == shards(tmp_path / "local" / "generated")
    assert len(shards(tmp_path / "dask" / "generated")) == 4
    # Validation scored shard by shard on the workers, merged in the flow: the same tables and figures.
    local_val, dask_val = tmp_path / "local" / "validated", tmp_path / "dask" / "validated"
    assert shards(dask_val) == shards(local_val) and len(shards(dask_val)) == 4
    assert (dask_val / "summary.json").read_bytes() == (local_val / "summary.json").read_bytes()

    # Publishing mapped on Dask (a task a shard): the bytes the local loop writes for the same rows and run id.
    import json

    from cyclegan_core.publish import publish
    cfg, out = load_config(dask), tmp_path / "dask" / "published"
    m = json.loads((out / "manifest.json").read_text())
    publish(cfg.paths.generated, cfg.paths.validated, tmp_path / "loop", provenance=m["provenance"],
            mode=cfg.data.picture_mode, size=cfg.data.shape, max_shard_bytes=m["max_shard_bytes"])
    files = {p.name: p.read_bytes() for p in sorted((out / "data").glob("*.parquet"))}
    assert files == {p.name: p.read_bytes() for p in sorted((tmp_path / "loop" / "data").glob("*.parquet"))}
    assert len(files) == len(m["shards"]) == 2 and on_dask["publish"]["rows"] == first["publish"]["rows"]
