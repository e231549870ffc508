"""The pipeline steps as Prefect tasks. Each calls ``cyclegan_core`` and returns what it wrote (paths,
hashes, counts), never tensors or images.

Ingest's reading and decoding is one task per chunk of files (``ingest_chunk``, then ``commit_ingest``);
generation, validation's scoring and publishing's shard writing are one task per shard
(``generate_shard``, ``validate_shard``, ``publish_shard``), so a task runner can spread chunks and shards over
workers, each running torch on its share of the host's cores; generation, validation and publishing
are cached on the content hashes of their inputs (see :mod:`tasks.policies`), so a rerun with nothing
changed does none of them again. Every cached result names the files it stands for with their sha256;
:func:`outputs_in_place` checks them, and the flow recomputes (``refresh_cache``) when they were
deleted or changed since.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from cyclegan_core import generate as gen
from cyclegan_core import ingest as ingest_mod
from cyclegan_core import inputs, overview, pipeline
from cyclegan_core import publish as pub
from cyclegan_core.config import DIRECTIONS, Config
from cyclegan_core.devices import torch_threads
from cyclegan_core.diff import VERSION_DIFF_MD
from cyclegan_core.figures import summary_line
from cyclegan_core.gate import check_gate, check_utility
from cyclegan_core.ingest import IngestPlan
from cyclegan_core.report import utility_line
from cyclegan_core.storage import read_json, sha256_file

from .artifacts import figure_rows, inline_pictures
from .launch import run_torchrun
from .policies import CONTENT
from .progress import StepProgress


@task(name="default-data")
def default_data(cfg: Config) -> dict:
    made = pipeline.step_default_data(cfg)
    log = get_run_logger()
    if made["made"]:
        what = made["made"]
        log.info("made the bundled default collections: %s",
                 ", ".join(f"{d} {n} samples" for d, n in what.items()) if isinstance(what, dict) else what)
    else:
        log.info("bundled default collections already in place (%s, %s)", made["A"], made["B"])
    return made


def plan_ingest(cfg: Config) -> tuple[dict[str, IngestPlan], dict[str, int] | None]:
    """Both collections listed once and cut into chunks of ``data.ingest_chunk_files`` files (in the flow)."""
    return pipeline.plan_ingest(cfg)


@task(name="ingest-chunk", cache_policy=NO_CACHE, task_run_name="ingest-{domain}-{index}")
def ingest_chunk(cfg: Config, domain: str, index: int, spec: dict) -> dict:
    """Read, hash, decode and normalize one chunk's files into a staged part; returns its paths and counts."""
    del domain, index  # the task run's name
    return ingest_mod.ingest_chunk(spec, cfg.data)


@task(name="commit-ingest", cache_policy=NO_CACHE)
def commit_ingest(cfg: Config, plans: dict[str, IngestPlan], ids: dict[str, int] | None, chunks: list[dict]) -> dict:
    """Merge the staged parts in chunk order into each collection's manifest and quarantine list."""
    results = pipeline.commit_ingest(cfg, plans, ids, chunks)
    log = get_run_logger()
    for d, r in results.items():
        log.info(
            "collection %s: %d samples (%d train, %d held out), %d decoded, %d reused from the last manifest, "
            "%d quarantined (%s)", d, r.samples, r.train, r.test, r.decoded, r.reused, r.quarantined, r.quarantine,
        )
    return {d: r.to_dict() for d, r in results.items()}


def discard_ingest(plans: dict[str, IngestPlan]) -> None:
    """Remove every staged part of ``plans`` (a run that stops before or during its commit)."""
    for plan in plans.values():
        ingest_mod.discard_staging(plan)


