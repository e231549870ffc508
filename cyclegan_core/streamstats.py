"""Mergeable statistics of feature sets, so run-level figures can be computed shard by shard.

- :class:`Moments`: count, mean and centered co-moment matrix of a feature set, merged with Chan et
  al.'s pairwise update (stable where raw sums of x x^T would cancel); the Frechet distance of two
  feature sets needs nothing else (:func:`frechet_from_moments`).
- :class:`Reservoir`: a seeded, bounded sample of a feature set for KID: the ``size`` rows with the
  smallest ``hash(seed, sample id)``, kept in their original order. It does not depend on how the
  rows were split into shards, and a set of at most ``size`` rows is kept whole (KID as on the whole set).

Both are stored as safetensors (tensors plus string metadata; no pickle), see :func:`save_stats`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .storage import atomic_path


@dataclass
class Moments:
    """n, mean (d,) and sum of (x - mean)(x - mean)^T (d, d) of a feature set, in float64."""

    n: int
    mean: np.ndarray
    comoment: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> Moments:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        x = np.asarray(x, dtype=np.float64)
        if not len(x):
            return cls.empty(x.shape[1])
        mean = x.mean(0)
        c = x - mean
        return cls(len(x), mean, c.T @ c)

    def merge(self, other: Moments) -> Moments:
        if not other.n:
            return self
        if not self.n:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        return Moments(n, mean, self.comoment + other.comoment + np.outer(delta, delta) * (self.n * other.n / n))

    def cov(self) -> np.ndarray:
        return self.comoment / (self.n - 1)


def frechet_from_moments(a: Moments, b: Moments) -> float | None:
    """:func:`cyclegan_core.metrics.frechet_distance` of the two feature sets these moments describe."""
    if a.n < 2 or b.n < 2:
        return None
    from scipy import linalg

    eps = np.eye(len(a.mean)) * 1e-6  # the same ridge as metrics.frechet_distance
    s1, s2 = a.cov() + eps, b.cov() + eps
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    return max(0.0, float(((a.mean - b.mean) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def sample_keys(seed: int, sample_ids: Sequence[str]) -> np.ndarray:
    """A uniform 63-bit key per sample, fixed by ``seed`` and the sample id (not by its position)."""
    return np.asarray([int.from_bytes(hashlib.sha256(f"cycleaug-reservoir:{seed}:{s}".encode()).digest()[:8],
                                      "little") >> 1 for s in sample_ids], dtype=np.int64)


def smallest_keys(keys: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask of the ``size`` smallest keys (ties broken by position), all when there are fewer."""
    keep = np.zeros(len(keys), dtype=bool)
    if len(keys) <= size:
        keep[:] = True
    else:
        keep[np.lexsort((np.arange(len(keys)), keys))[:size]] = True
    return keep


@dataclass
class Reservoir:
    """At most ``size`` rows of a feature set: those with the smallest :func:`sample_keys`, in order.

    ``order`` is each kept row's position in the whole set as (shard position, row in shard), so
    :meth:`merge` of the shards in shard order gives the rows a single pass over all of them would keep.
    """

    size: int
    keys: np.ndarray  # int64 (k,)
    order: np.ndarray  # int64 (k, 2)
    values: np.ndarray  # float64 (k, d)

    @classmethod
    def empty(cls, size: int, dim: int) -> Reservoir:
        return cls(size, np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros((0, dim)))

    @classmethod
    def of(cls, values: np.ndarray, sample_ids: Sequence[str], seed: int, size: int, shard: int = 0,
           first_row: int = 0) -> Reservoir:
        """The reservoir of ``values`` (rows ``first_row``... of shard ``shard``)."""
        keys = sample_keys(seed, sample_ids)
        keep = smallest_keys(keys, size)
        rows = np.arange(first_row, first_row + len(keys), dtype=np.int64)
        order = np.stack([np.full(len(keys), shard, np.int64), rows], axis=1) if len(keys) else np.zeros((0, 2),
                                                                                                         np.int64)
        return cls(size, keys[keep], order[keep], np.asarray(values, dtype=np.float64)[keep])

    def merge(self, other: Reservoir) -> Reservoir:
        keys = np.concatenate([self.keys, other.keys])
        order = np.concatenate([self.order, other.order])
        values = np.concatenate([self.values, other.values])
        keep = smallest_keys(keys, self.size)
        keys, order, values = keys[keep], order[keep], values[keep]
        by_order = np.lexsort((order[:, 1], order[:, 0]))
        return Reservoir(self.size, keys[by_order], order[by_order], values[by_order])

    def at_shard(self, shard: int) -> Reservoir:
        """This reservoir with its rows' shard position set to ``shard`` (where it goes in a merge)."""
        order = self.order.copy()
        order[:, 0] = shard
        return Reservoir(self.size, self.keys, order, self.values)


def save_stats(path: str | Path, meta: dict, moments: dict[str, Moments], reservoirs: dict[str, Reservoir],
               arrays: dict[str, np.ndarray] | None = None) -> None:
    """Write JSON-able ``meta``, named moments, reservoirs and plain arrays as one safetensors file (atomically)."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {f"a.{k}": np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    for name, m in moments.items():
        tensors[f"m.{name}.n"] = np.asarray([m.n], np.int64)
        tensors[f"m.{name}.mean"] = np.ascontiguousarray(m.mean, np.float64)
        tensors[f"m.{name}.comoment"] = np.ascontiguousarray(m.comoment, np.float64)
    for name, r in reservoirs.items():
        tensors[f"r.{name}.size"] = np.asarray([r.size], np.int64)
        tensors[f"r.{name}.keys"] = np.ascontiguousarray(r.keys, np.int64)
        tensors[f"r.{name}.order"] = np.ascontiguousarray(r.order, np.int64)
        tensors[f"r.{name}.values"] = np.ascontiguousarray(r.values, np.float64)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta, sort_keys=True)})


def load_stats(path: str | Path) -> tuple[dict, dict[str, Moments], dict[str, Reservoir], dict[str, np.ndarray]]:
    """What :func:`save_stats` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads((f.metadata() or {})["meta"])
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    moments = {k[2:-2]: Moments(int(t[k][0]), t[f"m.{k[2:-2]}.mean"], t[f"m.{k[2:-2]}.comoment"])
               for k in t if k.startswith("m.") and k.endswith(".n")}
    reservoirs = {k[2:-5]: Reservoir(int(t[k][0]), t[f"r.{k[2:-5]}.keys"], t[f"r.{k[2:-5]}.order"],
                                     t[f"r.{k[2:-5]}.values"])
                  for k in t if k.startswith("r.") and k.endswith(".size")}
    return meta, moments, reservoirs, {k[2:]: v for k, v in t.items() if k.startswith("a.")}
