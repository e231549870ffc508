"""How the tasks are cached, retried and limited: Prefect's declared mechanisms, configured once.

- :class:`ContentHashes` keys a task's cache on the content hashes it is handed (shards, manifests,
  model fingerprint, settings, code), so an unchanged rerun finds the last result and skips the work.
- :func:`transient_storage_error` decides which failures are worth a retry (storage and network
  hiccups, not bad input), and :func:`configured` applies retries with exponential backoff and a
  time limit from ``orchestrate`` to a task.
- :func:`ensure_concurrency_limit` creates the global concurrency limit that keeps two runs from
  training or publishing at once; :func:`holding_outputs` has a flow run hold a second limit,
  named after its output folders, for its whole run, so two runs over the same folders (a nightly, a
  weekly and an ad-hoc run of one ``params.yaml``) take turns instead of writing them at once.
- :func:`result_options`: task results persisted as JSON (never pickle) under :func:`results_dir`, so
  a retried or re-run flow finds them on disk whichever process wrote them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.serializers import JSONSerializer
from prefect.tasks import exponential_backoff

from cyclegan_core.config import Config
from cyclegan_core.storage import is_remote

# Errors that say the input or the configuration is wrong: a retry would fail the same way.
PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


@dataclass
class ContentHashes(CachePolicy):
    """Cache key: the task's name and the mapping of content hashes passed in its ``content`` argument.

    Each cached task is given, besides its config, a small dict naming what its output depends on
    (sha256 of input shards and manifests, model fingerprint, settings hash, code hash, output
    folder). Same dict, same key: the stored result is returned and the task body does not run.
    """

    argument: str = "content"

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        content = inputs.get(self.argument)
        if not content:
            return None
        blob = json.dumps({"task": task_ctx.task.name, "content": content}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


CONTENT = ContentHashes()


def transient_storage_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry storage and network errors (I/O, timeouts, dropped connections), not bad input."""
    try:
        state.result()
    except PERMANENT_OS_ERRORS:
        return False
    except (OSError, TimeoutError, ConnectionError):
        return True
    except BaseException:  # anything else is a bug or bad input: fail at once
        return False
    return False


def configured(task: Task, cfg: Config, *, timeout: float | bool | None = None, retries: bool = True) -> Task:
    """``task`` with the retries, backoff and time limit of ``orchestrate`` (``timeout=False``: none), its
    result persisted as JSON (:func:`result_options`)."""
    o = cfg.orchestrate
    options: dict[str, Any] = result_options()
    if timeout is not False:
        options["timeout_seconds"] = timeout or o.step_timeout_s
    if retries and o.retries:
        options |= {"retries": o.retries, "retry_delay_seconds": exponential_backoff(o.retry_delay_s),
                    "retry_condition_fn": transient_storage_error}
    return task.with_options(**options)


def ensure_concurrency_limit(name: str, slots: int = 1) -> bool:
    """Create the global concurrency limit ``name`` with ``slots`` if the server lacks it; True if created.

    An existing limit is left as it is, so an operator may change it (``prefect gcl update``).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
            return True


def results_dir() -> Path:
    """Where task results are kept: ``json/`` under Prefect's local storage path (``PREFECT_LOCAL_STORAGE_PATH``,
    by default ``$PREFECT_HOME/storage``; shared storage when Dask workers run tasks elsewhere).

    A folder of its own: Prefect reads a record with the serializer the record names, so a pickled
    record left in the default folder by an older version (same cache key) would be unpickled there.
    """
    from prefect.settings import get_current_settings

    return Path(get_current_settings().results.local_storage_path).expanduser().resolve() / "json"


def result_options() -> dict[str, Any]:
    """Task options that persist a result as a JSON record under :func:`results_dir`.

    The results are small dicts of paths, hashes and counts; JSON holds them exactly, and reading one
    back runs no code from the file (a pickle does). Persisted, a result outlives the process that
    made it: a content-cached task finds it from another run or worker, and a flow run's final state
    can always be resolved (no ``MissingResult``).
    """
    return {"persist_result": True, "result_serializer": JSONSerializer(), "result_storage": results_dir()}


def outputs_limit_name(cfg: Config) -> str:
    """The concurrency limit a run holds over its output folders: ``<orchestrate.concurrency_limit>-outputs-``
    and 12 hex digits of the resolved ``paths`` (the same folders, the same name, from any process).

    A modality run (``modality.enabled``) writes ``modality.output`` (and its staging folder beside it) and
    ``modality.reports`` only: its name is of those two, so two modality runs into one folder take turns
    and runs into other folders do not wait."""
    if cfg.modality.enabled:
        written = {"modality.output": cfg.modality.output, "modality.reports": cfg.modality.reports}
    else:
        written = cfg.paths.model_dump(mode="json")
    folders = {k: (v if v is None or is_remote(v) else str(Path(v).resolve())) for k, v in written.items()}
    digest = hashlib.sha256(json.dumps(folders, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg.orchestrate.concurrency_limit}-outputs-{digest}"


@contextmanager
def holding_outputs(cfg: Config) -> Iterator[None]:
    """Hold the single slot of :func:`outputs_limit_name` (created if missing) while the block runs.

    Ingest, generation, validation and the reports replace their folders whole (atomic swaps that
    also clear a crashed writer's temporary folders), so two runs over the same folders must not
    interleave: the second waits for the first, then finds its results cached and does only what is
    left. Runs over other folders do not wait (training and publishing still take turns on
    ``orchestrate.concurrency_limit``). The slot is a lease the flow renews: a run whose process dies
    frees it when the lease runs out. If the server cannot create the limit the run goes on
    unguarded, with a warning, as without the global limit.
    """
    from prefect import get_run_logger
    from prefect.concurrency.sync import concurrency

    name = outputs_limit_name(cfg)
    log = get_run_logger()
    try:
        ensure_concurrency_limit(name)
    except Exception as err:  # without the limit the run still works, only unguarded
        log.warning("could not create concurrency limit %s: %s", name, err)
    log.info("waiting for the output folders (concurrency limit %s)", name)
    with concurrency(name, occupy=1, strict=False):
        log.info("holding the output folders (%s)", name)
        yield
