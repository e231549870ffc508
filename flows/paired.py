"""The paired-augmentation flow: (generated demo scenes when the default input is missing) -> augment a
paired Parquet dataset ``paired.copies`` times per sample, with replay records."""

from __future__ import annotations

from prefect import flow

from cyclegan_core.config import load_config
from cyclegan_core.paired.settings import PairedConfig
from tasks import paired as paired_tasks


def uses_default_input(path: str) -> bool:
    return path == PairedConfig().input


@flow(name="cycleaug-paired-augment", log_prints=True)
def paired_augment(params: str = "params.yaml", overrides: list[str] | None = None, demo: bool = False) -> dict:
    """Augment ``paired.input`` into ``paired.output``; ``demo`` (or the default input path) writes the
    generated scenes first when the input is missing."""
    cfg = load_config(params, tuple(overrides or ()))
    made = paired_tasks.paired_demo_data(cfg) if demo or uses_default_input(cfg.paired.input) else None
    preview = cfg.paired.demo.preview if demo else 0
    return {"demo": made, "augment": paired_tasks.paired_augment(cfg, made, preview)}
