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

Over 500 lines on purpose: listing, the per-file checks with their quarantine reasons, the streamed
manifest and the reuse of the last one are one path that no bad file may leave half-way.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import posixpath
from collections.abc import Callable, Iterator
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
# Rows per manifest row group: ingest holds one group, training's streamed reads a few (LRU).
MANIFEST_GROUP_ROWS = 256
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


def _label_rows(fs, root: str, cfg: DataConfig) -> Iterator[tuple[int, str, str]]:
    """(line, path, raw label) of each row of ``labels.csv`` (none without one)."""
    path = posixpath.join(root, "labels.csv")
    retry = {"retries": cfg.retries, "backoff_s": cfg.retry_backoff_s}
    if not with_retries(lambda: fs.exists(path), what=path, **retry):
        return
    text = with_retries(lambda: fs.cat_file(path), what=path, **retry).decode("utf-8", errors="replace")
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            rel, label = row["path"].strip(), row["label"].strip()
        except (KeyError, TypeError, AttributeError):
            raise CollectionError(f"{redact_url(path)}, line {n}: expected columns path,label") from None
        if not label:
            raise CollectionError(f"{redact_url(path)}, line {n}: empty label (give an integer or a class name)")
        if escapes(rel) or rel.startswith("/"):
            raise CollectionError(f"{redact_url(path)}, line {n}: path {rel!r} leaves the collection; paths are "
                                  "relative to the folder labels.csv is in")
        yield n, rel, label


def label_values(url: str, cfg: DataConfig) -> list[str]:
    """Every raw label in the collection's ``labels.csv``, for :func:`cyclegan_core.labelnames.label_ids`."""
    fs, root = _open_collection(url, cfg)
    return [label for _, _, label in _label_rows(fs, root, cfg)]


def _read_labels(fs, root: str, cfg: DataConfig, ids: dict[str, int] | None = None) -> dict[str, int]:
    """path -> class id: the integer label, or the name's id in ``ids`` (both collections' names)."""
    labels: dict[str, int] = {}
    for n, rel, label in _label_rows(fs, root, cfg):
        try:
            labels[rel] = int(label) if ids is None else ids[label]
        except (ValueError, KeyError):
            where = f"{redact_url(posixpath.join(root, 'labels.csv'))}, line {n}"
            raise CollectionError(f"{where}: label {label!r} is " + (
                "not an integer; class names are mapped over both collections (ingest them together: "
                "cycleaug ingest)" if ids is None else "not among the class names read before ingest began")) from None
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


def _open_collection(url: str, cfg: DataConfig) -> tuple[object, str]:
    """The filesystem and root of a collection; CollectionError when it is missing or not a folder."""
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
    return fs, root


def list_images(url: str, cfg: DataConfig) -> tuple[object, str, list[tuple[str, int]], list[tuple[str, str]]]:
    """The filesystem, its root, sorted ``(relative path, size)`` of image files, and refused entries.

    Local symlinks are checked without following them into loops: fsspec's local ``find`` lists a
    link to a folder as a file, so a loop or a link out of the collection is refused with a reason.
    """
    fs, root = _open_collection(url, cfg)
    retry = {"retries": cfg.retries, "backoff_s": cfg.retry_backoff_s}
    shown = redact_url(url)
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


def _first_image(fs, root: str, exts: tuple[str, ...]) -> bool:
    """Whether the collection has at least one candidate image file, walking folders only until one is found."""
    return any(n.lower().endswith(exts) and not n.startswith(".") for _, _, names in fs.walk(root) for n in names)


