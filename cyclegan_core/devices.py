"""Where torch work runs: device names from the config, the autocast context of a precision, and how
many CPU threads a process's torch may use."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, setting: str = "device") -> torch.device:
    """``auto`` is cuda when torch sees a CUDA device, else cpu; cuda[:N] without one is an error
    naming ``setting`` (the config key it came from)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{setting}={name} but torch sees no CUDA device; use auto or cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` (bf16, fp16) on ``device``; fp32 is no autocast."""
    dtype = AMP_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def host_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextlib.contextmanager
def torch_threads(sharers: int) -> Iterator[int]:
    """Run torch on this process's share of the host's cores: ``host_cores() // sharers`` threads (at least 1).

    ``sharers``: how many torch tasks run on this host at once (Dask worker processes times their
    threads, or a thread pool's workers in one process). Two torch processes on two cores at the
    default thread count each are about 40x slower than at one thread each. torch's thread count is
    per process: concurrent users in one process share one setting, restored when the last one leaves.
    """
    global _threads_users, _threads_before
    n = max(1, host_cores() // max(1, sharers))
    with _threads_lock:
        if not _threads_users:
            _threads_before = torch.get_num_threads()
        _threads_users += 1
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        with _threads_lock:
            _threads_users -= 1
            if not _threads_users:
                torch.set_num_threads(_threads_before)
