"""Paired multimodal augmentation: a sample model, synchronized ops with replay records, mixup,
modality dropout, point clouds with their camera, Parquet IO, generated scenes and their oracle.
Plain PyTorch/kornia/pyarrow (no Prefect, no DVC)."""

from .augment import SyncAugmenter, replay
from .camera import project
from .cloud import CloudTransform
from .io import read_samples, row_to_sample, sample_to_row, write_samples
from .ops import OP_TYPES, Op, register
from .preview import write_preview
from .record import RECORD_FORMAT
from .sample import DROPPABLE, MODALITIES, PairedSample, PairedSampleError, one_hot
from .scenes import make_scene, make_scenes

__all__ = [
    "DROPPABLE", "MODALITIES", "OP_TYPES", "RECORD_FORMAT", "CloudTransform", "Op", "PairedSample",
    "PairedSampleError", "SyncAugmenter", "make_scene", "make_scenes", "one_hot", "project", "read_samples",
    "register", "replay", "row_to_sample", "sample_to_row", "write_preview", "write_samples",
]
