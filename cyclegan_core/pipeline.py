"""The five pipeline steps as plain functions of a :class:`Config`, with outputs where the config says.

Each step reads the previous step's files and returns a small result of paths, hashes and counts.
The CLI calls these directly (so ``dvc repro`` needs no orchestrator); the Prefect tasks wrap them.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from . import flags, inputs, labelnames
from .audio import listening_page
from .config import DIRECTIONS, Config
from .default_data import make_default_data
from .diff import scan_folder, write_version_diff
from .gate import GateFailed, bounds_for, bounds_in_force, check_gate, check_utility
from .generate import GenerateResult, count_sources, generate, now_stamp
from .history import HISTORY_FILE, HISTORY_PNG, append_history, history_chart
from .ingest import (
    IngestPlan,
    IngestResult,
    check_collections,
    commit_collection,
    discard_staging,
    ingest_collection,
    manifest_digest,
    plan_collections,
)
from .loader import ManifestImages
from .models import MODEL_FILE, MODEL_JSON, model_fingerprint, settings_key
from .overview import LISTEN_DIR
from .publish import PublishResult, commit_publish, plan_publish, write_planned_shards
from .report import (
    epoch_curves,
    listening_rows,
    loss_curves,
    markdown_report,
    sample_grid,
    utility_chart,
    utility_markdown,
)
from .sampleids import moved as samples_moved
from .sampleids import read_training_data, split_keys, training_labels, write_training_data
from .storage import (
    download_dir,
    parquet_batches,
    read_json,
    redact_url,
    sha256_file,
    upload_dir,
    write_bytes_atomic,
    write_json_atomic,
)
from .train import LOSSES_FILE, Trainer, TrainResult
from .utility import UtilityResult, measure_utility, utility_report
from .validate import (
    Scorer,
    ValidateResult,
    generated_shards,
    merge_shards,
    nan_to_none,
    prepare,
    score_shard,
    staging_dir,
    validate,
)

Progress = Callable[..., None]
log = logging.getLogger(__name__)
CURRENT_MODEL = "current.json"
TRAINING_DATA = "training_data.parquet"
REPORT_FILE = "report.md"
EPOCH_LOSSES_FILE = "losses_epoch.tsv"
UTILITY_FILE = "utility.json"  # reports/utility.json: the utility step's figures (a DVC metrics file)
UTILITY_PNG = "utility.png"


def manifest_path(cfg: Config, domain: str) -> Path:
    return Path(cfg.paths.ingest) / domain / "manifest.parquet"


def step_default_data(cfg: Config) -> dict:
    """Materialize the bundled collections where ``data.domain_a``/``domain_b`` point (local folders):
    the digits for images, the spoken words (eSpeak NG, the ``voices`` extra) for ``data.kind: audio``."""
    if cfg.data.kind == "audio":
        from .voices import make_voices_data

        return {"made": make_voices_data(cfg.data.domain_a, cfg.data.domain_b), "A": cfg.data.domain_a,
                "B": cfg.data.domain_b}
    made = make_default_data(cfg.data.domain_a, cfg.data.domain_b, cfg.data.default)
    return {"made": made, "A": cfg.data.domain_a, "B": cfg.data.domain_b}


def _collections(cfg: Config) -> tuple[dict[str, str], dict[str, int] | None]:
    """Both collections' URLs, checked usable before either is ingested, and their class-name ids."""
    urls = {"A": cfg.data.domain_a, "B": cfg.data.domain_b}
    check_collections(urls, cfg.data)
    return urls, labelnames.collection_ids(urls, cfg.data)  # class names: one map for both collections


def step_ingest(cfg: Config, progress: Progress | None = None) -> dict[str, IngestResult]:
    """Ingest both collections in this process (plan, chunks and commit inline: :func:`ingest_collection`)."""
    urls, ids = _collections(cfg)
    results = {d: ingest_collection(urls[d], d, Path(cfg.paths.ingest) / d, cfg.data,
                                    (lambda i, n, d=d: progress(f"ingest {d}", i, n)) if progress else None, ids)
               for d in ("A", "B")}
    labelnames.write_names(cfg.paths.ingest, ids)
    return results


