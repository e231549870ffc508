"""Publish and read throughput, measured side by side in one run.

Writer: our shard writer (``write_shards``: hash-prefix shards, rows sorted, 100-row row groups,
PNG bytes uncompressed and zstd elsewhere, sha256 of every shard for the manifest) against a
plain ``pyarrow.parquet.write_table`` of the same table (pyarrow defaults), in MB/s of the
table's Arrow bytes; target: ours at least 70% of plain. Also the size and read-time effect of
storing PNG bytes raw rather than zstd-compressed, and the whole ``publish()`` from the
generated/validated folders.

Reader: rows/s through ``open_dataset`` as pandas, as a pyarrow dataset (all columns, and a
filtered projection without images) and through a torch DataLoader that decodes every image.

Images are random 64x64 crops of the two photos scikit-learn ships (real photo statistics,
nothing downloaded). Run from the repository root:

    PYTHONPATH=$PWD python benchmarks/publish_throughput.py [--rows 2000] [--size 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cyclegan_core.publish as pub
from cyclegan_core.generate import GENERATED_SCHEMA
from cyclegan_core.images import encode_png
from cyclegan_core.publish import DEFAULT_MAX_SHARD_BYTES, IMAGE_COLUMNS, build_rows, publish, write_shards
from cyclegan_core.reader import open_dataset
from cyclegan_core.storage import sha256_bytes, sha256_file
from cyclegan_core.validate import VALIDATED_SCHEMA

PROVENANCE = {"code_version": "c" * 64, "params_hash": "p" * 64, "seed": 0, "flow_run_id": "bench"}


def photo_crops(n: int, size: int, rng: np.random.Generator) -> list[bytes]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    out = []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        out.append(encode_png(np.ascontiguousarray(img[y:y + size, x:x + size])))
    return out


def make_inputs(root: Path, rows: int, size: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    gen_dir, val_dir = root / "generated", root / "validated"
    val_dir.mkdir(parents=True)
    for d in ("AtoB", "BtoA"):
        src, img, rec = (photo_crops(rows, size, rng) for _ in range(3))
        gen, val = [], []
        for i in range(rows):
            sid = sha256_bytes(img[i] + i.to_bytes(4, "little"))  # unique even if two crops coincide
            split = "test" if i % 5 == 0 else "train"
            gen.append({"sample_id": sid, "direction": d, "source_id": sha256_bytes(src[i] + i.to_bytes(4, "little")),
                        "source_relpath": f"{i}.png", "source_uri": f"file:///data/{d}/{i}.png", "split": split,
                        "label": i % 10, "source_image": src[i], "image": img[i], "reconstruction": rec[i],
                        "model_fingerprint": "f" * 64, "created_at": "2026-11-24T00:00:00+00:00"})
            val.append({"sample_id": sid, "split": split, "cycle_l1": float(rng.random()),
                        "cycle_psnr": float(20 + 5 * rng.random()), "realism": float(rng.random()),
                        "pred_label": i % 10, "label_ok": bool(rng.random() < 0.7), "passed": True,
                        "fail_reason": None})
        (gen_dir / d).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(gen, schema=GENERATED_SCHEMA), gen_dir / d / "part-00000.parquet")
        (val_dir / d).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(val, schema=VALIDATED_SCHEMA), val_dir / d / "part-00000.parquet")
    return gen_dir, val_dir


def timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls (a fresh output folder each time)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2000, help="rows per direction")
    ap.add_argument("--size", type=int, default=64, help="image side, px")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--shard-mb", type=float, default=32.0, help="max shard size for our writer, MiB")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="publish-bench-"))
    try:
        t0 = time.perf_counter()
        gen_dir, val_dir = make_inputs(tmp / "in", args.rows, args.size)
        print(f"inputs: {args.rows} rows per direction, {args.size}x{args.size} RGB photo crops "
              f"({time.perf_counter() - t0:.1f} s to make)")
        table, _ = build_rows(gen_dir, val_dir, "AtoB", provenance=PROVENANCE, mode="RGB", size=args.size)
        mb = table.nbytes / 1e6
        png_mb = sum(pa.compute.sum(pa.compute.binary_length(pa.compute.struct_field(table[c], "bytes"))).as_py()
                     for c in IMAGE_COLUMNS) / 1e6
        print(f"one direction: {table.num_rows} rows, {mb:.1f} MB in Arrow ({png_mb:.1f} MB of PNG)")
        max_bytes = int(args.shard_mb * 2**20)
        runs = {"n": 0}

        def fresh() -> Path:
            runs["n"] += 1
            out = tmp / f"out{runs['n']}"
            out.mkdir()
            return out

        def ours() -> None:
            write_shards(table, fresh(), "AtoB", DEFAULT_MAX_SHARD_BYTES)

        def ours_small() -> None:
            write_shards(table, fresh(), "AtoB", max_bytes)

        def plain() -> None:
            pq.write_table(table, fresh() / "plain.parquet")

        def plain_rg100() -> None:
            # The same with the row groups the issue asks for (about 100 rows): the layout's own cost.
            pq.write_table(table, fresh() / "plain100.parquet", row_group_size=pub.ROW_GROUP_ROWS)

        def encode_only() -> None:
            # Our layout (100-row row groups, per-column codecs) in one file, hashed as it is written.
            pub.write_shard(table, fresh() / "layout.parquet")

        def once(fn) -> float:
            # Each output is removed after it is timed: keeping them all makes later writes land on
            # never-touched memory, whose first-touch cost (large on a VM) would fall on whichever
            # writer happens to run then.
            t = timed(fn, 1)
            shutil.rmtree(tmp / f"out{runs['n']}")
            return t

        # Interleave so all see the same machine state (this host is shared).
        t_ours, t_plain, t_layout, t_small, t_plain100 = [], [], [], [], []
        for _ in range(args.repeat):
            t_plain.append(once(plain))
            t_plain100.append(once(plain_rg100))
            t_ours.append(once(ours))
            t_layout.append(once(encode_only))
            t_small.append(once(ours_small))
        s_ours, s_plain = statistics.median(t_ours), statistics.median(t_plain)
        ratio = s_plain / s_ours
        print(f"\n== writer (one direction, same table; median of {args.repeat} interleaved runs, best in brackets) ==")
        print(f"plain pq.write_table : {mb / s_plain:8.1f} MB/s  ({s_plain * 1000:.0f} ms) "
              f"[{mb / min(t_plain):.1f} MB/s]")
        print(f"our shard writer     : {mb / s_ours:8.1f} MB/s  ({s_ours * 1000:.0f} ms, incl. sha256 of every shard; "
              f"default {DEFAULT_MAX_SHARD_BYTES >> 20} MiB shards) [{mb / min(t_ours):.1f} MB/s]")
        s_small = statistics.median(t_small)
        print(f"our shard writer, {args.shard_mb:g} MiB shards: {mb / s_small:.1f} MB/s ({s_small * 1000:.0f} ms) "
              f"[{mb / min(t_small):.1f} MB/s]")
        s_layout = statistics.median(t_layout)
        print(f"our layout, 1 file, with sha256: {mb / s_layout:.1f} MB/s ({s_layout * 1000:.0f} ms) "
              f"[{mb / min(t_layout):.1f} MB/s]")
        shard = tmp / "one-shard.parquet"
        pub_size, _ = pub.write_shard(table, shard)
        s_sha = timed(lambda: sha256_file(shard), args.repeat)
        print(f"sha256 of that shard alone: {s_sha * 1000:.0f} ms ({pub_size / 1e6 / s_sha:.0f} MB/s; "
              f"our writer hashes on a second thread while it encodes)")
        best = min(t_plain) / min(t_ours)
        verdict = {True: "PASS", False: "FAIL"}
        s_plain100 = statistics.median(t_plain100)
        print(f"plain pq.write_table, {pub.ROW_GROUP_ROWS}-row groups: {mb / s_plain100:.1f} MB/s "
              f"({s_plain100 * 1000:.0f} ms); ours / this: {s_plain100 / s_ours:.2f} (what sorting, per-column "
              "codecs and the sha256 cost on top of the row-group layout)")
        print(f"ours / plain         : median {ratio:.2f} ({verdict[ratio >= 0.70]}), best/best {best:.2f} "
              f"({verdict[best >= 0.70]}); target >= 0.70")

        # PNG bytes raw (ours) against zstd over them: size, write and read time.

        raw_dir = fresh()
        write_shards(table, raw_dir, "AtoB", max_bytes)
        original = pub.write_shard

        def zstd_shard(t: pa.Table, path) -> tuple[int, str]:
            pq.write_table(t, path, row_group_size=pub.ROW_GROUP_ROWS, compression="zstd",
                           use_dictionary=[c for c in pub.DICTIONARY_COLUMNS if c in t.column_names])
            return Path(path).stat().st_size, sha256_file(path)

        pub.write_shard = zstd_shard
        try:
            zstd_dir = fresh()
            s_zstd = timed(lambda: write_shards(table, fresh(), "AtoB", max_bytes), args.repeat)
            write_shards(table, zstd_dir, "AtoB", max_bytes)
        finally:
            pub.write_shard = original

        def size(folder: Path) -> int:
            return sum(p.stat().st_size for p in folder.rglob("*.parquet"))

        def read(folder: Path) -> None:
            for p in sorted(folder.rglob("*.parquet")):
                pq.read_table(p)

        r_raw, r_zstd = timed(lambda: read(raw_dir), args.repeat), timed(lambda: read(zstd_dir), args.repeat)
        print("\n== PNG columns: stored raw (ours) vs zstd over PNG ==")
        print(f"size  : raw {size(raw_dir) / 1e6:.2f} MB, zstd {size(zstd_dir) / 1e6:.2f} MB "
              f"({100 * (1 - size(zstd_dir) / size(raw_dir)):+.1f}% saved by zstd)")
        print(f"write : raw {s_ours * 1000:.0f} ms, zstd {s_zstd * 1000:.0f} ms")
        print(f"read  : raw {r_raw * 1000:.0f} ms, zstd {r_zstd * 1000:.0f} ms (all columns, pyarrow)")

        # Whole publish (both directions, from the generated/validated folders) and the readers.
        pub_dir = tmp / "published"
        s_pub = timed(lambda: publish(gen_dir, val_dir, pub_dir, provenance=PROVENANCE, mode="RGB", size=args.size,
                                      max_shard_bytes=max_bytes), args.repeat)
        n_all = 2 * args.rows
        print(f"\n== publish() end to end: {n_all} rows in {s_pub:.2f} s = {n_all / s_pub:.0f} rows/s, "
              f"{2 * mb / s_pub:.1f} MB/s ==")

        ds_ = open_dataset(str(pub_dir))
        print("\n== reader (open_dataset, both directions) ==")
        t = timed(lambda: ds_.to_pandas(), args.repeat)
        print(f"pandas, all columns             : {n_all / t:10.0f} rows/s")
        t = timed(lambda: ds_.to_table(), args.repeat)
        print(f"pyarrow dataset, all columns    : {n_all / t:10.0f} rows/s")
        t = timed(lambda: ds_.to_table(["sample_id", "cycle_psnr", "label"], split="test"), args.repeat)
        print(f"pyarrow dataset, filter no image: {n_all / t:10.0f} rows/s scanned")
        from torch.utils.data import DataLoader

        for workers in (0, 2):
            loader = DataLoader(ds_.torch(["image", "label"]), batch_size=64, num_workers=workers)
            t = timed(lambda loader=loader: sum(len(b["label"]) for b in loader), 1 if workers else args.repeat)
            print(f"torch DataLoader, {workers} workers, decode: {n_all / t:10.0f} rows/s")
        print(f"\n(cpu cores: {os.cpu_count()}; torch threads default)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