@task(name="train-or-reuse")
def train_or_reuse(cfg: Config, ingested: dict, retrain: bool = False, params: str = "params.yaml",
                   overrides: list[str] | None = None) -> dict:
    """Apply the model policy; train in this process or under torchrun when a model must be trained.

    Training holds the ``orchestrate.concurrency_limit`` slot, so two runs never train at once.
    """
    del ingested  # a data dependency: training reads the manifests ingest wrote
    log = get_run_logger()
    choice = pipeline.choose_model(cfg, retrain)
    log.info("%s", choice.reason)
    if not choice.train:
        return pipeline.step_train(cfg, retrain=retrain).to_dict() | {"reason": choice.reason}
    from prefect.concurrency.sync import concurrency

    with concurrency(cfg.orchestrate.concurrency_limit, occupy=1, strict=False):
        if cfg.orchestrate.train_launcher == "torchrun":
            run_torchrun(params, overrides or [], cfg.orchestrate.nproc_per_node, retrain, log.info,
                         cfg.orchestrate.train_timeout_s)
            result = pipeline.step_train(cfg).to_dict() | {"reused": False, "launcher": "torchrun"}
        else:
            result = pipeline.step_train(cfg, StepProgress("train"), retrain).to_dict()
    start = f", resumed from step {result['resumed_from']}" if result.get("resumed_from") else ""
    log.info("trained model %s for %d steps in %.1f s%s", result["fingerprint"][:12], result["steps"],
             result["seconds"], start)
    return result | {"reason": choice.reason}


def local_workers(cfg: Config) -> int:
    """Threads of the local task runner: the mapped shards it runs at once in the flow's process."""
    return max(1, min(4, 2 * cfg.generate.shards))


def torch_sharers(cfg: Config) -> int:
    """How many mapped torch tasks run at once on this host, for :func:`cyclegan_core.devices.torch_threads`.

    In a Dask worker: the threads of every worker process on its host (asked of the scheduler, or, for
    the local cluster, ``orchestrate.dask``); in the flow's process: the local task runner's threads.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return local_workers(cfg)
    d = cfg.orchestrate.dask
    if not d.address:
        return d.workers * d.threads_per_worker
    try:
        from distributed import get_client

        host = worker.address.rsplit(":", 1)[0]
        infos = get_client().scheduler_info()["workers"]
        return max(1, sum(w["nthreads"] for a, w in infos.items() if a.rsplit(":", 1)[0] == host))
    except Exception:  # the scheduler did not answer: this worker's threads at least
        return max(1, worker.state.nthreads)


def plan_shards(cfg: Config, model: dict) -> list[dict]:
    """One spec per (direction, shard) with the content hashes its output depends on."""
    model_dir = str(Path(model["model_dir"]).resolve())
    key = gen.generation_key(cfg.generate, cfg.runtime.step("generate"), cfg.data.audio_settings)
    out_dir = str(Path(cfg.paths.generated).resolve())
    specs = []
    for direction in DIRECTIONS:
        manifest = str(pipeline.manifest_path(cfg, gen.SOURCE_DOMAIN[direction]).resolve())
        for k in range(cfg.generate.shards):
            specs.append({
                "direction": direction, "shard": k, "manifest": manifest, "model_dir": model_dir,
                "content": {"sources": gen.shard_digest(manifest, cfg.generate, k), "model": model["fingerprint"],
                            "generation": key, "shards": cfg.generate.shards, "splits": list(cfg.generate.splits),
                            "direction": direction, "shard": k, "out_dir": out_dir},
            })
    return specs


@task(name="generate-shard", cache_policy=CONTENT, task_run_name="generate-{direction}-{shard}")
def generate_shard(cfg: Config, direction: str, shard: int, manifest: str, model_dir: str, content: dict,
                   created_at: str) -> dict:
    """Translate the sources of one shard that were not translated before by this model."""
    del content  # the cache key: what this shard is made from
    progress = StepProgress("generate")
    with torch_threads(torch_sharers(cfg)):
        result = gen.generate_shard(manifest, direction, shard, model_dir, Path(cfg.paths.generated).resolve(),
                                    cfg.generate, cfg.runtime.step("generate"), created_at,
                                    lambda i, n: progress(f"{direction} {shard}", i, n), audio=cfg.data.audio_settings)
    get_run_logger().info("%s shard %d: %d rows, %d translated, %d reused from the last run", direction, shard,
                          result.rows, result.translated, result.reused)
    return result.to_dict()


def shard_in_place(cfg: Config, result: dict) -> bool:
    """Whether a (possibly cached) shard result's file is staged or in place with its sha256."""
    out = Path(cfg.paths.generated)
    for path in (out / gen.STAGING / result["file"], out / result["file"]):
        if path.exists() and sha256_file(path) == result["sha256"]:
            return True
    return False


