"""What changed between two published versions, row by row and figure by figure.

Rows are matched by (direction, source id): a row is *added*, *removed*, *unchanged* or *changed*
(the same source, other translation bytes). Counted per direction and split. Beside the rows: the
models that made them, the settings and code digests from each manifest, and the drift of each
direction's held-out figures (means of the per-sample figures, label accuracy), computed from the
rows themselves so any two versions compare. The rows are read in record batches of the small
columns plus the translation bytes (hashed and dropped batch by batch), so memory follows the
number of rows, not their pictures.

Each publish diffs itself against the version it replaces (:func:`write_version_diff`, from a scan
taken before the swap): ``reports/version_diff.json`` and ``.md``, posted as the Prefect artifact
``version-diff``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from .config import DIRECTIONS
from .reader import PublishedDataset, open_dataset
from .storage import write_bytes_atomic, write_json_atomic

BATCH_ROWS = 1024
KEY = ("direction", "source_id")


def _digest(value: dict | None) -> str | None:
    return None if value is None else hashlib.sha256(value["bytes"]).hexdigest()


def _figure_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_floating(f.type) and f.name not in ("duration_s",)]


def scan(dataset: PublishedDataset) -> dict[str, Any]:
    """Per row: split and translation digest; per direction: sums for the held-out figures; the models."""
    arrow = dataset.arrow()
    figures = _figure_columns(arrow.schema)
    has_ok = "label_ok" in arrow.schema.names
    cols = ["direction", "source_id", "split", "image", "model_fingerprint", *figures,
            *(["label_ok"] if has_ok else [])]
    rows: dict[tuple[str, str], tuple[str, str | None]] = {}
    sums: dict[str, Counter] = defaultdict(Counter)
    counts: dict[str, Counter] = defaultdict(Counter)
    models: dict[str, Counter] = defaultdict(Counter)
    for batch in arrow.to_batches(columns=cols, batch_size=BATCH_ROWS):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            d, split = data["direction"][i], data["split"][i]
            rows[(d, data["source_id"][i])] = (split, _digest(data["image"][i]))
            models[d][data["model_fingerprint"][i]] += 1
            if split != "test":
                continue
            for f in figures:
                v = data[f][i]
                if v is not None and v == v:
                    sums[d][f] += v
                    counts[d][f] += 1
            ok = data["label_ok"][i] if has_ok else None
            if ok is not None:
                sums[d]["label_accuracy"] += float(ok)
                counts[d]["label_accuracy"] += 1
    means = {d: {f: sums[d][f] / counts[d][f] for f in sorted(counts[d]) if counts[d][f]} for d in counts}
    return {"rows": rows, "means": means, "models": {d: dict(c) for d, c in models.items()},
            "provenance": dataset.manifest.get("provenance", {}), "label": dataset.label,
            "published_at": dataset.manifest.get("published_at")}


def empty_scan() -> dict[str, Any]:
    """What :func:`scan` says of no version at all: the old side of a first publish."""
    return {"rows": {}, "means": {}, "models": {}, "provenance": {}, "label": None, "published_at": None}


def diff_versions(old: PublishedDataset, new: PublishedDataset) -> dict[str, Any]:
    """The row, model, settings and figure changes from ``old`` to ``new`` (a JSON-ready dict)."""
    return diff_scans(scan(old), scan(new))


def diff_scans(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """:func:`diff_versions` from two :func:`scan` results (``a`` may be :func:`empty_scan`: every row is
    added, and ``first_version`` is true)."""
    out: dict[str, Any] = {"old": a["label"], "new": b["label"], "first_version": a["label"] is None,
                           "directions": {}}
    for d in DIRECTIONS:
        ka = {k for k in a["rows"] if k[0] == d}
        kb = {k for k in b["rows"] if k[0] == d}
        by: dict[str, Counter] = {"added": Counter(), "removed": Counter(), "unchanged": Counter(),
                                  "changed": Counter()}
        for k in kb - ka:
            by["added"][b["rows"][k][0]] += 1
        for k in ka - kb:
            by["removed"][a["rows"][k][0]] += 1
        for k in ka & kb:
            kind = "unchanged" if a["rows"][k][1] == b["rows"][k][1] else "changed"
            by[kind][b["rows"][k][0]] += 1
        ma, mb = a["means"].get(d, {}), b["means"].get(d, {})
        drift = {f: {"old": ma.get(f), "new": mb.get(f),
                     "delta": None if f not in ma or f not in mb else mb[f] - ma[f]}
                 for f in sorted(set(ma) | set(mb))}
        out["directions"][d] = {
            "rows": {"old": len(ka), "new": len(kb)},
            **{kind: {"total": sum(c.values()), **dict(sorted(c.items()))} for kind, c in by.items()},
            "added_sources": sorted(k[1] for k in kb - ka)[:50],
            "removed_sources": sorted(k[1] for k in ka - kb)[:50],
            "models": {"old": a["models"].get(d, {}), "new": b["models"].get(d, {})},
            "held_out_figures": drift,
        }
    pa_, pb = a["provenance"], b["provenance"]
    out["settings"] = {k: {"old": pa_.get(k), "new": pb.get(k), "changed": pa_.get(k) != pb.get(k)}
                       for k in ("params_hash", "code_version", "seed")}
    out["published_at"] = {"old": a["published_at"], "new": b["published_at"]}
    return out


def _delta(v: float | None) -> str:
    return "" if v is None else f"{v:+.3g}"


def diff_markdown(diff: dict[str, Any]) -> str:
    """The diff for people: rows per direction and split, models, settings, figure drift."""
    title = (f"# {diff['new']}: first version (nothing published before it)" if diff.get("first_version")
             else f"# {diff['old']} -> {diff['new']}")
    lines = [title, "",
             "| direction | old rows | new rows | added | removed | changed | unchanged |",
             "|---|---|---|---|---|---|---|"]
    for d, x in diff["directions"].items():
        def cell(kind: str, x: dict = x) -> str:
            splits = ", ".join(f"{s} {n}" for s, n in x[kind].items() if s != "total")
            return f"{x[kind]['total']}" + (f" ({splits})" if splits else "")

        lines.append(f"| {d} | {x['rows']['old']} | {x['rows']['new']} | {cell('added')} | {cell('removed')} "
                     f"| {cell('changed')} | {cell('unchanged')} |")
    changed = [k for k, v in diff["settings"].items() if v["changed"]]
    if not diff.get("first_version"):  # against nothing, every setting and model is new
        lines += ["", f"Settings and code: {', '.join(changed) + ' changed' if changed else 'unchanged'}."]
    for d, x in diff["directions"].items():
        old_m, new_m = set(x["models"]["old"]), set(x["models"]["new"])
        if old_m != new_m and not diff.get("first_version"):
            lines.append(f"{d} models: {', '.join(m[:12] for m in sorted(old_m))} -> "
                         f"{', '.join(m[:12] for m in sorted(new_m))}")
    lines += ["", "| direction | held-out figure | old | new | change |", "|---|---|---|---|---|"]
    for d, x in diff["directions"].items():
        for f, v in x["held_out_figures"].items():
            old_v = "" if v["old"] is None else f"{v['old']:.3g}"
            new_v = "" if v["new"] is None else f"{v['new']:.3g}"
            lines.append(f"| {d} | {f} | {old_v} | {new_v} | {_delta(v['delta'])} |")
    return "\n".join(lines) + "\n"


VERSION_DIFF_JSON = "version_diff.json"
VERSION_DIFF_MD = "version_diff.md"


def scan_folder(out_dir: str | Path) -> dict[str, Any]:
    """:func:`scan` of the version published in ``out_dir``, or :func:`empty_scan` where none is; labelled
    by its publication time, as the old and new versions of one folder share its path."""
    if not (Path(out_dir) / "manifest.json").exists():
        return empty_scan()
    dataset = open_dataset(str(out_dir))
    return scan(dataset) | {"label": f"version of {dataset.manifest.get('published_at')}"}


def write_version_diff(old: dict[str, Any], out_dir: str | Path, reports: str | Path) -> dict[str, Any]:
    """Diff the version now in ``out_dir`` against ``old`` (its predecessor's :func:`scan_folder`, taken before
    the swap) into ``reports/version_diff.json`` and ``.md``; the diff."""
    diff = diff_scans(old, scan_folder(out_dir))
    write_json_atomic(Path(reports) / VERSION_DIFF_JSON, diff)
    write_bytes_atomic(Path(reports) / VERSION_DIFF_MD, diff_markdown(diff).encode("utf-8"))
    return diff
