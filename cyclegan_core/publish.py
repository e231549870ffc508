"""Publish: the translations that passed, as Parquet shards any Parquet reader opens.

Image columns use the Hugging Face ``struct<bytes: binary, path: string>`` layout and the schema
carries ``huggingface`` feature metadata, so ``datasets`` decodes them with no code of ours; pandas
and pyarrow read the same files. Rows go to shards by the hash of their sample id (the sha256 of
the translated PNG) and are sorted within a shard, so the same rows always make the same bytes.
The whole version is built under a temporary name and swapped in; ``manifest.json`` lists every
shard with its sha256 and row count.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .config import DIRECTIONS
from .generate import read_generated, shard_of
from .storage import atomic_dir, sha256_file, write_json_atomic
from .validate import read_validated

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ROW_GROUP_ROWS = 100
PUBLISHED_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image", IMAGE_TYPE),
        ("source_image", IMAGE_TYPE),
        ("reconstruction", IMAGE_TYPE),
        ("direction", pa.string()),
        ("split", pa.string()),
        ("label", pa.int64()),
        ("pred_label", pa.int64()),
        ("label_ok", pa.bool_()),
        ("cycle_l1", pa.float64()),
        ("cycle_psnr", pa.float64()),
        ("cycle_ssim", pa.float64()),
        ("identity_l1", pa.float64()),
        ("realism", pa.float64()),
        ("passed", pa.bool_()),
        ("source_id", pa.string()),
        ("source_uri", pa.string()),
        ("model_fingerprint", pa.string()),
        ("code_version", pa.string()),
        ("params_hash", pa.string()),
        ("seed", pa.int64()),
        ("flow_run_id", pa.string()),
        ("created_at", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
    ]
)


def _hf_features(schema: pa.Schema) -> dict:
    values = {pa.string(): "string", pa.int64(): "int64", pa.int32(): "int32", pa.float64(): "float64",
              pa.bool_(): "bool"}
    feats = {}
    for f in schema:
        feats[f.name] = {"_type": "Image"} if f.type == IMAGE_TYPE else {"dtype": values[f.type], "_type": "Value"}
    return feats


def hf_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    return {b"huggingface": json.dumps({"info": {"features": _hf_features(schema)}}).encode()}


@dataclass(frozen=True)
class PublishResult:
    out_dir: str
    manifest: str
    rows: dict[str, int]
    dropped: dict[str, int]
    shards: int

    def to_dict(self) -> dict:
        return asdict(self)


def publish(generated_dir: str | Path, validated_dir: str | Path, out_dir: str | Path, *, shards: int,
            provenance: dict, mode: str, size: int, card: str) -> PublishResult:
    """Write passing rows to ``out_dir/data/<direction>-<k>-of-<n>.parquet`` plus manifest and card."""
    schema = PUBLISHED_SCHEMA.with_metadata(hf_metadata(PUBLISHED_SCHEMA))
    rows_out: dict[str, int] = {}
    dropped: dict[str, int] = {}
    listing = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "data").mkdir()
        for direction in DIRECTIONS:
            gen = {r["sample_id"]: r for r in read_generated(generated_dir, direction).to_pylist()}
            val = read_validated(validated_dir, direction).to_pylist()
            buckets: dict[int, list[dict]] = {}
            for v in val:
                if not v["passed"]:
                    continue
                g = gen[v["sample_id"]]
                sid = g["sample_id"]
                buckets.setdefault(shard_of(sid, shards), []).append({
                    "sample_id": sid,
                    "image": {"bytes": g["image"], "path": f"{sid}.png"},
                    "source_image": {"bytes": g["source_image"], "path": f"{g['source_id']}.png"},
                    "reconstruction": {"bytes": g["reconstruction"], "path": f"{sid}.rec.png"},
                    "direction": direction, "split": g["split"], "label": g["label"],
                    "pred_label": v["pred_label"], "label_ok": v["label_ok"], "cycle_l1": v["cycle_l1"],
                    "cycle_psnr": v["cycle_psnr"], "cycle_ssim": v["cycle_ssim"], "identity_l1": v["identity_l1"],
                    "realism": v["realism"], "passed": True,
                    "source_id": g["source_id"], "source_uri": g["source_uri"],
                    "model_fingerprint": g["model_fingerprint"], "created_at": g["created_at"],
                    "width": size, "height": size, "mode": mode, **provenance,
                })
            rows_out[direction] = sum(len(b) for b in buckets.values())
            dropped[direction] = len(val) - rows_out[direction]
            for k in range(shards):
                rows = sorted(buckets.get(k, []), key=lambda r: r["sample_id"])
                name = f"data/{direction}-{k:05d}-of-{shards:05d}.parquet"
                table = pa.Table.from_pylist(rows, schema=schema)
                pq.write_table(table, tmp / name, row_group_size=ROW_GROUP_ROWS, compression="zstd",
                               use_dictionary=["direction", "split", "model_fingerprint", "code_version",
                                               "params_hash", "mode", "flow_run_id", "created_at"])
                listing.append({"file": name, "direction": direction, "rows": len(rows),
                                "sha256": sha256_file(tmp / name)})
        manifest = {
            "format": "cycleaug-dataset-1",
            "published_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "rows": rows_out, "dropped": dropped, "shards": listing, "provenance": provenance,
        }
        write_json_atomic(tmp / "manifest.json", manifest)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return PublishResult(str(out_dir), str(Path(out_dir) / "manifest.json"), rows_out, dropped, len(listing))


def verify(out_dir: str | Path) -> list[str]:
    """Problems found checking a published dataset against its manifest (empty when sound)."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    problems = []
    for shard in manifest["shards"]:
        path = out_dir / shard["file"]
        if not path.exists():
            problems.append(f"{shard['file']}: missing")
        elif sha256_file(path) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 differs from manifest.json")
        elif pq.read_metadata(path).num_rows != shard["rows"]:
            problems.append(f"{shard['file']}: row count differs from manifest.json")
    return problems
