"""Ingest: a folder or fsspec URL of images or audio clips -> a Parquet manifest of checked, normalized samples.

Every file is hashed (sha256 of its bytes, the sample id), decoded, checked and converted to the
configured mode and size; the normalized PNG is kept in the manifest so later steps never touch
the source storage again. With ``data.kind: audio`` a clip is mixed to mono, resampled, cut or
padded to the clip length (see :mod:`cyclegan_core.audio`); the manifest then keeps the normalized
clip as WAV (``audio``) beside its spectrogram picture (``image``), and the clip's offset.

Files that cannot be used go to a quarantine list with the reason (``quarantine.csv``: path,
reason) and the run goes on; a collection with nothing usable is a
:class:`CollectionError` before any later step starts. Only regular files are opened: a named pipe,
socket or device file (or a link to one) is quarantined with its kind, from its listing and a stat,
never opened; a folder that cannot be listed is quarantined and the rest listed. Storage calls are
retried on transient errors, and on remote storage each listing call or file read has a time limit
(``data.read_timeout_s``): a stalled one is retried like a transient error, then quarantined.
On a re-run, samples already in the previous manifest (same bytes, same processing) are
not decoded again.

Ingest is three steps so that a task runner can spread the per-file work: :func:`plan_collection` lists the
collection once, reads its labels and cuts the listing into chunks of ``data.ingest_chunk_files`` files;
:func:`ingest_chunk` reads, hashes, decodes and normalizes one chunk into a staged Parquet part (any process
that sees the collection and the staging folder); :func:`commit_collection` streams the parts in chunk order
through the content dedupe, the manifest writer, the split rules and the quarantine list. The manifest is
the same bytes however the listing was cut and wherever the chunks ran; :func:`ingest_collection` runs the
three inline.

File names that are not valid UTF-8 (Linux allows any bytes; Python holds them as surrogate
escapes) are ingested: the manifest, quarantine list and logs show them with ``\\xNN`` escapes for
the bytes that are not UTF-8 (:func:`shown`), and the manifest keeps the exact name bytes in
``relpath_bytes`` (null for a UTF-8 name), so nothing is lost. Two names that differ only in their
Unicode normalization (NFC/NFD) are two files here and both are kept; a warning names them.

Over 500 lines on purpose: listing, the per-file checks with their quarantine reasons, the chunks, their
ordered merge into the streamed manifest and the reuse of the last one are one path that no bad file may leave
half-way (and a module apart would import all of this one back).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import os
import posixpath
import shutil
import stat
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import inputs
from .config import DataConfig
from .images import BadImage, decode_image, decode_png, encode_png
from .storage import (
    ReadTimeout,
    RetriesExhausted,
    StorageError,
    atomic_path,
    escapes,
    open_fs,
    parquet_batches,
    redact_url,
    sha256_bytes,
    with_retries,
    within,
    write_bytes_atomic,
)

Progress = Callable[[int, int], None]
T = TypeVar("T")
log = logging.getLogger(__name__)

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
        # The exact bytes of ``relpath`` where the name is not valid UTF-8 (``relpath`` then shows it escaped).
        ("relpath_bytes", pa.binary()),
    ]
)
# Folders deeper than this are taken for a listing that never ends (a store whose listing loops).
MAX_LIST_DEPTH = 256
AUDIO_INFO = ("orig_sample_rate", "orig_channels", "orig_frames", "clip_offset")
# Rows per manifest row group: ingest holds one group, training's streamed reads a few (LRU).
MANIFEST_GROUP_ROWS = 256
# Where chunks stage their parts (inside a collection's ingest folder) until the commit merges them.
CHUNKS_DIR = ".chunks"
SPLIT_DIRS = {"train": "train", "test": "test", "val": "test", "valid": "test", "validation": "test"}


class CollectionError(ValueError):
    """The collection as a whole cannot be used (missing, empty, unreadable labels)."""


class NotRegularFile(OSError):
    """A path listed as a file is a pipe, socket, device or folder: never read (a permanent error, not retried)."""


def shown(name: str) -> str:
    """A name as text that any file, log line or Parquet column takes: unchanged when it is valid UTF-8; else
    the bytes that are not UTF-8 (which Python holds as surrogate escapes) written ``\\xNN``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no byte decoded to
        return name.encode("utf-8", "backslashreplace").decode("ascii")


