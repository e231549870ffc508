"""The augmentation flow: ingest -> train or reuse -> generate (mapped over shards) -> validate (gate)
-> utility (train on it, test on real; its bounds gate too) -> publish -> report.

Generation runs as a subflow on the task runner ``orchestrate.task_runner`` names: threads in this
process, or Dask through prefect-dask (a scheduler address, or a local cluster). Generation,
validation and publishing are cached on the content hashes of their inputs, so a run with nothing
new does none of them again and says why in its log.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from cyclegan_core.config import Config, load_config
from cyclegan_core.gate import GateFailed
from cyclegan_core.generate import now_stamp
from tasks import steps
from tasks.policies import configured, ensure_concurrency_limit


def task_runner_for(cfg: Config) -> TaskRunner:
    """The task runner ``orchestrate`` names: local threads, or Dask (a scheduler, or a local cluster)."""
    o = cfg.orchestrate
    if o.task_runner == "local":
        return ThreadPoolTaskRunner(max_workers=max(1, min(4, 2 * cfg.generate.shards)))
    from prefect_dask import DaskTaskRunner

    if o.dask.address:
        return DaskTaskRunner(address=o.dask.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": o.dask.workers, "threads_per_worker": o.dask.threads_per_worker,
                                          "processes": True, "dashboard_address": None})


@flow(name="cycleaug-generate")
def generate_shards(params: str, overrides: list[str], model: dict, created_at: str) -> dict:
    """Every shard of both directions as its own task run (mapped), then one commit that swaps them in."""
    t0 = time.perf_counter()
    cfg = load_config(params, tuple(overrides))
    log = get_run_logger()
    specs = steps.plan_shards(cfg, model)
    # No per-shard time limit: shards run in worker threads, which a timeout cannot interrupt; the
    # subflow as a whole has one (orchestrate.step_timeout_s).
    shard_task = configured(steps.generate_shard, cfg, timeout=False)
    futures = shard_task.map(cfg=unmapped(cfg), direction=[s["direction"] for s in specs],
                             shard=[s["shard"] for s in specs], manifest=[s["manifest"] for s in specs],
                             model_dir=[s["model_dir"] for s in specs], content=[s["content"] for s in specs],
                             created_at=unmapped(created_at))
    results, cached = [], 0
    for spec, future in zip(specs, futures, strict=True):
        result = future.result()
        if future.state.name == "Cached":
            cached += 1
            result = result | {"translated": 0, "reused": result["rows"]}  # nothing was translated this time
            if not steps.shard_in_place(cfg, result):
                log.warning("%s shard %d: cached result, but its file is gone or changed; generating it again",
                            spec["direction"], spec["shard"])
                result = shard_task.with_options(refresh_cache=True)(
                    cfg=cfg, direction=spec["direction"], shard=spec["shard"], manifest=spec["manifest"],
                    model_dir=spec["model_dir"], content=spec["content"], created_at=created_at)
                cached -= 1
        results.append(result)
    if cached == len(specs):
        log.info("all %d shards cached: same source samples, model %s and generation settings as a previous run",
                 cached, model["fingerprint"][:12])
    committed = configured(steps.commit_generated, cfg)(cfg, results, time.perf_counter() - t0)
    return committed | {"cached_shards": cached}


def _cached_or_refreshed(task, cfg: Config, check, what: str, *args):
    """Run a content-cached task; when its cached result's files are gone or changed, run it again."""
    state = task(cfg, *args, return_state=True)
    result = state.result()
    if state.name != "Cached":
        return result, False
    if check(result.get("outputs", {})):
        return result, True
    get_run_logger().warning("%s: cached result, but its outputs are gone or changed; running it again", what)
    return task.with_options(refresh_cache=True)(cfg, *args), False


@flow(name="cycleaug-augment", log_prints=True)
def augment(params: str = "params.yaml", overrides: list[str] | None = None, retrain: bool = False) -> dict:
    """Run the whole pipeline with the configuration in ``params`` (plus ``section.key=value`` overrides).

    ``retrain`` trains a model on the current data even when ``orchestrate.retrain`` would keep the
    current one. The bundled default collections are made first when the config points at their
    folders. Ends Failed, naming every failed threshold, when the run-level quality gate fails; the
    previously published dataset is then left as it was.
    """
    t0 = time.perf_counter()
    overrides = list(overrides or ())
    cfg = load_config(params, tuple(overrides))
    log = get_run_logger()
    try:
        ensure_concurrency_limit(cfg.orchestrate.concurrency_limit)
    except Exception as err:  # without the limit the run still works, only unguarded
        log.warning("could not create concurrency limit %s: %s", cfg.orchestrate.concurrency_limit, err)
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 2)
        return now

    t = t0
    if cfg.data.uses_default_collections:
        steps.default_data(cfg)
    ingested = configured(steps.ingest, cfg)(cfg)
    t = lap("ingest", t)
    model = configured(steps.train_or_reuse, cfg, timeout=cfg.orchestrate.train_timeout_s)(
        cfg, ingested, retrain, params, overrides)
    t = lap("train", t)
    generated = generate_shards.with_options(task_runner=task_runner_for(cfg),
                                             timeout_seconds=cfg.orchestrate.step_timeout_s)(
        params, overrides, model, now_stamp())
    t = lap("generate", t)
    validated, val_cached = _cached_or_refreshed(
        configured(steps.validate, cfg), cfg, steps.outputs_in_place, "validate",
        steps.validate_content(cfg, generated))
    if val_cached:
        log.info("validation reused: generated shards, manifests, validate settings and code unchanged")
    t = lap("validate", t)
    if not validated["passed"]:
        raise GateFailed("quality gate failed, nothing published: " + "; ".join(validated["failures"]))
    utility, util_cached = _cached_or_refreshed(
        configured(steps.utility, cfg), cfg, steps.outputs_in_place, "utility", steps.utility_content(cfg, validated))
    if util_cached:
        log.info("utility reused: validation, manifests, utility settings and code unchanged")
    t = lap("utility", t)
    if not utility["passed"]:
        raise GateFailed("utility bounds failed, nothing published: " + "; ".join(utility["failures"]))
    published, pub_cached = _cached_or_refreshed(
        configured(steps.publish, cfg), cfg, steps.outputs_in_place, "publish",
        str(flow_run.id) if flow_run.id else None, steps.publish_content(cfg, generated, validated, model, utility))
    if pub_cached:
        log.info("nothing new to publish: the published version at %s already holds these rows",
                 cfg.paths.published)
    t = lap("publish", t)
    seconds = round(time.perf_counter() - t0, 1)
    run = {"ingest": ingested, "train": model, "generate": generated, "validate": validated, "utility": utility,
           "publish": published, "seconds": seconds, "timings": timings,
           "cached": {"generate": generated["cached_shards"] == 2 * cfg.generate.shards, "validate": val_cached,
                      "publish": pub_cached}}
    steps.report(cfg, run)
    log.info("done in %.1f s (%s): dataset %s, metrics %s, pictures in %s", seconds, timings, published["out_dir"],
             Path(cfg.paths.reports) / "metrics.json", cfg.paths.reports)
    return run
