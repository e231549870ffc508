"""Published versions for the publish, reader and export tests, made once per test session.

``grown_versions`` runs the tiny pipeline, publishes v1 (flow run "run-1"), adds held-out images to
both collections (so the model is reused), runs again and publishes v2 (flow run "run-2"). Small
``max_shard_mb`` makes many hash-prefix shards out of the few rows.
"""

from __future__ import annotations

import csv
import functools
import shutil
from pathlib import Path

import numpy as np

from cyclegan_core import pipeline
from cyclegan_core.config import Config, config_from_dict
from cyclegan_core.default_data import render_digit, typed_fonts
from cyclegan_core.images import encode_png
from tests.conftest import tiny_collections, tiny_settings

MAX_SHARD_MB = 0.004  # about 4 KB: a few rows per shard at 16x16


def add_held_out(root: Path, images: list[np.ndarray], labels: list[int], prefix: str) -> list[str]:
    """Write new PNGs to ``root/test/`` and append them to ``labels.csv``."""
    rels = []
    for i, (arr, label) in enumerate(zip(images, labels, strict=True)):
        rel = f"test/{prefix}{i:03d}.png"
        (root / rel).write_bytes(encode_png(arr[:, :, None] if arr.ndim == 2 else arr))
        rels.append((rel, label))
    with open(root / "labels.csv", "a", newline="") as f:
        csv.writer(f).writerows(rels)
    return [r for r, _ in rels]


@functools.cache
def grown_versions(base: Path) -> dict:
    from sklearn.datasets import load_digits

    a, b = tiny_collections(base / "raw")
    cfg: Config = config_from_dict(tiny_settings(base / "work", a, b, publish={"max_shard_mb": MAX_SHARD_MB}))
    for step in (pipeline.step_ingest, pipeline.step_train, pipeline.step_generate, pipeline.step_validate):
        step(cfg)
    pipeline.step_publish(cfg, flow_run_id="run-1")
    v1 = base / "v1"
    shutil.copytree(cfg.paths.published, v1)

    digits = load_digits()
    new_a = add_held_out(a, [np.round(img * 255 / 16).astype(np.uint8) for img in digits.images[100:104]],
                         [int(t) for t in digits.target[100:104]], "hand_new_")
    rng = np.random.default_rng(7)
    fonts = typed_fonts()
    new_b = add_held_out(b, [render_digit(d, fonts[d % len(fonts)], 16, rng) for d in (3, 5, 8)], [3, 5, 8],
                         "typed_new_")
    ingested = pipeline.step_ingest(cfg)
    trained = pipeline.step_train(cfg)
    pipeline.step_generate(cfg)
    pipeline.step_validate(cfg)
    pipeline.step_publish(cfg, flow_run_id="run-2")
    v2 = base / "v2"
    shutil.copytree(cfg.paths.published, v2)
    return {"cfg": cfg, "v1": v1, "v2": v2, "new": {"AtoB": len(new_a), "BtoA": len(new_b)},
            "reused": trained.reused, "ingested": {d: r.samples for d, r in ingested.items()}}


def synthetic_inputs(root: Path, n: int, size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """``generated/`` and ``validated/`` folders of ``n`` rows per direction with noise PNGs (about 3 x
    size^2 x 3 bytes of image per row, as incompressible as photos), for reader and throughput tests."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cyclegan_core.generate import GENERATED_SCHEMA
    from cyclegan_core.storage import sha256_bytes
    from cyclegan_core.validate import VALIDATED_SCHEMA

    rng = np.random.default_rng(seed)
    gen_dir, val_dir = root / "generated", root / "validated"
    val_dir.mkdir(parents=True, exist_ok=True)
    for d in ("AtoB", "BtoA"):
        gen, val = [], []
        for i in range(n):
            src, img, rec = (encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(3))
            sid, source_id = sha256_bytes(img), sha256_bytes(src)
            split = "test" if i % 5 == 0 else "train"
            gen.append({"sample_id": sid, "direction": d, "source_id": source_id, "source_relpath": f"{i}.png",
                        "source_uri": f"file:///src/{d}/{i}.png", "split": split, "label": i % 10,
                        "source_image": src, "image": img, "reconstruction": rec,
                        "model_fingerprint": "f" * 64, "created_at": "2026-01-01T00:00:00+00:00"})
            val.append({"sample_id": sid, "split": split, "cycle_l1": float(rng.random()),
                        "cycle_psnr": float(20 + rng.random()), "realism": float(rng.random()),
                        "pred_label": i % 10, "label_ok": True, "passed": i % 7 != 0,
                        "fail_reason": None if i % 7 else "cycle_psnr too low"})
        (gen_dir / d).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(gen, schema=GENERATED_SCHEMA), gen_dir / d / "part-00000.parquet")
        (val_dir / d).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(val, schema=VALIDATED_SCHEMA), val_dir / d / "part-00000.parquet")
    return gen_dir, val_dir