def plan_ingest(cfg: Config) -> tuple[dict[str, IngestPlan], dict[str, int] | None]:
    """Both collections listed and cut into chunks (``ingest.ingest_chunk`` each), and the class-name ids."""
    urls, ids = _collections(cfg)
    return plan_collections(urls, cfg.paths.ingest, cfg.data, ids), ids


def commit_ingest(cfg: Config, plans: dict[str, IngestPlan], ids: dict[str, int] | None,
                  chunks: list[dict]) -> dict[str, IngestResult]:
    """Each collection's chunks merged in order into its manifest (:func:`step_ingest`'s bytes), class names."""
    try:
        results = {d: commit_collection(plan, [c for c in chunks if c["domain"] == d], cfg.data)
                   for d, plan in plans.items()}
    finally:
        for plan in plans.values():
            discard_staging(plan)
    labelnames.write_names(cfg.paths.ingest, ids)
    return results


def current_fingerprint(cfg: Config) -> str:
    """The fingerprint the model for the ingested data and this config must have."""
    return model_fingerprint(cfg, *(manifest_digest(manifest_path(cfg, d), "train") for d in ("A", "B")))


def _write_training_data(cfg: Config, folder: Path) -> None:
    """Record which samples a model was trained on, so later runs can measure how far the data moved."""
    write_training_data(folder / TRAINING_DATA, {d: manifest_path(cfg, d) for d in ("A", "B")},
                        {"cycleaug.settings_key": settings_key(cfg)})


def _read_training_data(folder: Path) -> tuple[str, dict[str, np.ndarray]] | None:
    path = folder / TRAINING_DATA
    if not (path.exists() and (folder / MODEL_FILE).exists() and (folder / MODEL_JSON).exists()):
        return None
    return read_training_data(path)


@dataclass(frozen=True)
class ModelChoice:
    """Which model this run translates with, whether it must be trained first, and why."""

    fingerprint: str
    folder: Path
    train: bool
    reason: str


def choose_model(cfg: Config, retrain: bool = False) -> ModelChoice:
    """Apply ``orchestrate.retrain`` to the ingested data: reuse a stored model or train a new one.

    The model for the exact fingerprint (same training samples, settings and code) is always
    reused. Otherwise, with ``on_change`` (or ``retrain``) a model is trained for the current
    samples; with ``on_growth`` or ``on_request`` the last model trained with the same settings and
    code keeps translating while the training samples it has not seen stay within the policy.
    """
    fp = current_fingerprint(cfg)
    folder = Path(cfg.paths.models) / fp
    if (folder / MODEL_FILE).exists() and (folder / MODEL_JSON).exists():
        return ModelChoice(fp, folder, False,
                           f"reusing model {fp[:12]}: same training data, config and code, nothing to train")
    if cfg.paths.models_url and download_dir(_model_url(cfg, fp), folder, commit_file=MODEL_JSON,
                                             retries=cfg.data.retries, backoff_s=cfg.data.retry_backoff_s):
        return ModelChoice(fp, folder, False, f"reusing model {fp[:12]} fetched from "
                                              f"{redact_url(cfg.paths.models_url)}: trained elsewhere on the same "
                                              "data, config and code")
    if retrain:
        return ModelChoice(fp, folder, True, f"training model {fp[:12]}: retraining on the current data requested")
    key = settings_key(cfg)
    models = Path(cfg.paths.models)
    current = models / CURRENT_MODEL
    preferred = Path(read_json(current)["model_dir"]).name if current.exists() else None
    candidates: list[tuple[float, Path, dict[str, np.ndarray]]] = []
    for meta in models.glob(f"*/{MODEL_JSON}"):
        info = _read_training_data(meta.parent)
        if info and info[0] == key:
            # The model the last train step chose comes first, then the newest.
            rank = float("inf") if meta.parent.name == preferred else meta.stat().st_mtime
            candidates.append((rank, meta.parent, info[1]))
    if not candidates:
        return ModelChoice(fp, folder, True, f"training model {fp[:12]}: no stored model was trained with these "
                                             "training settings and this code")
    _, old, seen = max(candidates, key=lambda c: c[0])
    moved = {d: samples_moved(split_keys(manifest_path(cfg, d)), seen[d]) for d in ("A", "B")}
    change = ", ".join(f"{d} +{a}/-{r}" for d, (a, r) in moved.items())
    growth = max((a + r) / max(len(seen[d]), 1) for d, (a, r) in moved.items())
    policy, limit = cfg.orchestrate.retrain, cfg.orchestrate.retrain_growth
    if policy == "on_change":
        return ModelChoice(fp, folder, True, f"training model {fp[:12]}: training samples changed since model "
                                             f"{old.name[:12]} ({change}) and orchestrate.retrain=on_change")
    if policy == "on_growth" and growth > limit:
        return ModelChoice(fp, folder, True, f"training model {fp[:12]}: training samples moved {growth:.0%} since "
                                             f"model {old.name[:12]} ({change}), more than "
                                             f"orchestrate.retrain_growth={limit}")
    why = f"within orchestrate.retrain_growth={limit}" if policy == "on_growth" else "orchestrate.retrain=on_request"
    return ModelChoice(old.name, old, False, f"reusing model {old.name[:12]}: training samples changed ({change}, "
                                             f"{growth:.0%}) but {why}; new samples are translated with it")