def _name_bytes(name: str) -> bytes | None:
    """The exact bytes of a name that is not valid UTF-8 (None for a valid one)."""
    if shown(name) == name:
        return None
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


_KINDS = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder"))


def file_kind(mode: int) -> str | None:
    """None for a regular file; else what it is (``named pipe (FIFO)``, ``socket``, ...), from its stat mode."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "special file")


def _read_local(path: str) -> bytes:
    """A local file's bytes, refusing anything that is not a regular file without blocking on it.

    The listing already left out pipes, sockets and devices; opening with ``O_NONBLOCK`` and checking
    the open file's kind covers one put in a file's place after the listing (opening a pipe to read
    blocks until a writer comes; with ``O_NONBLOCK`` it returns at once).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind:
            raise NotRegularFile(f"{kind}: not a regular file, not read")
        return f.read()


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


def _is_local(fs) -> bool:
    return bool({"file", "local"} & set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)))


def _timed(fs, fn: Callable[[], T], cfg: DataConfig, what: str) -> T:
    """``fn()`` retried on transient errors; on remote storage each attempt within ``data.read_timeout_s`` (a
    stall is a transient error). Local calls run inline: a thread per call costs ~0.4 ms, as much as decoding
    a small image, and local reads never wait on a pipe (see :func:`_read_local`)."""
    call = fn if _is_local(fs) else lambda: within(fn, cfg.read_timeout_s, what)
    return with_retries(call, what=what, retries=cfg.retries, backoff_s=cfg.retry_backoff_s)


def _timed_read(fs, full: str, cfg: DataConfig, what: str) -> bytes:
    """A file's bytes (see :func:`_timed`)."""
    return _timed(fs, (lambda: _read_local(full)) if _is_local(fs) else (lambda: fs.cat_file(full)), cfg, what)


def _label_rows(fs, root: str, cfg: DataConfig) -> Iterator[tuple[int, str, str]]:
    """(line, path, raw label) of each row of ``labels.csv`` (none without one); names not valid UTF-8 match
    file names byte for byte."""
    path = posixpath.join(root, "labels.csv")
    shown_path = shown(redact_url(path))
    if not _timed(fs, lambda: fs.exists(path), cfg, shown_path):
        return
    try:
        text = _timed_read(fs, path, cfg, shown_path).decode("utf-8", errors="surrogateescape")
    except OSError as err:
        raise CollectionError(f"{shown_path}: cannot read it: {shown(str(err))}") from None
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            rel, label = row["path"].strip(), row["label"].strip()
        except (KeyError, TypeError, AttributeError):
            raise CollectionError(f"{shown_path}, line {n}: expected columns path,label") from None
        if not label:
            raise CollectionError(f"{shown_path}, line {n}: empty label (give an integer or a class name)")
        if escapes(rel) or rel.startswith("/"):
            raise CollectionError(f"{shown_path}, line {n}: path {shown(rel)!r} leaves the collection; paths are "
                                  "relative to the folder labels.csv is in")
        yield n, rel, label


def label_values(url: str, cfg: DataConfig) -> list[str]:
    """Every raw label in the collection's ``labels.csv``, for :func:`cyclegan_core.labelnames.label_ids`."""
    fs, root = _open_collection(url, cfg)
    return [label for _, _, label in _label_rows(fs, root, cfg)]


