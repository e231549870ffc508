"""The base of every settings class, shared by :mod:`cyclegan_core.config` and the settings that live
beside their package (:mod:`cyclegan_core.paired.settings`): strict (unknown keys are errors), frozen,
defaults validated. Kept apart so a package's settings need not import the whole configuration."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Where torch work runs, the same type for every step: cpu, cuda[:N] or auto (cuda when available).
Device = Annotated[str, Field(pattern=r"^(cpu|auto|cuda(:\d+)?)$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def ordered_range(value: tuple[float, float], what: str) -> tuple[float, float]:
    """A ``[low, high]`` setting, checked: low <= high."""
    if value[0] > value[1]:
        raise ValueError(f"{what}: the range must be [low, high] with low <= high, got {list(value)}")
    return value
