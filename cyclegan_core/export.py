"""Export a published version for training code that reads image files, from the same rows.

- ``export_image_folder``: ``<split>/<direction>/<sample_id>.png`` plus ``<split>/metadata.csv`` (one
  row per published row, ``file_name`` first and relative to the split folder: the layout Hugging
  Face ``imagefolder`` reads, labels included); for audio datasets ``<sample_id>.wav`` (``audiofolder``);
- ``export_webdataset``: tar shards ``<split>-<direction>-NNNNNN.tar`` in the WebDataset layout:
  each sample is consecutive members ``<key>.png`` (translation), ``<key>.source.png``,
  ``<key>.rec.png``, for audio ``<key>.wav``, ``<key>.source.wav``, ``<key>.rec.wav``, then
  ``<key>.json`` (every other column) and ``<key>.cls`` (label, when known).

Both stream the rows in batches, write under a temporary name and swap the result in, and make the
same bytes from the same version (sorted rows, fixed tar member times and owners).
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .reader import BYTES_COLUMNS, PublishedDataset, row_filter
from .storage import atomic_dir

BATCH_ROWS = 512


@dataclass(frozen=True)
class ExportResult:
    out_dir: str
    format: str
    rows: int
    files: int

    def to_dict(self) -> dict:
        return asdict(self)


def _groups(dataset: PublishedDataset, split: str | None, direction: str | None) -> list[tuple[str, str]]:
    """(split, direction) pairs present in the version, in a fixed order."""
    splits = dataset.manifest.get("splits") or {}
    pairs = sorted((s, d) for d, counts in splits.items() for s, n in counts.items() if n)
    return [(s, d) for s, d in pairs if (split is None or s == split) and (direction is None or d == direction)]


def _rows(dataset: PublishedDataset, split: str, direction: str) -> Iterator[dict]:
    """Rows of one split and direction, streamed shard by shard in the manifest's order.

    Shards are listed in hash-prefix order and sorted by source within, so this order is stable.
    """
    expr = row_filter(split=split)
    for fragment in dataset.arrow(direction).get_fragments():
        for batch in fragment.to_batches(filter=expr, batch_size=BATCH_ROWS):
            yield from batch.to_pylist()


def _plain(value):
    return value if not isinstance(value, float) or value == value else None  # NaN -> empty/null


def export_image_folder(dataset: PublishedDataset, out_dir: str | Path, *, split: str | None = None,
                        direction: str | None = None) -> ExportResult:
    """``out_dir/<split>/<direction>/<sample_id>.png`` and one ``out_dir/<split>/metadata.csv`` per split.

    Hugging Face ``imagefolder`` (and ``audiofolder``) reads the split from the top folder and each row's
    columns, ``label`` (the source's class) included, from that split's ``metadata.csv``, whose
    ``file_name`` is relative to the split folder; without it the loader would take the direction
    folders for classes. ``direction`` is a column, like every other non-byte column of the row.
    """
    rows = files = 0
    with atomic_dir(out_dir) as tmp:
        groups = _groups(dataset, split, direction)
        for s in sorted({s for s, _ in groups}):
            fields: list[str] | None = None
            (tmp / s).mkdir(parents=True, exist_ok=True)
            with open(tmp / s / "metadata.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                for d in [d for s2, d in groups if s2 == s]:
                    (tmp / s / d).mkdir(exist_ok=True)
                    for row in _rows(dataset, s, d):
                        # Audio datasets: the translated clip is the file (audiofolder layout).
                        audio = row.get("audio") is not None
                        rel = f"{d}/{row['sample_id']}.{'wav' if audio else 'png'}"
                        target = tmp / s / rel
                        if not target.exists():  # the same bytes (same sample id) are written once
                            target.write_bytes(row["audio" if audio else "image"]["bytes"])
                            files += 1
                        meta = {k: v for k, v in row.items() if k not in BYTES_COLUMNS}
                        if fields is None:
                            fields = list(meta)
                            writer.writerow(["file_name", *fields])
                        writer.writerow([rel, *(_plain(meta[k]) for k in fields)])
                        rows += 1
    return ExportResult(str(out_dir), "imagefolder", rows, files)


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed, so the same rows make the same tar
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def export_webdataset(dataset: PublishedDataset, out_dir: str | Path, *, samples_per_shard: int = 1000,
                      split: str | None = None, direction: str | None = None) -> ExportResult:
    """Tar shards ``<split>-<direction>-NNNNNN.tar`` of at most ``samples_per_shard`` samples each."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, not {samples_per_shard}")
    rows = files = 0
    with atomic_dir(out_dir) as tmp:
        for s, d in _groups(dataset, split, direction):
            for k, chunk in enumerate(_chunks(_rows(dataset, s, d), samples_per_shard)):
                with tarfile.open(tmp / f"{s}-{d}-{k:06d}.tar", "w", format=tarfile.GNU_FORMAT) as tar:
                    for row in chunk:
                        # WebDataset splits a member name at its first dot: the key must have none.
                        key = f"{d}_{row['source_id']}"
                        _member(tar, f"{key}.png", row["image"]["bytes"])
                        _member(tar, f"{key}.source.png", row["source_image"]["bytes"])
                        _member(tar, f"{key}.rec.png", row["reconstruction"]["bytes"])
                        if row.get("audio") is not None:
                            _member(tar, f"{key}.wav", row["audio"]["bytes"])
                            _member(tar, f"{key}.source.wav", row["source_audio"]["bytes"])
                            _member(tar, f"{key}.rec.wav", row["reconstruction_audio"]["bytes"])
                        meta = {c: _plain(v) for c, v in row.items() if c not in BYTES_COLUMNS}
                        _member(tar, f"{key}.json", json.dumps(meta, sort_keys=True, default=str).encode())
                        if row.get("label") is not None:
                            _member(tar, f"{key}.cls", str(row["label"]).encode())
                rows += len(chunk)
                files += 1
    return ExportResult(str(out_dir), "webdataset", rows, files)


def _chunks(rows: Iterator[dict], n: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def export(dataset: PublishedDataset, out_dir: str | Path, fmt: str, **kwargs) -> ExportResult:
    """Dispatch on ``fmt``: ``imagefolder`` or ``webdataset``."""
    if fmt == "imagefolder":
        return export_image_folder(dataset, out_dir, **kwargs)
    if fmt == "webdataset":
        return export_webdataset(dataset, out_dir, **kwargs)
    raise ValueError(f"unknown export format {fmt!r}: use 'imagefolder' or 'webdataset'")


