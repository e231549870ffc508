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
3. Per item: fidelity (the judge reads the item back into the source modality) and realism against
   the held-out real items, checked against ``modality.sample``; failing rows are dropped.
   Per run: the judge's accuracy on held-out real items, the generated items' read-back accuracy,
   FID/KID and mean realism against the held-out real items, and the pass rate, checked against
   ``modality.run``. ``<reports>/modality.json`` holds the figures either way; a failing run raises
   :class:`~cyclegan_core.gate.GateFailed` and publishes nothing (the previous version stays).
4. The passing pairs (source text and generated item) are published by
   :func:`cyclegan_core.modality.publish.publish_pairs` in the Hugging Face layout, with the translator's
   settings as provenance.

Speech (``text -> speech``) is the target modality gated here; another target is refused with a
message saying so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import soundfile as sf

from ..config import AudioConfig, Config
from ..gate import GateFailed
from ..metrics import conformal_realism
from ..storage import write_json_atomic
from .fidelity import ROLES, role_masks, target_scores, train_word_judge, word_of
from .fidelity import alignment as measure_alignment
from .settings import ModalityConfig, ModalityRunBounds, ModalitySampleBounds, ModalityTargetConfig
from .translators import TranslatedItem, Translator, TranslatorError, resolve_translator

Progress = Callable[..., None]
log = logging.getLogger(__name__)
REPORT_FILE = "modality.json"
MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
DEFAULT_TARGET = ModalityTargetConfig().collections
PACKAGE = Path(__file__).resolve().parent


class ModalityError(ValueError):
    """A modality run that cannot start: the message says which setting or file is wrong."""


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


# --- the real target collection and the speech gate -------------------------------------------------------
def ensure_default_target(t: ModalityTargetConfig) -> list[str]:
    """Make the bundled speech preset where the default target folders point, when missing."""
    if tuple(t.collections) != DEFAULT_TARGET or all((Path(c) / "labels.csv").exists() for c in t.collections):
        return []
    from ..voices import make_voices_data

    return make_voices_data(*DEFAULT_TARGET)


