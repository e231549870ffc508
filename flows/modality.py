"""The modality-translation flow (``modality.enabled: true``; ``cycleaug --params params.tts.yaml run``):
source collection -> translated in batches -> cross-modal gate (fidelity and alignment against held-out
real target items) -> the passing pairs published. A failing gate ends the run Failed and publishes
nothing (the previous version stays). A run holds its output folders throughout (``modality.output``, where
it stages and publishes, and ``modality.reports``: :func:`tasks.policies.holding_outputs`), so a second run
into the same folders waits for it instead of clearing its staging or swapping the version under it."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from cyclegan_core.config import load_config
from tasks import modality as modality_tasks
from tasks.policies import holding_outputs


@flow(name="cycleaug-modality", log_prints=True)
def modality_run(params: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Translate ``modality.source``, gate it, publish to ``modality.output`` (see cyclegan_core.modality.run)."""
    cfg = load_config(params, tuple(overrides or ()))
    with holding_outputs(cfg):
        return modality_tasks.modality(cfg, str(flow_run.id) if flow_run.id else None)
