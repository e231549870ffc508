"""Open a published CycleAug version, local or remote, in the tools analysts already use.

``open_dataset("data/augmented")`` (any fsspec URL works: ``s3://bucket/x``, ``memory://x``) or
``open_dataset(repo="https://github.com/org/data-repo", rev="v3")`` (through the ``dvc`` fsspec
protocol that DVC registers; this module never imports DVC) gives a :class:`PublishedDataset`:

- ``to_pandas(...)`` / ``to_table(...)``: rows, with ``direction``, ``split``, ``passed`` and any
  pyarrow filter; with ``columns`` that leave out the images, no image byte is read;
- ``arrow()``: a ``pyarrow.dataset.Dataset`` over exactly the shards in ``manifest.json``;
- ``torch(...)``: an ``IterableDataset`` that spreads row groups over DataLoader workers and DDP
  ranks (every row once per epoch) and decodes images (and, for audio datasets, the clips to
  float32 waveforms);
- ``verify()``: every shard against the manifest's sha256, size and row count.

A modality run's version (format ``cycleaug-modality-1``, :mod:`cyclegan_core.modality.publish`) reads
the same way: one row per (text, generated item) pair (``pair_columns``: ``text`` and ``audio`` or
``image``, decoded by ``torch`` like a translation's). It has no ``split`` or ``passed`` column: its
shards' direction is its split (``train``) and every row passed, so ``split`` picks shards and
``passed=False`` selects nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import random
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from torch.utils.data import IterableDataset

from .storage import PathEscape, escapes

DEFAULT_PATH = "data/augmented"
IMAGE_COLUMNS = ("image", "source_image", "reconstruction")
AUDIO_COLUMNS = ("audio", "source_audio", "reconstruction_audio")  # audio datasets: WAV in the same struct
BYTES_COLUMNS = IMAGE_COLUMNS + AUDIO_COLUMNS
Decode = Literal["tensor", "pil", "bytes"]
MODALITY_FORMAT = "cycleaug-modality-1"  # cyclegan_core.modality.publish.FORMAT (tests check they agree)


class DatasetError(ValueError):
    """A published dataset is missing or unreadable; the message names the path."""


def open_dataset(url: str | None = None, *, repo: str | None = None, rev: str | None = None,
                 path: str = DEFAULT_PATH, filesystem: fsspec.AbstractFileSystem | None = None,
                 storage_options: dict | None = None) -> PublishedDataset:
    """A published version: a folder or fsspec URL, or ``path`` inside a DVC ``repo`` at git ``rev``.

    ``repo`` is a git URL or a local repository folder; ``rev`` a tag, branch or commit (default:
    the checked-out one). Data is fetched from the repository's DVC cache or its default remote.
    """
    if repo is not None or rev is not None:
        if url is not None or filesystem is not None:
            raise ValueError("give either url/filesystem or repo/rev, not both")
        # The "dvc" protocol resolves to dvc.api.DVCFileSystem through fsspec's registry.
        fs = fsspec.filesystem("dvc", url=repo, rev=rev, **(storage_options or {}))
        return PublishedDataset(fs, path.strip("/"), label=f"{repo or '.'}@{rev or 'HEAD'}:{path}")
    if filesystem is not None:
        return PublishedDataset(filesystem, url or path)
    fs, root = fsspec.core.url_to_fs(url or path, **(storage_options or {}))
    return PublishedDataset(fs, root, label=url or path)


class PublishedDataset:
    """One published version: its manifest, card and shards, on any fsspec filesystem."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, label: str | None = None):
        self.fs, self.root = fs, root.rstrip("/") if root not in ("/", "") else root
        self.label = label or root
        try:
            with fs.open(self._path("manifest.json"), "rb") as f:
                self.manifest: dict = json.loads(f.read())
        except FileNotFoundError:
            raise DatasetError(f"{self.label}: no manifest.json; not a published CycleAug dataset") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DatasetError(f"{self.label}/manifest.json: not valid JSON ({err})") from None
        if "shards" not in self.manifest:
            raise DatasetError(f"{self.label}/manifest.json: no 'shards' list")

    def _path(self, rel: str) -> str:
        # Paths come from manifest.json: a tampered one must not make us read outside the dataset.
        if not rel or rel.startswith("/") or escapes(rel) or "://" in rel:
            raise PathEscape(f"{rel!r} is not a relative path inside {self.label}: '../' escapes and absolute "
                             "paths are refused")
        return posixpath.join(self.root, rel) if self.root else rel

    def __repr__(self) -> str:
        return f"PublishedDataset({self.label!r}, rows={self.manifest.get('rows')})"

    @property
    def rows(self) -> dict[str, int]:
        return dict(self.manifest.get("rows", {}))

    @property
    def card(self) -> str:
        with self.fs.open(self._path("README.md"), "rb") as f:
            return f.read().decode("utf-8")

    @property
    def format(self) -> str | None:
        return self.manifest.get("format")

    @property
    def is_modality(self) -> bool:
        """A modality run's (text, generated item) pairs rather than a translation's rows."""
        return self.format == MODALITY_FORMAT

    @property
    def pair_columns(self) -> tuple[str, str] | None:
        """A modality version's pair: the source text column and the generated item's; None for a translation."""
        return ("text", self.manifest.get("media", "audio")) if self.is_modality else None

    def _select(self, direction: str | Sequence[str] | None, split: str | Sequence[str] | None,
                passed: bool | None, extra: ds.Expression | None) -> tuple[Any, ds.Expression | None]:
        """(directions, filter) of a selection; a modality version's split is its shards' direction."""
        if not self.is_modality:
            return direction, row_filter(split=split, passed=passed, extra=extra)
        if split is not None:
            if direction is not None:
                raise ValueError(f"{self.label}: a modality version's split is its shards' direction; give one")
            direction = split
        if passed is False:  # every published pair passed its gate
            extra = ds.scalar(False) if extra is None else extra & ds.scalar(False)
        return direction, extra

    def files(self, direction: str | Sequence[str] | None = None) -> list[str]:
        """Shard paths on ``self.fs`` from the manifest, optionally of some directions only."""
        wanted = None if direction is None else {direction} if isinstance(direction, str) else set(direction)
        known = {s["direction"] for s in self.manifest["shards"]}
        if wanted is not None and not wanted <= known:
            raise ValueError(f"{self.label}: no direction {sorted(wanted - known)}; it has {sorted(known)}")
        return [self._path(s["file"]) for s in self.manifest["shards"] if wanted is None or s["direction"] in wanted]

    @cached_property
    def _arrow_fs(self):
        # pyarrow's own local filesystem is faster than going through fsspec's wrapper.
        return pafs.LocalFileSystem() if type(self.fs) is LocalFileSystem else self.fs

    def arrow(self, direction: str | Sequence[str] | None = None) -> ds.Dataset:
        """A ``pyarrow.dataset.Dataset`` over the manifest's shards (projection and filters push down)."""
        return ds.dataset(self.files(direction), format="parquet", filesystem=self._arrow_fs)

    def to_table(self, columns: Sequence[str] | None = None, *, direction: str | Sequence[str] | None = None,
                 split: str | Sequence[str] | None = None, passed: bool | None = None,
                 filter: ds.Expression | None = None) -> pa.Table:
        """Rows as a pyarrow Table; leave the image columns out of ``columns`` to read no image bytes."""
        direction, where = self._select(direction, split, passed, filter)
        return self.arrow(direction).to_table(columns=list(columns) if columns else None, filter=where)

    def to_pandas(self, columns: Sequence[str] | None = None, **selection) -> Any:
        """Rows as a pandas DataFrame (images as ``{"bytes", "path"}`` dicts); see :meth:`to_table`."""
        return self.to_table(columns, **selection).to_pandas()

    def torch(self, columns: Sequence[str] | None = None, *, direction: str | Sequence[str] | None = None,
              split: str | Sequence[str] | None = None, passed: bool | None = None,
              filter: ds.Expression | None = None, decode: Decode = "tensor",
              transform: Callable[[dict], Any] | None = None, shuffle: bool = False, seed: int = 0,
              rank: int | None = None, world_size: int | None = None) -> ShardedParquetDataset:
        """A torch ``IterableDataset`` of row dicts with images decoded (see :class:`ShardedParquetDataset`)."""
        direction, where = self._select(direction, split, passed, filter)
        return ShardedParquetDataset(self.fs, self.files(direction), columns=columns, filter=where, decode=decode,
                                     transform=transform, shuffle=shuffle, seed=seed, rank=rank,
                                     world_size=world_size)

    def verify(self) -> list[str]:
        """Problems found checking every shard against ``manifest.json`` (empty when sound)."""
        problems = []
        listed = set()
        for shard in self.manifest["shards"]:
            rel = shard["file"]
            listed.add(rel)
            try:
                path = self._path(rel)
            except PathEscape as err:
                problems.append(str(err))
                continue
            if not self.fs.exists(path):
                problems.append(f"{rel}: missing")
                continue
            h, size = hashlib.sha256(), 0
            with self.fs.open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    size += len(block)
            if "bytes" in shard and size != shard["bytes"]:
                problems.append(f"{rel}: {size} bytes, manifest.json says {shard['bytes']}")
            if h.hexdigest() != shard["sha256"]:
                problems.append(f"{rel}: sha256 differs from manifest.json")
                continue
            with self.fs.open(path, "rb") as f:
                rows = pq.ParquetFile(f).metadata.num_rows
            if rows != shard["rows"]:
                problems.append(f"{rel}: {rows} rows, manifest.json says {shard['rows']}")
        data_dir = self._path("data")
        if self.fs.exists(data_dir):
            for p in self.fs.ls(data_dir, detail=False):
                rel = f"data/{posixpath.basename(p.rstrip('/'))}"
                if rel.endswith(".parquet") and rel not in listed:
                    problems.append(f"{rel}: not listed in manifest.json")
        return problems


