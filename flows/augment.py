"""The augmentation flow: ingest (mapped over chunks of files, then committed) -> train or reuse -> generate
(mapped over shards) -> validate (mapped over shards, then merged; the gate) -> utility (train on it, test on
real; its bounds gate too) -> publish (mapped over shards, then committed) -> report.

Ingest's reading and decoding, generation, validation and publishing run as subflows on the task runner
``orchestrate.task_runner`` names: threads in this process, or Dask through prefect-dask (a scheduler address, or
a local cluster); this process plans them, merges their small results and commits. Generation,
validation and publishing are cached on the content hashes of their inputs, so a run with nothing
new does none of them again and says why in its log. Results are persisted as JSON (never pickle),
and a run holds its output folders for its whole run, so overlapping runs of one ``params.yaml``
take turns (:mod:`tasks.policies`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from cyclegan_core import overview, pipeline
from cyclegan_core import publish as pub
from cyclegan_core.config import Config, load_config
from cyclegan_core.gate import check_gate, check_utility
from cyclegan_core.generate import now_stamp
from tasks import steps
from tasks.policies import configured, ensure_concurrency_limit, holding_outputs


def task_runner_for(cfg: Config) -> TaskRunner:
    """The task runner ``orchestrate`` names: local threads, or Dask (a scheduler, or a local cluster)."""
    o = cfg.orchestrate
    if o.task_runner == "local":
        return ThreadPoolTaskRunner(max_workers=steps.local_workers(cfg))
    from prefect_dask import DaskTaskRunner

    if o.dask.address:
        return DaskTaskRunner(address=o.dask.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": o.dask.workers, "threads_per_worker": o.dask.threads_per_worker,
                                          "processes": True, "dashboard_address": None})


@flow(name="cycleaug-ingest", persist_result=True, result_serializer="json")
def ingest_chunks(params: str, overrides: list[str]) -> dict:
    """Both collections listed here (the plan), every chunk of ``data.ingest_chunk_files`` files read, hashed
    and decoded as its own task run (mapped), then one commit that merges the staged parts in order into each
    manifest: the bytes ``cycleaug ingest`` writes, whichever runner and however many workers."""
    cfg = load_config(params, tuple(overrides))
    plans, ids = steps.plan_ingest(cfg)
    try:
        specs = [spec for plan in plans.values() for spec in plan.chunks]
        get_run_logger().info("ingest: %s", ", ".join(f"{d} {p.files} files in {len(p.chunks)} chunks"
                                                      for d, p in plans.items()))
        # No per-chunk time limit (as generate_shards): the subflow as a whole has one.
        chunk_task = configured(steps.ingest_chunk, cfg, timeout=False)
        futures = chunk_task.map(cfg=unmapped(cfg), domain=[s["domain"] for s in specs],
                                 index=[s["index"] for s in specs], spec=specs)
        chunks = [future.result() for future in futures]
        return configured(steps.commit_ingest, cfg)(cfg, plans, ids, chunks)
    finally:
        steps.discard_ingest(plans)


@flow(name="cycleaug-generate", persist_result=True, result_serializer="json")
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
        args = {k: spec[k] for k in ("direction", "shard", "manifest", "model_dir", "content")}
        result, was_cached = _cached_or_refreshed(
            future.result(), future.state.name == "Cached",
            lambda a=args: shard_task.with_options(refresh_cache=True)(cfg=cfg, created_at=created_at, **a),
            lambda r: steps.shard_in_place(cfg, r), f"{spec['direction']} shard {spec['shard']}")
        if was_cached:
            cached += 1
            result = result | {"translated": 0, "reused": result["rows"]}  # nothing was translated this time
        results.append(result)
    if cached == len(specs):
        log.info("all %d shards cached: same source samples, model %s and generation settings as a previous run",
                 cached, model["fingerprint"][:12])
    committed = configured(steps.commit_generated, cfg)(cfg, results, time.perf_counter() - t0)
    return committed | {"cached_shards": cached}


@flow(name="cycleaug-validate", persist_result=True, result_serializer="json")
def validate_shards(params: str, overrides: list[str], generated: dict) -> dict:
    """Judges and held-out reference here, then every generated shard scored as its own task run (mapped,
    as generation is), then one merge that writes ``summary.json`` and applies the gate. Returns the
    merge's result (``validated``) and whether it came from the cache (``cached``: nothing changed since a
    previous run)."""
    cfg = load_config(params, tuple(overrides))
    prepared = configured(steps.validate_prepare, cfg)(cfg)
    specs = steps.plan_validation(cfg, generated, prepared)
    shard_task = configured(steps.validate_shard, cfg, timeout=False)  # as generate_shards: the subflow has one
    futures = shard_task.map(cfg=unmapped(cfg), direction=[s["direction"] for s in specs],
                             shard=[s["shard"] for s in specs], file=[s["file"] for s in specs],
                             prepared=unmapped(prepared), content=[s["content"] for s in specs])
    results = []
    for spec, future in zip(specs, futures, strict=True):
        args = {k: spec[k] for k in ("direction", "shard", "file", "content")}
        result, _ = _cached_or_refreshed(
            future.result(), future.state.name == "Cached",
            lambda a=args: shard_task.with_options(refresh_cache=True)(cfg=cfg, prepared=prepared, **a),
            lambda r: steps.validated_in_place(cfg, r), f"validate {spec['direction']} shard {spec['shard']}")
        results.append(result)
    validated, cached = _step(configured(steps.validate, cfg), cfg, "validate", prepared, results,
                              steps.validate_content(cfg, generated))
    return {"validated": validated, "cached": cached}


@flow(name="cycleaug-publish", persist_result=True, result_serializer="json")
def publish_shards(params: str, overrides: list[str], flow_run_id: str | None, content: dict) -> dict:
    """Plan the version here, write every shard as its own task run (mapped), then one commit that writes
    manifest.json and the card and swaps the version in. A rerun with the same inputs is all cache hits."""
    cfg = load_config(params, tuple(overrides))
    # The whole of it holds the orchestrate.concurrency_limit slot: two runs never publish at once.
    with concurrency(cfg.orchestrate.concurrency_limit, occupy=1, strict=False):
        return _publish_version(cfg, flow_run_id, content)


def _publish_version(cfg: Config, flow_run_id: str | None, content: dict) -> dict:
    plan = configured(steps.plan_publish, cfg)(cfg, flow_run_id)
    try:
        shard_task = configured(steps.publish_shard, cfg, timeout=False)
        specs = plan["shards"]
        futures = shard_task.map(spec=specs, staging=unmapped(plan["staging"]),
                                 content=[steps.shard_content(content, s) for s in specs])
        entries = []
        for spec, future in zip(specs, futures, strict=True):
            entry, _ = _cached_or_refreshed(
                future.result(), future.state.name == "Cached",
                lambda s=spec: shard_task.with_options(refresh_cache=True)(
                    spec=s, staging=plan["staging"], content=steps.shard_content(content, s)),
                lambda r: pub.staged_shard_in_place(plan, r), f"published shard {spec['file']}")
            entries.append(entry)
        committed, cached = _step(configured(steps.commit_publish, cfg), cfg, "publish", plan, entries, content)
    finally:
        shutil.rmtree(plan["staging"], ignore_errors=True)
    return committed | {"cached": cached}


def _cached_or_refreshed(result: dict, cached: bool, rerun, in_place, what: str) -> tuple[dict, bool]:
    """The one way a content-cached task's result is used: a fresh result as it is; a cached one if
    ``in_place(result)`` finds its files unchanged, else ``rerun()`` (the task with ``refresh_cache``).
    Returns the result and whether it came from the cache."""
    if not cached:
        return result, False
    if in_place(result):
        return result, True
    get_run_logger().warning("%s: cached result, but its outputs are gone or changed; running it again", what)
    return rerun(), False


def _step(task, cfg: Config, what: str, *args) -> tuple[dict, bool]:
    """Run a cached step task (validate, utility, publish) through :func:`_cached_or_refreshed`."""
    state = task(cfg, *args, return_state=True)
    return _cached_or_refreshed(state.result(), state.name == "Cached",
                                lambda: task.with_options(refresh_cache=True)(cfg, *args),
                                lambda r: steps.outputs_in_place(r.get("outputs", {})), what)


# The run's summary is persisted as JSON (not pickle), so its final state resolves from any process.
@flow(name="cycleaug-augment", log_prints=True, persist_result=True, result_serializer="json")
def augment(params: str = "params.yaml", overrides: list[str] | None = None, retrain: bool = False) -> dict:
    """Run the whole pipeline with the configuration in ``params`` (plus ``section.key=value`` overrides).

    ``retrain`` trains a model on the current data even when ``orchestrate.retrain`` would keep the
    current one. The bundled default collections are made first when the config points at their
    folders. Ends Failed, naming every failed threshold, when the run-level quality gate fails; the
    previously published dataset is then left as it was. A run holds its output folders throughout
    (:func:`tasks.policies.holding_outputs`): another run of the same folders waits for it.
    """
    with holding_outputs(load_config(params, tuple(overrides or ()))):
        return _pipeline(params, overrides, retrain)


def _pipeline(params: str, overrides: list[str] | None, retrain: bool) -> dict:
    """The steps of :func:`augment`, run while it holds the output folders."""
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
    ingested = ingest_chunks.with_options(task_runner=task_runner_for(cfg),
                                          timeout_seconds=cfg.orchestrate.step_timeout_s)(params, overrides)
    t = lap("ingest", t)
    model = configured(steps.train_or_reuse, cfg, timeout=cfg.orchestrate.train_timeout_s)(
        cfg, ingested, retrain, params, overrides)
    t = lap("train", t)
    generated = generate_shards.with_options(task_runner=task_runner_for(cfg),
                                             timeout_seconds=cfg.orchestrate.step_timeout_s)(
        params, overrides, model, now_stamp())
    t = lap("generate", t)
    scored = validate_shards.with_options(task_runner=task_runner_for(cfg),
                                          timeout_seconds=cfg.orchestrate.step_timeout_s)(params, overrides, generated)
    validated, val_cached = scored["validated"], scored["cached"]
    if val_cached:
        log.info("validation reused: generated shards, manifests, validate settings and code unchanged")
    t = lap("validate", t)
    pipeline.gated(cfg, check_gate, validated)
    utility, util_cached = _step(configured(steps.utility, cfg), cfg, "utility", steps.utility_content(cfg, validated))
    if util_cached:
        log.info("utility reused: validation, manifests, utility settings and code unchanged")
    t = lap("utility", t)
    pipeline.gated(cfg, check_utility, utility)
    published = publish_shards.with_options(task_runner=task_runner_for(cfg),
                                            timeout_seconds=cfg.orchestrate.step_timeout_s)(
        params, overrides, str(flow_run.id) if flow_run.id else None,
        steps.publish_content(cfg, generated, validated, model, utility))
    pub_cached = published.pop("cached")
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
    log.info("done in %.3g s (%s): dataset %s, metrics %s, pictures in %s", seconds, overview.seconds_text(timings),
             published["out_dir"],
             Path(cfg.paths.reports) / "metrics.json", cfg.paths.reports)
    return run
