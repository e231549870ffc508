"""The pipeline steps as Prefect tasks. Each calls one ``cyclegan_core.pipeline`` function and
returns what it wrote (paths, hashes, counts), never tensors or images."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cyclegan_core import pipeline
from cyclegan_core.config import DIRECTIONS, Config
from cyclegan_core.storage import read_json

from .progress import StepProgress


@task(name="default-data")
def default_data(cfg: Config) -> dict:
    made = pipeline.step_default_data(cfg)
    log = get_run_logger()
    if made["made"]:
        log.info("made the bundled default collections: %s", made["made"])
    else:
        log.info("bundled default collections already in place (%s, %s)", made["A"], made["B"])
    return made


@task(name="ingest")
def ingest(cfg: Config) -> dict:
    results = pipeline.step_ingest(cfg, StepProgress("ingest"))
    log = get_run_logger()
    for d, r in results.items():
        log.info(
            "collection %s: %d samples (%d train, %d held out), %d decoded, %d reused from the last manifest, "
            "%d quarantined (%s)", d, r.samples, r.train, r.test, r.decoded, r.reused, r.quarantined, r.quarantine,
        )
    return {d: r.to_dict() for d, r in results.items()}


@task(name="train-or-reuse")
def train_or_reuse(cfg: Config, ingested: dict) -> dict:
    del ingested  # a data dependency: training reads the manifests ingest wrote
    result = pipeline.step_train(cfg, StepProgress("train"))
    log = get_run_logger()
    if result.reused:
        log.info("reusing model %s (%d steps): same training data, config and code, nothing to train",
                 result.fingerprint[:12], result.steps)
    else:
        start = f" resumed from step {result.resumed_from}" if result.resumed_from else ""
        log.info("trained model %s for %d steps in %.1f s%s", result.fingerprint[:12], result.steps,
                 result.seconds, start)
    return result.to_dict()


@task(name="generate")
def generate(cfg: Config, model: dict) -> dict:
    del model
    result = pipeline.step_generate(cfg, StepProgress("generate"))
    get_run_logger().info("translated %s in %.1f s", result.rows, result.seconds)
    return result.to_dict()


@task(name="validate")
def validate(cfg: Config, generated: dict) -> dict:
    del generated
    result = pipeline.step_validate(cfg)
    log = get_run_logger()
    table = []
    for d in DIRECTIONS:
        f = result.figures[d]
        table.append({"direction": d, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in f.items()
                                         if not isinstance(v, dict)}})
        log.info("%s: %d/%d passed; held-out cycle PSNR %.2f dB, SSIM %.3f, realism %.3f (real targets %.3f), "
                 "label accuracy %s (untranslated %s), FID/KID on domain features %s / %s", d, f["passed"],
                 f["generated"], f["mean_cycle_psnr"] or 0.0, f["mean_cycle_ssim"] or 0.0, f["mean_realism"] or 0.0,
                 f["realism_real_target"] or 0.0, f["label_accuracy"], f["label_accuracy_untranslated"],
                 f["fid_domain_features"], f["kid_domain_features"])
    create_table_artifact(table, key="validation", description="Per-direction validation figures (held-out)")
    report = Path(cfg.paths.reports) / pipeline.REPORT_FILE
    create_markdown_artifact(report.read_text(encoding="utf-8"), key="validation-report",
                             description="Validation report: the gate's outcome, figures per direction, bounds")
    if not result.passed:
        log.error("quality gate failed: %s", "; ".join(result.failures))
    return result.to_dict()


@task(name="publish")
def publish(cfg: Config, validated: dict, flow_run_id: str | None) -> dict:
    del validated
    result = pipeline.step_publish(cfg, flow_run_id)
    manifest = read_json(result.manifest)
    create_markdown_artifact(
        (Path(cfg.paths.published) / "README.md").read_text(encoding="utf-8").split("---", 2)[-1],
        key="dataset-card", description="The published dataset's card",
    )
    get_run_logger().info("published %s rows (%s dropped by the gate) in %d shards to %s", result.rows,
                          result.dropped, len(manifest["shards"]), result.out_dir)
    return result.to_dict()
