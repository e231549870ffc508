"""Paired multimodal augmentation: a sample model, synchronized ops with replay records, mixup,
modality dropout, Parquet IO and generated scenes. Plain PyTorch/kornia/pyarrow (no Prefect, no DVC)."""

from .augment import SyncAugmenter, replay
from .io import read_samples, row_to_sample, sample_to_row, write_samples
from .ops import OP_TYPES, Op, register
from .record import RECORD_FORMAT
from .sample import DROPPABLE, MODALITIES, PairedSample, PairedSampleError, one_hot
from .scenes import make_scene, make_scenes

__all__ = [
    "DROPPABLE", "MODALITIES", "OP_TYPES", "RECORD_FORMAT", "Op", "PairedSample", "PairedSampleError",
    "SyncAugmenter", "make_scene", "make_scenes", "one_hot", "read_samples", "register", "replay",
    "row_to_sample", "sample_to_row", "write_samples",
]
