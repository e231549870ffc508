"""How the tasks are cached, retried and limited: Prefect's declared mechanisms, configured once.

- :class:`ContentHashes` keys a task's cache on the content hashes it is handed (shards, manifests,
  model fingerprint, settings, code), so an unchanged rerun finds the last result and skips the work.
- :func:`transient_storage_error` decides which failures are worth a retry (storage and network
  hiccups, not bad input), and :func:`configured` applies retries with exponential backoff and a
  time limit from ``orchestrate`` to a task.
- :func:`ensure_concurrency_limit` creates the global concurrency limit that keeps two runs from
  training or publishing at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.tasks import exponential_backoff

from cyclegan_core.config import Config

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
    """``task`` with the retries, backoff and time limit of ``orchestrate`` (``timeout=False``: none)."""
    o = cfg.orchestrate
    options: dict[str, Any] = {}
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
