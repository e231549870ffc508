"""Training batches: which samples a step draws, and where their pixels come from.

Which: :func:`step_indices` draws step ``s``'s sample indices of rank ``r`` and domain ``d`` from a
generator seeded by ``(train.seed, r, d, s)`` alone, so a batch does not depend on what was drawn
before it: DataLoader workers can decode steps ahead, and a run resumed at any step draws what an
unbroken run draws.

With ``train.sampling: epoch`` a step's indices are instead its slice of a stream of permutations: pass
``p`` over a domain is the permutation seeded by ``(train.seed, domain, p)``, shared by all ranks, and
global step ``s`` takes positions ``[(s * world + rank) * batch, ... + batch)`` of the passes laid end to
end, so each sample comes once per pass (over all ranks together) and the position in the pass is a
function of the step: a checkpoint's step counter is the position, and a resume mid-pass is exact.

Then :func:`crop_and_flip` applies ``train.augment`` to the batch (the reference's resize_and_crop and
horizontal flip), with draws from the trainer's generator.

Where: a training set whose decoded pixels fit ``runtime.cache_mb`` is decoded once into memory and
batches are gathered from there; a larger one is streamed: :class:`ManifestImages` is a map-style
dataset over a manifest's train split that keeps only an index of (row group, row) per sample and
decodes rows on demand from a small LRU of row groups, and :func:`stream_batches` feeds it
:class:`StepSampler`'s indices through a torch ``DataLoader``. Under ``sampling=epoch`` both paths
train on the same batches; under ``random`` they share the distribution, not the draws.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .images import decode_png

DOMAINS = {"A": 0, "B": 1}
# PNG bytes of recently read row groups a streamed dataset keeps (per process; at least one group): a
# row group holds MANIFEST_GROUP_ROWS rows, so this is a few groups of photos and all of a digits collection.
LRU_BYTES = 32 << 20


def step_seed(seed: int, rank: int, domain: str, step: int) -> int:
    """A 63-bit seed that is a function of (seed, rank, domain, step) only."""
    key = f"cycleaug-batch/{seed}/{rank}/{DOMAINS[domain]}/{step}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def step_indices(n: int, batch_size: int, seed: int, rank: int, domain: str, step: int) -> torch.Tensor:
    """The ``batch_size`` sample indices (with replacement, in [0, n)) that step ``step`` trains on."""
    gen = torch.Generator().manual_seed(step_seed(seed, rank, domain, step))
    return torch.randint(0, n, (batch_size,), generator=gen)


def pass_seed(seed: int, domain: str, epoch: int) -> int:
    """A 63-bit seed of the permutation that pass ``epoch`` over ``domain`` takes (the same on every rank)."""
    key = f"cycleaug-epoch/{seed}/{DOMAINS[domain]}/{epoch}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & ((1 << 63) - 1)


@lru_cache(maxsize=8)
def pass_permutation(n: int, seed: int, domain: str, epoch: int) -> torch.Tensor:
    """The order in which pass ``epoch`` visits the ``n`` samples of ``domain`` (read-only: it is cached)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(pass_seed(seed, domain, epoch)))


def epoch_indices(n: int, batch_size: int, seed: int, rank: int, world: int, domain: str, step: int) -> torch.Tensor:
    """Step ``step``'s ``batch_size`` indices of rank ``rank`` (of ``world``) with ``train.sampling: epoch``:
    its slice of the seeded permutations of ``[0, n)`` laid end to end (a batch may straddle two passes)."""
    start = (step * world + rank) * batch_size
    parts, pos = [], start
    while pos < start + batch_size:
        epoch, offset = divmod(pos, n)
        take = min(n - offset, start + batch_size - pos)
        parts.append(pass_permutation(n, seed, domain, epoch)[offset:offset + take])
        pos += take
    return torch.cat(parts)


def batch_indices(sampling: str, n: int, batch_size: int, seed: int, rank: int, world: int, domain: str,
                  step: int) -> torch.Tensor:
    """Step ``step``'s indices under ``train.sampling`` (random: :func:`step_indices`; epoch: :func:`epoch_indices`)."""
    if sampling == "epoch":
        return epoch_indices(n, batch_size, seed, rank, world, domain, step)
    return step_indices(n, batch_size, seed, rank, domain, step)