def read_speech_target(t: ModalityTargetConfig) -> tuple[list[bytes], list[str], list[str]]:
    """(clips, texts, ids) of the real target collections; an id is the sha256 of the clip's bytes."""
    wavs, texts, ids, seen = [], [], [], set()
    for folder in t.collections:
        root = Path(folder)
        labels = root / "labels.csv"
        if not labels.is_file():
            raise ModalityError(f"modality.target.collections: {labels} not found; a real target collection is a "
                                f"folder of clips with a labels.csv naming each file's path and its {t.text_column}")
        with open(labels, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not {"path", t.text_column} <= set(reader.fieldnames or ()):
                raise ModalityError(f"{labels}: needs the columns path and {t.text_column} "
                                    f"(modality.target.text_column); it has {', '.join(reader.fieldnames or ())}")
            for row in reader:
                data = (root / row["path"]).read_bytes()
                sid = hashlib.sha256(data).hexdigest()
                if sid not in seen:
                    seen.add(sid)
                    wavs.append(data)
                    texts.append(row[t.text_column])
                    ids.append(sid)
    return wavs, texts, ids


class SpeechGate:
    """Fidelity and alignment of generated clips, by a word judge trained on the real clips of the
    ``validation`` role, measured against the real clips of the ``held_out`` role."""

    def __init__(self, t: ModalityTargetConfig, audio: AudioConfig) -> None:
        wavs, texts, ids = read_speech_target(t)
        masks = role_masks(ids)
        self.roles = {r: int(masks[r].sum()) for r in ROLES}
        words = sorted({word_of(x) for x in texts})
        self.judge = train_word_judge(wavs, texts, ids, "validation", audio, words, t.judge_epochs, t.judge_seed)
        held = np.flatnonzero(masks["held_out"])
        if len(held) < 2:
            raise ModalityError(f"the real target collections hold {len(wavs)} clips, {len(held)} of them held out; "
                                "alignment needs more real clips")
        logits, self.real_features = self.judge.logits_and_features([wavs[i] for i in held])
        target = self.judge.classes([texts[i] for i in held])
        _, self.real_scores = target_scores(logits, target)
        self.real_accuracy = float((logits.argmax(axis=1) == target).mean())
        self.held_ids = frozenset(ids[i] for i in held)
        if self.judge.trained_on & self.held_ids:  # role_masks makes this impossible
            raise AssertionError("a held-out clip taught the validation judge")

    @property
    def labels(self) -> list[str]:
        return list(self.judge.words)

    def check_sources(self, words: set[str]) -> None:
        unknown = sorted(words - set(self.judge.words))
        if unknown:
            raise ModalityError(f"the real target clips say {', '.join(self.judge.words)}; the judge cannot check "
                                f"source texts saying {', '.join(unknown)} (add real clips of them to "
                                "modality.target.collections, or leave those texts out)")

    def score(self, items: Sequence[TranslatedItem]) -> dict[str, np.ndarray]:
        """Per item: the source's class, the judge's class, fidelity, margin, realism and features."""
        bad = [k for k, it in enumerate(items) if not isinstance(it.output, bytes | bytearray)]
        if bad:
            raise TranslatorError(f"a speech translator returns WAV bytes; item {bad[0]} is a "
                                  f"{type(items[bad[0]].output).__name__}")
        wavs = [bytes(it.output) for it in items]
        logits, features = self.judge.logits_and_features(wavs)
        label = self.judge.classes([it.source for it in items])
        prob, margin = target_scores(logits, label)
        return {"label": label, "pred_label": logits.argmax(axis=1), "fidelity": prob, "margin": margin,
                "realism": conformal_realism(margin, self.real_scores), "features": features}

    def media(self, items: Sequence[TranslatedItem], sample_ids: Sequence[str]) -> dict[str, pa.Array]:
        frames, rates = [], []
        for it in items:
            info = sf.info(io.BytesIO(it.output))
            frames.append(info.frames / info.samplerate)
            rates.append(info.samplerate)
        return {"audio": pa.array([{"bytes": bytes(it.output), "path": f"{s[:16]}.wav"}
                                   for it, s in zip(items, sample_ids, strict=True)], MEDIA),
                "sample_rate": pa.array(rates, pa.int32()), "duration_s": pa.array(frames, pa.float64())}


def make_gate(translator: Translator, m: ModalityConfig, audio: AudioConfig) -> SpeechGate:
    if translator.source != "text":
        raise ModalityError(f"translator {m.translator!r} translates {translator.source}; a modality run reads "
                            "texts (modality.source) and makes another modality from them")
    if translator.target != "speech":
        raise ModalityError(f"translator {m.translator!r} makes {translator.target}; the cross-modal gate of a "
                            "modality run is built for speech (text_to_speech); see cyclegan_core.modality.fidelity "
                            "for the scene measurements")
    ensure_default_target(m.target)
    return SpeechGate(m.target, audio)


# --- bounds -----------------------------------------------------------------------------------------------
def sample_reasons(scores: dict[str, np.ndarray], words: Sequence[str], b: ModalitySampleBounds) -> list[str]:
    """Per item: the per-item bounds it fails, '; '-joined ('' when it passes)."""
    out = []
    for k in range(len(scores["label"])):
        why = []
        if b.min_fidelity is not None and scores["fidelity"][k] < b.min_fidelity:
            why.append(f"fidelity {scores['fidelity'][k]:.3g} < {b.min_fidelity}")
        if b.require_read_back and scores["pred_label"][k] != scores["label"][k]:
            why.append(f"read_back false (the judge heard {words[int(scores['pred_label'][k])]!r})")
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
    """sha256 of the modality package's source and the modules its judge and speech use."""
    h = hashlib.sha256()
    files = sorted(PACKAGE.glob("*.py")) + [PACKAGE.parent / f"{n}.py" for n in
                                            ("audio", "classifiers", "judges", "metrics", "voices", "publish")]
    for p in files:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def run_modality(cfg: Config, progress: Progress | None = None, flow_run_id: str | None = None) -> ModalityResult:
    """Translate, gate and publish (see the module docstring); raises GateFailed after writing the report."""
    from .publish import publish_pairs

    t0 = time.perf_counter()
    m = cfg.modality
    translator = resolve_translator(m.translator, m.settings)
    gate = make_gate(translator, m, cfg.data.audio)
    total, words = scan_sources(m)
    gate.check_sources(words)
    settings = translator.settings()
    log.info("modality run: %s (%s -> %s) on %d source rows; judge trained on %d real clips, %d held out "
             "(judge accuracy on them %.3g)", m.translator, translator.source, translator.target, total,
             len(gate.judge.trained_on), gate.roles["held_out"], gate.real_accuracy)
    out_dir = Path(m.output)
    staging = out_dir.parent / f".{out_dir.name}.scored"
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
            scores = gate.score(items)
            reasons = sample_reasons(scores, gate.labels, m.sample)
            sample_ids = [hashlib.sha256(bytes(it.output)).hexdigest() for it in items]
            passed = np.asarray([not r for r in reasons])
            table = pa.table({
                "sample_id": sample_ids, "text_id": [ids[it.index] for it in items],
                "text": [it.source for it in items], **gate.media(items, sample_ids),
                "label": pa.array(scores["label"], pa.int64()),
                "pred_label": pa.array(scores["pred_label"], pa.int64()),
                "fidelity": scores["fidelity"], "read_back": scores["pred_label"] == scores["label"],
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
            n_read += int((scores["pred_label"] == scores["label"]).sum())
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
            "held_out_real": gate.roles["held_out"], "judge_trained_on": len(gate.judge.trained_on),
            "roles": gate.roles,
        }
        failures = run_failures(figures, m.run)
        report = {"passed": not failures, "failures": failures, "figures": figures, "translator": m.translator,
                  "translator_settings": settings, "bounds": {"sample": m.sample.model_dump(),
                                                              "run": m.run.model_dump()},
                  "dropped_examples": reasons_seen, "judge": {"role": gate.judge.role, "seed": gate.judge.seed,
                                                              "words": gate.labels,
                                                              "epochs": m.target.judge_epochs},
                  "seconds": round(time.perf_counter() - t0, 2)}
        report_path = Path(m.reports) / REPORT_FILE
        write_json_atomic(report_path, report)
        log.info("modality gate: %d of %d generated clips pass (%.3g); read back %.3g (real %.3g), FID %.3g, "
                 "KID %.3g, realism %.3g", n_pass, n_items, n_pass / n_items, n_read / n_items, gate.real_accuracy,
                 al.fid if al.fid is not None else float("nan"), al.kid if al.kid is not None else float("nan"),
                 al.realism_mean)
        if failures:
            raise GateFailed(gate_message(failures))
        provenance = {"translator": m.translator, "translator_settings": json.dumps(settings, sort_keys=True),
                      "code_version": code_version(),
                      "params_hash": hashlib.sha256(json.dumps(m.model_dump(mode="json"), sort_keys=True)
                                                    .encode()).hexdigest(),
                      "seed": m.seed, "flow_run_id": flow_run_id}
        published = publish_pairs(parts, out_dir, provenance=provenance, figures=figures, label_names=gate.labels,
                                  max_shard_bytes=int(m.max_shard_mb * 2**20), source=m.source,
                                  target=list(m.target.collections))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ModalityResult(True, total, n_items, published["rows"], n_items - published["rows"], figures, [],
                          str(report_path), str(out_dir), str(out_dir / "manifest.json"),
                          round(time.perf_counter() - t0, 2))
