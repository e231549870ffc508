"""What changed between two published versions, row by row and figure by figure.

Rows are matched by (direction, source id): a row is *added*, *removed*, *unchanged* or *changed*
(the same source, other translation bytes). Counted per direction and split. Beside the rows: the
models that made them, the settings and code digests from each manifest, and the drift of each
direction's held-out figures (means of the per-sample figures, label accuracy), computed from the
rows themselves so any two versions compare. The rows are read in record batches of the small
columns plus the translation bytes (hashed and dropped batch by batch), so memory follows the
number of rows, not their pictures.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa

from .config import DIRECTIONS
from .reader import PublishedDataset

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


def diff_versions(old: PublishedDataset, new: PublishedDataset) -> dict[str, Any]:
    """The row, model, settings and figure changes from ``old`` to ``new`` (a JSON-ready dict)."""
    a, b = scan(old), scan(new)
    out: dict[str, Any] = {"old": a["label"], "new": b["label"], "directions": {}}
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
    lines = [f"# {diff['old']} -> {diff['new']}", "",
             "| direction | old rows | new rows | added | removed | changed | unchanged |",
             "|---|---|---|---|---|---|---|"]
    for d, x in diff["directions"].items():
        def cell(kind: str, x: dict = x) -> str:
            splits = ", ".join(f"{s} {n}" for s, n in x[kind].items() if s != "total")
            return f"{x[kind]['total']}" + (f" ({splits})" if splits else "")

        lines.append(f"| {d} | {x['rows']['old']} | {x['rows']['new']} | {cell('added')} | {cell('removed')} "
                     f"| {cell('changed')} | {cell('unchanged')} |")
    changed = [k for k, v in diff["settings"].items() if v["changed"]]
    lines += ["", f"Settings and code: {', '.join(changed) + ' changed' if changed else 'unchanged'}."]
    for d, x in diff["directions"].items():
        old_m, new_m = set(x["models"]["old"]), set(x["models"]["new"])
        if old_m != new_m:
            lines.append(f"{d} models: {', '.join(m[:12] for m in sorted(old_m))} -> "
                         f"{', '.join(m[:12] for m in sorted(new_m))}")
    lines += ["", "| direction | held-out figure | old | new | change |", "|---|---|---|---|---|"]
    for d, x in diff["directions"].items():
        for f, v in x["held_out_figures"].items():
            old_v = "" if v["old"] is None else f"{v['old']:.4g}"
            new_v = "" if v["new"] is None else f"{v['new']:.4g}"
            lines.append(f"| {d} | {f} | {old_v} | {new_v} | {_delta(v['delta'])} |")
    return "\n".join(lines) + "\n"
