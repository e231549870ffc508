"""The modality-translation flow (``modality.enabled: true``; ``cycleaug --params params.tts.yaml run``):
source collection -> translated in batches -> cross-modal gate (fidelity and alignment against held-out
real target items) -> the passing pairs published. A failing gate ends the run Failed and publishes
nothing (the previous version stays)."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from cyclegan_core.config import load_config
from tasks import modality as modality_tasks


@flow(name="cycleaug-modality", log_prints=True)
def modality_run(params: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Translate ``modality.source``, gate it, publish to ``modality.output`` (see cyclegan_core.modality.run)."""
    cfg = load_config(params, tuple(overrides or ()))
    return modality_tasks.modality(cfg, str(flow_run.id) if flow_run.id else None)
