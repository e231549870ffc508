"""Where torch work runs: device names from the config, and the autocast context of a precision."""

from __future__ import annotations

import contextlib

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
