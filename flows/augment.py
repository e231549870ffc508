"""The augmentation flow: ingest -> train or reuse -> generate -> validate (gate) -> publish."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from cyclegan_core.config import DataConfig, load_config
from cyclegan_core.validate import GateFailed
from tasks import steps


def uses_default_data(domain_a: str, domain_b: str) -> bool:
    defaults = DataConfig()
    return (domain_a, domain_b) == (defaults.domain_a, defaults.domain_b)


@flow(name="cycleaug-augment", log_prints=True)
def augment(params: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Run the whole pipeline with the configuration in ``params`` (plus ``section.key=value`` overrides).

    The bundled default collections are made first when the config points at their folders.
    Ends Failed, naming every failed threshold, when the run-level quality gate fails; the
    previously published dataset is then left as it was.
    """
    t0 = time.perf_counter()
    cfg = load_config(params, tuple(overrides or ()))
    log = get_run_logger()
    if uses_default_data(cfg.data.domain_a, cfg.data.domain_b):
        steps.default_data(cfg)
    ingested = steps.ingest(cfg)
    model = steps.train_or_reuse(cfg, ingested)
    generated = steps.generate(cfg, model)
    validated = steps.validate(cfg, generated)
    if not validated["passed"]:
        raise GateFailed("quality gate failed, nothing published: " + "; ".join(validated["failures"]))
    published = steps.publish(cfg, validated, str(flow_run.id) if flow_run.id else None)
    seconds = round(time.perf_counter() - t0, 1)
    log.info("done in %.1f s: dataset %s, metrics %s, pictures in %s", seconds, published["out_dir"],
             Path(cfg.paths.reports) / "metrics.json", cfg.paths.reports)
    return {"ingest": ingested, "train": model, "generate": generated, "validate": validated,
            "publish": published, "seconds": seconds}
