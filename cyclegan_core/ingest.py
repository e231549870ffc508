"""Ingest: a folder or fsspec URL of images -> a Parquet manifest of checked, normalized samples.

Every file is hashed (sha256 of its bytes, the sample id), decoded, checked and converted to the
configured mode and size; the normalized PNG is kept in the manifest so later steps never touch
the source storage again. Files that cannot be used go to a quarantine list with the reason. On a
re-run, samples already in the previous manifest (same bytes, same processing) are not decoded
again.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .config import DataConfig
from .images import BadImage, decode_image, decode_png, encode_png
from .storage import atomic_path, open_fs, sha256_bytes

Progress = Callable[[int, int], None]

MANIFEST_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("domain", pa.string()),
        ("relpath", pa.string()),
        ("uri", pa.string()),
        ("split", pa.string()),
        ("label", pa.int64()),
        ("orig_width", pa.int32()),
        ("orig_height", pa.int32()),
        ("orig_mode", pa.string()),
        ("size_bytes", pa.int64()),
        ("image", pa.binary()),
    ]
)
SPLIT_DIRS = {"train": "train", "test": "test", "val": "test", "valid": "test", "validation": "test"}


class CollectionError(ValueError):
    """The collection as a whole cannot be used (missing, empty, unreadable labels)."""


@dataclass(frozen=True)
class IngestResult:
    domain: str
    manifest: str
    quarantine: str
    manifest_sha256: str
    samples: int
    train: int
    test: int
    decoded: int
    reused: int
    quarantined: int

    def to_dict(self) -> dict:
        return asdict(self)


def processing_key(cfg: DataConfig) -> str:
    """What a normalized image depends on besides the source bytes."""
    return json.dumps({"mode": cfg.mode, "size": cfg.image_size, "max_pixels": cfg.max_image_pixels,
                       "decoder": 1}, sort_keys=True)


def _split_of(relpath: str, sample_id: str, test_fraction: float) -> str:
    first = relpath.split("/", 1)[0].lower()
    if "/" in relpath and first in SPLIT_DIRS:
        return SPLIT_DIRS[first]
    # No split folders: a stable split by content hash, so a file keeps its split across runs.
    return "test" if int(sample_id[:8], 16) / 2**32 < test_fraction else "train"


def _read_labels(fs, root: str) -> dict[str, int]:
    path = posixpath.join(root, "labels.csv")
    if not fs.exists(path):
        return {}
    text = fs.cat_file(path).decode("utf-8")
    labels: dict[str, int] = {}
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            labels[row["path"].strip()] = int(row["label"])
        except (KeyError, TypeError, ValueError):
            raise CollectionError(f"{path}, line {n}: expected columns path,label with an integer label") from None
    return labels


def list_images(url: str, extensions: tuple[str, ...]) -> tuple[object, str, list[str]]:
    """The filesystem, its root and the sorted relative paths of image files under ``url``."""
    fs, root = open_fs(url)
    if not fs.exists(root):
        raise CollectionError(f"{url}: collection not found")
    if not fs.isdir(root):
        raise CollectionError(f"{url}: not a folder")
    exts = tuple(e.lower() for e in extensions)
    rels = []
    for full in fs.find(root, withdirs=False):
        rel = posixpath.relpath(full, root) if root else full
        name = posixpath.basename(rel)
        if name.startswith(".") or not name.lower().endswith(exts):
            continue
        rels.append(rel)
    return fs, root, sorted(rels)


def _load_previous(manifest: Path, key: str) -> dict[str, dict]:
    """Rows of the last manifest by sample id, if it was made with the same processing."""
    if not manifest.exists():
        return {}
    meta = pq.read_schema(manifest).metadata or {}
    if meta.get(b"cycleaug.processing", b"").decode() != key:
        return {}
    table = pq.read_table(manifest, columns=["sample_id", "orig_width", "orig_height", "orig_mode", "image"])
    return {row["sample_id"]: row for row in table.to_pylist()}


def ingest_collection(url: str, domain: str, out_dir: str | Path, cfg: DataConfig,
                      progress: Progress | None = None) -> IngestResult:
    """Ingest one collection into ``out_dir/manifest.parquet`` and ``out_dir/quarantine.csv``."""
    out = Path(out_dir)
    manifest_path, quarantine_path = out / "manifest.parquet", out / "quarantine.csv"
    key = processing_key(cfg)
    previous = _load_previous(manifest_path, key)

    fs, root, rels = list_images(url, cfg.extensions)
    labels = _read_labels(fs, root)
    rows: list[dict] = []
    quarantine: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    decoded = reused = 0
    for i, rel in enumerate(rels):
        uri = fs.unstrip_protocol(posixpath.join(root, rel)) if root else rel
        try:
            data = fs.cat_file(posixpath.join(root, rel))
        except OSError as err:
            quarantine.append((rel, f"unreadable: {err}"))
            continue
        sid = sha256_bytes(data)
        if sid in seen:
            quarantine.append((rel, f"duplicate content of {seen[sid]}"))
            continue
        if sid in previous:
            prev = previous[sid]
            png, w, h, mode = prev["image"], prev["orig_width"], prev["orig_height"], prev["orig_mode"]
            reused += 1
        else:
            try:
                arr = decode_image(data, cfg.mode, cfg.image_size, cfg.max_image_pixels)
            except BadImage as err:
                quarantine.append((rel, str(err)))
                continue
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                (w, h), mode = im.size, im.mode
            png = encode_png(arr)
            decoded += 1
        seen[sid] = rel
        rows.append({
            "sample_id": sid, "domain": domain, "relpath": rel, "uri": uri,
            "split": _split_of(rel, sid, cfg.test_fraction), "label": labels.get(rel),
            "orig_width": w, "orig_height": h, "orig_mode": mode, "size_bytes": len(data), "image": png,
        })
        if progress:
            progress(i + 1, len(rels))
    if not rows:
        detail = f"; {len(quarantine)} file(s) quarantined, see {quarantine_path}" if quarantine else ""
        _write_quarantine(quarantine_path, quarantine)
        raise CollectionError(f"{url}: no usable images (looked for {', '.join(cfg.extensions)}){detail}")

    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    table = table.replace_schema_metadata({"cycleaug.processing": key, "cycleaug.source": url})
    with atomic_path(manifest_path) as tmp:
        pq.write_table(table, tmp)
    _write_quarantine(quarantine_path, quarantine)
    splits = table.column("split").to_pylist()
    return IngestResult(
        domain=domain, manifest=str(manifest_path), quarantine=str(quarantine_path),
        manifest_sha256=manifest_digest(table), samples=len(rows), train=splits.count("train"),
        test=splits.count("test"), decoded=decoded, reused=reused, quarantined=len(quarantine),
    )


def _write_quarantine(path: Path, entries: list[tuple[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows(entries)


def manifest_digest(table: pa.Table, split: str | None = None) -> str:
    """A content hash of a manifest: its samples, splits, labels and processing (not file names)."""
    ids = table.column("sample_id").to_pylist()
    splits = table.column("split").to_pylist()
    lbls = table.column("label").to_pylist()
    items = sorted((s, sp, lb) for s, sp, lb in zip(ids, splits, lbls, strict=True) if split in (None, sp))
    meta = (table.schema.metadata or {}).get(b"cycleaug.processing", b"")
    return sha256_bytes(json.dumps(items).encode() + meta)


def read_manifest(path: str | Path, splits: tuple[str, ...] | None = None) -> pa.Table:
    table = pq.read_table(path)
    if splits is not None:
        mask = np.isin(np.asarray(table.column("split").to_pylist(), dtype=object), list(splits))
        table = table.filter(pa.array(mask))
    return table


def manifest_images(table: pa.Table) -> np.ndarray:
    """All normalized images of a manifest as one uint8 (N, H, W, C) array."""
    return np.stack([decode_png(b) for b in table.column("image").to_pylist()])
