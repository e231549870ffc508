"""Paired multimodal augmentation: a sample model, synchronized ops with replay records, mixup,
modality dropout, point clouds with their camera, Parquet IO, generated scenes and their oracle.
Plain PyTorch/kornia/pyarrow (no Prefect, no DVC).

The names below load on first use, so reading the configuration (which holds this package's
settings, :mod:`cyclegan_core.paired.settings`) does not import kornia.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SyncAugmenter": "augment", "replay": "augment", "project": "camera", "CloudTransform": "cloud",
    "read_samples": "io", "row_to_sample": "io", "sample_to_row": "io", "write_samples": "io",
    "OP_TYPES": "ops", "Op": "ops", "register": "ops", "write_preview": "preview", "RECORD_FORMAT": "record",
    "DROPPABLE": "sample", "MODALITIES": "sample", "PairedSample": "sample", "PairedSampleError": "sample",
    "one_hot": "sample", "make_scene": "scenes", "make_scenes": "scenes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
