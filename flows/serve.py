"""The scheduled deployments of the augmentation flow, served from one machine (``cycleaug serve``).

Two deployments of ``cycleaug-augment`` read the same ``params.yaml`` at run time:

- ``nightly`` on ``orchestrate.schedule.cron``: ingests what is new, trains only when the model
  policy (``orchestrate.retrain``) says so, translates only new samples, publishes if anything changed;
- ``retrain`` on ``orchestrate.schedule.retrain_cron``: the same with ``retrain=true``, so a model
  kept for a growing collection catches up with it.

Each deployment runs one flow run at a time (``concurrency_limit=1``, later runs queue), and both
share the global concurrency limit ``orchestrate.concurrency_limit`` held while training or
publishing, so two runs never train or publish at once; a run also holds, for its whole run, the
limit named after its output folders (``tasks.policies.holding_outputs``), so runs of the same
``params.yaml`` take turns. ``prefect.yaml`` defines the same deployments for ``prefect deploy`` with
a process work pool.

With ``orchestrate.notify_url`` set, serving also creates (or updates) the Prefect automation that
POSTs to it when a run of these deployments ends Failed or Crashed (:mod:`tasks.notify`).

In production the Prefect server runs on PostgreSQL (``PREFECT_API_DATABASE_CONNECTION_URL``; see
the README): its default SQLite database locks under the concurrent writes of overlapping runs.
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

    from tasks.notify import ensure_failure_automation
    from tasks.policies import ensure_concurrency_limit

    cfg = load_config(params, tuple(overrides))
    ensure_concurrency_limit(cfg.orchestrate.concurrency_limit)
    served = deployments(params, overrides)
    # Registered here first for their ids (serving registers them again, the same ones), which the
    # notification's automation matches on.
    ids = [d.apply() for d in served] if cfg.orchestrate.notify_url else []
    ensure_failure_automation(cfg.orchestrate.notify_url, ids)
    prefect_serve(*served)


if __name__ == "__main__":
    import sys

    from flows.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
