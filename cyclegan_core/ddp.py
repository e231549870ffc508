"""Data-parallel training across processes started by ``torchrun`` (DDP; NCCL on GPUs, gloo on CPUs).

Each process samples its own batches (seeded by rank), gradients are averaged by
``DistributedDataParallel``, so ``N`` processes at batch ``b`` train like one at batch ``N*b``.
Rank 0 alone writes checkpoints, the loss log and the exported model; the per-rank random state
and image pools are gathered into rank 0's checkpoint, so a resumed run continues exactly.

    torchrun --standalone --nproc_per_node 8 -m flows.cli --params params.yaml train

trains the model for the ingested data (run ``cycleaug ingest`` first) into the same
``paths.models/<fingerprint>`` folder one process would: the ``cycleaug train`` entry point on
every rank. The trainer joins the group, wraps its networks and leaves the group
(:meth:`cyclegan_core.train.Trainer.run`); this module imports nothing else of the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size from the environment ``torchrun`` sets (a single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun set up (idempotent); a no-op for one process."""
    info = dist_info()
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DDP (gradients averaged over ranks during backward)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def all_gather(t: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of ``t`` (same shape on all ranks), on the CPU."""
    t = t.to(device)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def check_in_sync(module: nn.Module, device: torch.device) -> None:
    """Raise if the ranks' weights differ (they must be replicas after every step)."""
    with torch.no_grad():
        flat = torch.cat([p.detach().double().reshape(-1) for p in module.parameters()])
        digest = torch.stack([flat.sum(), (flat * torch.arange(1, flat.numel() + 1, dtype=flat.dtype,
                                                               device=flat.device)).sum()])
    copies = all_gather(digest, device)
    if any(not torch.equal(c, copies[0]) for c in copies[1:]):
        raise RuntimeError(f"DDP replicas diverged: weight digests {[c.tolist() for c in copies]}")


def barrier_and_finish() -> None:
    """Wait for every rank, then leave the process group (rank 0 writes the model afterwards)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