def _read_labels(fs, root: str, cfg: DataConfig, ids: dict[str, int] | None = None) -> dict[str, int]:
    """path -> class id: the integer label (never negative), or the name's id in ``ids`` (both collections'
    names)."""
    labels: dict[str, int] = {}
    for n, rel, label in _label_rows(fs, root, cfg):
        where = f"{shown(redact_url(posixpath.join(root, 'labels.csv')))}, line {n}"
        try:
            labels[rel] = int(label) if ids is None else ids[label]
        except (ValueError, KeyError):
            raise CollectionError(f"{where}: label {shown(label)!r} is " + (
                "not an integer; class names are mapped over both collections (ingest them together: "
                "cycleaug ingest)" if ids is None else "not among the class names read before ingest began")) from None
        if labels[rel] < 0:
            raise CollectionError(f"{where}: label {label} for {shown(rel)!r} is negative; labels are class "
                                  "numbers 0, 1, 2, ... or class names")
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
    where = redact_url(url)
    try:
        if not _timed(fs, lambda: fs.exists(root), cfg, where):
            raise CollectionError(f"{where}: collection not found")
        if not _timed(fs, lambda: fs.isdir(root), cfg, where):
            raise CollectionError(f"{where}: not a folder")
    except OSError as err:
        raise CollectionError(f"{where}: cannot reach the collection: {_why(err)}") from None
    return fs, root


