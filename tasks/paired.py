"""Prefect tasks for paired multimodal augmentation; each wraps one ``cyclegan_core.paired`` call and
returns paths and counts."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from cyclegan_core.config import Config
from cyclegan_core.paired.pipeline import augment_paired, make_demo_input

from .progress import StepProgress


@task(name="paired-demo-data")
def paired_demo_data(cfg: Config) -> dict:
    made = make_demo_input(cfg.paired)
    log = get_run_logger()
    if made["made"]:
        log.info("wrote %d generated paired scenes to %s", made["samples"], made["path"])
    else:
        log.info("paired input already in place (%s)", made["path"])
    return made


@task(name="paired-augment")
def paired_augment(cfg: Config, demo: dict | None = None, preview: int = 0) -> dict:
    del demo  # a data dependency: the input the demo task wrote
    result = augment_paired(cfg.paired, StepProgress("paired"), preview=preview)
    if result.preview:
        get_run_logger().info("picture of %d samples before/after: %s", preview, result.preview)
    get_run_logger().info(
        "augmented %d samples x %d copies = %d rows in %.1f s into %s (%d shards); ops applied %s; masked %s",
        result.sources, cfg.paired.copies, result.rows, result.seconds, result.out_dir, result.shards, result.ops,
        result.dropped or "none")
    log = get_run_logger()
    log.info("alignment checks: rejected draws per check %s; outcomes %s", result.rejected_draws or "none",
             result.outcomes)
    create_table_artifact([{"op": k, "samples": v} for k, v in sorted(result.ops.items())] +
                          [{"op": f"dropout:{k}", "samples": v} for k, v in sorted(result.dropped.items())] +
                          [{"op": f"rejected:{k}", "samples": v} for k, v in sorted(result.rejected_draws.items())],
                          key="paired-ops", description="How many outputs each op was applied to")
    return result.to_dict()
