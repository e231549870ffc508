"""The scheduled deployments of the augmentation flow, served from one machine (``cycleaug serve``).

Two deployments of ``cycleaug-augment`` read the same ``params.yaml`` at run time:

- ``nightly`` on ``orchestrate.schedule.cron``: ingests what is new, trains only when the model
  policy (``orchestrate.retrain``) says so, translates only new samples, publishes if anything changed;
- ``retrain`` on ``orchestrate.schedule.retrain_cron``: the same with ``retrain=true``, so a model
  kept for a growing collection catches up with it.

Each deployment runs one flow run at a time (``concurrency_limit=1``, later runs queue), and both
share the global concurrency limit ``orchestrate.concurrency_limit`` held while training or
publishing, so two runs never train or publish at once. ``prefect.yaml`` defines the same
deployments for ``prefect deploy`` with a process work pool.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cyclegan_core.config import load_config


def deployments(params: str = "params.yaml", overrides: Sequence[str] = ()) -> list:
    """The ``nightly`` and (when scheduled) ``retrain`` deployments, with schedules and tags from ``params``."""
    from prefect.schedules import Cron

    from flows.augment import augment

    cfg = load_config(params, tuple(overrides))
    s = cfg.orchestrate.schedule
    base = {"params": str(Path(params).resolve()), "overrides": list(overrides)}
    nightly = augment.to_deployment(
        name="nightly", schedules=[Cron(s.cron, timezone=s.timezone)], parameters=base | {"retrain": False},
        tags=[*s.tags, "nightly"], concurrency_limit=1,
        description="Ingest what is new, translate it, gate and publish a new version.",
    )
    out = [nightly]
    retrain = augment.to_deployment(
        name="retrain", schedules=[Cron(s.retrain_cron, timezone=s.timezone)] if s.retrain_cron else None,
        parameters=base | {"retrain": True}, tags=[*s.tags, "retrain"], concurrency_limit=1,
        description="Retrain on the current collections, then translate, gate and publish.",
    )
    out.append(retrain)
    return out


def serve(params: str = "params.yaml", overrides: Sequence[str] = ()) -> None:
    """Register the deployments and run them on schedule (and on demand) until interrupted."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import serve as prefect_serve

    from tasks.policies import ensure_concurrency_limit

    cfg = load_config(params, tuple(overrides))
    ensure_concurrency_limit(cfg.orchestrate.concurrency_limit)
    prefect_serve(*deployments(params, overrides))


if __name__ == "__main__":
    import sys

    from flows.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
