"""Launch training under ``torchrun`` (one process per GPU) from the flow's training task.

The command is an argument list (no shell): ``python -m torch.distributed.run --standalone
--nproc-per-node N -m flows.cli --params P --set ... train``. Each process runs the ordinary
``cycleaug train`` step; under torchrun it sees ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its
environment, and the trainer uses them (DDP: gradients averaged, rank 0 alone writes the model
folder; see :mod:`cyclegan_core.ddp`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence


class LaunchError(RuntimeError):
    """torchrun could not be started or a training process failed; the message has its last output."""


def torchrun_command(params: str, overrides: Sequence[str], nproc: int, retrain: bool = False) -> list[str]:
    """The argument list that trains with ``nproc`` processes on this node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "flows.cli", "--params", str(params)]
    for item in overrides:
        cmd += ["--set", item]
    cmd.append("train")
    if retrain:
        cmd.append("--retrain")
    return cmd


def run_torchrun(params: str, overrides: Sequence[str], nproc: int, retrain: bool = False,
                 log: Callable[[str], None] = print, timeout: float | None = None) -> None:
    """Run training under torchrun, streaming its output to ``log``; raise :class:`LaunchError` on failure."""
    cmd = torchrun_command(params, overrides, nproc, retrain)
    log("launching: " + " ".join(cmd))
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip()
                tail = [*tail, line][-40:]
                if line and "\r" not in line:
                    log(line)
            rc = proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            raise
    if rc != 0:
        raise LaunchError(f"torchrun training exited with status {rc}; last output:\n" + "\n".join(tail))
