"""The five pipeline steps as plain functions of a :class:`Config`, with outputs where the config says.

Each step reads the previous step's files and returns a small result of paths, hashes and counts.
The CLI calls these directly (so ``dvc repro`` needs no orchestrator); the Prefect tasks wrap them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .config import DIRECTIONS, Config
from .default_data import make_default_data
from .generate import GenerateResult, generate, read_generated
from .ingest import IngestResult, ingest_collection, manifest_digest, manifest_images, read_manifest
from .publish import PublishResult, publish
from .report import dataset_card, epoch_curves, loss_curves, markdown_report, sample_grid
from .storage import read_json, sha256_file, write_bytes_atomic, write_json_atomic
from .train import LOSSES_FILE, MODEL_FILE, MODEL_JSON, Trainer, TrainResult, code_version, model_fingerprint
from .validate import ValidateResult, check_gate, nan_to_none, validate

Progress = Callable[..., None]
CURRENT_MODEL = "current.json"
REPORT_FILE = "report.md"
EPOCH_LOSSES_FILE = "losses_epoch.tsv"


def manifest_path(cfg: Config, domain: str) -> Path:
    return Path(cfg.paths.ingest) / domain / "manifest.parquet"


def step_default_data(cfg: Config) -> dict:
    """Materialize the bundled digits where ``data.domain_a``/``domain_b`` point (local folders)."""
    made = make_default_data(cfg.data.domain_a, cfg.data.domain_b, cfg.data.default)
    return {"made": made, "A": cfg.data.domain_a, "B": cfg.data.domain_b}


def step_ingest(cfg: Config, progress: Progress | None = None) -> dict[str, IngestResult]:
    urls = {"A": cfg.data.domain_a, "B": cfg.data.domain_b}
    return {
        d: ingest_collection(urls[d], d, Path(cfg.paths.ingest) / d, cfg.data,
                             (lambda i, n, d=d: progress(f"ingest {d}", i, n)) if progress else None)
        for d in ("A", "B")
    }


def current_fingerprint(cfg: Config) -> str:
    """The fingerprint the model for the ingested data and this config must have."""
    digests = [manifest_digest(read_manifest(manifest_path(cfg, d)), "train") for d in ("A", "B")]
    return model_fingerprint(cfg, *digests)


def step_train(cfg: Config, progress: Progress | None = None) -> TrainResult:
    """Train a model for the current fingerprint, or reuse the one already stored under it."""
    fp = current_fingerprint(cfg)
    folder = Path(cfg.paths.models) / fp
    if (folder / MODEL_FILE).exists() and (folder / MODEL_JSON).exists():
        meta = read_json(folder / MODEL_JSON)
        result = TrainResult(fp, str(folder), meta["sha256"], True, meta["steps"], 0.0, None)
    else:
        images = {d: manifest_images(read_manifest(manifest_path(cfg, d), ("train",))) for d in ("A", "B")}
        trainer = Trainer(cfg, images["A"], images["B"], folder)
        resumed = trainer.try_resume()
        seconds = trainer.fit((lambda i, n, losses: progress("train", i, n, losses)) if progress else None)
        path = trainer.export(fp, seconds)
        loss_curves(folder / LOSSES_FILE, folder / "losses.png")
        result = TrainResult(fp, str(folder), sha256_file(path), False, trainer.step, round(seconds, 2), resumed)
    write_json_atomic(Path(cfg.paths.models) / CURRENT_MODEL, {"fingerprint": fp, "model_dir": str(folder)})
    return result


def current_model_dir(cfg: Config) -> Path:
    """The stored model for the ingested data and this config; an error if it was not trained yet."""
    fp = current_fingerprint(cfg)
    folder = Path(cfg.paths.models) / fp
    if not (folder / MODEL_FILE).exists():
        raise FileNotFoundError(f"no trained model for fingerprint {fp[:12]} in {cfg.paths.models}; run train first")
    return folder


def step_generate(cfg: Config, progress: Progress | None = None) -> GenerateResult:
    return generate(manifest_path(cfg, "A"), manifest_path(cfg, "B"), current_model_dir(cfg), cfg.paths.generated,
                    cfg.generate, (lambda i, n: progress("generate", i, n)) if progress else None)


def generated_model_dir(cfg: Config) -> Path | None:
    """The stored model that made the current translations (None when it is not there any more)."""
    fps = set()
    for d in DIRECTIONS:
        table = read_generated(cfg.paths.generated, d, ["model_fingerprint"])
        fps.update(table.column("model_fingerprint").unique().to_pylist())
    if len(fps) != 1:
        return None
    folder = Path(cfg.paths.models) / fps.pop()
    return folder if (folder / MODEL_FILE).exists() else None


def step_validate(cfg: Config) -> ValidateResult:
    """Score and gate; writes ``reports/validation.json``, ``report.md`` and the sample grids, even when failing."""
    result = validate(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"), cfg.paths.generated,
                      cfg.paths.validated, model_dir=generated_model_dir(cfg))
    reports = Path(cfg.paths.reports)
    summary = nan_to_none(read_json(result.summary))
    write_json_atomic(reports / "validation.json", summary)
    for d in DIRECTIONS:
        sample_grid(cfg.paths.generated, cfg.paths.validated, d, reports / f"grid_{d}.png", cfg.publish.grid_samples)
    write_bytes_atomic(reports / REPORT_FILE, markdown_report(summary).encode("utf-8"))
    return result


def step_publish(cfg: Config, flow_run_id: str | None = None) -> PublishResult:
    """Publish the passing rows, unless the run-level gate failed (then raise, touching nothing)."""
    summary = read_json(Path(cfg.paths.validated) / "summary.json")
    check_gate(summary)
    model_dir = current_model_dir(cfg)
    model = read_json(model_dir / MODEL_JSON)
    provenance = {
        "model_fingerprint": model["fingerprint"], "code_version": code_version(),
        "params_hash": cfg.section_hash("data", "model", "train", "generate", "validate", "publish"),
        "seed": cfg.train.seed, "flow_run_id": flow_run_id,
    }
    reports = Path(cfg.paths.reports)
    rows, dropped = {}, {}
    for d in DIRECTIONS:
        f = summary["directions"][d]
        rows[d], dropped[d] = f["passed"], f["dropped"]
    card = dataset_card(rows=rows, dropped=dropped, figures=summary["directions"], provenance=provenance,
                        source_a=cfg.data.domain_a, source_b=cfg.data.domain_b, size=cfg.data.image_size,
                        mode=cfg.data.mode, shards=2 * cfg.generate.shards)
    result = publish(cfg.paths.generated, cfg.paths.validated, cfg.paths.published, shards=cfg.generate.shards,
                     provenance={k: v for k, v in provenance.items() if k != "model_fingerprint"},
                     mode=cfg.data.mode, size=cfg.data.image_size, card=card)
    shutil.copyfile(model_dir / LOSSES_FILE, reports / LOSSES_FILE)
    if (model_dir / "losses.png").exists():
        shutil.copyfile(model_dir / "losses.png", reports / "losses.png")
    # An epoch is one pass over the larger training collection at train.batch_size.
    n_train = max(read_manifest(manifest_path(cfg, d), ("train",)).num_rows for d in ("A", "B"))
    epoch_curves(model_dir / LOSSES_FILE, reports / EPOCH_LOSSES_FILE, n_train, cfg.train.batch_size)
    metrics = {
        "gate_passed": True,
        "model": {"fingerprint": model["fingerprint"], "steps": model["steps"],
                  "train_seconds": model["train_seconds"]},
        "published": {"rows": result.rows, "dropped": result.dropped, "shards": result.shards},
        "domain_judge": summary.get("domain_judge"),
        **{d: summary["directions"][d] for d in DIRECTIONS},
    }
    write_json_atomic(reports / "metrics.json", nan_to_none(metrics))
    return result


def run_all(cfg: Config, progress: Progress | None = None) -> dict:
    """All steps in order without an orchestrator (the flow does the same through Prefect)."""
    t0 = time.perf_counter()
    out: dict = {}
    out["ingest"] = {d: r.to_dict() for d, r in step_ingest(cfg, progress).items()}
    out["train"] = step_train(cfg, progress).to_dict()
    out["generate"] = step_generate(cfg, progress).to_dict()
    out["validate"] = step_validate(cfg).to_dict()
    out["publish"] = step_publish(cfg).to_dict()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