@task(name="commit-generated")
def commit_generated(cfg: Config, shards: list[dict], seconds: float) -> dict:
    result = gen.commit_shards(cfg.paths.generated, shards, cfg.generate.shards, seconds)
    log = get_run_logger()
    if not any(result.translated.values()):
        log.info("generated nothing: every source was translated before by model %s with the same generation "
                 "settings (rows reused: %s)", result.model_fingerprint[:12], overview.per_direction(result.reused))
    else:
        log.info("translated new sources: %s; reused rows: %s; in %.3g s", overview.per_direction(result.translated),
                 overview.per_direction(result.reused), result.seconds)
    return result.to_dict()


def validate_content(cfg: Config, generated: dict) -> dict:
    """What validation's outputs depend on: generated shards, manifests, judges, settings and code."""
    return {
        "generated": {d: [s["sha256"] for s in generated["shards"][d]] for d in DIRECTIONS},
        "manifests": {d: sha256_file(pipeline.manifest_path(cfg, d)) for d in ("A", "B")},
        "settings": inputs.settings_digest(cfg, "validation"), "code": inputs.code_digest("validation"),
        "paths": [str(Path(p).resolve()) for p in (cfg.paths.validated, cfg.paths.judges, cfg.paths.reports)],
    }


def _files(*paths: Path) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in paths if p.exists()}


def validate_outputs(cfg: Config) -> dict[str, str]:
    val, rep = Path(cfg.paths.validated), Path(cfg.paths.reports)
    shards = [p for d in DIRECTIONS for p in (*sorted((val / d).glob("part-*.parquet")),
                                              *sorted((val / "_stats" / d).glob("part-*")))]
    return _files(val / "summary.json", *shards, rep / "validation.json")


@task(name="validate-prepare")
def validate_prepare(cfg: Config) -> dict:
    """The judges (trained in this process when the training samples are new) and the held-out reference."""
    prepared = pipeline.step_validate_prepare(cfg)
    get_run_logger().info("judges %s; held-out reference %s", prepared["judge_key"], Path(prepared["reference"]).name)
    return prepared


def plan_validation(cfg: Config, generated: dict, prepared: dict) -> list[dict]:
    """One spec per generated shard with the content hashes its validated shard depends on."""
    content = {"judges": prepared["judge_key"], "reference": sha256_file(prepared["reference"]),
               "model": prepared["model_dir"], "settings": inputs.settings_digest(cfg, "validation"),
               "code": inputs.code_digest("validation"), "out_dir": str(Path(cfg.paths.validated).resolve())}
    return [{"direction": d, "shard": k, "file": s["file"], "content": content | {"generated": s["sha256"],
                                                                                  "file": s["file"]}}
            for d in DIRECTIONS for k, s in enumerate(generated["shards"][d])]


@task(name="validate-shard", cache_policy=CONTENT, task_run_name="validate-{direction}-{shard}")
def validate_shard(cfg: Config, direction: str, shard: int, file: str, prepared: dict, content: dict) -> dict:
    """Score one generated shard: its validated rows and sufficient statistics, staged for the merge."""
    del content  # the cache key: what this validated shard is made from
    with torch_threads(torch_sharers(cfg)):
        result = pipeline.step_validate_shard(cfg, prepared, file)
    get_run_logger().info("%s shard %d: %d rows scored", direction, shard, result["rows"])
    return result