def row_filter(*, split: str | Sequence[str] | None = None, passed: bool | None = None,
               extra: ds.Expression | None = None) -> ds.Expression | None:
    """A pyarrow filter for the usual selections (directions are chosen by shard, without reading)."""
    parts = []
    if split is not None:
        parts.append(ds.field("split") == split if isinstance(split, str) else ds.field("split").isin(list(split)))
    if passed is not None:
        parts.append(ds.field("passed") == passed)
    if extra is not None:
        parts.append(extra)
    out = None
    for p in parts:
        out = p if out is None else out & p
    return out


def _decode_audio(value: dict | None, decode: Decode) -> Any:
    """A WAV cell as a float32 waveform: a (samples,) tensor, or a numpy array for ``decode="pil"``."""
    if value is None or decode == "bytes":
        return value
    import numpy as np
    import soundfile as sf

    wave, _ = sf.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
    wave = np.ascontiguousarray(wave.mean(axis=1))
    if decode == "pil":
        return wave
    import torch

    return torch.from_numpy(wave)


def _decode_image(value: dict | None, decode: Decode) -> Any:
    if value is None or decode == "bytes":
        return value
    from PIL import Image

    im = Image.open(io.BytesIO(value["bytes"]))
    im.load()
    if decode == "pil":
        return im
    import numpy as np
    import torch

    arr = np.asarray(im, dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (C, H, W) uint8


class ShardedParquetDataset(IterableDataset):
    """Rows of Parquet shards for a torch ``DataLoader``, split over workers and DDP ranks.

    The unit of work is a row group (about 100 rows), so two workers on two ranks stay busy even
    with few shards. Rank ``r`` of ``W`` takes units ``r, r + W, ...`` and its worker ``w`` of ``N``
    every ``N``-th of those from the ``w``-th: each row is yielded exactly once per epoch over all
    readers, and ``len()`` (the rows this rank yields in an epoch, after ``filter``) does not depend
    on the number of DataLoader workers.
    Rank and world size come from ``torch.distributed`` when it is initialized, unless given.
    With ``shuffle``, the unit order (the same on every rank) and the rows inside a unit are
    shuffled from ``seed`` and the epoch (:meth:`set_epoch`). Ranks may get a few rows more or less
    than each other; DDP training loops should stop at the shortest (e.g. ``Join``) or drop the rest.

    Images come as ``(C, H, W)`` uint8 tensors (``decode="tensor"``), PIL images (``"pil"``) or
    the raw ``{"bytes", "path"}`` dicts (``"bytes"``); ``transform`` is applied to each row dict.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, files: list[str], *, columns: Sequence[str] | None = None,
                 filter: ds.Expression | None = None, decode: Decode = "tensor",
                 transform: Callable[[dict], Any] | None = None, shuffle: bool = False, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        if decode not in ("tensor", "pil", "bytes"):
            raise ValueError(f"decode must be 'tensor', 'pil' or 'bytes', not {decode!r}")
        self.fs, self.files = fs, list(files)
        self.columns = list(columns) if columns else None
        self.filter, self.decode, self.transform = filter, decode, transform
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        self.units: list[tuple[int, int]] = []
        self._unit_rows: dict[tuple[int, int], int] | None = None
        self.num_rows = 0
        for i, path in enumerate(self.files):
            with fs.open(path, "rb") as f:
                meta = pq.ParquetFile(f).metadata
            self.units += [(i, rg) for rg in range(meta.num_row_groups)]
            self.num_rows += meta.num_rows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _dist_slot(self) -> tuple[int, int]:
        """(rank, world size): as given, else from ``torch.distributed`` in this process."""
        import torch.distributed as dist

        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            initialized = dist.is_available() and dist.is_initialized()
            rank = (dist.get_rank() if initialized else 0) if rank is None else rank
            world = (dist.get_world_size() if initialized else 1) if world is None else world
        return rank, world

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn or forkserver (macOS's default, or after Prefect ran in
        # this process) do not share the rank's process group: hand them the rank it resolved here.
        state = dict(self.__dict__)
        state["rank"], state["world_size"] = self._dist_slot()
        return state

    def _rank_units(self) -> list[tuple[int, int]]:
        """This rank's units in this epoch's order."""
        rank, world = self._dist_slot()
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        units = list(self.units)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(units)
        return units[rank::world]

    def _pa_fs(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem() if type(self.fs) is LocalFileSystem else pafs.PyFileSystem(
            pafs.FSSpecHandler(self.fs))

    def __len__(self) -> int:
        """Rows this rank yields in an epoch (after ``filter``), over all its DataLoader workers."""
        if self.filter is None and self._dist_slot()[1] == 1:
            return self.num_rows
        if self._unit_rows is None:  # counted once, from the row groups' statistics or the filter's columns
            fmt, fs = ds.ParquetFileFormat(), self._pa_fs()
            self._unit_rows = {u: fmt.make_fragment(self.files[u[0]], filesystem=fs, row_groups=[u[1]]).count_rows(
                filter=self.filter) for u in self.units}
        return sum(self._unit_rows[u] for u in self._rank_units())

    def __iter__(self) -> Iterator[Any]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        fmt, fs = ds.ParquetFileFormat(), self._pa_fs()
        for file_index, rg in self._rank_units()[wid::nw]:
            fragment = fmt.make_fragment(self.files[file_index], filesystem=fs, row_groups=[rg])
            rows = fragment.to_table(columns=self.columns, filter=self.filter).to_pylist()
            if self.shuffle:
                random.Random(f"{self.seed}:{self.epoch}:{file_index}:{rg}").shuffle(rows)
            for row in rows:
                for c in IMAGE_COLUMNS:
                    if c in row:
                        row[c] = _decode_image(row[c], self.decode)
                for c in AUDIO_COLUMNS:
                    if c in row:
                        row[c] = _decode_audio(row[c], self.decode)
                yield self.transform(row) if self.transform else row