def _model_url(cfg: Config, fingerprint: str) -> str:
    return f"{str(cfg.paths.models_url).rstrip('/')}/{fingerprint}"


def step_train(cfg: Config, progress: Progress | None = None, retrain: bool = False) -> TrainResult:
    """Train a model for the current fingerprint, or reuse a stored one as ``orchestrate.retrain`` allows."""
    choice = choose_model(cfg, retrain)
    fp, folder = choice.fingerprint, choice.folder
    if not choice.train:
        meta = read_json(folder / MODEL_JSON)
        result = TrainResult(fp, str(folder), meta["sha256"], True, meta["steps"], 0.0, None)
    else:
        # Labels and halves only, read a batch at a time: the images are decoded from the manifests as training
        # needs them (loader.py).
        images = {d: ManifestImages(manifest_path(cfg, d), "train") for d in ("A", "B")}
        read = {d: training_labels(manifest_path(cfg, d)) for d in ("A", "B")}
        labels, halves = {d: r[0] for d, r in read.items()}, {d: r[1] for d, r in read.items()}
        trainer = Trainer(cfg, images["A"], images["B"], folder, labels=labels, classifier_mask=halves)
        resumed = trainer.try_resume()
        seconds = trainer.run((lambda i, n, losses: progress("train", i, n, losses)) if progress else None)
        if not trainer.dist.is_main:  # under torchrun rank 0 alone writes
            return TrainResult(fp, str(folder), "", False, trainer.step, round(seconds, 2), resumed)
        path = trainer.export(fp, seconds)
        loss_curves(folder / LOSSES_FILE, folder / "losses.png")
        result = TrainResult(fp, str(folder), sha256_file(path), False, trainer.step, round(seconds, 2), resumed)
    if not (folder / TRAINING_DATA).exists() and fp == current_fingerprint(cfg):
        _write_training_data(cfg, folder)  # also for models trained before this record existed
    if cfg.paths.models_url and not result.reused:  # share it: model.json goes up last
        upload_dir(folder, _model_url(cfg, fp), commit_file=MODEL_JSON, retries=cfg.data.retries,
                   backoff_s=cfg.data.retry_backoff_s)
    write_json_atomic(Path(cfg.paths.models) / CURRENT_MODEL, {"fingerprint": fp, "model_dir": str(folder)})
    return result


def current_model_dir(cfg: Config) -> Path:
    """The stored model this run translates with (see :func:`choose_model`); an error if it must be trained."""
    choice = choose_model(cfg)
    if choice.train:
        raise FileNotFoundError(f"no trained model for fingerprint {choice.fingerprint[:12]} in {cfg.paths.models}; "
                                "run train first")
    return choice.folder


def step_generate(cfg: Config, progress: Progress | None = None, created_at: str | None = None) -> GenerateResult:
    """Translate both collections, shard by shard, reusing rows made before by the same model."""
    return generate(manifest_path(cfg, "A"), manifest_path(cfg, "B"), current_model_dir(cfg), cfg.paths.generated,
                    cfg.generate, cfg.runtime.step("generate"),
                    (lambda i, n: progress("generate", i, n)) if progress else None, created_at or now_stamp(),
                    audio=cfg.data.audio_settings)


