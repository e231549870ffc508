"""Bounded reads of a manifest's training split (issue 19): the digest, the id sets, labels and halves, and
the semantic classifiers' step cap, each against the whole-table computation it replaces."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cyclegan_core import classifiers, sampleids
from cyclegan_core.classifiers import half_mask, train_classifier
from cyclegan_core.ingest import DIGEST_COLUMNS, manifest_digest


def _manifest(path, n: int, seed: int = 0, labels: bool = True, meta: bytes = b"proc") -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]
    table = pa.table({
        "sample_id": ids,
        "split": ["test" if x < 0.25 else "train" for x in rng.random(n)],
        "label": pa.array([int(v) for v in rng.integers(0, 10, n)] if labels else [None] * n, pa.int64()),
        "image": [b"x"] * n,
    }).replace_schema_metadata({b"cycleaug.processing": meta})
    pq.write_table(table, path, row_group_size=7)
    return table


def test_the_streamed_digest_is_the_tables_and_ignores_row_order(tmp_path, monkeypatch):
    table = _manifest(tmp_path / "m.parquet", 300)
    monkeypatch.setattr("cyclegan_core.ingest.DIGEST_BATCH_ROWS", 16)  # many batches
    for split in (None, "train", "test"):
        assert manifest_digest(tmp_path / "m.parquet", split) == manifest_digest(table, split)
    shuffled = table.take(np.random.default_rng(1).permutation(len(table)))
    assert manifest_digest(shuffled, "train") == manifest_digest(table, "train")
    # Anything a model learns from moves it: a label, a split, a sample, the processing.
    relabelled = table.set_column(2, "label", pa.array([(v.as_py() + 1) % 10 for v in table.column(2)], pa.int64()))
    fewer = table.slice(1)
    other = table.replace_schema_metadata({b"cycleaug.processing": b"other"})
    digests = {manifest_digest(t, None) for t in (table, relabelled, fewer, other)}
    assert len(digests) == 4
    assert set(DIGEST_COLUMNS) <= set(table.column_names)


def test_keys_labels_and_halves_match_the_whole_table_reads(tmp_path, monkeypatch):
    table = _manifest(tmp_path / "m.parquet", 500)
    monkeypatch.setattr(sampleids, "BATCH_ROWS", 33)
    train = table.filter(pa.compute.equal(table.column("split"), "train"))
    keys = sampleids.split_keys(tmp_path / "m.parquet")
    assert np.array_equal(keys, np.sort(sampleids.id_keys(train.column("sample_id").to_pylist())))
    labels, half = sampleids.training_labels(tmp_path / "m.parquet")
    assert labels is not None and labels.tolist() == train.column("label").to_pylist()  # file order
    assert np.array_equal(half, half_mask(train.column("sample_id").to_pylist(), "train", "classifier"))
    _manifest(tmp_path / "u.parquet", 50, labels=False)
    assert sampleids.training_labels(tmp_path / "u.parquet")[0] is None


def test_the_training_record_counts_added_and_removed_samples(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    _manifest(a, 200, seed=0)
    _manifest(b, 120, seed=1)
    sampleids.write_training_data(tmp_path / "t.parquet", {"A": a, "B": b}, {"cycleaug.settings_key": "k"})
    key, seen = sampleids.read_training_data(tmp_path / "t.parquet")
    assert key == "k"
    assert np.array_equal(seen["A"], sampleids.split_keys(a)) and np.array_equal(seen["B"], sampleids.split_keys(b))
    grown = tmp_path / "a2.parquet"
    old = pq.read_table(a)
    extra = _manifest(tmp_path / "x.parquet", 40, seed=5).replace_schema_metadata(old.schema.metadata)
    pq.write_table(pa.concat_tables([old.slice(10), extra]), grown)  # the first 10 rows gone, 40 new ones
    now = sampleids.split_keys(grown)
    added = sum(s == "train" for s in extra.column("split").to_pylist())
    removed = sum(s == "train" for s in old.slice(0, 10).column("split").to_pylist())
    assert sampleids.moved(now, seen["A"]) == (added, removed)


@pytest.mark.parametrize("cap", [None, 1, 5])
def test_the_semantic_classifier_stops_at_its_step_cap(monkeypatch, cap):
    steps = []
    real = torch.optim.Adam.step

    def counted(self, *a, **k):
        steps.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    images = np.random.default_rng(0).integers(0, 255, (200, 8, 8, 1), dtype=np.uint8)
    y = np.arange(200) % 3
    train_classifier(images, y, 3, epochs=2, seed=0, max_steps=cap)
    assert len(steps) == (8 if cap is None else cap)  # 2 passes of ceil(200 / 64) = 4 batches


def test_a_cap_above_the_passes_changes_nothing():
    images = np.random.default_rng(0).integers(0, 255, (130, 8, 8, 1), dtype=np.uint8)
    y = np.arange(130) % 2
    plain = classifiers.train_classifier(images, y, 2, epochs=2, seed=3)
    capped = classifiers.train_classifier(images, y, 2, epochs=2, seed=3, max_steps=6)  # 6 = 2 passes of 3
    for p, q in zip(plain.state_dict().values(), capped.state_dict().values(), strict=True):
        assert torch.equal(p, q)
