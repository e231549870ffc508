"""Publish a modality run's passing pairs in the Hugging Face layout, with the pipeline's publish machinery.

One row per generated item, both modalities in it: the source ``text`` (and ``text_id``) and the
generated ``audio`` (WAV in the ``struct<bytes, path>`` layout, a Hugging Face ``Audio`` feature), the
class the text names and the one the judge heard (``label``/``pred_label``, ``ClassLabel`` features
named by the judge's words), the gate's per-item figures, the per-item translation choices
(``params``, JSON) and the run's provenance (the translator, its settings as JSON, the code and
settings digests, the seed, the flow run). Shards are cut by :func:`cyclegan_core.publish.assign_shards`
on the sample ids (sha256 of the WAV), written by :func:`cyclegan_core.publish.write_shard` (row groups
of 100, WAV bytes stored as they are) and listed with their sha256 in ``manifest.json``; the version
is built under a temporary name and swapped in whole (:func:`cyclegan_core.storage.atomic_dir`).
Memory: one shard's rows at a time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..publish import assign_shards, hf_metadata, shard_key, shard_name, write_shard
from ..storage import atomic_dir, write_json_atomic

FORMAT = "cycleaug-modality-1"
SPLIT = "train"
NOT_PUBLISHED = ("passed", "fail_reason")  # every published row passed
PROVENANCE = ("translator", "translator_settings", "code_version", "params_hash", "seed", "flow_run_id")
COLUMN_DOCS = {
    "sample_id": "sha256 of the generated item's bytes (WAV): the row's key",
    "text_id": "the source row's id", "text": "the source text the item was made from",
    "audio": "the generated speech, WAV bytes ({bytes, path})", "sample_rate": "Hz of the clip",
    "duration_s": "clip length, seconds", "label": "the word the text says (the judge's class)",
    "pred_label": "the word the validation judge hears in the clip",
    "fidelity": "the probability the validation judge gives the text's word",
    "read_back": "pred_label equals label", "margin": "the judge's logit for the text's word less the best other",
    "realism": "conformal p-value of the margin among held-out real clips' (0.5 = like a real clip)",
    "params": "the translator's per-item choices (JSON: voice, rate, pitch, take)",
    "translator": "the translator (a registered name or module:function)",
    "translator_settings": "its settings (JSON), with the per-item params enough to make the row again",
    "code_version": "sha256 of the modality code (inputs.KEYS[\"modality\"])",
    "params_hash": "sha256 of the run's modality settings (and data.audio for speech)",
    "seed": "modality.seed", "flow_run_id": "the Prefect flow run (null outside Prefect)",
}
SCENE_DOCS = {
    "sample_id": "sha256 of the generated image's PNG: the row's key", "text": "the caption the scene was drawn from",
    "image": "the drawn scene, PNG bytes ({bytes, path})", "width": "px", "height": "px",
    "described": "the caption the oracle reads back from the pixels",
    "label": "how many objects the caption names (the count judge's class)",
    "pred_label": "how many the count judge sees", "fidelity": "caption agreement of the read-back caption "
    "(mean of count, colour, shape, place)", "read_back": "the read-back caption means the caption",
    "margin": "the count judge's logit for the caption's count less the best other",
    "realism": "conformal p-value of the margin among held-out real scenes' (0.5 = like a real scene)",
    "params": "the translator's per-item choices (JSON: take, objects)",
}


def _schema(part_schema: pa.Schema, label_names: list[str]) -> pa.Schema:
    fields = [f for f in part_schema if f.name not in NOT_PUBLISHED]
    fields += [pa.field("translator", pa.string()), pa.field("translator_settings", pa.string()),
               pa.field("code_version", pa.string()), pa.field("params_hash", pa.string()),
               pa.field("seed", pa.int64()), pa.field("flow_run_id", pa.string())]
    schema = pa.schema(fields)
    return schema.with_metadata(hf_metadata(schema, label_names))


def publish_pairs(parts: list[Path], out_dir: str | Path, *, provenance: dict, figures: dict,
                  label_names: list[str], max_shard_bytes: int, source: str, target: list[str],
                  media: str = "audio") -> dict:
    """Write the passing rows of the scored ``parts`` to ``out_dir`` (see the module docstring)."""
    light = pa.concat_tables([pq.read_table(p, columns=["sample_id", "passed"]).append_column(
        "part", pa.array(np.full(pq.ParquetFile(p).metadata.num_rows, k), pa.int32())) for k, p in enumerate(parts)])
    ids = light.column("sample_id").to_pylist()
    passed = light.column("passed").to_pylist()
    keep, seen = [], set()
    for i, (sid, ok) in enumerate(zip(ids, passed, strict=True)):
        if ok and sid not in seen:  # the same bytes twice: one row
            seen.add(sid)
            keep.append(i)
    byte_sizes = []
    for p in parts:
        col = pq.read_table(p, columns=[media]).column(media)
        byte_sizes += pc.binary_length(pc.struct_field(col, "bytes")).to_pylist()
    keys = [shard_key(ids[i]) for i in keep]
    plan = assign_shards(keys, [byte_sizes[i] + 256 for i in keep], max_shard_bytes)
    schema = _schema(pq.read_schema(parts[0]), label_names)
    extra = {"translator": provenance["translator"], "translator_settings": provenance["translator_settings"],
             "code_version": provenance["code_version"], "params_hash": provenance["params_hash"],
             "seed": provenance["seed"], "flow_run_id": provenance["flow_run_id"]}
    part_of = np.asarray(light.column("part").to_pylist(), dtype=np.int64)
    listing = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "data").mkdir()
        for prefix, rows in sorted(plan.items()):
            wanted = {ids[keep[r]] for r in rows}
            pieces = []
            for k in sorted({int(part_of[keep[r]]) for r in rows}):
                t = pq.read_table(parts[k])
                t = t.filter(pc.and_(pc.is_in(t.column("sample_id"), pa.array(sorted(wanted))), t.column("passed")))
                pieces.append(t)
            table = pa.concat_tables(pieces)
            # One row per sample id (a duplicate's first copy), in id order: the same rows give the same bytes.
            _, first = np.unique(np.asarray(table.column("sample_id").to_pylist()), return_index=True)
            table = table.take(pa.array(first)).drop_columns(list(NOT_PUBLISHED))
            n = table.num_rows
            for name, value in extra.items():
                table = table.append_column(name, pa.array([value] * n, schema.field(name).type))
            table = table.select(schema.names).cast(schema)
            name = shard_name(SPLIT, prefix)
            size, digest = write_shard(table, tmp / name)
            listing.append({"file": name, "direction": SPLIT, "rows": n, "bytes": size, "sha256": digest})
        rows = sum(s["rows"] for s in listing)
        manifest = {"format": FORMAT, "published_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                    "rows": {SPLIT: rows}, "dropped": {SPLIT: len(ids) - rows}, "shards": listing,
                    "provenance": provenance, "figures": figures, "source": source, "target": target,
                    "max_shard_bytes": max_shard_bytes, "media": media,
                    "columns": {f.name: str(f.type) for f in schema}}
        write_json_atomic(tmp / "manifest.json", manifest)
        (tmp / "README.md").write_text(card(manifest, schema, label_names), encoding="utf-8")
    return {"rows": rows, "shards": len(listing), "dropped": len(ids) - rows}


def _dtype(f: pa.Field) -> str:
    if f.name == "audio":
        return "audio"
    if pa.types.is_struct(f.type):
        return "image"
    return {"double": "float64", "float": "float32"}.get(str(f.type), str(f.type))


def card(manifest: dict, schema: pa.Schema, label_names: list[str]) -> str:
    """README with the Hugging Face front matter (configs, features, split) and the gate's figures."""
    fig, prov = manifest["figures"], manifest["provenance"]
    lines = ["---", "configs:", "- config_name: default", "  data_files:", f"  - split: {SPLIT}",
             f"    path: data/{SPLIT}-*.parquet", "dataset_info:", "  features:"]
    for f in schema:
        if f.name in ("label", "pred_label"):
            lines += [f"  - name: {f.name}", "    dtype:", "      class_label:", "        names:"]
            lines += [f"          '{i}': {json.dumps(n)}" for i, n in enumerate(label_names)]
        else:
            lines += [f"  - name: {f.name}", f"    dtype: {_dtype(f)}"]
    size = sum(s["bytes"] for s in manifest["shards"])
    lines += ["  splits:", f"  - name: {SPLIT}", f"    num_examples: {manifest['rows'][SPLIT]}",
              f"    num_bytes: {size}", f"  dataset_size: {size}", "tags:", "- cycleaug", "- modality-translation",
              f"- {'text-to-speech' if manifest['media'] == 'audio' else 'text-to-image'}", "---", "",
              "# CycleAug modality-translated pairs", "",
              f"{manifest['rows'][SPLIT]} (text, {'speech' if manifest['media'] == 'audio' else 'image'}) pairs made "
              f"by `{prov['translator']}` "
              f"from `{manifest['source']}`"
              f", gated against the real items of {', '.join(f'`{t}`' for t in manifest['target'])}: "
              f"{fig['generated']} items were made, {manifest['dropped'][SPLIT]} dropped by the per-item bounds.", "",
              "| figure | value |", "|---|---|"]
    for k in ("real_accuracy", "fidelity_accuracy", "pass_rate", "fid", "kid", "mean_realism", "held_out_real"):
        v = fig.get(k)
        lines.append(f"| {k} | {'n/a' if v is None else (f'{v:.3g}' if isinstance(v, float) else v)} |")
    utility = fig.get("utility")
    if utility:
        lines += ["", f"Train on it, test on real ({utility['test_items']} held-out real items, {utility['seeds']} "
                  f"seeds, chance {utility['chance']:.3g}): held-out accuracy of a small classifier trained on"]
        lines += [f"- {arm}: {utility[arm]['mean']:.3g} ± {utility[arm]['std']:.2g}" for arm in
                  ("real_few", "real_few+generated", "generated", "real_all") if utility.get(arm)]
        lines += [f"  (real_few: {utility['per_class']} real items per class)"]
    lines += ["", "## Features", "", "| column | meaning |", "|---|---|"]
    docs = COLUMN_DOCS | (SCENE_DOCS if manifest["media"] == "image" else {})
    lines += [f"| `{f.name}` | {docs.get(f.name, '')} |" for f in schema]
    lines += ["", "## Provenance", ""] + [f"- {k}: `{prov[k]}`" for k in PROVENANCE] + [
        f"- published_at: `{manifest['published_at']}`", "", "## Reading it", "", "```python",
        "import pandas as pd", "df = pd.read_parquet(\"data/modality/published/data\")",
        "import datasets", "ds = datasets.load_dataset(\"data/modality/published\", split=\"train\")", "```", ""]
    return "\n".join(lines)