def crop_and_flip(x: torch.Tensor, augment: str, load_ratio: float, gen: torch.Generator) -> torch.Tensor:
    """``train.augment`` on a float (N, C, H, W) batch: the reference's resize_and_crop (bicubic resize to
    ``round(load_ratio * side)``, then a random crop back to (H, W), per sample) and/or a random horizontal
    flip with p = 0.5 per sample. The crop offsets, then the flip coins, come from ``gen`` (on the CPU)."""
    n, _, h, w = x.shape
    if augment in ("crop", "crop_flip"):
        lh, lw = round(h * load_ratio), round(w * load_ratio)
        big = F.interpolate(x, size=(lh, lw), mode="bicubic", align_corners=False)
        top = torch.randint(0, lh - h + 1, (n,), generator=gen)
        left = torch.randint(0, lw - w + 1, (n,), generator=gen)
        rows = (top[:, None] + torch.arange(h)).to(x.device)
        cols = (left[:, None] + torch.arange(w)).to(x.device)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = big.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if augment in ("flip", "crop_flip"):
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


class ArrayImages(Dataset):
    """Decoded uint8 (N, H, W, C) images already in memory, behind the same interface as :class:`ManifestImages`."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[i]

    def take(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return _nchw(self.take(indices))


class ManifestImages(Dataset):
    """The images of one split of a manifest, decoded on demand.

    Memory: one (row group, row) pair per sample and the PNG bytes of recently read row groups, up to
    ``lru_bytes`` (at least one group); the Parquet file is opened lazily in each process (DataLoader
    workers open their own).
    """

    def __init__(self, path: str | Path, split: str = "train", lru_bytes: int = LRU_BYTES):
        self.path, self.lru_bytes = str(path), lru_bytes
        groups, rows = [], []
        with pq.ParquetFile(self.path) as f:
            for g in range(f.num_row_groups):
                splits = f.read_row_group(g, columns=["split"]).column(0).to_pylist()
                keep = np.flatnonzero(np.asarray(splits, dtype=object) == split)
                groups.append(np.full(len(keep), g, dtype=np.int32))
                rows.append(keep.astype(np.int32))
        self.group = np.concatenate(groups) if groups else np.zeros(0, np.int32)
        self.row = np.concatenate(rows) if rows else np.zeros(0, np.int32)
        self._file: pq.ParquetFile | None = None
        self._cache: OrderedDict[int, pa.BinaryArray] = OrderedDict()
        self._shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.group)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_cache": OrderedDict()}

    def reopen(self) -> None:
        """Drop the open file and cached row groups (a forked worker opens its own)."""
        self._file, self._cache = None, OrderedDict()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._shape = tuple(self[0].shape) if len(self) else (0, 0, 0)
        return self._shape

    def _png_group(self, g: int) -> pa.BinaryArray:
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        if self._file is None:
            self._file = pq.ParquetFile(self.path)
        data = self._file.read_row_group(int(g), columns=["image"]).column(0).combine_chunks()
        self._cache[g] = data
        while len(self._cache) > 1 and sum(a.nbytes for a in self._cache.values()) > self.lru_bytes:
            self._cache.popitem(last=False)
        return data

    def __getitem__(self, i: int) -> np.ndarray:
        return decode_png(self._png_group(int(self.group[i]))[int(self.row[i])].as_py())

    def take(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, C) of the given samples, in the given order; each row group is read once
        (in file order), so a large ``indices`` costs one pass over the file and the output array."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), *self.sample_shape), dtype=np.uint8)
        order = np.argsort(self.group[idx], kind="stable")
        for k in order:
            out[k] = self[int(idx[k])]
        return out

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return _nchw(np.stack([self[int(i)] for i in indices]))


ImageSource = ArrayImages | ManifestImages


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def decoded_bytes(source: ImageSource) -> int:
    return len(source) * int(np.prod(source.sample_shape)) if len(source) else 0


class StepSampler(Sampler[list[int]]):
    """Batch sampler: the indices of steps ``start`` .. ``stop - 1`` (see :func:`batch_indices`)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, domain: str, start: int, stop: int,
                 sampling: str = "random", world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.domain = n, batch_size, seed, rank, domain
        self.start, self.stop, self.sampling, self.world = start, stop, sampling, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield batch_indices(self.sampling, self.n, self.batch_size, self.seed, self.rank, self.world, self.domain,
                                step).tolist()


def _collated(batch: torch.Tensor) -> torch.Tensor:
    return batch  # __getitems__ already returns the (n, C, H, W) batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one thread per worker: workers at torch's default threads fight over the cores
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reopen"):
        info.dataset.reopen()


def stream_batches(source: ImageSource, sampler: StepSampler, workers: int = 0,
                   pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """uint8 (batch, C, H, W) tensors of the sampler's steps, in step order, decoded by ``workers`` processes
    (a few steps ahead) or in this process when 0."""
    loader = DataLoader(source, batch_sampler=sampler, num_workers=workers, collate_fn=_collated,
                        worker_init_fn=_worker_init if workers else None, pin_memory=pin_memory,
                        prefetch_factor=4 if workers else None)
    return iter(loader)