def _list_tree(fs, root: str, cfg: DataConfig, url: str) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Every non-folder entry under ``root`` (``{full path: listing info}``), and the folders that could
    not be listed with the reason. Folder by folder, each ``ls`` within the time limit and retried: a
    folder that cannot be read is quarantined and the others listed (fsspec's ``find`` leaves such a
    folder out without a word). Local links are not followed (the local listing gives them as files)."""
    found: dict[str, dict] = {}
    refused: list[tuple[str, str]] = []
    todo = [(root, 0)]
    while todo:
        folder, depth = todo.pop()
        if depth > MAX_LIST_DEPTH:
            raise CollectionError(f"{redact_url(url)}: listing never ends (a folder symlink loop?); remove the loop")
        try:
            listing = _timed(fs, lambda f=folder: fs.ls(f, detail=True), cfg, shown(folder))
        except OSError as err:
            if folder == root:
                raise CollectionError(f"{redact_url(url)}: cannot list the collection: {_why(err)}") from None
            refused.append((_rel(folder, root), f"folder not listed, its files left out: {_why(err)}"))
            continue
        here = folder.rstrip("/")
        for info in listing:
            full = info["name"].rstrip("/")
            if full == here or not full:
                continue  # a store listing the folder itself
            if info.get("type") == "directory":
                todo.append((full, depth + 1))
            else:
                found[full] = info
    return found, refused


def _rel(full: str, root: str) -> str:
    return posixpath.relpath(full, root) if root else full


def _why(err: BaseException) -> str:
    """An error as a quarantine reason: a stall says so plainly, a missing file says it vanished."""
    if isinstance(err, RetriesExhausted) and isinstance(err.__cause__, ReadTimeout):
        return f"{err.__cause__} (gave up after {err.attempts} attempts)"
    if isinstance(err, ReadTimeout):
        return str(err)
    if isinstance(err, FileNotFoundError):
        return f"vanished after the listing: {type(err).__name__}: {shown(str(err))}"
    return f"{type(err).__name__}: {shown(str(err))}"


def _entry_problem(full: str, info: dict, local: bool) -> tuple[str | None, int | None]:
    """Why a listed entry cannot be read (a link that loops or leaves, a pipe, socket or device, gone), or
    None; and its size in bytes (None where the store does not say). Nothing is opened."""
    if not local:
        kind = info.get("type")
        if kind not in ("file", None):
            return f"{kind}: not a regular file, not read", None
        size = info.get("size")
        return None, None if size is None else int(size)
    try:
        st = os.stat(full)  # follows a link inside the collection to what it names
    except FileNotFoundError:
        return "vanished after the listing", None
    except OSError as err:
        return f"unreadable: {_why(err)}", None
    kind = file_kind(st.st_mode)
    if kind:
        link = "symlink to a " if os.path.islink(full) else ""
        return f"{link}{kind}: not a regular file, not read", None
    return None, st.st_size


def list_images(url: str, cfg: DataConfig) -> tuple[object, str, list[tuple[str, int | None]], list[tuple[str, str]]]:
    """The filesystem, its root, sorted ``(relative path, size or None)`` of image files, and refused entries.

    Local symlinks are checked without following them into loops: a loop or a link out of the
    collection is refused with a reason. Only regular files are kept: other entries with an image
    file's name are refused with their kind (from the listing, and a stat for local files), never opened.
    """
    fs, root = _open_collection(url, cfg)
    exts = tuple(e.lower() for e in cfg.file_extensions)
    local = _is_local(fs)
    found, refused = _list_tree(fs, root, cfg, url)
    files: list[tuple[str, int | None]] = []
    for full, info in found.items():
        rel = _rel(full, root)
        name = posixpath.basename(rel)
        if name.startswith(".") or rel.startswith("."):
            continue
        if local and os.path.islink(full):
            problem = _local_link_problem(full, root)
            if problem:  # refused whatever its name: a loop or an escape is worth a word
                refused.append((rel, problem))
                continue
        if not name.lower().endswith(exts):
            continue
        problem, size = _entry_problem(full, info, local)
        if problem:
            refused.append((rel, problem))
        else:
            files.append((rel, size))
    _warn_lookalikes([rel for rel, _ in files])
    return fs, root, sorted(files), sorted(refused)


def _warn_lookalikes(rels: list[str]) -> None:
    """Warn about names that are the same after Unicode NFC normalization (``é`` as one code point or two):
    distinct files here, kept both, but one name on filesystems that normalize (macOS) and easy to confuse."""
    groups: dict[str, list[str]] = {}
    for rel in rels:
        groups.setdefault(unicodedata.normalize("NFC", rel), []).append(rel)
    for same in groups.values():
        if len(same) > 1:
            log.warning("names that differ only in Unicode normalization (NFC/NFD), kept as %d files: %s",
                        len(same), ", ".join(ascii(shown(r)) for r in sorted(same)))


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
        try:  # within the time limit on remote storage: a listing that stalls is named by ingest's own
            found[domain] = _timed(fs, lambda f=fs, r=root: _first_image(f, r, exts), cfg, redact_url(url))
        except (RecursionError, OSError):
            found[domain] = True  # ingest's own listing names the problem
        if not found[domain]:
            raise CollectionError(f"collection {domain} ({redact_url(url)}): empty, no files ending in "
                                  f"{', '.join(cfg.file_extensions)}")
    return found


class _Previous:
    """The last manifest, if made with the same processing: its sample ids, sorted once by the plan
    (:func:`_index_previous`) and searched in place (memory-mapped) by every chunk, and their normalized
    bytes read back one row group at a time."""

    COLUMNS = ("orig_width", "orig_height", "orig_mode", "image", "audio", *AUDIO_INFO)

    def __init__(self, manifest: Path, index: str | None):
        self._file: pq.ParquetFile | None = None
        self._group: tuple[int, list[dict]] | None = None
        self._ids: np.ndarray | None = None
        self._pos: np.ndarray | None = None
        if index is None:
            return
        self._ids = np.load(Path(index) / "ids.npy", mmap_mode="r")
        self._pos = np.load(Path(index) / "pos.npy", mmap_mode="r")
        self._file = pq.ParquetFile(manifest)

    @classmethod
    def usable(cls, manifest: Path, key: str) -> bool:
        """Whether ``manifest`` exists, was made with processing ``key`` and has the columns reuse reads."""
        if not manifest.exists():
            return False
        schema = pq.read_schema(manifest)
        if (schema.metadata or {}).get(b"cycleaug.processing", b"").decode() != key:
            return False
        return {"sample_id", *cls.COLUMNS} <= set(schema.names)

    def _find(self, sid: str) -> int | None:
        """``row group << 32 | row`` of the first row holding ``sid``, or None."""
        if self._ids is None or self._pos is None or not len(self._ids):
            return None
        key = sid.encode("utf-8", "surrogatepass")
        i = int(np.searchsorted(self._ids, key))
        return int(self._pos[i]) if i < len(self._ids) and self._ids[i] == key else None

    def __contains__(self, sid: str) -> bool:
        return self._find(sid) is not None

    def row(self, sid: str) -> dict:
        at = self._find(sid)
        assert at is not None and self._file is not None
        g, r = at >> 32, at & 0xFFFFFFFF
        if self._group is None or self._group[0] != g:  # the listing is in manifest order: groups come in turn
            self._group = (g, self._file.read_row_group(g, columns=["sample_id", *self.COLUMNS]).to_pylist())
        row = self._group[1][r]
        if row["sample_id"] != sid:  # another run replaced the manifest since the plan indexed it
            raise RuntimeError("the last manifest changed while ingest ran (another run?); run ingest again")
        return row

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._group = None, None


def _index_previous(manifest: Path, key: str, folder: Path) -> str | None:
    """Sort the last manifest's sample ids once, with their row group and row, into ``folder`` (``ids.npy``,
    ``pos.npy``) for every chunk to search; None where there is no last manifest made with processing ``key``.
    Memory: the ids as fixed-width bytes (64 bytes a sample), no Python object per row."""
    if not _Previous.usable(manifest, key):
        return None
    ids, pos = [np.array([], dtype="S1")], [np.array([], dtype=np.int64)]
    with pq.ParquetFile(manifest) as f:
        for g in range(f.num_row_groups):
            col = f.read_row_group(g, columns=["sample_id"]).column(0).to_pylist()
            ids.append(np.array([sid.encode("utf-8", "surrogatepass") for sid in col], dtype=bytes).reshape(-1))
            pos.append(np.arange(len(col), dtype=np.int64) + (g << 32))
    every, where = np.concatenate(ids), np.concatenate(pos)
    order = np.argsort(every, kind="stable")  # stable: the first row of an id comes first
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "ids.npy", every[order])
    np.save(folder / "pos.npy", where[order])
    return str(folder)


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


@dataclass(frozen=True)
class IngestPlan:
    """One collection listed once and cut into chunks of ``data.ingest_chunk_files`` files (:func:`plan_collection`).

    ``chunks`` are the specs :func:`ingest_chunk` takes (plain, picklable: the collection's URL, where to stage
    the part, and each file's relative path, listed size and label); ``refused`` the listing's quarantine entries.
    """

    url: str
    domain: str
    out_dir: str
    staging: str
    files: int
    chunks: list[dict]
    refused: list[tuple[str, str]]
    previous: str | None  # the staged index of the last manifest's sample ids (None: nothing to reuse)


def plan_collection(url: str, domain: str, out_dir: str | Path, cfg: DataConfig,
                    label_ids: dict[str, int] | None = None) -> IngestPlan:
    """List the collection once, read its labels, index the last manifest's sample ids (:func:`_index_previous`)
    and cut the sorted listing into chunks of ``cfg.ingest_chunk_files`` files. The index and the chunks' parts
    are staged in a folder of this run's own under ``out_dir/.chunks``, which :func:`commit_collection` (or
    :func:`discard_staging`) removes."""
    out = Path(out_dir)
    fs, root, files, refused = list_images(url, cfg)
    labels = _read_labels(fs, root, cfg, label_ids)
    stage = out / CHUNKS_DIR / uuid.uuid4().hex
    previous = _index_previous(out / "manifest.parquet", processing_key(cfg), stage / "previous")
    n = cfg.ingest_chunk_files
    chunks = [{"url": url, "domain": domain, "index": k, "start": start, "staging": str(stage),
               "manifest": str(out / "manifest.parquet"), "previous": previous,
               "files": [(rel, size, labels.get(rel, labels.get(shown(rel)))) for rel, size in files[start:start + n]]}
              for k, start in enumerate(range(0, len(files), n))]
    return IngestPlan(url=url, domain=domain, out_dir=str(out), staging=str(stage), files=len(files), chunks=chunks,
                      refused=refused, previous=previous)


def plan_collections(urls: dict[str, str], out_root: str | Path, cfg: DataConfig,
                     label_ids: dict[str, int] | None = None) -> dict[str, IngestPlan]:
    """:func:`plan_collection` for each domain's URL (into ``out_root/<domain>``); a failure leaves none staged."""
    plans: dict[str, IngestPlan] = {}
    try:
        for domain, url in urls.items():
            plans[domain] = plan_collection(url, domain, Path(out_root) / domain, cfg, label_ids)
    except BaseException:
        for plan in plans.values():
            discard_staging(plan)
        raise
    return plans