def check_collections(urls: dict[str, str], cfg: DataConfig) -> dict[str, bool]:
    """Fail before any work if a collection is missing, not a folder or has no image files at all.

    Called for both collections before either is ingested, so a typo in the second one does not
    cost the first one's ingest. It stops at the first image file it finds: the collection is
    listed in full once, by :func:`ingest_collection`. Returns True per domain.
    """
    found = {}
    exts = tuple(e.lower() for e in cfg.file_extensions)
    for domain, url in urls.items():
        try:
            fs, root = _open_collection(url, cfg)
        except CollectionError as err:  # say which collection (and which setting names it)
            key = {"A": "data.domain_a", "B": "data.domain_b"}.get(domain, domain)
            raise CollectionError(f"collection {domain} ({key}): {err}") from None
        try:
            found[domain] = _first_image(fs, root, exts)
        except (RecursionError, OSError):
            found[domain] = True  # ingest's own listing names the problem
        if not found[domain]:
            raise CollectionError(f"collection {domain} ({redact_url(url)}): empty, no files ending in "
                                  f"{', '.join(cfg.file_extensions)}")
    return found


class _Previous:
    """The last manifest, if made with the same processing: which samples it holds (the ``sample_id``
    column only, by row group), and their normalized bytes read back one row group at a time."""

    COLUMNS = ("orig_width", "orig_height", "orig_mode", "image", "audio", *AUDIO_INFO)

    def __init__(self, manifest: Path, key: str):
        self.where: dict[str, tuple[int, int]] = {}
        self._file: pq.ParquetFile | None = None
        self._group: tuple[int, list[dict]] | None = None
        if not manifest.exists():
            return
        schema = pq.read_schema(manifest)
        if (schema.metadata or {}).get(b"cycleaug.processing", b"").decode() != key:
            return
        if not {"sample_id", *self.COLUMNS} <= set(schema.names):
            return
        self._file = pq.ParquetFile(manifest)
        for g in range(self._file.num_row_groups):
            ids = self._file.read_row_group(g, columns=["sample_id"]).column(0).to_pylist()
            for r, sid in enumerate(ids):
                self.where.setdefault(sid, (g, r))

    def __contains__(self, sid: str) -> bool:
        return sid in self.where

    def row(self, sid: str) -> dict:
        g, r = self.where[sid]
        if self._group is None or self._group[0] != g:  # the listing is in manifest order: groups come in turn
            assert self._file is not None
            self._group = (g, self._file.read_row_group(g, columns=list(self.COLUMNS)).to_pylist())
        return self._group[1][r]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._group = None, None


class _ManifestWriter:
    """Rows into a Parquet file, one row group per ``group_rows`` rows: memory holds one group at most."""

    def __init__(self, path: Path, schema: pa.Schema, group_rows: int):
        self.path, self.schema, self.group_rows = path, schema, group_rows
        self._writer = pq.ParquetWriter(path, schema)
        self._rows: list[dict] = []
        self.count = 0

    def add(self, row: dict) -> None:
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= self.group_rows:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema),
                                     row_group_size=self.group_rows)
            self._rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()


def _with_split(src: Path, dst: Path, schema: pa.Schema, sample_id: str, split: str) -> None:
    """Copy a manifest row group by row group, giving one sample another split."""
    with pq.ParquetFile(src) as f, pq.ParquetWriter(dst, schema) as w:
        for g in range(f.num_row_groups):
            t = f.read_row_group(g)
            ids = np.asarray(t.column("sample_id").to_pylist(), dtype=object)
            splits = np.where(ids == sample_id, split, np.asarray(t.column("split").to_pylist(), dtype=object))
            t = t.set_column(t.schema.get_field_index("split"), "split", pa.array(splits.tolist(), pa.string()))
            w.write_table(t.cast(schema), row_group_size=max(1, t.num_rows))


