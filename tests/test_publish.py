"""The published shards: layout, generic metric columns, stability under growth, manifest, card, verify, export."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from cyclegan_core.export import export_image_folder, export_webdataset
from cyclegan_core.images import encode_png
from cyclegan_core.publish import (
    IMAGE_TYPE,
    ROW_GROUP_ROWS,
    assign_shards,
    build_rows,
    publish,
    verify,
    write_shard,
)
from cyclegan_core.reader import open_dataset
from cyclegan_core.storage import sha256_file
from cyclegan_core.validate import VALIDATED_SCHEMA, read_validated
from tests._published import grown_versions

pytestmark = pytest.mark.slow  # the shared fixture runs the tiny pipeline twice (~20-60 s)


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict:
    return grown_versions(tmp_path_factory.getbasetemp() / "published-versions")


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _rows(root: Path) -> dict[tuple[str, str], dict]:
    table = pq.ParquetDataset(sorted((root / "data").glob("*.parquet"))).read()
    return {(r["direction"], r["source_id"]): r for r in table.to_pylist()}


def test_shards_layout_schema_and_card(versions):
    v2 = versions["v2"]
    manifest = _manifest(v2)
    files = sorted((v2 / "data").glob("*.parquet"))
    assert {f"data/{f.name}" for f in files} == {s["file"] for s in manifest["shards"]}
    for shard in manifest["shards"]:
        path = v2 / shard["file"]
        assert sha256_file(path) == shard["sha256"] and path.stat().st_size == shard["bytes"]
        assert pq.read_metadata(path).num_rows == shard["rows"]
        keys = pq.read_table(path, columns=["source_id"]).column("source_id").to_pylist()
        assert keys == sorted(keys) and all(k.startswith(shard["key_prefix"]) for k in keys)
    assert sum(s["rows"] for s in manifest["shards"]) == sum(manifest["rows"].values()) == 55

    schema = pq.read_schema(files[0])
    # Every per-sample column of the validated table, typed as there, plus the fixed columns.
    for f in VALIDATED_SCHEMA:
        if f.name not in ("sample_id", "split", "fail_reason"):
            assert schema.field(f.name).type == f.type, f.name
    for name in ("sample_id", "source_id", "source_uri", "direction", "split", "label", "model_fingerprint",
                 "code_version", "params_hash", "seed", "flow_run_id", "created_at", "width", "height", "mode"):
        assert name in schema.names
    for name in ("image", "source_image", "reconstruction"):
        assert schema.field(name).type == IMAGE_TYPE
    feats = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert feats["image"] == {"_type": "Image"} and feats["cycle_psnr"] == {"dtype": "float64", "_type": "Value"}

    # Per-column codecs: PNG bytes stored as they are (and without min/max), zstd on free-text strings,
    # dictionary encoding (no codec) for low-cardinality columns, floats plain.
    col = pq.ParquetFile(files[0]).metadata.row_group(0)
    codecs = {col.column(i).path_in_schema: col.column(i) for i in range(col.num_columns)}
    for name, c in codecs.items():
        if name.endswith(".bytes"):
            assert c.compression == "UNCOMPRESSED" and not c.is_stats_set, name
    assert {n for n, c in codecs.items() if c.compression == "ZSTD"} == {
        "sample_id", "source_id", "source_uri", "image.path", "source_image.path", "reconstruction.path"}
    for name in ("direction", "split", "model_fingerprint", "label", "seed", "width"):
        assert "RLE_DICTIONARY" in codecs[name].encodings or "PLAIN_DICTIONARY" in codecs[name].encodings, name

    card = (v2 / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert [f["name"] for f in front["dataset_info"]["features"]] == schema.names
    assert {s["name"]: s["num_examples"] for s in front["dataset_info"]["splits"]} == manifest["rows"]
    assert front["configs"][0]["data_files"][0] == {"split": "AtoB", "path": "data/AtoB-*.parquet"}
    row = next(iter(_rows(v2).values()))
    assert row["model_fingerprint"] in card and "mean_cycle_psnr" in card and "| AtoB | 28 | 0 | 0 | 10 | 18 |" in card
    # The data dictionary says what the columns mean, and the bounds in force are recorded.
    assert "| `realism` | float64 | conformal p-value" in card and "not a Hugging Face split" in card
    assert "| `passed` | bool | passed every per-sample bound: always true here" in card


def test_the_card_records_the_bounds_in_force():
    from cyclegan_core.config import RunThresholds, SampleThresholds
    from cyclegan_core.gate import bounds_in_force
    from cyclegan_core.publish import dataset_card

    bounds = bounds_in_force({"AtoB": SampleThresholds(min_cycle_psnr=16.0)},
                             {"AtoB": RunThresholds(min_mean_cycle_ssim=-1.0, max_fid_domain=5.0)})
    assert bounds == ["validate.sample.AtoB.min_cycle_psnr = 16.0", "validate.run.AtoB.max_fid_domain = 5.0"]
    manifest = {"rows": {"AtoB": 1}, "splits": {"AtoB": {"test": 1}}, "shards": [], "dropped": {},
                "provenance": {}, "published_at": "now"}
    schema = pa.schema([("realism", pa.float64())])
    assert "- validate.run.AtoB.max_fid_domain = 5.0" in dataset_card(manifest, schema, bounds=bounds)
    assert "- none: no per-sample or run-level bound was set" in dataset_card(manifest, schema, bounds=[])


def test_row_groups_of_about_100_rows(tmp_path):
    png = encode_png(np.zeros((8, 8, 1), np.uint8))
    n = 250
    table = pa.table({"sample_id": [f"{i:04d}" for i in range(n)],
                      "image": pa.array([{"bytes": png, "path": "x.png"}] * n, IMAGE_TYPE),
                      "direction": ["AtoB"] * n})
    write_shard(table, tmp_path / "s.parquet")
    meta = pq.read_metadata(tmp_path / "s.parquet")
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 50]


def test_shard_hash_follows_the_file_as_it_grows(tmp_path, monkeypatch):
    # The writer's sha256 is taken from the file while pyarrow writes it; read in tiny chunks here so
    # the following thread catches up with the writer many times.
    import cyclegan_core.publish as pub

    monkeypatch.setattr(pub._FollowingHash, "CHUNK", 997)
    rng = np.random.default_rng(0)
    n = 300
    table = pa.table({"sample_id": [f"{i:04d}" for i in range(n)],
                      "image": pa.array([{"bytes": encode_png(rng.integers(0, 255, (16, 16, 3), np.uint8)),
                                          "path": f"{i}.png"} for i in range(n)], IMAGE_TYPE),
                      "direction": ["AtoB"] * n, "label": list(range(n))})
    size, digest = write_shard(table, tmp_path / "s.parquet")
    data = (tmp_path / "s.parquet").read_bytes()
    assert size == len(data) > 997 * 100
    assert digest == hashlib.sha256(data).hexdigest()
    assert pq.read_table(tmp_path / "s.parquet").equals(table)


def test_shard_assignment_splits_only_what_outgrows():
    keys = ["00", "01", "0f", "a0", "a1", "ff"]
    assert assign_shards(keys, [1] * 6, 10) == {"": list(range(6))}
    shards = assign_shards(keys, [1] * 6, 2)
    assert shards == {"00": [0], "01": [1], "0f": [2], "a": [3, 4], "f": [5]}
    # Adding a row under "f" leaves every other shard's rows as they were.
    grown = assign_shards([*keys, "f3"], [1] * 7, 2)
    assert {k: v for k, v in grown.items() if not k.startswith("f")} == {
        k: v for k, v in shards.items() if not k.startswith("f")}


def test_adding_sources_rewrites_only_the_shards_they_fall_in(versions):
    v1, v2 = versions["v1"], versions["v2"]
    assert versions["reused"]  # held-out images only: the model is reused, old translations are the same
    old, new = _rows(v1), _rows(v2)
    added = set(new) - set(old)
    assert set(old) <= set(new)
    assert {d: sum(1 for k in added if k[0] == d) for d in ("AtoB", "BtoA")} == versions["new"]
    for key, row in old.items():
        assert new[key] == row, key  # every column, provenance included (kept from run-1)
    assert {new[k]["flow_run_id"] for k in added} == {"run-2"} and {r["flow_run_id"] for r in old.values()} == {
        "run-1"}
    assert _manifest(v2)["provenance"]["flow_run_id"] == "run-2"

    m1, m2 = _manifest(v1), _manifest(v2)
    v2_sha = {s["file"]: s["sha256"] for s in m2["shards"]}
    untouched = 0
    for shard in m1["shards"]:
        touched = any(k[0] == shard["direction"] and k[1].startswith(shard["key_prefix"]) for k in added)
        if touched:
            assert v2_sha.get(shard["file"]) != shard["sha256"]
        else:
            untouched += 1
            assert v2_sha[shard["file"]] == shard["sha256"], shard["file"]
            assert (v1 / shard["file"]).read_bytes() == (v2 / shard["file"]).read_bytes()
    assert untouched >= len(m1["shards"]) // 2


def test_nothing_time_varying_in_shards(versions, tmp_path):
    cfg, v2 = versions["cfg"], versions["v2"]
    m2 = _manifest(v2)
    out = tmp_path / "again"
    provenance = {**m2["provenance"], "flow_run_id": "run-3"}
    publish(cfg.paths.generated, cfg.paths.validated, out, provenance=provenance, mode=cfg.data.mode,
            size=cfg.data.image_size, max_shard_bytes=m2["max_shard_bytes"], published_at="2031-01-01T00:00:00+00:00")
    # A fresh publish (no previous version to keep provenance from) differs only in flow_run_id: so the
    # provenance carry-over is the only thing that makes unchanged shards identical across runs.
    again = _rows(out)
    for key, row in _rows(v2).items():
        assert {k: v for k, v in again[key].items() if k != "flow_run_id"} == {
            k: v for k, v in row.items() if k != "flow_run_id"}
    for shard in _manifest(out)["shards"]:
        blob = (out / shard["file"]).read_bytes()
        assert b"2031-01-01" not in blob and m2["published_at"].encode() not in blob
    # Publishing on top of v2 with a new run id and time: every shard keeps its bytes.
    shutil.copytree(v2, tmp_path / "v2copy")
    publish(cfg.paths.generated, cfg.paths.validated, tmp_path / "v2copy", provenance=provenance,
            mode=cfg.data.mode, size=cfg.data.image_size, max_shard_bytes=m2["max_shard_bytes"],
            published_at="2031-01-01T00:00:00+00:00")
    m3 = _manifest(tmp_path / "v2copy")
    assert m3["shards"] == m2["shards"] and m3["published_at"] != m2["published_at"]


def test_new_metric_columns_flow_through(versions, tmp_path):
    cfg = versions["cfg"]
    validated = tmp_path / "validated"
    shutil.copytree(cfg.paths.validated, validated)
    for d in ("AtoB", "BtoA"):
        for shard in sorted((validated / d).glob("part-*.parquet")):  # one table per generated shard
            t = pq.read_table(shard)
            sharp = pa.array(np.linspace(0, 1, t.num_rows), pa.float32())
            pq.write_table(t.add_column(t.schema.get_field_index("passed"), "sharpness", sharp), shard)
    table, dropped = build_rows(cfg.paths.generated, validated, "AtoB", mode="L", size=16,
                                provenance={"code_version": "c", "params_hash": "p", "seed": 0, "flow_run_id": None})
    assert table.schema.field("sharpness").type == pa.float32() and dropped == 0
    src = read_validated(validated, "AtoB")
    assert dict(zip(table["sample_id"].to_pylist(), table["sharpness"].to_pylist(), strict=True)) == dict(
        zip(src["sample_id"].to_pylist(), src["sharpness"].to_pylist(), strict=True))
    feats = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert feats["sharpness"] == {"dtype": "float32", "_type": "Value"}
    # Failing rows are dropped and counted.
    dropped_here = 0
    for shard in sorted((validated / "AtoB").glob("part-*.parquet")):
        t = pq.read_table(shard)
        passed = pa.array([i % 3 != 0 for i in range(t.num_rows)])
        dropped_here += pc.sum(pc.invert(passed)).as_py()
        pq.write_table(t.set_column(t.schema.get_field_index("passed"), "passed", passed), shard)
    t = read_validated(validated, "AtoB")
    table, dropped = build_rows(cfg.paths.generated, validated, "AtoB", mode="L", size=16,
                                provenance={"code_version": "c", "params_hash": "p", "seed": 0, "flow_run_id": None})
    assert dropped == dropped_here and table.num_rows == t.num_rows - dropped
    assert pc.all(table["passed"]).as_py()


def test_verify_catches_tampered_missing_and_unlisted_shards(versions, tmp_path):
    from flows.cli import main

    root = tmp_path / "v2"
    shutil.copytree(versions["v2"], root)
    assert verify(root) == []
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    assert main(["--params", str(params), "verify", "--dataset", str(root)]) == 0
    shards = _manifest(root)["shards"]
    tampered, gone = root / shards[0]["file"], root / shards[1]["file"]
    blob = bytearray(tampered.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    tampered.write_bytes(bytes(blob))
    gone.unlink()
    shutil.copyfile(root / shards[2]["file"], root / "data" / "AtoB-zz.parquet")
    problems = verify(root)
    assert f"{shards[0]['file']}: sha256 differs from manifest.json" in problems
    assert f"{shards[1]['file']}: missing" in problems
    assert "data/AtoB-zz.parquet: not listed in manifest.json" in problems and len(problems) == 3
    assert main(["--params", str(params), "verify", "--dataset", str(root)]) == 1


def test_export_image_folder_and_webdataset(versions, tmp_path):
    dataset = open_dataset(str(versions["v2"]))
    rows = _rows(versions["v2"])
    folder = export_image_folder(dataset, tmp_path / "folder")
    assert folder.rows == len(rows)
    meta = []
    for split in ("train", "test"):
        with open(tmp_path / "folder" / split / "metadata.csv", newline="") as f:
            meta += [m | {"_split": split} for m in csv.DictReader(f)]
    assert len(meta) == len(rows) and meta[0].keys() >= {"file_name", "sample_id", "source_id", "label", "cycle_psnr"}
    for m in meta:
        row = rows[(m["direction"], m["source_id"])]
        assert m["_split"] == row["split"] and m["file_name"] == f"{row['direction']}/{row['sample_id']}.png"
        assert (tmp_path / "folder" / m["_split"] / m["file_name"]).read_bytes() == row["image"]["bytes"]
    # Hugging Face's imagefolder loader: splits from the folders, each row's label from metadata.csv (the
    # digit), not the direction folders.
    import datasets

    hf = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "folder"),
                               cache_dir=str(tmp_path / "hf-cache"))
    assert set(hf) == {"train", "test"}
    for split in hf:
        got = sorted((r["direction"], r["sample_id"], r["label"]) for r in hf[split].remove_columns("image"))
        want = sorted((r["direction"], r["sample_id"], r["label"]) for r in rows.values() if r["split"] == split)
        assert got == want, split
    assert hf["test"].features["label"].dtype.startswith("int")

    wds = export_webdataset(dataset, tmp_path / "wds", samples_per_shard=10)
    tars = sorted((tmp_path / "wds").glob("*.tar"))
    assert wds.rows == len(rows) and len(tars) == wds.files >= 4
    assert {t.name.rsplit("-", 1)[0] for t in tars} == {"test-AtoB", "train-AtoB", "test-BtoA", "train-BtoA"}
    seen = set()
    for t in tars:
        with tarfile.open(t) as tar:
            names = tar.getnames()
            keys = [n.split(".", 1)[0] for n in names]
            # WebDataset groups consecutive members by key: each key's members are contiguous.
            assert len(set(keys)) == len([k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k])
            for n in names:
                if n.endswith(".json"):
                    info = json.loads(tar.extractfile(n).read())
                    row = rows[(info["direction"], info["source_id"])]
                    key = n[:-5]
                    assert tar.extractfile(f"{key}.png").read() == row["image"]["bytes"]
                    assert tar.extractfile(f"{key}.rec.png").read() == row["reconstruction"]["bytes"]
                    assert int(tar.extractfile(f"{key}.cls").read()) == row["label"]
                    assert info["sample_id"] == row["sample_id"] and info["split"] in t.name
                    seen.add((info["direction"], info["source_id"]))
    assert seen == set(rows)
    # The same version exports to the same bytes.
    export_webdataset(dataset, tmp_path / "wds2", samples_per_shard=10)
    assert [t.read_bytes() for t in tars] == [t.read_bytes() for t in sorted((tmp_path / "wds2").glob("*.tar"))]


def test_export_command(versions, tmp_path):
    from flows.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    out = tmp_path / "wds"
    args = ["--params", str(params), "export", "--format", "webdataset", "--dataset", str(versions["v2"]),
            "--out", str(out), "--split", "test", "--direction", "AtoB"]
    assert main(args) == 0
    (tar,) = out.glob("*.tar")
    assert tar.name == "test-AtoB-000000.tar"
    with tarfile.open(tar) as t:
        assert sum(n.endswith(".json") for n in t.getnames()) == 10
    assert main(["--params", str(params), "export", "--dataset", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "x")]) == 1


def _reference_publish(cfg, out: Path, previous: Path | None, provenance: dict, max_shard_bytes: int) -> list[dict]:
    """The whole-table path publish took before it wrote shard by shard: build_rows (a whole direction,
    images included), keep_provenance against the whole previous version, write_shards."""
    from cyclegan_core.publish import PROVENANCE_COLUMNS, _content_columns, keep_provenance, write_shards

    listing = []
    for d in ("AtoB", "BtoA"):
        table, _ = build_rows(cfg.paths.generated, cfg.paths.validated, d, provenance=provenance,
                              mode=cfg.data.mode, size=cfg.data.image_size)
        prev = None
        if previous is not None:
            cols = [*_content_columns(table.schema), *PROVENANCE_COLUMNS]
            files = [previous / s["file"] for s in _manifest(previous)["shards"] if s["direction"] == d]
            prev = pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
        listing += write_shards(keep_provenance(table, prev), out, d, max_shard_bytes)
    return listing


def test_shard_by_shard_publish_writes_the_bytes_of_the_whole_table_path(versions, tmp_path):
    """Each shard written from only its rows (rows merged from both generated parts, many small shards)
    is byte for byte the shard the whole-table path writes, fresh and on top of a previous version."""
    cfg, v1, v2 = versions["cfg"], versions["v1"], versions["v2"]
    m2 = _manifest(v2)
    assert len(list((Path(cfg.paths.generated) / "AtoB").glob("part-*.parquet"))) == 2
    provenance = {**m2["provenance"], "flow_run_id": "run-3"}
    for previous in (None, v1):
        out = tmp_path / ("fresh" if previous is None else "on-v1")
        if previous is not None:
            shutil.copytree(previous, out)
        publish(cfg.paths.generated, cfg.paths.validated, out, provenance=provenance, mode=cfg.data.mode,
                size=cfg.data.image_size, max_shard_bytes=m2["max_shard_bytes"])
        reference = _reference_publish(cfg, tmp_path / "reference", previous, provenance, m2["max_shard_bytes"])
        assert _manifest(out)["shards"] == reference and len(reference) > 8
        for s in reference:
            assert (out / s["file"]).read_bytes() == (tmp_path / "reference" / s["file"]).read_bytes(), s["file"]
        shutil.rmtree(tmp_path / "reference")
    # Provenance was carried over from v1 (not only this run's), so the comparison covered it.
    assert {r["flow_run_id"] for r in _rows(tmp_path / "on-v1").values()} == {"run-1", "run-3"}
    assert not any(p.name.endswith(".staging") for p in tmp_path.iterdir())


def _synthetic_reference(gen: Path, val: Path, out: Path, max_shard_bytes: int) -> list[dict]:
    from cyclegan_core.publish import write_shards

    listing = []
    for d in ("AtoB", "BtoA"):
        table, _ = build_rows(gen, val, d, provenance=PROVENANCE, mode="RGB", size=32)
        listing += write_shards(table, out, d, max_shard_bytes)
    return listing


PROVENANCE = {"code_version": "c", "params_hash": "p", "seed": 0, "flow_run_id": "r"}


def test_a_shard_reads_only_its_rows_and_rows_out_of_part_order_are_gathered(tmp_path):
    """A shard keeps only its own rows of each generated part (read in batches, one part after another);
    rows that do not come in the parts' order (source ids that are not sha256, so their shard key is a
    hash of them) are gathered in order all the same: the bytes are those of the whole-table path."""
    from cyclegan_core.publish import _planned_rows, _shard_bytes, plan_publish
    from tests._published import synthetic_inputs

    gen, val = synthetic_inputs(tmp_path, 600, size=32)
    part = gen / "BtoA" / "part-00000.parquet"
    t = pq.read_table(part)
    pq.write_table(t.set_column(t.schema.get_field_index("source_id"), "source_id",
                                pa.array([f"src-{i:04d}" for i in range(t.num_rows)])), part)
    plan = plan_publish(gen, val, tmp_path / "out", provenance=PROVENANCE, mode="RGB", size=32,
                        max_shard_bytes=200_000)
    assert len(plan["shards"]) > 20
    for spec in plan["shards"]:
        _, rows = _planned_rows(spec)
        held = _shard_bytes(spec, rows["_part"].to_numpy(), rows["_row"].to_numpy(), ["image"])
        assert sum(t.num_rows for t in held.values()) == rows.num_rows == spec["stop"] - spec["start"] < 100
    publish(gen, val, tmp_path / "out", provenance=PROVENANCE, mode="RGB", size=32, max_shard_bytes=60_000)
    reference = _synthetic_reference(gen, val, tmp_path / "reference", 60_000)
    assert _manifest(tmp_path / "out")["shards"] == reference and len(reference) > 10
    for s in reference:
        assert (tmp_path / "out" / s["file"]).read_bytes() == (tmp_path / "reference" / s["file"]).read_bytes()


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def test_label_names_map_sorted_and_alike_in_both_collections():
    from cyclegan_core.labelnames import label_ids, name_of

    assert label_ids(["3", "0", " 7"]) is None  # integers stay the classes
    a, b = label_ids(["dog", "cat", "cat", "fox"]), label_ids(["fox", "cat", "dog", "dog"])
    assert a == b == {"cat": 0, "dog": 1, "fox": 2}  # sorted: the order the names come in does not matter
    assert label_ids(["cat", "3"]) == {"3": 0, "cat": 1}  # one name makes every label a name
    assert name_of(2, ["cat", "dog", "fox"]) == "fox" and name_of(None, ["cat"]) is None and name_of(4, None) == 4


@pytest.mark.slow
def test_a_collection_labelled_by_name_publishes_a_class_label(tmp_path):
    """labels.csv with class names: one sorted id map for A and B, a ClassLabel read by `datasets`, the
    card's class_label, and names (not ids) from the review page's API."""
    import datasets
    from fastapi.testclient import TestClient

    from cyclegan_core import pipeline
    from cyclegan_core.config import config_from_dict
    from cyclegan_core.labelnames import read_names
    from flows.review import make_app
    from tests.conftest import tiny_collections, tiny_settings

    a, b = tiny_collections(tmp_path / "raw")
    by_path = {}
    for root in (a, b):
        with open(root / "labels.csv", newline="") as f:
            rows = [(r["path"], DIGIT_NAMES[int(r["label"])]) for r in csv.DictReader(f)]
        with open(root / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([("path", "label"), *rows])
        by_path |= {f"{root.name}/{rel}": name for rel, name in rows}
    names = sorted(set(by_path.values()))
    cfg = config_from_dict(tiny_settings(tmp_path / "work", a, b))
    for step in (pipeline.step_ingest, pipeline.step_train, pipeline.step_generate, pipeline.step_validate,
                 pipeline.step_publish):
        step(cfg)
    assert read_names(cfg.paths.ingest) == names

    hf = datasets.load_dataset("parquet", data_dir=str(Path(cfg.paths.published) / "data"),
                               cache_dir=str(tmp_path / "hf-cache"))
    for split in hf.values():
        feature = split.features["label"]
        assert isinstance(feature, datasets.ClassLabel) and feature.names == names
        assert isinstance(split.features["pred_label"], datasets.ClassLabel)
        for r in split.remove_columns(["image", "source_image", "reconstruction"]):
            want = by_path["/".join(r["source_uri"].rsplit("/", 3)[-3:])]
            assert feature.int2str(r["label"]) == want, r["source_uri"]
    front = yaml.safe_load((Path(cfg.paths.published) / "README.md").read_text().split("---")[1])
    label = next(f for f in front["dataset_info"]["features"] if f["name"] == "label")
    assert label["dtype"]["class_label"]["names"] == {str(i): n for i, n in enumerate(names)}

    client = TestClient(make_app(open_dataset(cfg.paths.published), tmp_path / "flags.parquet"))
    meta = client.get("/api/meta").json()
    assert meta["labels"] and set(meta["labels"]) <= set(names)
    page = client.get("/api/rows", params={"label": "three", "limit": 100}).json()
    assert page["total"] > 0 and {r["label"] for r in page["rows"]} == {"three"}
    assert {r["label_id"] for r in page["rows"]} == {names.index("three")}
    record = client.get(f"/api/record/{page['rows'][0]['row']}").json()
    assert record["label"] == "three" and record["pred_label"] in (*names, None)