PART_SCHEMA = MANIFEST_SCHEMA.append(pa.field("reused", pa.bool_()))  # a staged part: manifest rows, reused or not


def _part_paths(spec: dict) -> tuple[Path, Path]:
    stem = Path(spec["staging"]) / f"{spec['domain']}-{spec['index']:06d}"
    return stem.with_suffix(".parquet"), stem.with_suffix(".json")


def ingest_chunk(spec: dict, cfg: DataConfig) -> dict:
    """Read, hash, decode and normalize one chunk's files (in any process that sees the collection and the
    staging folder): its rows go to a staged Parquet part, its quarantine entries beside it. Returns paths and
    counts (JSON)."""
    fs, root = open_fs(spec["url"])
    previous = _Previous(Path(spec["manifest"]), spec["previous"])
    try:
        return _chunk(spec, cfg, fs, root, _AudioDecoder(cfg) if cfg.kind == "audio" else None, previous)
    finally:
        previous.close()


def _chunk(spec: dict, cfg: DataConfig, fs, root: str, audio: _AudioDecoder | None, previous: _Previous,
           progress: Callable[[int], None] | None = None) -> dict:
    """:func:`ingest_chunk` with the filesystem, decoder and last manifest given (the local run opens them once).

    Duplicates within the chunk are not decoded twice: they are noted with their sample id, and the commit
    names the file they duplicate (the first usable one in listing order, maybe in an earlier chunk)."""
    part, notes = _part_paths(spec)
    part.parent.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}
    quarantine: list[tuple[str, str]] = []
    duplicates: list[tuple[str, str]] = []
    rels: list[str] = []
    with atomic_path(part) as tmp:
        writer = _ManifestWriter(tmp, PART_SCHEMA, MANIFEST_GROUP_ROWS)
        try:
            for i, (rel, size, label) in enumerate(spec["files"]):
                row = _ingest_one(fs, root, rel, size, cfg, audio, previous, seen, quarantine, duplicates)
                if row is not None:
                    row |= {"domain": spec["domain"], "split": _split_of(rel, row["sample_id"], cfg.test_fraction),
                            "label": label, "reused": row.pop("_reused")}
                    writer.add(row)
                    rels.append(rel)
                if progress:
                    progress(i + 1)
        finally:
            writer.close()
    # JSON with \\u escapes (ensure_ascii): names that are not UTF-8 come back exactly.
    write_bytes_atomic(notes, json.dumps({"rels": rels, "quarantine": quarantine, "duplicates": duplicates},
                                         ensure_ascii=True).encode("ascii"))
    return {"domain": spec["domain"], "index": spec["index"], "part": str(part), "notes": str(notes),
            "files": len(spec["files"]), "rows": len(rels), "quarantined": len(quarantine),
            "duplicates": len(duplicates)}


