"""Augment a paired Parquet dataset N times per sample, writing Parquet with replay records.

The output folder (``data/part-*.parquet`` plus ``manifest.json`` with every shard's sha256, and with
the demo ``preview.png``, a picture of a few samples before and after) is
built under a temporary name and swapped in whole, so readers see the old version or the new one.
Input is read a batch at a time; each batch is augmented ``copies`` times with seeds derived from
``(seed, batch, copy)``, so the same input and settings give the same output.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import numpy as np

from ..storage import atomic_dir, sha256_file, write_json_atomic
from .augment import SyncAugmenter
from .io import count_rows, iter_rows, row_to_sample, sample_to_row, write_samples, write_table
from .preview import write_preview
from .scenes import make_scenes
from .settings import PairedConfig

DATASET_FORMAT = "cycleaug-paired-1"
Progress = Callable[..., None]


@dataclass(frozen=True)
class PairedAugmentResult:
    out_dir: str
    manifest: str
    sources: int
    rows: int
    shards: int
    seconds: float
    ops: dict[str, int]
    dropped: dict[str, int]
    rejected_draws: dict[str, int]
    outcomes: dict[str, int]
    preview: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def make_demo_input(cfg: PairedConfig, path: str | Path | None = None) -> dict:
    """Write ``cfg.demo.samples`` generated scenes to ``path`` (default ``cfg.input``) if it is missing."""
    target = Path(path or cfg.input)
    if target.exists():
        return {"made": False, "path": str(target)}
    d = cfg.demo
    scenes = make_scenes(d.samples, seed=d.seed, size=d.image_size, frames=d.frames, frame_rate=d.frame_rate,
                         sample_rate=d.sample_rate, points_per_object=d.points_per_object)
    file = target / "scenes.parquet" if target.suffix != ".parquet" else target
    write_samples(scenes, file)
    return {"made": True, "path": str(target), "samples": len(scenes)}


def _batches(it: Iterator[dict], n: int) -> Iterator[list[dict]]:
    while batch := list(islice(it, n)):
        yield batch


def batch_seed(seed: int, batch: int, copy: int) -> int:
    return int(np.random.SeedSequence([seed, batch, copy]).generate_state(1, dtype=np.uint64)[0] >> 1)


def augment_paired(cfg: PairedConfig, progress: Progress | None = None, preview: int = 0) -> PairedAugmentResult:
    """Augment every sample of ``cfg.input`` ``cfg.copies`` times into ``cfg.output``; with ``preview`` > 0,
    also draw that many samples of the first copy, before and after, in ``<output>/preview.png``."""
    t0 = time.perf_counter()
    total = count_rows(cfg.input)
    augmenter = SyncAugmenter.from_config(cfg)
    seen: set[str] = set()
    ops: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    listing: list[dict] = []
    shown: list[tuple] = []
    done = rows = draws = 0
    with atomic_dir(cfg.output) as tmp:
        (tmp / "data").mkdir()
        buffer: list[dict] = []

        def flush() -> None:
            nonlocal buffer
            name = f"data/part-{len(listing):05d}.parquet"
            n = write_table(buffer, tmp / name)
            listing.append({"file": name, "rows": n, "sha256": sha256_file(tmp / name)})
            buffer = []

        for b, batch in enumerate(_batches(iter_rows(cfg.input, cfg.batch_size), cfg.batch_size)):
            sources = []
            for k, row in enumerate(batch):
                sample = row_to_sample(row, f"{cfg.input} (row {done + k})")
                if sample.sample_id in seen:
                    raise ValueError(f"{cfg.input}: sample_id {sample.sample_id!r} appears twice; ids must be unique")
                seen.add(sample.sample_id)
                sources.append(sample)
            for copy in range(cfg.copies):
                seed = batch_seed(cfg.seed, b, copy)
                outs = augmenter.augment(sources, seed, [f"{s.sample_id}.aug{copy:03d}" for s in sources])
                for (out, record), src in zip(outs, sources, strict=True):
                    record.update(seed=seed, batch=b, copy=copy)
                    alignment = record.get("alignment", {})
                    rejected.update(alignment.get("rejected", {}))
                    outcomes[alignment.get("outcome", "augmented")] += 1
                    draws += alignment.get("draws", 1)
                    if out is None:
                        continue
                    if copy == 0 and len(shown) < preview:
                        shown.append((src, out.to("cpu"), record))
                    ops.update(e["op"] for e in record["ops"])
                    dropped.update(out.dropped)
                    buffer.append(sample_to_row(out.to("cpu").validate(), record, src.sample_id, copy))
                    rows += 1
                    if len(buffer) >= cfg.shard_rows:
                        flush()
            done += len(batch)
            if progress:
                progress("paired augment", done, total)
        if buffer or not listing:
            flush()
        manifest = {
            "format": DATASET_FORMAT,
            "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "input": str(cfg.input), "sources": done, "copies": cfg.copies, "rows": rows,
            "ops": dict(sorted(ops.items())), "dropped": dict(sorted(dropped.items())),
            "alignment": {"draws": draws, "rejected_draws": dict(sorted(rejected.items())),
                          "outcomes": dict(sorted(outcomes.items()))},
            "shards": listing, "config": cfg.model_dump(mode="json"),
        }
        write_json_atomic(tmp / "manifest.json", manifest)
        if shown:
            write_preview(shown, tmp / "preview.png")
    return PairedAugmentResult(str(cfg.output), str(Path(cfg.output) / "manifest.json"), done, rows, len(listing),
                               round(time.perf_counter() - t0, 2), dict(ops), dict(dropped), dict(rejected),
                               dict(outcomes), str(Path(cfg.output) / "preview.png") if shown else None)
