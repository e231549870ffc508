"""The training split of a manifest, read in bounded batches: compact sample-id sets, labels and halves.

A model folder records which samples trained it (``training_data.parquet``), so a later run can say how
far the data moved (``orchestrate.retrain``). Comparing two such sets as Python strings would cost about
a hundred bytes a sample; here each id is kept as 8 bytes (the first 64 bits of its BLAKE2b hash) in a
sorted ``uint64`` array, read a batch of rows at a time, so the comparison's memory is 8 bytes a sample and
never holds a string per row. (Two different ids share a 64-bit key with probability about n**2 / 2**65:
under 3e-6 for ten million samples; a collision can only make the counts of added and removed samples one
too small, never the fingerprint, which hashes the full ids.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .classifiers import half_mask
from .storage import atomic_path, parquet_batches

BATCH_ROWS = 65536  # manifest rows of the small columns read at a time


def id_keys(sample_ids: list[str]) -> np.ndarray:
    """The 64-bit keys of these sample ids (uint64, in the given order)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")
                        for s in sample_ids), dtype=np.uint64, count=len(sample_ids))


def _split_batches(manifest: str | Path, columns: list[str], split: str) -> Iterator[pa.RecordBatch]:
    names = list(dict.fromkeys([*columns, "split"]))
    for batch in parquet_batches(manifest, names, BATCH_ROWS):
        keep = np.asarray(batch.column(names.index("split")).to_pylist(), dtype=object) == split
        yield batch.filter(pa.array(keep)).select(columns)


def split_keys(manifest: str | Path, split: str = "train") -> np.ndarray:
    """The sorted 64-bit keys of the manifest's ``split`` samples."""
    parts = [id_keys(b.column(0).to_pylist()) for b in _split_batches(manifest, ["sample_id"], split)]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)


def moved(now: np.ndarray, seen: np.ndarray) -> tuple[int, int]:
    """(added, removed): how many keys of ``now`` are not in ``seen``, and of ``seen`` not in ``now``."""
    return (len(np.setdiff1d(now, seen, assume_unique=True)), len(np.setdiff1d(seen, now, assume_unique=True)))


def training_labels(manifest: str | Path, split: str = "train") -> tuple[np.ndarray | None, np.ndarray]:
    """The labels of the manifest's ``split`` samples in file order (None unless every one has a label),
    and the mask of the "classifier" half label-aware training's classifier may learn from
    (:data:`cyclegan_core.classifiers.HALVES`); both read a batch at a time."""
    labels: list[np.ndarray] = []
    halves: list[np.ndarray] = []
    complete = True
    for b in _split_batches(manifest, ["sample_id", "label"], split):
        values = b.column(1)
        complete = complete and values.null_count == 0
        if complete:
            labels.append(values.to_numpy(zero_copy_only=False).astype(np.int64))
        halves.append(half_mask(b.column(0).to_pylist(), split, "classifier"))
    mask = np.concatenate(halves) if halves else np.zeros(0, bool)
    return (np.concatenate(labels) if complete and labels else None), mask


def write_training_data(path: Path, manifests: dict[str, str | Path], metadata: dict[str, str]) -> None:
    """Record the training samples of each domain's manifest (domain, sample id), written a batch at a time
    in manifest order, with ``metadata`` on the schema."""
    schema = pa.schema([("domain", pa.string()), ("sample_id", pa.string())], metadata=metadata)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as out:
        for d, manifest in manifests.items():
            for b in _split_batches(manifest, ["sample_id"], "train"):
                ids = b.column(0)
                out.write_table(pa.table({"domain": pa.array([d] * len(ids), pa.string()), "sample_id": ids},
                                         schema=schema))


def read_training_data(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(the settings key on the record's schema, per domain the sorted 64-bit keys of its samples)."""
    key = (pq.read_schema(path).metadata or {}).get(b"cycleaug.settings_key", b"").decode()
    parts: dict[str, list[np.ndarray]] = {"A": [], "B": []}
    for b in parquet_batches(path, ["domain", "sample_id"], BATCH_ROWS):
        domains = np.asarray(b.column(0).to_pylist(), dtype=object)
        keys = id_keys(b.column(1).to_pylist())
        for d in parts:
            parts[d].append(keys[domains == d])
    return key, {d: np.sort(np.concatenate(p)) if p else np.zeros(0, np.uint64) for d, p in parts.items()}