def commit_collection(plan: IngestPlan, chunks: list[dict], cfg: DataConfig) -> IngestResult:
    """Merge the staged parts in chunk order into ``manifest.parquet`` (dropping content seen in an earlier
    file), apply the split rules, write ``quarantine.csv`` and remove the staging folder: the bytes a
    single pass over the listing writes, however the chunks were spread."""
    try:
        return _commit(plan, chunks, cfg)
    finally:
        discard_staging(plan)


def discard_staging(plan: IngestPlan) -> None:
    """Remove a plan's staged parts (after its commit, or when the run stops before it)."""
    shutil.rmtree(plan.staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        Path(plan.staging).parent.rmdir()  # .chunks, unless another run stages there now


def _commit(plan: IngestPlan, chunks: list[dict], cfg: DataConfig) -> IngestResult:
    out = Path(plan.out_dir)
    manifest_path, quarantine_path = out / "manifest.parquet", out / "quarantine.csv"
    order = sorted(chunks, key=lambda c: c["index"])
    if [c["index"] for c in order] != list(range(len(plan.chunks))):
        raise ValueError(f"collection {plan.domain}: chunks {[c['index'] for c in order]} do not match the plan's "
                         f"{len(plan.chunks)}")
    what = "clips" if cfg.kind == "audio" else "images"
    source = redact_url(plan.url)
    schema = MANIFEST_SCHEMA.with_metadata({"cycleaug.processing": processing_key(cfg), "cycleaug.source": source})
    seen: dict[str, str] = {}
    quarantine = list(plan.refused)
    reused = n_train = 0
    split_dirs = False
    first_id: str | None = None  # the smallest sample id, which takes the train split if nothing else does
    with atomic_path(manifest_path) as tmp:
        writer = _ManifestWriter(tmp, schema, MANIFEST_GROUP_ROWS)
        try:
            for chunk in order:
                notes = json.loads(Path(chunk["notes"]).read_text(encoding="ascii"))
                quarantine += [(rel, reason) for rel, reason in notes["quarantine"]]
                rels = iter(notes["rels"])
                for batch in parquet_batches(chunk["part"], PART_SCHEMA.names, MANIFEST_GROUP_ROWS):
                    for row in batch.to_pylist():
                        rel, sid = next(rels), row["sample_id"]
                        if sid in seen:
                            quarantine.append((rel, f"duplicate content of {shown(seen[sid])}"))
                            continue
                        seen[sid] = rel
                        reused += row.pop("reused")
                        n_train += row["split"] == "train"
                        split_dirs = split_dirs or _has_split_dir(rel)
                        first_id = sid if first_id is None else min(first_id, sid)
                        writer.add(row)
                # A duplicate within the chunk follows the file it repeats: that file's sample id is seen by now.
                quarantine += [(rel, f"duplicate content of {shown(seen[sid])}") for rel, sid in notes["duplicates"]]
        finally:
            writer.close()
        samples = writer.count
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
        digest = manifest_digest(tmp)
    _write_quarantine(quarantine_path, quarantine)
    return IngestResult(
        domain=plan.domain, manifest=str(manifest_path), quarantine=str(quarantine_path),
        manifest_sha256=digest, samples=samples, train=n_train, test=samples - n_train, decoded=samples - reused,
        reused=reused, quarantined=len(quarantine),
    )


def ingest_collection(url: str, domain: str, out_dir: str | Path, cfg: DataConfig,
                      progress: Progress | None = None, label_ids: dict[str, int] | None = None) -> IngestResult:
    """Ingest one collection into ``out_dir/manifest.parquet`` and ``out_dir/quarantine.csv``, in this process.

    The three steps a task runner spreads (:func:`plan_collection`, :func:`ingest_chunk` per chunk,
    :func:`commit_collection`), run inline: the collection is listed once; its files are read, hashed and
    normalized in path order, a chunk at a time, into staged parts of row groups (``MANIFEST_GROUP_ROWS``
    rows), merged into the manifest a row group at a time, so memory holds a row group and the listing,
    never the collection's bytes. Samples of the last manifest are found in a sorted index of its ids and
    their normalized bytes read back a row group at a time.
    ``label_ids``: class names -> ids where ``labels.csv`` holds names (:mod:`cyclegan_core.labelnames`).
    """
    plan = plan_collection(url, domain, out_dir, cfg, label_ids)
    results = []
    try:
        fs, root = open_fs(url)
        audio = _AudioDecoder(cfg) if cfg.kind == "audio" else None
        previous = _Previous(Path(out_dir) / "manifest.parquet", plan.previous)
        try:
            for spec in plan.chunks:
                step = (lambda i, s=spec["start"]: progress(s + i, plan.files)) if progress else None
                results.append(_chunk(spec, cfg, fs, root, audio, previous, step))
        finally:
            previous.close()
    except BaseException:
        discard_staging(plan)
        raise
    return commit_collection(plan, results, cfg)


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


def _ingest_one(fs, root: str, rel: str, size: int | None, cfg: DataConfig, audio: _AudioDecoder | None,
                previous: _Previous, seen: dict[str, str], quarantine: list[tuple[str, str]],
                duplicates: list[tuple[str, str]]) -> dict | None:
    """One file -> its manifest row (without domain, split and label), or None with a quarantine entry (or, for
    content already in ``seen``, a ``(path, sample id)`` in ``duplicates``)."""
    full = posixpath.join(root, rel) if root else rel
    uri = shown(stored_uri(fs, full))
    too_large = f"> data.max_file_bytes={cfg.max_file_bytes}"
    if size is not None and size > cfg.max_file_bytes:
        quarantine.append((rel, f"file too large: {size} bytes {too_large}, not read"))
        return None
    try:
        data = _timed_read(fs, full, cfg, uri)
    except NotRegularFile as err:
        quarantine.append((rel, str(err)))
        return None
    except OSError as err:
        plain = isinstance(err, (ReadTimeout, FileNotFoundError)) or isinstance(err.__cause__, ReadTimeout)
        quarantine.append((rel, _why(err) if plain else f"unreadable: {_why(err)}"))
        return None
    if size is not None and len(data) != size and _is_local(fs):
        # Written to (or replaced) between the listing and the read: its bytes may be half old, half new. (An
        # object store replaces an object whole, and some list another size than they serve: not checked there.)
        quarantine.append((rel, f"changed while being ingested (listed at {size} bytes, read {len(data)}), not "
                                "used; run ingest again once it is complete"))
        return None
    if len(data) > cfg.max_file_bytes:  # a store that lists no sizes
        quarantine.append((rel, f"file too large: {len(data)} bytes {too_large}"))
        return None
    sid = sha256_bytes(data)
    if sid in seen:  # named by the commit, which sees every chunk
        duplicates.append((rel, sid))
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
    return {"sample_id": sid, "relpath": shown(rel), "relpath_bytes": _name_bytes(rel), "uri": uri,
            "orig_width": w, "orig_height": h, "orig_mode": mode, "size_bytes": len(data), "image": png, "audio": wav,
            **info, "_reused": was_reused}


def _write_quarantine(path: Path, entries: list[tuple[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows((shown(rel), shown(reason)) for rel, reason in entries)


DIGEST_COLUMNS = ("sample_id", "split", "label")  # all that manifest_digest reads (with the schema metadata)


DIGEST_BATCH_ROWS = 65536  # rows of the digest columns read at a time (about 6 MB)


def manifest_digest(manifest: pa.Table | str | Path, split: str | None = None) -> str:
    """A content hash of a manifest (a table of :data:`DIGEST_COLUMNS`, or a manifest file read
    :data:`DIGEST_BATCH_ROWS` rows at a time): its samples, splits, labels and processing, not file names
    nor row order.

    Each (sample id, split, label) is hashed and the hashes are added modulo 2**256 (a multiset hash):
    the digest needs no sort, so its memory is one batch whatever the manifest's size.
    """
    total, count = 0, 0
    if isinstance(manifest, pa.Table):
        batches: Iterable = manifest.select(list(DIGEST_COLUMNS)).to_batches()
        meta = (manifest.schema.metadata or {}).get(b"cycleaug.processing", b"")
    else:
        batches = parquet_batches(manifest, list(DIGEST_COLUMNS), DIGEST_BATCH_ROWS)
        meta = (pq.read_schema(manifest).metadata or {}).get(b"cycleaug.processing", b"")
    for batch in batches:
        for sid, sp, lb in zip(*(batch.column(k).to_pylist() for k in range(3)), strict=True):
            if split in (None, sp):
                total += int.from_bytes(hashlib.sha256(json.dumps([sid, sp, lb]).encode()).digest(), "big")
                count += 1
    return sha256_bytes(b"cycleaug.manifest-digest.2:%d:" % count + (total % 2**256).to_bytes(32, "big") + meta)


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
    # parquet_batches: a reader a row group (one reader over the file keeps the image column's buffers)
    for batch in parquet_batches(path, wanted, batch_rows):
        table = pa.Table.from_batches([batch])
        mask = np.ones(table.num_rows, dtype=bool)
        if splits is not None:
            mask &= np.isin(np.asarray(table.column("split").to_pylist(), dtype=object), list(splits))
        if keep is not None:
            mask &= np.asarray([s in keep for s in table.column("sample_id").to_pylist()], dtype=bool)
        table = table.filter(pa.array(mask))
        if table.num_rows:
            yield table.select(list(columns)), manifest_images(table)