def ingest_collection(url: str, domain: str, out_dir: str | Path, cfg: DataConfig,
                      progress: Progress | None = None, label_ids: dict[str, int] | None = None) -> IngestResult:
    """Ingest one collection into ``out_dir/manifest.parquet`` and ``out_dir/quarantine.csv``.

    The collection is listed once; its files are read, hashed and normalized in path order and
    written to the manifest a row group at a time (``MANIFEST_GROUP_ROWS`` rows), so memory holds
    one row group and the listing, never the collection's bytes. Samples of the last manifest are
    found by its ``sample_id`` column and their normalized bytes read back a row group at a time.
    ``label_ids``: class names -> ids where ``labels.csv`` holds names (:mod:`cyclegan_core.labelnames`).
    """
    out = Path(out_dir)
    manifest_path, quarantine_path = out / "manifest.parquet", out / "quarantine.csv"
    key = processing_key(cfg)
    fs, root, files, quarantine = list_images(url, cfg)
    labels = _read_labels(fs, root, cfg, label_ids)
    audio = _AudioDecoder(cfg) if cfg.kind == "audio" else None
    what = "clips" if audio else "images"
    source = redact_url(url)
    schema = MANIFEST_SCHEMA.with_metadata({"cycleaug.processing": key, "cycleaug.source": source})
    seen: dict[str, str] = {}
    decoded = reused = n_train = 0
    split_dirs = False
    first_id: str | None = None  # the smallest sample id, which takes the train split if nothing else does
    previous = _Previous(manifest_path, key)
    with atomic_path(manifest_path) as tmp:
        writer = _ManifestWriter(tmp, schema, MANIFEST_GROUP_ROWS)
        try:
            for i, (rel, size) in enumerate(files):
                row = _ingest_one(fs, root, rel, size, cfg, audio, previous, seen, quarantine)
                if row is not None:
                    reused += row.pop("_reused")
                    row |= {"domain": domain, "split": _split_of(rel, row["sample_id"], cfg.test_fraction),
                            "label": labels.get(rel)}
                    n_train += row["split"] == "train"
                    split_dirs = split_dirs or _has_split_dir(rel)
                    first_id = row["sample_id"] if first_id is None else min(first_id, row["sample_id"])
                    writer.add(row)
                if progress:
                    progress(i + 1, len(files))
        finally:
            writer.close()
            previous.close()
        samples = writer.count
        decoded = samples - reused
        quarantine.sort()
        if not samples:
            detail = f"; {len(quarantine)} file(s) quarantined, see {quarantine_path}" if quarantine else ""
            _write_quarantine(quarantine_path, quarantine)
            raise CollectionError(f"{source}: no usable {what} (looked for {', '.join(cfg.file_extensions)}){detail}")
        if not n_train and not split_dirs and first_id is not None:
            # A tiny collection split by hash can land wholly in test; training needs at least one sample.
            with atomic_path(tmp) as fixed:
                _with_split(tmp, fixed, schema, first_id, "train")
            n_train = 1
        if not n_train:
            _write_quarantine(quarantine_path, quarantine)
            raise CollectionError(f"{source}: no training {what}: all {samples} usable {what} are in held-out "
                                  "folders (test/, val/); put some under train/")
        digest = manifest_digest(pq.read_table(tmp, columns=list(DIGEST_COLUMNS)))
    _write_quarantine(quarantine_path, quarantine)
    return IngestResult(
        domain=domain, manifest=str(manifest_path), quarantine=str(quarantine_path),
        manifest_sha256=digest, samples=samples, train=n_train, test=samples - n_train, decoded=decoded,
        reused=reused, quarantined=len(quarantine),
    )


