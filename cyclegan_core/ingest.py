"""Ingest: a folder or fsspec URL of images or audio clips -> a Parquet manifest of checked, normalized samples.

Every file is hashed (sha256 of its bytes, the sample id), decoded, checked and converted to the
configured mode and size; the normalized PNG is kept in the manifest so later steps never touch
the source storage again. With ``data.kind: audio`` a clip is mixed to mono, resampled, cut or
padded to the clip length (see :mod:`cyclegan_core.audio`); the manifest then keeps the normalized
clip as WAV (``audio``) beside its spectrogram picture (``image``), and the clip's offset.

Files that cannot be used go to a quarantine list with the reason (``quarantine.csv``: path,
reason) and the run goes on; a collection with nothing usable is a
:class:`CollectionError` before any later step starts. Storage calls are retried on transient
errors. On a re-run, samples already in the previous manifest (same bytes, same processing) are
not decoded again.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import inputs
from .config import DataConfig
from .images import BadImage, decode_image, decode_png, encode_png
from .storage import StorageError, atomic_path, escapes, open_fs, redact_url, sha256_bytes, with_retries

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
        # Audio collections only (null for images): the normalized clip and where it came from.
        ("audio", pa.binary()),
        ("orig_sample_rate", pa.int32()),
        ("orig_channels", pa.int32()),
        ("orig_frames", pa.int64()),
        ("clip_offset", pa.int64()),
    ]
)
AUDIO_INFO = ("orig_sample_rate", "orig_channels", "orig_frames", "clip_offset")
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
    """What a normalized sample depends on besides the source bytes: the ``decode`` key's settings and code."""
    return inputs.key_of({"data": inputs.data_tree(cfg)}, "decode")


class _AudioDecoder:
    """Clip bytes -> (spectrogram PNG, normalized clip WAV, clip info); raises BadAudio naming the problem."""

    def __init__(self, cfg: DataConfig):
        from .audio import Spectrogram

        self.cfg, self.spec = cfg.audio, Spectrogram(cfg.audio)

    def __call__(self, data: bytes) -> tuple[bytes, bytes, dict]:
        from .audio import decode_audio, encode_wav, picture_to_uint8

        clip = decode_audio(data, self.cfg)
        png = encode_png(picture_to_uint8(self.spec.picture(clip.wave[None]))[0])
        info = {"orig_sample_rate": clip.orig_sample_rate, "orig_channels": clip.orig_channels,
                "orig_frames": clip.orig_frames, "clip_offset": clip.offset}
        return png, encode_wav(clip.wave, self.cfg.sample_rate), info


def _split_of(relpath: str, sample_id: str, test_fraction: float) -> str:
    first = relpath.split("/", 1)[0].lower()
    if "/" in relpath and first in SPLIT_DIRS:
        return SPLIT_DIRS[first]
    # No split folders: a stable split by content hash, so a file keeps its split across runs.
    return "test" if int(sample_id[:8], 16) / 2**32 < test_fraction else "train"


def _has_split_dir(relpath: str) -> bool:
    return "/" in relpath and relpath.split("/", 1)[0].lower() in SPLIT_DIRS


def _read_labels(fs, root: str, cfg: DataConfig) -> dict[str, int]:
    path = posixpath.join(root, "labels.csv")
    retry = {"retries": cfg.retries, "backoff_s": cfg.retry_backoff_s}
    if not with_retries(lambda: fs.exists(path), what=path, **retry):
        return {}
    text = with_retries(lambda: fs.cat_file(path), what=path, **retry).decode("utf-8", errors="replace")
    labels: dict[str, int] = {}
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            rel, label = row["path"].strip(), int(row["label"])
        except (KeyError, TypeError, AttributeError, ValueError):
            raise CollectionError(f"{redact_url(path)}, line {n}: expected columns path,label with an integer "
                                  "label") from None
        if escapes(rel) or rel.startswith("/"):
            raise CollectionError(f"{redact_url(path)}, line {n}: path {rel!r} leaves the collection; paths are "
                                  "relative to the folder labels.csv is in")
        labels[rel] = label
    return labels


def _local_link_problem(full: str, root: str) -> str | None:
    """Why a local symlink cannot be ingested (loop, points out of the collection, a folder), or None."""
    if not os.path.islink(full):
        return None
    try:
        target = os.path.realpath(full, strict=True)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop (following the link never reaches a file), skipped"
        return f"broken symlink (target missing: {os.readlink(full)})"
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, target]) != real_root:
        return "symlink pointing outside the collection folder, refused"
    if os.path.isdir(target):
        return "symlink to a folder, not followed (its files are not ingested)"
    return None


def list_images(url: str, cfg: DataConfig) -> tuple[object, str, list[tuple[str, int]], list[tuple[str, str]]]:
    """The filesystem, its root, sorted ``(relative path, size)`` of image files, and refused entries.

    Local symlinks are checked without following them into loops: fsspec's local ``find`` lists a
    link to a folder as a file, so a loop or a link out of the collection is refused with a reason.
    """
    try:
        fs, root = open_fs(url)
    except StorageError as err:
        raise CollectionError(f"{redact_url(url)}: {err}") from None
    retry = {"retries": cfg.retries, "backoff_s": cfg.retry_backoff_s}
    shown = redact_url(url)
    if not with_retries(lambda: fs.exists(root), what=url, **retry):
        raise CollectionError(f"{shown}: collection not found")
    if not with_retries(lambda: fs.isdir(root), what=url, **retry):
        raise CollectionError(f"{shown}: not a folder")
    exts = tuple(e.lower() for e in cfg.file_extensions)
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    try:
        found = with_retries(lambda: fs.find(root, withdirs=False, detail=True), what=url, **retry)
    except RecursionError:
        # A filesystem whose listing follows folder links can walk a loop forever.
        raise CollectionError(f"{shown}: listing never ends (a folder symlink loop?); remove the loop") from None
    except OSError as err:
        raise CollectionError(f"{shown}: cannot list the collection: {type(err).__name__}: {err}") from None
    files: list[tuple[str, int]] = []
    refused: list[tuple[str, str]] = []
    for full, info in found.items():
        rel = posixpath.relpath(full, root) if root else full
        name = posixpath.basename(rel)
        if name.startswith(".") or rel.startswith("."):
            continue
        problem = _local_link_problem(full, root) if local else None
        if problem:
            refused.append((rel, problem))
            continue
        if not name.lower().endswith(exts):
            continue
        files.append((rel, int(info.get("size") or 0)))
    return fs, root, sorted(files), sorted(refused)


