"""Generate: translate ingested samples A->B and B->A in batches, with their cycle reconstructions.

Each direction is written as Parquet shards, a source sample going to shard
``int(source_id[:8], 16) % shards`` so the same source always lands in the same shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .config import DIRECTIONS, GenerateConfig
from .images import decode_png, encode_png, to_tensor, to_uint8
from .ingest import read_manifest
from .storage import atomic_dir, sha256_bytes, sha256_file
from .train import load_generators

Progress = Callable[[int, int], None]

GENERATED_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("direction", pa.string()),
        ("source_id", pa.string()),
        ("source_relpath", pa.string()),
        ("source_uri", pa.string()),
        ("split", pa.string()),
        ("label", pa.int64()),
        ("source_image", pa.binary()),
        ("image", pa.binary()),
        ("reconstruction", pa.binary()),
        ("model_fingerprint", pa.string()),
        ("created_at", pa.string()),
    ]
)


@dataclass(frozen=True)
class GenerateResult:
    out_dir: str
    model_fingerprint: str
    rows: dict[str, int]
    shards: dict[str, list[dict]]
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def shard_of(key: str, shards: int) -> int:
    return int(key[:8], 16) % shards


@torch.inference_mode()
def translate(forward: torch.nn.Module, backward: torch.nn.Module, sources: list[bytes],
              batch_size: int) -> list[tuple[bytes, bytes]]:
    """PNG bytes of ``forward(x)`` and ``backward(forward(x))`` for each source PNG."""
    out: list[tuple[bytes, bytes]] = []
    for start in range(0, len(sources), batch_size):
        x = to_tensor([decode_png(b) for b in sources[start:start + batch_size]])
        fake = forward(x)
        rec = backward(fake)
        out += [(encode_png(f), encode_png(r)) for f, r in zip(to_uint8(fake), to_uint8(rec), strict=True)]
    return out


def generate(manifest_a: str | Path, manifest_b: str | Path, model_dir: str | Path, out_dir: str | Path,
             cfg: GenerateConfig, progress: Progress | None = None) -> GenerateResult:
    """Translate the configured splits of both collections; write ``out_dir/<direction>/*.parquet``."""
    import time

    t0 = time.perf_counter()
    gens, meta = load_generators(model_dir)
    fingerprint = meta["fingerprint"]
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    plan = {
        "AtoB": (read_manifest(manifest_a, cfg.splits), gens["G_AB"], gens["G_BA"]),
        "BtoA": (read_manifest(manifest_b, cfg.splits), gens["G_BA"], gens["G_AB"]),
    }
    # A row made before keeps its time stamp, so unchanged rows publish as the same bytes.
    first_made = {
        sid: when
        for d in DIRECTIONS
        for sid, when in zip(*read_generated(out_dir, d, ["sample_id", "created_at"]).to_pydict().values(),
                             strict=True)
    }
    total = sum(t.num_rows for t, _, _ in plan.values())
    done = 0
    rows_out: dict[str, int] = {}
    shards_out: dict[str, list[dict]] = {}
    with atomic_dir(out_dir) as tmp:
        for direction in DIRECTIONS:
            table, fwd, bwd = plan[direction]
            src = table.to_pylist()
            buckets: dict[int, list[dict]] = {}
            for start in range(0, len(src), cfg.batch_size):
                chunk = src[start:start + cfg.batch_size]
                for row, (img, rec) in zip(chunk, translate(fwd, bwd, [r["image"] for r in chunk], cfg.batch_size),
                                           strict=True):
                    sid = sha256_bytes(img)
                    buckets.setdefault(shard_of(row["sample_id"], cfg.shards), []).append({
                        "sample_id": sid, "direction": direction,
                        "source_id": row["sample_id"], "source_relpath": row["relpath"],
                        "source_uri": row["uri"], "split": row["split"], "label": row["label"],
                        "source_image": row["image"], "image": img, "reconstruction": rec,
                        "model_fingerprint": fingerprint, "created_at": first_made.get(sid, created),
                    })
                done += len(chunk)
                if progress:
                    progress(done, total)
            (tmp / direction).mkdir()
            shards_out[direction] = []
            for k in range(cfg.shards):
                rows = sorted(buckets.get(k, []), key=lambda r: r["source_id"])
                path = tmp / direction / f"part-{k:05d}.parquet"
                pq.write_table(pa.Table.from_pylist(rows, schema=GENERATED_SCHEMA), path)
                shards_out[direction].append(
                    {"file": f"{direction}/{path.name}", "rows": len(rows), "sha256": sha256_file(path)}
                )
            rows_out[direction] = len(src)
    return GenerateResult(str(out_dir), fingerprint, rows_out, shards_out, round(time.perf_counter() - t0, 2))


def read_generated(out_dir: str | Path, direction: str, columns: list[str] | None = None) -> pa.Table:
    files = sorted((Path(out_dir) / direction).glob("part-*.parquet"))
    if not files:
        return GENERATED_SCHEMA.empty_table() if columns is None else GENERATED_SCHEMA.empty_table().select(columns)
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