def stored_uri(fs, full: str) -> str:
    """Where a sample was read, as the manifest (and a published row's ``source_uri``) keeps it: a URL for
    remote storage (credentials redacted); for a local file inside the project folder, its path from
    there (``data/raw/A/train/x.png``), so published rows name no folder of the machine that ran it; a
    local file elsewhere keeps its absolute path, as it was configured."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if not {"file", "local"} & set(protocols):
        return redact_url(fs.unstrip_protocol(full))
    path = Path(full)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _ingest_one(fs, root: str, rel: str, size: int, cfg: DataConfig, audio: _AudioDecoder | None,
                previous: _Previous, seen: dict[str, str], quarantine: list[tuple[str, str]]) -> dict | None:
    """One file -> its manifest row (without domain, split and label), or None with a quarantine entry."""
    full = posixpath.join(root, rel) if root else rel
    uri = stored_uri(fs, full)
    if size > cfg.max_file_bytes:
        quarantine.append((rel, f"file too large: {size} bytes > data.max_file_bytes={cfg.max_file_bytes}, "
                                "not read"))
        return None
    try:
        data = with_retries(lambda p=full: fs.cat_file(p), what=uri, retries=cfg.retries,
                            backoff_s=cfg.retry_backoff_s)
    except OSError as err:
        quarantine.append((rel, f"unreadable: {type(err).__name__}: {err}"))
        return None
    sid = sha256_bytes(data)
    if sid in seen:
        quarantine.append((rel, f"duplicate content of {seen[sid]}"))
        return None
    wav, info, was_reused = None, dict.fromkeys(AUDIO_INFO), False
    if sid in previous:
        prev = previous.row(sid)
        png, w, h, mode = prev["image"], prev["orig_width"], prev["orig_height"], prev["orig_mode"]
        wav, info = prev["audio"], {k: prev[k] for k in AUDIO_INFO}
        was_reused = True
    elif audio is not None:
        from .audio import BadAudio

        try:
            png, wav, info = audio(data)
        except BadAudio as err:
            quarantine.append((rel, str(err)))
            return None
        w = h = mode = None
    else:
        try:
            arr = decode_image(data, cfg.mode, cfg.image_size, cfg.max_image_pixels, cfg.min_image_side)
        except BadImage as err:
            quarantine.append((rel, str(err)))
            return None
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            (w, h), mode = im.size, im.mode
        png = encode_png(arr)
    seen[sid] = rel
    return {"sample_id": sid, "relpath": rel, "uri": uri, "orig_width": w, "orig_height": h, "orig_mode": mode,
            "size_bytes": len(data), "image": png, "audio": wav, **info, "_reused": was_reused}


def _write_quarantine(path: Path, entries: list[tuple[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows(entries)


DIGEST_COLUMNS = ("sample_id", "split", "label")  # all that manifest_digest reads (with the schema metadata)


def manifest_digest(table: pa.Table, split: str | None = None) -> str:
    """A content hash of a manifest: its samples, splits, labels and processing (not file names)."""
    ids = table.column("sample_id").to_pylist()
    splits = table.column("split").to_pylist()
    lbls = table.column("label").to_pylist()
    items = sorted((s, sp, lb) for s, sp, lb in zip(ids, splits, lbls, strict=True) if split in (None, sp))
    meta = (table.schema.metadata or {}).get(b"cycleaug.processing", b"")
    return sha256_bytes(json.dumps(items).encode() + meta)


def read_manifest(path: str | Path, splits: tuple[str, ...] | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """The manifest (or only ``columns`` of it) as one table, of ``splits`` only when given: for small uses;
    :func:`iter_manifest_images` reads it in bounded batches."""
    cols = None if columns is None else list(dict.fromkeys([*columns, *(["split"] if splits is not None else [])]))
    table = pq.read_table(path, columns=cols)
    if splits is not None:
        mask = np.isin(np.asarray(table.column("split").to_pylist(), dtype=object), list(splits))
        table = table.filter(pa.array(mask))
    if columns is not None:
        table = table.select(columns)
    return table


def manifest_images(table: pa.Table) -> np.ndarray:
    """All normalized images of a manifest as one uint8 (N, H, W, C) array."""
    return np.stack([decode_png(b) for b in table.column("image").to_pylist()])


def iter_manifest_images(path: str | Path, splits: tuple[str, ...] | None = None, batch_rows: int = 256,
                         columns: tuple[str, ...] = ("sample_id", "label"),
                         keep: set[str] | None = None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The manifest's samples (of ``splits``, and with a sample id in ``keep``, when given) in file order,
    ``batch_rows`` at most at a time: ``(table of columns, uint8 (n, H, W, C) images)``; only the rows
    kept are decoded. Memory holds one row group and one batch."""
    wanted = list(dict.fromkeys([*columns, "sample_id", "split", "image"]))
    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=batch_rows, columns=wanted):
            table = pa.Table.from_batches([batch])
            mask = np.ones(table.num_rows, dtype=bool)
            if splits is not None:
                mask &= np.isin(np.asarray(table.column("split").to_pylist(), dtype=object), list(splits))
            if keep is not None:
                mask &= np.asarray([s in keep for s in table.column("sample_id").to_pylist()], dtype=bool)
            table = table.filter(pa.array(mask))
            if table.num_rows:
                yield table.select(list(columns)), manifest_images(table)