def check_collections(urls: dict[str, str], cfg: DataConfig) -> dict[str, int]:
    """Fail before any work if a collection is missing, not a folder or has no image files at all.

    Returns the number of candidate image files per domain. Called for both collections before
    either is ingested, so a typo in the second one does not cost the first one's ingest.
    """
    counts = {}
    for domain, url in urls.items():
        try:
            _, _, files, _ = list_images(url, cfg)
        except CollectionError as err:  # say which collection (and which setting names it)
            key = {"A": "data.domain_a", "B": "data.domain_b"}.get(domain, domain)
            raise CollectionError(f"collection {domain} ({key}): {err}") from None
        if not files:
            raise CollectionError(f"collection {domain} ({redact_url(url)}): empty, no files ending in "
                                  f"{', '.join(cfg.file_extensions)}")
        counts[domain] = len(files)
    return counts


def _load_previous(manifest: Path, key: str) -> dict[str, dict]:
    """Rows of the last manifest by sample id, if it was made with the same processing."""
    if not manifest.exists():
        return {}
    meta = pq.read_schema(manifest).metadata or {}
    if meta.get(b"cycleaug.processing", b"").decode() != key:
        return {}
    cols = ["sample_id", "orig_width", "orig_height", "orig_mode", "image", "audio", *AUDIO_INFO]
    if not set(cols) <= set(pq.read_schema(manifest).names):
        return {}
    table = pq.read_table(manifest, columns=cols)
    return {row["sample_id"]: row for row in table.to_pylist()}


def ingest_collection(url: str, domain: str, out_dir: str | Path, cfg: DataConfig,
                      progress: Progress | None = None) -> IngestResult:
    """Ingest one collection into ``out_dir/manifest.parquet`` and ``out_dir/quarantine.csv``."""
    out = Path(out_dir)
    manifest_path, quarantine_path = out / "manifest.parquet", out / "quarantine.csv"
    key = processing_key(cfg)
    previous = _load_previous(manifest_path, key)

    fs, root, files, quarantine = list_images(url, cfg)
    labels = _read_labels(fs, root, cfg)
    audio = _AudioDecoder(cfg) if cfg.kind == "audio" else None
    what = "clips" if audio else "images"
    rows: list[dict] = []
    seen: dict[str, str] = {}
    decoded = reused = 0
    source = redact_url(url)
    for i, (rel, size) in enumerate(files):
        full = posixpath.join(root, rel) if root else rel
        uri = redact_url(fs.unstrip_protocol(full))
        if size > cfg.max_file_bytes:
            quarantine.append((rel, f"file too large: {size} bytes > data.max_file_bytes={cfg.max_file_bytes}, "
                                    "not read"))
            continue
        try:
            data = with_retries(lambda p=full: fs.cat_file(p), what=uri, retries=cfg.retries,
                                backoff_s=cfg.retry_backoff_s)
        except OSError as err:
            quarantine.append((rel, f"unreadable: {type(err).__name__}: {err}"))
            continue
        sid = sha256_bytes(data)
        if sid in seen:
            quarantine.append((rel, f"duplicate content of {seen[sid]}"))
            continue
        wav, info = None, dict.fromkeys(AUDIO_INFO)
        if sid in previous:
            prev = previous[sid]
            png, w, h, mode = prev["image"], prev["orig_width"], prev["orig_height"], prev["orig_mode"]
            wav, info = prev["audio"], {k: prev[k] for k in AUDIO_INFO}
            reused += 1
        elif audio is not None:
            from .audio import BadAudio

            try:
                png, wav, info = audio(data)
            except BadAudio as err:
                quarantine.append((rel, str(err)))
                continue
            w = h = mode = None
            decoded += 1
        else:
            try:
                arr = decode_image(data, cfg.mode, cfg.image_size, cfg.max_image_pixels, cfg.min_image_side)
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
            "audio": wav, **info,
        })
        if progress:
            progress(i + 1, len(files))
    quarantine.sort()
    if not rows:
        detail = f"; {len(quarantine)} file(s) quarantined, see {quarantine_path}" if quarantine else ""
        _write_quarantine(quarantine_path, quarantine)
        raise CollectionError(f"{source}: no usable {what} (looked for {', '.join(cfg.file_extensions)}){detail}")
    if not any(r["split"] == "train" for r in rows) and not any(_has_split_dir(r["relpath"]) for r in rows):
        # A tiny collection split by hash can land wholly in test; training needs at least one sample.
        min(rows, key=lambda r: r["sample_id"])["split"] = "train"
    if not any(r["split"] == "train" for r in rows):
        _write_quarantine(quarantine_path, quarantine)
        raise CollectionError(f"{source}: no training {what}: all {len(rows)} usable {what} are in held-out "
                              "folders (test/, val/); put some under train/")

    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    table = table.replace_schema_metadata({"cycleaug.processing": key, "cycleaug.source": source})
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