def generated_model_dir(cfg: Config) -> Path | None:
    """The stored model that made the current translations (None when it is not there any more)."""
    fps = set()
    for d in DIRECTIONS:
        for shard in generated_shards(cfg.paths.generated, d):  # one shard's small column at a time
            for batch in parquet_batches(Path(cfg.paths.generated) / shard, ["model_fingerprint"], 65536):
                fps.update(pc.unique(batch.column(0)).to_pylist())
    if len(fps) != 1:
        return None
    folder = Path(cfg.paths.models) / fps.pop()
    return folder if (folder / MODEL_FILE).exists() else None


def step_validate(cfg: Config) -> ValidateResult:
    """Score and gate; writes ``reports/validation.json``, ``report.md`` and the sample grids, even when failing.

    The shards are scored one after another in this process; the flow maps :func:`step_validate_shard`
    over them on its task runner instead, between :func:`step_validate_prepare` and :func:`step_validate_merge`.
    """
    result = validate(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"), cfg.paths.generated,
                      cfg.paths.validated, model_dir=generated_model_dir(cfg))
    return _validation_reports(cfg, result)


def step_validate_prepare(cfg: Config) -> dict:
    """The judges (trained here when new), the held-out reference and the model that made the translations."""
    model_dir = generated_model_dir(cfg)
    prepared = prepare(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"))
    # Absolute paths: a worker process may run in another folder.
    return prepared | {k: str(Path(prepared[k]).resolve()) for k in ("judges", "reference")} | {
        "model_dir": None if model_dir is None else str(Path(model_dir).resolve())}


def step_validate_shard(cfg: Config, prepared: dict, shard: str) -> dict:
    """Score one generated shard (``<direction>/part-XXXXX.parquet``) into validation's staging folder."""
    scorer = Scorer(cfg, prepared, prepared["model_dir"])
    staging = staging_dir(Path(cfg.paths.validated).resolve())
    return score_shard(scorer, Path(cfg.paths.generated).resolve(), shard, staging)


def step_validate_merge(cfg: Config, prepared: dict, shards: list[dict]) -> ValidateResult:
    """Merge the scored shards into ``summary.json``, swap the validated folder in, and write the reports."""
    result = merge_shards(cfg, prepared, shards, cfg.paths.validated, prepared["model_dir"] is not None)
    return _validation_reports(cfg, result)


def _validation_reports(cfg: Config, result: ValidateResult) -> ValidateResult:
    reports = Path(cfg.paths.reports)
    summary = nan_to_none(read_json(result.summary))
    write_json_atomic(reports / "validation.json", summary)
    audio, names = cfg.data.kind == "audio", labelnames.read_names(cfg.paths.ingest)
    for d in DIRECTIONS:
        sample_grid(cfg.paths.generated, cfg.paths.validated, d, reports / f"grid_{d}.png", cfg.publish.grid_samples,
                    spectrogram=audio, label_names=names)
    if audio:  # a page to listen to: source | translation | cycle, best and worst held-out clips
        listen = [r for d in DIRECTIONS
                  for r in listening_rows(cfg.paths.generated, cfg.paths.validated, d, label_names=names)]
        listening_page(listen, reports / LISTEN_DIR, "CycleAug: listen to the translations")
    write_bytes_atomic(reports / REPORT_FILE, markdown_report(summary).encode("utf-8"))
    return result


def step_utility(cfg: Config, progress: Progress | None = None) -> UtilityResult:
    """Measure downstream utility (when the collections carry labels); writes ``reports/utility.json``,
    ``utility.png`` and the utility section of ``report.md``. Its bounds gate publishing."""
    t0 = time.perf_counter()
    summary_path = Path(cfg.paths.validated) / "summary.json"
    if cfg.utility.enabled:
        figures = measure_utility(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"), cfg.paths.generated,
                                  cfg.paths.validated, progress)
    else:
        figures = {d: {"skipped": "utility.enabled is false"} for d in DIRECTIONS}
    # Which validation it measured: publish refuses a utility report of another validation.
    doc = utility_report(figures, t0, cfg) | {"validated_summary": sha256_file(summary_path)}
    reports = Path(cfg.paths.reports)
    out = reports / UTILITY_FILE
    write_json_atomic(out, nan_to_none(doc))
    if utility_chart(doc, reports / UTILITY_PNG) is None:
        (reports / UTILITY_PNG).unlink(missing_ok=True)
    summary = nan_to_none(read_json(summary_path))
    text = markdown_report(summary) + "\n" + utility_markdown(doc)
    write_bytes_atomic(reports / REPORT_FILE, text.encode("utf-8"))
    ran = any("skipped" not in figures[d] for d in DIRECTIONS)
    return UtilityResult(str(out), ran, doc["passed"], doc["failures"],
                         {d: figures[d] for d in DIRECTIONS}, doc["seconds"])


def read_utility(cfg: Config) -> dict | None:
    """The utility report of the current validation, or None when there is none (or it is of another one)."""
    path = Path(cfg.paths.reports) / UTILITY_FILE
    summary = Path(cfg.paths.validated) / "summary.json"
    doc = read_json(path) if path.exists() else None
    if doc is None or doc.get("validated_summary") != sha256_file(summary):
        return None
    return doc


# What publish writes into reports/: figures of a published version, not of a run that failed its gate.
PUBLISHED_REPORTS = ("metrics.json", LOSSES_FILE, "losses.png", EPOCH_LOSSES_FILE)


def gated(cfg: Config, check: Callable[[dict], None], doc: dict) -> None:
    """``check(doc)`` (``check_gate`` or ``check_utility``); when it fails, first take the previous published
    version's figures out of ``reports/`` (they live on in its dataset card), so that the folder holds only
    this failed run's report, grids and figures, then raise."""
    try:
        check(doc)
    except GateFailed:
        reports = Path(cfg.paths.reports)
        for name in PUBLISHED_REPORTS:
            (reports / name).unlink(missing_ok=True)
        raise


def _train_count(cfg: Config, domain: str) -> int:
    """Training samples of a manifest, from its split column alone (no image is read)."""
    return count_sources(manifest_path(cfg, domain), ("train",))


def _publication(cfg: Config, flow_run_id: str | None) -> tuple[dict, dict, Path, dict, dict]:
    """The gate's summary, the utility report, the stored model and its record, and this run's provenance; raises
    GateFailed (touching nothing published) when the run-level gate or a utility bound failed."""
    summary = read_json(Path(cfg.paths.validated) / "summary.json")
    gated(cfg, check_gate, summary)
    utility = read_utility(cfg)
    if utility is None:  # publish never goes out unmeasured: the utility bounds gate it too
        log.info("no utility report for the current validation: running the utility step first")
        step_utility(cfg)
        utility = read_utility(cfg)
        assert utility is not None
    gated(cfg, check_utility, utility)
    model_dir = current_model_dir(cfg)
    model = read_json(model_dir / MODEL_JSON)
    provenance = {
        "code_version": inputs.pipeline_code_digest(), "params_hash": inputs.settings_digest(cfg, "publication"),
        "seed": cfg.train.seed, "flow_run_id": flow_run_id,
    }
    return summary, utility, model_dir, model, provenance


def step_publish_plan(cfg: Config, flow_run_id: str | None = None) -> dict:
    """Check the gates and plan the version (see :func:`cyclegan_core.publish.plan_publish`): a small dict
    whose ``shards`` go to :func:`cyclegan_core.publish.write_planned_shard`, one call each, then the whole
    to :func:`step_publish_commit`."""
    provenance = _publication(cfg, flow_run_id)[-1]
    audio = cfg.data.audio_settings
    by_direction: dict[str, set[str]] = {}
    for direction, source_id in flags.flagged(cfg.paths.flags):
        by_direction.setdefault(direction, set()).add(source_id)
    return plan_publish(cfg.paths.generated, cfg.paths.validated, cfg.paths.published, provenance=provenance,
                        mode=cfg.data.picture_mode, size=cfg.data.shape,
                        max_shard_bytes=int(cfg.publish.max_shard_mb * 2**20),
                        sample_rate=audio.sample_rate if audio is not None else None, flagged=by_direction,
                        label_names=labelnames.read_names(cfg.paths.ingest))


def step_publish_commit(cfg: Config, plan: dict, shards: list[dict]) -> PublishResult:
    """Swap in the planned version with its written ``shards`` (their manifest entries) and the card, upload
    it where ``paths.publish_url`` says, and write ``reports/metrics.json`` and the loss curves."""
    summary, utility, model_dir, model, _ = _publication(cfg, plan["provenance"]["flow_run_id"])
    reports = Path(cfg.paths.reports)
    card_info = {
        "figures": summary["directions"],
        "utility": utility,
        "model": {"model_fingerprint": model["fingerprint"], "model_steps": model["steps"],
                  "model_arch": model.get("arch", "cyclegan")},
        "bounds": bounds_in_force(*bounds_for(cfg)[:2], cfg.utility.run),
        "sources": {"A": redact_url(cfg.data.domain_a), "B": redact_url(cfg.data.domain_b), "size": cfg.data.image_size,
                    "mode": cfg.data.mode, "kind": cfg.data.kind},
    }
    audio = cfg.data.audio_settings
    if audio is not None:
        card_info["sources"].update({
            "sample_rate": audio.sample_rate, "duration_s": round(audio.clip_samples / audio.sample_rate, 3),
            "bins": audio.bins, "frames": audio.frames, "representation": audio.representation,
            "inversion": audio.inversion.replace("_", "-")})
    previous = scan_folder(plan["out_dir"])  # the version being replaced: its row keys and digests, no pictures
    result = commit_publish(plan, shards, card_info=card_info)
    write_version_diff(previous, result.out_dir, reports)
    if cfg.paths.publish_url:  # the finished local version goes up, manifest.json last
        upload_dir(result.out_dir, cfg.paths.publish_url, retries=cfg.data.retries,
                   backoff_s=cfg.data.retry_backoff_s)
    shutil.copyfile(model_dir / LOSSES_FILE, reports / LOSSES_FILE)
    if (model_dir / "losses.png").exists():
        shutil.copyfile(model_dir / "losses.png", reports / "losses.png")
    # An epoch is one pass over the larger training collection at train.batch_size.
    n_train = max(_train_count(cfg, d) for d in ("A", "B"))
    epoch_curves(model_dir / LOSSES_FILE, reports / EPOCH_LOSSES_FILE, n_train, cfg.train.batch_size)
    metrics = {
        "gate_passed": True,
        "model": {"fingerprint": model["fingerprint"], "steps": model["steps"], "arch": model.get("arch", "cyclegan"),
                  "train_seconds": model["train_seconds"]},
        "published": {"rows": result.rows, "dropped": result.dropped, "flagged": plan.get("flagged", {}),
                      "shards": result.shards,
                      "url": redact_url(cfg.paths.publish_url) if cfg.paths.publish_url else None},
        "domain_judge": summary.get("domain_judge"),
        **{d: summary["directions"][d] for d in DIRECTIONS},
        "utility": {d: {k: v["mean"] for k, v in utility[d].items() if isinstance(v, dict) and "mean" in v}
                    or utility[d] for d in DIRECTIONS},
    }
    write_json_atomic(reports / "metrics.json", nan_to_none(metrics))
    manifest = read_json(Path(result.manifest))
    append_history(reports / HISTORY_FILE, run_id=plan["provenance"].get("flow_run_id"),
                   published_at=manifest["published_at"], model=model["fingerprint"], rows=result.rows,
                   dropped=result.dropped, figures=summary["directions"], utility=utility)
    history_chart(reports / HISTORY_FILE, reports / HISTORY_PNG)
    return result


def step_publish(cfg: Config, flow_run_id: str | None = None) -> PublishResult:
    """Publish the passing rows, unless the run-level gate or a utility bound failed (then raise, touching
    nothing published): plan, each shard, commit, as the flow maps them on its task runner."""
    plan = step_publish_plan(cfg, flow_run_id)
    try:
        return step_publish_commit(cfg, plan, write_planned_shards(plan))
    finally:
        shutil.rmtree(plan["staging"], ignore_errors=True)


def run_all(cfg: Config, progress: Progress | None = None, retrain: bool = False) -> dict:
    """All steps in order without an orchestrator (the flow does the same through Prefect)."""
    t0 = time.perf_counter()
    out: dict = {}
    out["ingest"] = {d: r.to_dict() for d, r in step_ingest(cfg, progress).items()}
    out["train"] = step_train(cfg, progress, retrain).to_dict()
    out["generate"] = step_generate(cfg, progress).to_dict()
    out["validate"] = step_validate(cfg).to_dict()
    out["utility"] = step_utility(cfg, progress).to_dict()
    out["publish"] = step_publish(cfg).to_dict()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
