import shutil

import pyarrow.parquet as pq
import pytest

from cyclegan_core.config import DataConfig
from cyclegan_core.ingest import CollectionError, ingest_collection, read_manifest


def _quarantine(path):
    return dict(line.split(",", 1) for line in path.read_text().splitlines()[1:])


def test_ingest_reads_splits_labels_and_hashes(collections, tmp_path):
    a, _ = collections
    r = ingest_collection(str(a), "A", tmp_path / "out", DataConfig(image_size=16))
    assert (r.samples, r.train, r.test, r.decoded, r.quarantined) == (24, 18, 6, 24, 0)
    table = pq.read_table(r.manifest)
    row = table.slice(0, 1).to_pylist()[0]
    assert len(row["sample_id"]) == 64 and row["label"] is not None and row["orig_width"] == 8
    assert read_manifest(r.manifest, ("test",)).num_rows == 6


def test_bad_files_are_quarantined_and_the_run_goes_on(collections, tmp_path):
    a, _ = collections
    first = sorted((a / "train").glob("*.png"))[0]
    shutil.copy(first, a / "train" / "copy of first.png")
    (a / "train" / "empty.png").write_bytes(b"")
    (a / "train" / "text.png").write_text("not an image")
    (a / "train" / "half.png").write_bytes(first.read_bytes()[:-16])
    (a / "notes.txt").write_text("ignored: not an image extension")
    r = ingest_collection(str(a), "A", tmp_path / "out", DataConfig(image_size=16))
    q = _quarantine(tmp_path / "out" / "quarantine.csv")
    assert r.samples == 24 and r.quarantined == 4
    # Of two files with the same bytes, the first by path is kept: the choice is stable across runs.
    assert q[f"train/{first.name}"] == "duplicate content of train/copy of first.png"
    assert "empty" in q["train/empty.png"]
    assert "not an image" in q["train/text.png"]
    assert "corrupt or truncated" in q["train/half.png"]


def test_rerun_decodes_only_new_samples(collections, tmp_path):
    a, b = collections
    cfg = DataConfig(image_size=16)
    first = ingest_collection(str(a), "A", tmp_path / "out", cfg)
    again = ingest_collection(str(a), "A", tmp_path / "out", cfg)
    assert (again.decoded, again.reused) == (0, 24)
    assert again.manifest_sha256 == first.manifest_sha256
    shutil.copy(sorted((b / "train").glob("*.png"))[0], a / "train" / "new.png")
    grown = ingest_collection(str(a), "A", tmp_path / "out", cfg)
    assert (grown.decoded, grown.reused, grown.samples) == (1, 24, 25)
    # Another size means other normalized images: everything is decoded again.
    assert ingest_collection(str(a), "A", tmp_path / "out", DataConfig(image_size=8)).decoded == 25


def test_split_by_hash_without_split_folders(tmp_path, collections):
    a, _ = collections
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in a.rglob("*.png"):
        shutil.copy(p, flat / p.name)
    r = ingest_collection(str(flat), "A", tmp_path / "out", DataConfig(image_size=16, test_fraction=0.5))
    assert r.samples == 24 and 0 < r.test < 24
    again = ingest_collection(str(flat), "A", tmp_path / "out2", DataConfig(image_size=16, test_fraction=0.5))
    assert again.test == r.test  # the split is a function of content, not of the run


def test_unusable_collections_are_clear_errors(tmp_path):
    with pytest.raises(CollectionError, match="not found"):
        ingest_collection(str(tmp_path / "nowhere"), "A", tmp_path / "out", DataConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionError, match="no usable images"):
        ingest_collection(str(tmp_path / "empty"), "A", tmp_path / "out", DataConfig())


def test_fsspec_memory_url(collections, tmp_path):
    import fsspec

    a, _ = collections
    mem = fsspec.filesystem("memory")
    for p in a.rglob("*"):
        if p.is_file():
            mem.pipe(f"/coll/{p.relative_to(a).as_posix()}", p.read_bytes())
    r = ingest_collection("memory://coll", "A", tmp_path / "out", DataConfig(image_size=16))
    assert (r.samples, r.test) == (24, 6)
    assert read_manifest(r.manifest).column("uri")[0].as_py().startswith("memory://")


def test_manifest_is_written_in_row_groups_and_reused_across_them(collections, tmp_path, monkeypatch):
    from cyclegan_core import ingest

    a, _ = collections
    cfg = DataConfig(image_size=16)
    monkeypatch.setattr(ingest, "MANIFEST_GROUP_ROWS", 5)
    grouped = ingest_collection(str(a), "A", tmp_path / "out", cfg)
    assert pq.ParquetFile(grouped.manifest).metadata.num_row_groups == 5  # 24 rows, 5 at most per group
    monkeypatch.setattr(ingest, "MANIFEST_GROUP_ROWS", 1000)
    whole = ingest_collection(str(a), "A", tmp_path / "whole", cfg)
    assert pq.ParquetFile(whole.manifest).metadata.num_row_groups == 1
    assert read_manifest(grouped.manifest).equals(read_manifest(whole.manifest))
    assert grouped.manifest_sha256 == whole.manifest_sha256
    # A re-run finds every sample in the grouped manifest and reads its bytes back group by group.
    again = ingest_collection(str(a), "A", tmp_path / "out", cfg)
    assert (again.decoded, again.reused) == (0, 24)
    assert read_manifest(again.manifest).equals(read_manifest(whole.manifest))