def validated_in_place(cfg: Config, result: dict) -> bool:
    """Whether a (possibly cached) validated shard's table and statistics are staged or in place with their sha256."""
    from cyclegan_core.validate import staging_dir, stats_name

    for root in (staging_dir(cfg.paths.validated), Path(cfg.paths.validated)):
        files = ((root / result["file"], result["sha256"]), (root / stats_name(result["file"]), result["stats_sha256"]))
        if all(p.exists() and sha256_file(p) == h for p, h in files):
            return True
    return False


def _post_report(cfg: Config, description: str) -> None:
    """``report.md`` as the artifact ``validation-report`` (validate posts it, utility again with its section)."""
    report = Path(cfg.paths.reports) / pipeline.REPORT_FILE
    text = inline_pictures(report.read_text(encoding="utf-8"), report.parent)
    create_markdown_artifact(text, key="validation-report", description=description)


@task(name="validate", cache_policy=CONTENT)
def validate(cfg: Config, prepared: dict, shards: list[dict], content: dict) -> dict:
    """Merge the scored shards into the run-level figures, apply the gate and write the reports."""
    del content
    result = pipeline.step_validate_merge(cfg, prepared, shards)
    log = get_run_logger()
    for d in DIRECTIONS:
        f = result.figures[d]
        log.info("%s: %d/%d passed; held-out %s", d, f["passed"], f["generated"], summary_line(f))
    create_table_artifact(figure_rows(result.figures), key="validation",
                          description="Validation figures (held-out), one figure a row")
    _post_report(cfg, "Validation report: the gate's outcome, figures per direction, bounds")
    if not result.passed:  # the task ends Failed (red in the UI) with the gate's message, reports/ cleaned
        pipeline.gated(cfg, check_gate, {"passed": False, "failures": result.failures})
    return result.to_dict() | {"outputs": validate_outputs(cfg)}


def utility_content(cfg: Config, validated: dict) -> dict:
    """What the utility step's outputs depend on: the validation (and so the generated rows), the manifests,
    its settings and code."""
    return {
        "validated": validated["outputs"],
        "manifests": {d: sha256_file(pipeline.manifest_path(cfg, d)) for d in ("A", "B")},
        "settings": inputs.settings_digest(cfg, "utility"), "code": inputs.code_digest("utility"),
        "paths": [str(Path(p).resolve()) for p in (cfg.paths.generated, cfg.paths.reports)],
    }


def utility_outputs(cfg: Config) -> dict[str, str]:
    rep = Path(cfg.paths.reports)
    return _files(rep / pipeline.UTILITY_FILE, rep / pipeline.REPORT_FILE)


@task(name="utility", cache_policy=CONTENT)
def utility(cfg: Config, content: dict) -> dict:
    """Train on it, test on real: the downstream classifier's accuracy per training set, and the bounds."""
    del content
    result = pipeline.step_utility(cfg, StepProgress("utility"))
    log = get_run_logger()
    for d, f in result.figures.items():
        log.info("%s", utility_line(d, f))
    rows = overview.utility_rows(result.figures)
    if rows:
        create_table_artifact(rows, key="cycleaug-utility",
                              description="Downstream classifier accuracy on real held-out targets, per training set")
        _post_report(cfg, "Validation report with the downstream-utility section")
    if not result.passed:
        pipeline.gated(cfg, check_utility, {"passed": False, "failures": result.failures})
    return result.to_dict() | {"outputs": utility_outputs(cfg)}


def publish_content(cfg: Config, generated: dict, validated: dict, model: dict, utility: dict | None = None) -> dict:
    return {
        "generated": {d: [s["sha256"] for s in generated["shards"][d]] for d in DIRECTIONS},
        "validated": validated["outputs"], "utility": (utility or {}).get("outputs"), "model": model["fingerprint"],
        "settings": inputs.settings_digest(cfg, "publication"), "code": inputs.code_digest("publication"),
        "out_dir": str(Path(cfg.paths.published).resolve()),
        "flags": sha256_file(cfg.paths.flags) if Path(cfg.paths.flags).exists() else None,
    }


