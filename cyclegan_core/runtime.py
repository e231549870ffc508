"""The ``runtime`` section of ``params.yaml``: how and where torch work runs, never what a step makes.

One block, shared by ``train``, ``generate`` and ``validate``: the device, the autocast precision, the
memory format and ``torch.compile`` (:class:`StepRuntime`), and the training loop's own speed and
bookkeeping switches (Adam's implementation, pinned memory, CPU threads, the decoded-image cache, the
DataLoader workers, how often it logs and checkpoints). A step that needs other values than the
others sets them under its name, e.g. ``runtime.generate: {precision: bf16}`` translates in bf16
while training stays in fp32; a key left out there (or null) takes the shared value.

No fingerprint or cache key reads this section as settings (:mod:`cyclegan_core.inputs` does not
list it), so the model fingerprint does not move when it does, and a checkpoint resumes under other
values. Where runtime settings can change stored bytes in float math, the key says so itself: a
translation's key adds :meth:`StepRuntime.rounding` of the generate step's runtime (precision,
memory format, compiled kernels; and the device type where it is not the CPU).

The keys moved here from ``train``, ``generate`` and ``validate``; :data:`MOVED` names where each went,
and :func:`moved_key_errors` turns an old key in a user's params into an error saying so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .schema import Device, _Strict

Precision = Literal["fp32", "bf16", "fp16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
STEPS = ("train", "generate", "validate")


class StepRuntime(_Strict):
    """How one step's torch work runs: the shared ``runtime`` values with the step's overrides applied."""

    device: Device = Field("auto", description="cpu, cuda[:N] or auto (cuda when available; under torchrun each "
                           "training process takes its local rank's GPU).")
    precision: Precision = Field(
        "fp32", description="Autocast dtype of the forward passes (training in fp16 adds a grad scaler); fp32 = off. "
        "validate always scores in fp32."
    )
    channels_last: bool = Field(False, description="NHWC memory format (faster convs on GPUs).")
    compile: bool = Field(False, description="torch.compile the networks (generate pads the last batch to full "
                          "size).")
    compile_mode: CompileMode = Field("default", description="reduce-overhead adds CUDA graphs on a GPU.")
    compile_backend: str = Field("inductor", description="torch.compile backend (aot_eager to test cheaply).")

    def rounding(self) -> dict[str, Any]:
        """The settings that can change a float result's bytes (another dtype, memory layout or kernels).
        The device is not here: its type is resolved where the work runs (``auto`` may be either)."""
        return {"precision": self.precision, "channels_last": self.channels_last,
                "compile": f"{self.compile_backend}/{self.compile_mode}" if self.compile else False}


class RuntimeOverride(_Strict):
    """One step's own values of :class:`StepRuntime`'s keys; null (or left out) takes the shared value."""

    device: Device | None = None
    precision: Precision | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    compile_mode: CompileMode | None = None
    compile_backend: str | None = None


class RuntimeConfig(StepRuntime):
    """Where and how fast the steps run (see the module docstring); out of every fingerprint."""

    model_config = ConfigDict(populate_by_name=True)

    train: RuntimeOverride = Field(RuntimeOverride(), description="Training's own runtime values.")
    generate: RuntimeOverride = Field(RuntimeOverride(), description="Generation's own runtime values (e.g. "
                                      "precision: bf16 on a GPU).")
    validate_: RuntimeOverride = Field(RuntimeOverride(), alias="validate",
                                       description="Validation's own device (it reads no other runtime key).")
    # The training loop's alone: they decide how fast it runs and how often it reports, not what it learns.
    adam_impl: Literal["auto", "foreach", "fused", "for_loop"] = Field(
        "auto", description="Training: auto = fused on CUDA, for_loop on CPU (measured fastest there)."
    )
    pin_memory: bool = Field(
        True, description="Training: keep the training images in pinned host memory and copy batches asynchronously "
        "(CUDA only; a no-op on CPU)."
    )
    num_threads: int = Field(0, ge=0, description="Training: torch CPU threads; 0 keeps torch's default (the "
                             "orchestrator sets those of mapped generate and validate tasks).")
    cache_mb: float = Field(
        1024.0, ge=0.0, description="Training: decoded training images (both domains, uint8) up to this many MiB are "
        "held in memory (or on the GPU) and batches gathered from there; larger sets, or 0, stream from the manifests "
        "through a DataLoader (a few row groups in memory). Under sampling=epoch both train on the same batches; under "
        "sampling=random the cache draws from the trainer's generator and the stream per step (same distribution).",
    )
    loader_workers: int = Field(
        0, ge=0, le=64, description="Training: DataLoader worker processes decoding streamed batches ahead (one torch "
        "thread each); 0: decoded in the training process. Unused when the training set is cached (runtime.cache_mb).",
    )
    checkpoint_every: int = Field(250, ge=1, description="Training: steps between checkpoints.")
    log_every: int = Field(10, ge=1, description="Training: steps between loss-log rows (and host syncs on a GPU).")

    @model_validator(mode="after")
    def _validate_reads_only_the_device(self) -> RuntimeConfig:
        extra = sorted(k for k, v in self.validate_.model_dump().items() if v is not None and k != "device")
        if extra:
            raise ValueError(f"runtime.validate sets {', '.join(extra)}: validation reads only the device "
                             "(its judges and checks run in fp32, eager, contiguous)")
        return self

    def step(self, name: str) -> StepRuntime:
        """The runtime of ``name`` (train, generate, validate): the shared values, then that step's own."""
        if name not in STEPS:
            raise ValueError(f"no runtime for step {name!r}; steps: {', '.join(STEPS)}")
        own = (self.validate_ if name == "validate" else getattr(self, name)).model_dump(exclude_none=True)
        shared = {k: getattr(self, k) for k in StepRuntime.model_fields}
        return StepRuntime(**(shared | own))


def _moves() -> dict[str, str]:
    shared = tuple(StepRuntime.model_fields)
    moved = {f"train.{k}": f"runtime.{k} (runtime.train.{k} for training alone)" for k in shared}
    moved |= {f"train.{k}": f"runtime.{k}" for k in (
        "adam_impl", "pin_memory", "num_threads", "cache_mb", "loader_workers", "checkpoint_every", "log_every")}
    moved |= {f"generate.{k}": f"runtime.generate.{k} (or runtime.{k} for every step)" for k in shared}
    return moved | {"validate.device": "runtime.validate.device (or runtime.device for every step)"}


# Old key -> where it is now: train.device -> runtime.device, generate.precision -> runtime.generate.precision.
MOVED: dict[str, str] = _moves()


def moved_key_errors(raw: dict[str, Any]) -> list[str]:
    """One line per old key present in a raw config tree, naming where it moved."""
    lines = []
    for old, new in MOVED.items():
        section, key = old.split(".")
        node = raw.get(section)
        if isinstance(node, dict) and key in node:
            lines.append(f"  {old}: moved to {new}; see the runtime section of params.yaml")
    return lines
