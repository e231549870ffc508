"""A run of kind ``modality`` (``modality.enabled: true``): make the scarce modality from the abundant one,
gate it cross-modally, publish the pairs.

1. The translator (:func:`~cyclegan_core.modality.translators.resolve_translator`: a registered name or
   ``module:function``, with ``modality.settings``) and the gate for its target modality are built
   first; the gate's fidelity judge learns from the real target samples of the ``validation`` role
   only (:func:`~cyclegan_core.modality.fidelity.judge_role`), never from the ``training`` role a
   training-time judge would use, and never from the ``held_out`` role that alignment and the real
   baseline are measured on.
2. The source collection (a CSV or Parquet file) is read ``modality.batch_size`` rows at a time; each
   batch is translated, scored and written to a staging part at once, so memory holds one batch of
   items (and each item's 128 judge features, for FID/KID) whatever the collection's size.
3. Per item: fidelity (the judge reads the item back into the source modality: a spoken-word judge
   for speech, the caption oracle for scene images) and realism against the held-out real items,
   checked against ``modality.sample``; failing rows are dropped.
   Per run: the judge's accuracy on held-out real items, the generated items' read-back accuracy,
   FID/KID and mean realism against the held-out real items, and the pass rate, checked against
   ``modality.run``. ``<reports>/modality.json`` holds the figures either way; a failing run raises
   :class:`~cyclegan_core.gate.GateFailed` and publishes nothing (the previous version stays).
4. The passing pairs (source text and generated item) are published by
   :func:`cyclegan_core.modality.publish.publish_pairs` in the Hugging Face layout, with the translator's
   settings as provenance. Steps 2-4 hold ``modality.output``'s lock
   (:func:`cyclegan_core.storage.folder_lock`): a second run into the same folder waits.

The gates per target modality (speech, scene images) are in :mod:`cyclegan_core.modality.gates`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .. import inputs
from ..config import Config
from ..gate import GateFailed
from ..storage import folder_lock, write_json_atomic
from .fidelity import alignment as measure_alignment
from .fidelity import word_of
from .gates import ModalityError, make_gate
from .settings import ModalityConfig, ModalityRunBounds, ModalitySampleBounds
from .translators import TranslatorError, resolve_translator

Progress = Callable[..., None]
log = logging.getLogger(__name__)
REPORT_FILE = "modality.json"
__all__ = ["ModalityError", "ModalityResult", "run_failures", "run_modality", "sample_reasons", "source_batches"]


# --- the source collection --------------------------------------------------------------------------------
def _columns(m: ModalityConfig) -> list[str]:
    return [m.source_column] + ([m.id_column] if m.id_column else [])


def _record_batches(m: ModalityConfig, columns: list[str]) -> Iterator[pa.RecordBatch]:
    path = Path(m.source)
    if not path.is_file():
        raise ModalityError(f"modality.source: {path} not found (a CSV or Parquet file, one source item a row)")
    if path.suffix.lower() == ".parquet":
        pf = pq.ParquetFile(path)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise ModalityError(f"modality.source: {path} has no column {', '.join(missing)} "
                                f"(it has {', '.join(pf.schema_arrow.names)})")
        yield from pf.iter_batches(batch_size=m.batch_size, columns=columns)
        return
    with open(path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    missing = [c for c in columns if c not in header]
    if missing:
        raise ModalityError(f"modality.source: {path} has no column {', '.join(missing)} (its header: "
                            f"{', '.join(header) or 'none'})")
    reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(
        include_columns=columns, column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=False))
    yield from reader


def source_batches(m: ModalityConfig) -> Iterator[tuple[list[str], list[str]]]:
    """(ids, items) of the source collection, ``modality.batch_size`` rows at a time."""
    ids: list[str] = []
    items: list[str] = []
    row = 0
    for batch in _record_batches(m, _columns(m)):
        texts = batch.column(m.source_column).to_pylist()
        names = batch.column(m.id_column).to_pylist() if m.id_column else [f"row-{row + i}" for i in range(len(texts))]
        for i, (text, name) in enumerate(zip(texts, names, strict=True)):
            if not isinstance(text, str) or not text.strip():
                raise ModalityError(f"modality.source: row {row + i} of {m.source} has an empty {m.source_column!r}")
            ids.append(str(name))
            items.append(text)
            if len(items) == m.batch_size:
                yield ids, items
                ids, items = [], []
        row += len(texts)
    if items:
        yield ids, items


def scan_sources(m: ModalityConfig) -> tuple[int, set[str]]:
    """How many source rows there are and the distinct words they say (one pass, text and id columns only);
    a :class:`ModalityError` for a repeated id."""
    seen: set[str] = set()
    words: set[str] = set()
    for ids, texts in source_batches(m):
        for i in ids:
            if i in seen:
                raise ModalityError(f"modality.source: id {i!r} appears twice in {m.source}; ids must be unique")
            seen.add(i)
        words.update(word_of(t) for t in texts)
    if not seen:
        raise ModalityError(f"modality.source: {m.source} has no rows")
    return len(seen), words


# --- bounds -----------------------------------------------------------------------------------------------
def sample_reasons(scores: dict, b: ModalitySampleBounds) -> list[str]:
    """Per item: the per-item bounds it fails, '; '-joined ('' when it passes)."""
    out = []
    for k in range(len(scores["fidelity"])):
        why = []
        if b.min_fidelity is not None and scores["fidelity"][k] < b.min_fidelity:
            why.append(f"fidelity {scores['fidelity'][k]:.3g} < {b.min_fidelity}")
        if b.require_read_back and not scores["read_back"][k]:
            why.append(f"read_back false (the judge read {scores['read_as'][k]!r})")
        if b.min_realism is not None and scores["realism"][k] < b.min_realism:
            why.append(f"realism {scores['realism'][k]:.3g} < {b.min_realism}")
        out.append("; ".join(why))
    return out


_RUN_BOUNDS = (("real_accuracy", "min_real_accuracy"), ("fidelity_accuracy", "min_fidelity_accuracy"),
               ("fid", "max_fid"), ("kid", "max_kid"), ("mean_realism", "min_mean_realism"),
               ("pass_rate", "min_pass_rate"))


def run_failures(figures: dict, b: ModalityRunBounds) -> list[str]:
    """Each failed run bound as '<figure> = <value> <op> <bound> (modality.run.<key>)'."""
    out = []
    for figure, key in _RUN_BOUNDS:
        bound, value = getattr(b, key), figures.get(figure)
        if bound is None:
            continue
        if value is None or not np.isfinite(value):
            out.append(f"{figure}: not measured, bound {bound} (modality.run.{key})")
        elif key.startswith("min_") and value < bound:
            out.append(f"{figure} = {value:.4g} < {bound} (modality.run.{key})")
        elif key.startswith("max_") and value > bound:
            out.append(f"{figure} = {value:.4g} > {bound} (modality.run.{key})")
    return out


def gate_message(failures: list[str]) -> str:
    return "\n".join(["modality gate failed, nothing published (the previous version stays as it was):",
                      *(f"  - {f}" for f in failures), "next:",
                      "  - see the dropped rows' reasons in the report (modality.json, 'dropped_examples'); "
                      "a translator whose items the judge cannot read back says the wrong thing",
                      "  - or, if a bound does not suit this data, relax it, e.g. "
                      f"cycleaug --set modality.run.{failures[0].split('(modality.run.')[-1].rstrip(')')}=null run"])


# --- the run ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModalityResult:
    passed: bool
    sources: int
    generated: int
    rows: int
    dropped: int
    figures: dict
    failures: list[str]
    report: str
    out_dir: str | None
    manifest: str | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def code_version() -> str:
    """sha256 of the modules the step-inputs table names for a modality run (``inputs.KEYS["modality"]``:
    the modality package and the modules its gates, translators and publisher use)."""
    return inputs.code_digest("modality")


def params_hash(cfg: Config, media: str) -> str:
    """The settings digest of ``inputs.KEYS["modality"]`` (``modality`` without where it writes, and
    ``data.audio`` for a speech target, whatever ``data.kind`` says: the speech gate reads it)."""
    tree = inputs.config_tree(cfg)
    tree["data"]["audio"] = cfg.data.audio.model_dump(mode="json") if media == "audio" else None
    return inputs.settings_digest(tree, "modality")


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def measure_utility(gate, parts: list[Path], per_class: int) -> dict:
    """Train on the passing rows of the staged ``parts``, test on real (:mod:`cyclegan_core.modality.utility`)."""
    from .utility import measure

    blobs, labels = [], []
    for part in parts:
        t = pq.read_table(part, columns=[gate.media_column, "label", "passed"]).filter(pc.field("passed"))
        blobs += [v["bytes"] for v in t.column(gate.media_column).to_pylist()]
        labels += t.column("label").to_pylist()
    generated = (gate.pictures(blobs), np.asarray(labels, dtype=np.int64))
    return measure(gate.training_set, gate.held_set, generated, len(gate.labels), per_class)


def run_modality(cfg: Config, progress: Progress | None = None, flow_run_id: str | None = None) -> ModalityResult:
    """Translate, gate and publish (see the module docstring); raises GateFailed after writing the report."""
    t0 = time.perf_counter()
    m = cfg.modality
    translator = resolve_translator(m.translator, m.settings)
    gate = make_gate(translator, m, cfg.data.audio)
    total, words = scan_sources(m)
    gate.check_sources(words)
    settings = translator.settings()
    log.info("modality run: %s (%s -> %s) on %d source rows; judge trained on %d real items, %d held out "
             "(read-back accuracy on them %.3g)", m.translator, translator.source, translator.target, total,
             gate.trained_on, gate.roles["held_out"], gate.real_accuracy)
    out_dir = Path(m.output)
    staging = out_dir.parent / f".{out_dir.name}.scored"
    with folder_lock(out_dir):  # a second run into this folder (with or without Prefect) waits for this one
        return _translate_gate_publish(cfg, translator, gate, settings, total, staging, flow_run_id, progress, t0)


def _translate_gate_publish(cfg: Config, translator, gate, settings: dict, total: int, staging: Path,
                            flow_run_id: str | None, progress: Progress | None, t0: float) -> ModalityResult:
    """Steps 2-4 of the module docstring, while :func:`run_modality` holds the output folder."""
    from .publish import publish_pairs

    m = cfg.modality
    out_dir = Path(m.output)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        features, margins, realism, parts, reasons_seen = [], [], [], [], []
        n_items = n_pass = n_read = done = 0
        for k, (ids, texts) in enumerate(source_batches(m)):
            items = translator.translate(texts, m.seed)
            bad = [it.index for it in items if not 0 <= it.index < len(texts) or it.source != texts[it.index]]
            if bad:
                raise TranslatorError(f"translator {m.translator!r}: an item's index or source does not match the "
                                      f"batch it was made from (index {bad[0]})")
            if not items:
                continue
            blobs = gate.encode(items)
            scores = gate.score(items, blobs)
            reasons = sample_reasons(scores, m.sample)
            sample_ids = [hashlib.sha256(b).hexdigest() for b in blobs]
            passed = np.asarray([not r for r in reasons])
            table = pa.table({
                "sample_id": sample_ids, "text_id": [ids[it.index] for it in items],
                "text": [it.source for it in items], **gate.media(items, blobs, sample_ids, scores),
                "label": pa.array(scores["label"], pa.int64()),
                "pred_label": pa.array(scores["pred_label"], pa.int64()),
                "fidelity": scores["fidelity"], "read_back": np.asarray(scores["read_back"], dtype=bool),
                "margin": scores["margin"], "realism": scores["realism"],
                "params": [json.dumps(it.params, sort_keys=True) for it in items],
                "passed": passed, "fail_reason": reasons,
            })
            part = staging / f"part-{k:05d}.parquet"
            pq.write_table(table, part)
            parts.append(part)
            features.append(scores["features"])
            margins.append(scores["margin"])
            realism.append(scores["realism"])
            n_items += len(items)
            n_pass += int(passed.sum())
            n_read += int(np.sum(scores["read_back"]))
            reasons_seen += [{"text_id": ids[it.index], "text": it.source, "params": it.params, "reason": r}
                             for it, r in zip(items, reasons, strict=True) if r][:max(0, 10 - len(reasons_seen))]
            done += len(texts)
            if progress:
                progress("modality", done, total)
        if not n_items:
            raise ModalityError(f"translator {m.translator!r} made nothing from {total} source rows")
        al = measure_alignment(np.concatenate(features), gate.real_features, np.concatenate(margins),
                               gate.real_scores, seed=m.seed)
        figures = {
            "sources": total, "generated": n_items, "passed": n_pass, "pass_rate": n_pass / n_items,
            "fidelity_accuracy": n_read / n_items, "real_accuracy": gate.real_accuracy,
            "fid": _finite(al.fid), "kid": _finite(al.kid), "kid_std": _finite(al.kid_std),
            "mean_realism": al.realism_mean, "real_realism": _finite(al.real_realism),
            "held_out_real": gate.roles["held_out"], "judge_trained_on": gate.trained_on,
            "roles": gate.roles,
        }
        failures = run_failures(figures, m.run)
        report = {"passed": not failures, "failures": failures, "figures": figures, "translator": m.translator,
                  "translator_settings": settings, "bounds": {"sample": m.sample.model_dump(),
                                                              "run": m.run.model_dump()},
                  "dropped_examples": reasons_seen, "judge": {"role": "validation", "seed": m.target.judge_seed,
                                                              "classes": gate.labels,
                                                              "epochs": m.target.judge_epochs},
                  "seconds": round(time.perf_counter() - t0, 2)}
        report_path = Path(m.reports) / REPORT_FILE
        write_json_atomic(report_path, report)
        log.info("modality gate: %d of %d generated items pass (%.3g); read back %.3g (real %.3g), FID %.3g, "
                 "KID %.3g, realism %.3g", n_pass, n_items, n_pass / n_items, n_read / n_items, gate.real_accuracy,
                 al.fid if al.fid is not None else float("nan"), al.kid if al.kid is not None else float("nan"),
                 al.realism_mean)
        if failures:
            raise GateFailed(gate_message(failures))
        if m.utility_per_class is not None:
            figures["utility"] = measure_utility(gate, parts, m.utility_per_class)
            report["figures"] = figures
            write_json_atomic(report_path, report)
        provenance = {"translator": m.translator, "translator_settings": json.dumps(settings, sort_keys=True),
                      "code_version": code_version(),
                      "params_hash": params_hash(cfg, gate.media_column),
                      "seed": m.seed, "flow_run_id": flow_run_id}
        published = publish_pairs(parts, out_dir, provenance=provenance, figures=figures, label_names=gate.labels,
                                  max_shard_bytes=int(m.max_shard_mb * 2**20), source=m.source,
                                  target=list(m.target.collections), media=gate.media_column)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ModalityResult(True, total, n_items, published["rows"], n_items - published["rows"], figures, [],
                          str(report_path), str(out_dir), str(out_dir / "manifest.json"),
                          round(time.perf_counter() - t0, 2))
