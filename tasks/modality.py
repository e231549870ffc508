"""The Prefect task of a modality run (``modality.enabled: true``): it wraps
:func:`cyclegan_core.modality.run.run_modality` and returns its result's paths, counts and figures."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from cyclegan_core.config import Config
from cyclegan_core.modality.run import run_modality

from .progress import StepProgress

FIGURES = ("real_accuracy", "fidelity_accuracy", "pass_rate", "fid", "kid", "mean_realism")


@task(name="modality-translate-gate-publish")
def modality(cfg: Config, flow_run_id: str | None = None) -> dict:
    """Translate the source collection, gate it against the real target collection, publish the pairs
    (raises GateFailed, publishing nothing, when a run bound fails)."""
    result = run_modality(cfg, StepProgress("modality"), flow_run_id)
    fig = result.figures
    get_run_logger().info(
        "modality run: %d of %d generated items published from %d sources in %.1f s into %s; judge accuracy on "
        "held-out real items %.3g, read back %.3g, FID %.3g, mean realism %.3g", result.rows, result.generated,
        result.sources, result.seconds, result.out_dir, fig["real_accuracy"], fig["fidelity_accuracy"],
        fig["fid"] if fig["fid"] is not None else float("nan"), fig["mean_realism"])
    create_table_artifact([{"figure": k, "value": fig.get(k)} for k in FIGURES], key="modality-gate",
                          description="The cross-modal gate's figures of this run")
    return result.to_dict()
