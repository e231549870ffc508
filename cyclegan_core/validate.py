"""Validate: score every translation, decide which pass, and gate the run.

Per sample (x a source, G the direction's generator, F the way back):
- cycle reconstruction between x and F(G(x)) on [0, 1]: L1, PSNR and SSIM (Gaussian window 11,
  sigma 1.5, the Wang et al. 2004 settings, via ``kornia.metrics.ssim``);
- robust cycle PSNR between x and F(q(G(x))), q = Gaussian noise then JPEG (``validate.robust_*``): a
  generator that hides x in a faint signal of G(x) (Chu et al. 2017) reconstructs through G(x), not through q;
- identity drift, mean |x - F(x)|: how much the way-back generator alters a real sample that is
  already in its output domain (what CycleGAN's identity loss holds down);
- realism: how target-like a domain judge finds G(x), ranked among held-out real targets (below);
- when sources carry labels, the label a classifier trained on real target samples predicts for G(x).

One-sided models (``model.arch: cut`` / ``fastcut``) have no way back of their own: F is the run's other
one-sided model (B->A for A->B rows, and the reverse), trained in the same run but never with a cycle
loss, so the cycle figures measure how well two independent translators undo each other: lower than a
CycleGAN's by construction (the gate's cycle bounds apply unchanged; loosen them with ``--set`` if a
CUT run should be judged on realism and labels alone). Identity drift keeps its meaning, how much F
alters a real sample of its own output domain (CUT's PatchNCE on target images holds it down; FastCUT
has no such term).

Realism is a conformal p-value, not the judge's softmax. On the bundled digits a two-class judge
separates the real collections perfectly (held-out accuracy 1.000, with or without blur), so its
P(target) is 1.000 for anything on the target side of its boundary and says nothing about how
convincing a translation is. Instead each translation's judge margin (target logit minus source
logit) is ranked among the margins of held-out real target samples:
realism = (#{real targets with a lower margin} + 1/2) / (n + 1) (ties count half). Under the
hypothesis "this is a real target sample" it is uniform with mean 0.5, so a translation as
convincing as the median real target scores 0.5 and one less target-like than every real target
scores 0.5 / (n + 1). The judge also sees every image through a fixed Gaussian blur
(``validate.judge_blur_sigma``), in training and scoring alike, so its margin rests on shape and
stroke style more than on sharpness (A is blurry, B sharp on the bundled digits). The raw softmax
P(target) is still reported (``mean_p_target``) to show the saturation this replaces.

Per direction, on held-out samples: means and percentiles, pass rate, label accuracy (and that of
the untranslated sources), and FID and KID between translations and held-out real targets on the
domain judge's penultimate features, plus on InceptionV3 features when a local TorchScript file is
configured.

The pieces live beside this module: :mod:`cyclegan_core.metrics` (the pure metrics),
:mod:`cyclegan_core.judges` (the classifiers, their cache and calibration, Inception) and
:mod:`cyclegan_core.gate` (the bounds); this module runs them over the generated rows and writes
the validated tables, the summary and the sample grids.

Memory is set by the batch and shard sizes, not by the collection: :func:`score_shard` scores one
generated shard (``generate.batch_size`` rows decoded at a time) into ``validated/<direction>/part-XXXXX.parquet``
and a file of its sufficient statistics (counts, sums, feature moments, a seeded KID reservoir);
:func:`merge_shards` folds those in shard order into the run-level figures and commits the folder.
An orchestrator maps :func:`score_shard` over shards on its workers; :func:`validate` runs the same
functions in a loop.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from . import inputs
from .config import DIRECTIONS, Config
from .devices import resolve_device
from .figures import AUDIO_SUMMARIZED, SUMMARIZED
from .gate import bounds_for, run_failures, unapplied_bounds
from .judges import (
    calibration_half,
    classify,
    inception_features,
    iter_manifest_images,
    load_inception,
    load_or_train_judges,
    manifest_index,
    realism_calibration,
)
from .metrics import kernel_inception_distance, leave_one_out_realism, margins
from .scoring import (
    FEATURES,
    INCEPTION_FEATURES,
    VALIDATED_SCHEMA,
    Scorer,
    score_shard,
    stats_name,
    validated_schema,
)
from .storage import atomic_dir, parquet_batches, sha256_bytes, sha256_file, write_json_atomic
from .streamstats import Moments, Reservoir, frechet_from_moments, load_stats, save_stats

__all__ = ["VALIDATED_SCHEMA", "Scorer", "ValidateResult", "generated_shards", "iter_validated", "merge_shards",
           "prepare", "read_validated", "score_shard", "staging_dir", "stats_name", "validate",
           "validated_schema"]

PERCENTILES = (10, 50, 90)


@dataclass(frozen=True)
class ValidateResult:
    out_dir: str
    summary: str
    passed: bool
    failures: list[str]
    figures: dict

    def to_dict(self) -> dict:
        return asdict(self)


def _pair(result: tuple[float, float, int] | None) -> tuple[float | None, float | None, int | None]:
    return (None, None, None) if result is None else result


REFERENCE_FILE = "reference-{}.safetensors"  # in the judge's folder: the held-out real samples' statistics



def staging_dir(out_dir: str | Path) -> Path:
    """Where shards are scored before :func:`merge_shards` swaps them in: beside ``out_dir``."""
    out = Path(out_dir)
    return out.parent / f".{out.name}.staging"


def generated_shards(generated_dir: str | Path, direction: str) -> list[str]:
    """The generated shards of ``direction``, as names relative to ``generated_dir``, in shard order."""
    return [f"{direction}/{p.name}" for p in sorted((Path(generated_dir) / direction).glob("part-*.parquet"))]


# ---- the held-out real samples: judge, calibration and reference statistics ----

def prepare(cfg: Config, manifest_a: str | Path, manifest_b: str | Path) -> dict:
    """Train or load the judges and measure the held-out real samples once, before any shard is scored.

    Returns what :func:`score_shard` and :func:`merge_shards` need, as paths and figures: the judges'
    folder and key, the reference statistics file (feature moments and KID reservoir of each
    domain's held-out "calibration" half, realism calibration margins) and the judge's held-out
    accuracy. The reference is streamed a batch at a time and kept beside the judges, under a key
    of the held-out samples, the settings and the code, so a rerun reads it instead.
    """
    v = cfg.validate_
    inception = load_inception(v.inception_weights)  # a configuration error before any work
    device = resolve_device(cfg.runtime.step("validate").device, "runtime.device")
    manifests = {"A": manifest_a, "B": manifest_b}
    judges, key = load_or_train_judges(cfg, manifest_a, manifest_b)
    folder = Path(cfg.paths.judges) / key
    held = {d: calibration_half(manifest_index(m, ("test",))).column("sample_id").to_pylist()
            for d, m in manifests.items()}
    digest = sha256_bytes(json.dumps({"held_out": held, "inception": v.inception_weights, "seed": v.classifier_seed,
                                      "batch": cfg.generate.batch_size,
                                      "reservoir": v.kid_reservoir, "code": inputs.code_digest("validation")},
                                     sort_keys=True).encode())[:16]
    ref = folder / REFERENCE_FILE.format(digest)
    if not ref.exists():
        _measure_reference(cfg, judges, folder, manifests, held, ref, inception, device)
    meta = load_stats(ref)[0]
    total = sum(meta["held_out"].values())
    judge = {"key": key, "blur_sigma": v.judge_blur_sigma,
             "held_out_accuracy": sum(meta["correct"].values()) / total if total else None, "held_out_samples": total}
    return {"judge_key": key, "judges": str(folder), "reference": str(ref), "judge": judge}


@torch.inference_mode()
def _measure_reference(cfg: Config, judges, folder: Path, manifests: dict, held: dict[str, list[str]], ref: Path,
                       inception, device: torch.device) -> None:
    v = cfg.validate_
    judges.domain.to(device)
    if inception is not None:
        inception = inception.to(device)
    moments: dict[str, Moments] = {}
    reservoirs: dict[str, Reservoir] = {}
    margin: dict[str, np.ndarray] = {}
    counts, correct = {}, {}
    for d, manifest in manifests.items():
        t_idx = 0 if d == "A" else 1
        mom, res = Moments.empty(FEATURES), Reservoir.empty(v.kid_reservoir, FEATURES)
        inc_mom, inc_res = Moments.empty(INCEPTION_FEATURES), Reservoir.empty(v.kid_reservoir, INCEPTION_FEATURES)
        parts, n, ok = [], 0, 0
        for ids, _, images in iter_manifest_images(manifest, set(held[d]), cfg.generate.batch_size):
            logits, feats = classify(judges.domain, images)
            mom = mom.merge(Moments.of(feats))
            res = res.merge(Reservoir.of(feats, ids, v.classifier_seed, v.kid_reservoir, 0, n))
            if inception is not None:
                f = inception_features(inception, images, device=device)
                inc_mom = inc_mom.merge(Moments.of(f))
                inc_res = inc_res.merge(Reservoir.of(f, ids, v.classifier_seed, v.kid_reservoir, 0, n))
            parts.append(margins(logits, t_idx))
            ok += int((logits.argmax(1) == t_idx).sum())
            n += len(ids)
        moments[d], reservoirs[d] = mom, res
        if inception is not None:
            moments[f"{d}.inception"], reservoirs[f"{d}.inception"] = inc_mom, inc_res
        margin[d] = np.concatenate(parts) if parts else np.zeros(0)
        counts[d], correct[d] = n, ok
    calibration = realism_calibration(folder, margin)
    for stale in folder.glob(REFERENCE_FILE.format("*")):
        stale.unlink()
    save_stats(ref, {"held_out": counts, "correct": correct}, moments, reservoirs,
               {f"calibration.{d}": m for d, m in calibration.items()})


# ---- the run: merge the shards' statistics, gate, commit ----

def _located(out_dir: Path, result: dict) -> tuple[Path, Path]:
    """The staged (or, for a shard an orchestrator's cache kept, the committed) files of a scored shard."""
    for root in (staging_dir(out_dir), out_dir):
        table, stats = root / result["file"], root / stats_name(result["file"])
        if (table.exists() and stats.exists() and sha256_file(table) == result["sha256"]
                and sha256_file(stats) == result["stats_sha256"]):
            return table, stats
    raise FileNotFoundError(f"{out_dir / result['file']}: validated shard missing or changed since it was scored; "
                            "validate again")


PERCENTILE_BATCH_ROWS = 65536


def _percentiles(name: str, tables: list[Path]) -> dict:
    """p10/p50/p90 of a per-sample column over the held-out rows of every shard, read back a batch of one
    column at a time and kept as 8 bytes a held-out row (no Python object per row): exact, the same figures a
    pass over one whole table gives."""
    parts = []
    for path in tables:
        for batch in parquet_batches(path, [name, "split"], PERCENTILE_BATCH_ROWS):
            held = batch.filter(pc.equal(batch.column(1), "test")).column(0)
            parts.append(held.to_numpy(zero_copy_only=False).astype(np.float64))
    v = np.concatenate(parts) if parts else np.zeros(0)
    v = v[np.isfinite(v)]
    return {f"p{q}_{name}": float(np.percentile(v, q)) if len(v) else None for q in PERCENTILES}


def _mean_of(sums: dict, name: str) -> float | None:
    total, count = sums.get(name, (0.0, 0))
    return total / count if count else None


def _kid(x: Reservoir, y: Reservoir, v) -> tuple[float | None, float | None, int | None]:
    return _pair(kernel_inception_distance(x.values, y.values, v.kid_subset_size, v.kid_subsets, v.classifier_seed))


def merge_direction(cfg: Config, direction: str, shards: list[tuple[Path, Path]], reference: str | Path,
                    audio: bool = False) -> dict:
    """The run-level figures of ``direction`` from its scored shards (validated table, statistics), in order."""
    v = cfg.validate_
    target = direction[-1]
    _, ref_moments, ref_res, arrays = load_stats(reference)
    real_margin = arrays[f"calibration.{target}"]
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    sums: dict[str, list[float]] = {}
    moments: dict[str, Moments] = {}
    reservoirs: dict[str, Reservoir] = {}
    for pos, (_, stats) in enumerate(shards):
        meta, mom, res = load_stats(stats)[:3]
        counts.update(meta["counts"])
        reasons.update(meta["reasons"])
        for name, (total, count) in meta["sums"].items():
            acc = sums.setdefault(name, [0.0, 0])
            acc[0] += total
            acc[1] += count
        for name, m in mom.items():
            moments[name] = moments[name].merge(m) if name in moments else m
        for name, r in res.items():
            r = r.at_shard(pos)
            reservoirs[name] = reservoirs[name].merge(r) if name in reservoirs else r
    for name in ("gen", "src"):
        moments.setdefault(name, Moments.empty(FEATURES))
        reservoirs.setdefault(name, Reservoir.empty(v.kid_reservoir, FEATURES))
    real_m, real_r = ref_moments[target], ref_res[target]
    n, held = counts["generated"], counts["held_out"]
    lab = counts["labelled"]
    fig = {
        "generated": n, "passed": counts["passed"], "dropped": n - counts["passed"],
        "dropped_by": dict(sorted(reasons.items())),
        "held_out": held, "labelled": lab,
        "pass_rate": counts["passed_held_out"] / held if held else None,
    }
    tables = [t for t, _ in shards]
    for name in (*SUMMARIZED, *(AUDIO_SUMMARIZED if audio else ())):
        fig[f"mean_{name}"] = _mean_of(sums, name)
        fig.update(_percentiles(name, tables))
    kid, kid_std, kid_n = _kid(reservoirs["gen"], real_r, v)
    fig.update({
        "realism_untranslated": _mean_of(sums, "realism_untranslated") if held else None,
        "realism_real_target": leave_one_out_realism(real_margin),
        "mean_p_target": _mean_of(sums, "p_target"),
        "label_accuracy": counts["label_ok"] / lab if lab else None,
        "label_accuracy_untranslated": counts["label_ok_untranslated"] / lab if lab else None,
        **({"label_accuracy_heard": counts["label_ok_heard"] / lab if lab else None} if audio else {}),
        "fid_domain_features": frechet_from_moments(moments["gen"], real_m),
        "fid_domain_untranslated": frechet_from_moments(moments["src"], real_m),
        "kid_domain_features": kid, "kid_domain_std": kid_std, "kid_subset_size": kid_n,
        "kid_domain_untranslated": _kid(reservoirs["src"], real_r, v)[0],
        "real_target_held_out": real_m.n,
    })
    if v.inception_weights is not None:
        gen_m = moments.get("inception", Moments.empty(INCEPTION_FEATURES))
        gen_r = reservoirs.get("inception", Reservoir.empty(v.kid_reservoir, INCEPTION_FEATURES))
        ref_m = ref_moments.get(f"{target}.inception", Moments.empty(INCEPTION_FEATURES))
        ref_r = ref_res.get(f"{target}.inception", Reservoir.empty(v.kid_reservoir, INCEPTION_FEATURES))
        fig["fid_inception"] = frechet_from_moments(gen_m, ref_m)
        fig["kid_inception"] = _kid(gen_r, ref_r, v)[0]
    return fig


def merge_shards(cfg: Config, prepared: dict, results: list[dict], out_dir: str | Path,
                 measured: bool) -> ValidateResult:
    """Fold the scored shards' statistics into ``summary.json``, apply the run-level gate and swap the
    folder in: ``out_dir/<direction>/part-XXXXX.parquet``, their statistics under ``out_dir/_stats/`` and
    ``summary.json``.

    ``results``: :func:`score_shard`'s results, every shard of both directions once; a shard is taken
    from the staging folder, or from ``out_dir`` where an orchestrator's cache kept it. ``measured``:
    whether the model ran (identity drift and robust cycle).
    """
    v = cfg.validate_
    audio = cfg.data.audio_settings is not None
    out = Path(out_dir)
    by_direction = {d: sorted((r for r in results if r["direction"] == d), key=lambda r: r["file"])
                    for d in DIRECTIONS}
    located = {d: [_located(out, r) for r in rs] for d, rs in by_direction.items()}
    figures: dict[str, dict] = {}
    failures: list[str] = []
    sample_bounds, run_bounds, not_applied = bounds_for(cfg)
    for direction in DIRECTIONS:
        fig = merge_direction(cfg, direction, located[direction], prepared["reference"], audio)
        figures[direction] = fig
        failures += run_failures(direction, fig, run_bounds[direction])
        not_applied += unapplied_bounds(direction, fig, run_bounds[direction])
    robust_cycle = {"noise_std": v.robust_noise_std, "jpeg_quality": v.robust_jpeg_quality, "seed": v.robust_seed,
                    "measured": measured}
    summary = {"passed": not failures, "failures": failures, "not_applied": not_applied, "kind": cfg.data.kind,
               "directions": figures,
               "judges": prepared["judge_key"], "robust_cycle": robust_cycle,
               "domain_judge": prepared["judge"],
               "thresholds": {"sample": {d: sample_bounds[d].model_dump() for d in DIRECTIONS},
                              "run": {d: run_bounds[d].model_dump() for d in DIRECTIONS}}}
    with atomic_dir(out) as tmp:
        for direction, rs in by_direction.items():
            (tmp / direction).mkdir()
            for r, files in zip(rs, located[direction], strict=True):
                for src, name in zip(files, (r["file"], stats_name(r["file"])), strict=True):
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    _place(src, tmp / name, staged=src.is_relative_to(staging_dir(out)))
        write_json_atomic(tmp / "summary.json", nan_to_none(summary))
    shutil.rmtree(staging_dir(out), ignore_errors=True)
    return ValidateResult(str(out), str(out / "summary.json"), not failures, failures, figures)


def _place(src: Path, dst: Path, staged: bool) -> None:
    """Move a staged file into the new folder; link (or copy) one kept from the current folder."""
    if staged:
        os.replace(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def validate(cfg: Config, manifest_a: str | Path, manifest_b: str | Path, generated_dir: str | Path,
             out_dir: str | Path, model_dir: str | Path | None = None) -> ValidateResult:
    """Score every generated row, shard by shard; write ``out_dir/<direction>/part-*.parquet`` and
    ``summary.json``: :func:`prepare`, :func:`score_shard` for each shard in turn, :func:`merge_shards`.

    ``model_dir`` (the model that made the translations) enables the identity-drift and robust-cycle figures.
    """
    prepared = prepare(cfg, manifest_a, manifest_b)
    scorer = Scorer(cfg, prepared, model_dir)
    staging = staging_dir(out_dir)
    results = [score_shard(scorer, generated_dir, shard, staging)
               for d in DIRECTIONS for shard in generated_shards(generated_dir, d)]
    return merge_shards(cfg, prepared, results, out_dir, model_dir is not None)


# ---- readers ----

def validated_files(out_dir: str | Path, direction: str) -> list[Path]:
    """The validated shards of ``direction``, in shard order."""
    return sorted((Path(out_dir) / direction).glob("part-*.parquet"))


def iter_validated(out_dir: str | Path, direction: str, columns: list[str] | None = None,
                   batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
    """The validated rows of ``direction`` as record batches of at most ``batch_size`` rows, in shard order."""
    for path in validated_files(out_dir, direction):
        yield from parquet_batches(path, columns if columns is not None else pq.read_schema(path).names, batch_size)


def read_validated(out_dir: str | Path, direction: str, columns: list[str] | None = None) -> pa.Table:
    """Every validated row of ``direction`` as one table (small uses: no image bytes, tens of bytes a row)."""
    files = validated_files(out_dir, direction)
    if not files:
        empty = VALIDATED_SCHEMA.empty_table()
        return empty if columns is None else empty.select(columns)
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def nan_to_none(obj):
    """JSON-safe copy: NaN and Inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    return obj