def publish_outputs(cfg: Config) -> dict[str, str]:
    out = Path(cfg.paths.published)
    if not (out / "manifest.json").exists():
        return {}
    files = [out / "manifest.json", out / "README.md", Path(cfg.paths.reports) / "metrics.json"]
    files += [out / s["file"] for s in read_json(out / "manifest.json")["shards"]]
    return _files(*files)


@task(name="plan-publish")
def plan_publish(cfg: Config, flow_run_id: str | None) -> dict:
    """Check the gates and plan the version: which rows go to which shard, from the small columns alone."""
    plan = pipeline.step_publish_plan(cfg, flow_run_id)
    get_run_logger().info("planned rows: %s, in %d shards (dropped by the gate: %s; flagged by analysts: %s)",
                          overview.per_direction(plan["rows"]), len(plan["shards"]),
                          overview.per_direction(plan["dropped"]), overview.per_direction(plan["flagged"]))
    return plan


@task(name="publish-shard", cache_policy=CONTENT, task_run_name="publish-{spec[direction]}-{spec[prefix]}")
def publish_shard(spec: dict, staging: str, content: dict) -> dict:
    """Encode and hash one shard of the version from only its rows; its manifest entry."""
    del content  # the cache key: the version's inputs and this shard's place in it
    return pub.write_planned_shard(spec, staging)


def shard_content(content: dict, spec: dict) -> dict:
    """What one published shard depends on: the version's inputs, and which rows of the plan it holds."""
    return content | {"shard": spec["file"], "rows": spec["stop"] - spec["start"]}


@task(name="publish", cache_policy=CONTENT)
def commit_publish(cfg: Config, plan: dict, shards: list[dict], content: dict) -> dict:
    """Swap in the version (manifest.json, card), upload it and write the reports."""
    del content
    result = pipeline.step_publish_commit(cfg, plan, shards)
    manifest = read_json(result.manifest)
    create_markdown_artifact(
        (Path(cfg.paths.published) / "README.md").read_text(encoding="utf-8").split("---", 2)[-1],
        key="dataset-card", description="The published dataset's card",
    )
    create_markdown_artifact(
        (Path(cfg.paths.reports) / VERSION_DIFF_MD).read_text(encoding="utf-8"), key="version-diff",
        description="What changed from the version this publish replaced (rows, models, settings, figures)",
    )
    get_run_logger().info("published rows: %s (dropped by the gate: %s) in %d shards to %s",
                          overview.per_direction(result.rows), overview.per_direction(result.dropped),
                          len(manifest["shards"]), result.out_dir)
    return result.to_dict() | {"outputs": publish_outputs(cfg)}


def outputs_in_place(outputs: dict[str, str]) -> bool:
    """Whether every file a cached result stands for is still there with the same sha256."""
    return bool(outputs) and all(Path(p).exists() and sha256_file(p) == h for p, h in outputs.items())


@task(name="report")
def report(cfg: Config, run: dict) -> str:
    """The run's Markdown report and its metrics table (:mod:`cyclegan_core.overview`), as artifacts."""
    create_table_artifact(overview.metrics_rows(cfg, run), key="cycleaug-metrics",
                          description="Published rows and held-out figures")
    text = overview.run_markdown(cfg, run)
    create_markdown_artifact(text, key="cycleaug-report", description="What this run did and what it published")
    listen = Path(cfg.paths.reports) / overview.LISTEN_PAGE
    if cfg.data.kind == "audio" and listen.exists():
        create_link_artifact(listen.resolve().as_uri(), link_text="listening page (spectrograms and <audio> players)",
                             key="cycleaug-listen", description="Source, translation and cycle of held-out clips")
    return text
