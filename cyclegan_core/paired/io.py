"""Paired samples in Parquet: one row per sample, every modality a column, readable by any Parquet reader.

Images and masks are PNG in the Hugging Face ``struct<bytes, path>`` image layout (masks 8- or 16-bit
gray), audio is a float32 WAV in the same layout (lossless), video is a list of PNG frames, boxes
and keypoints are lists of float32 lists, a point cloud is a list of float32 [x, y, z] lists
(with per-point feature lists and int64 labels), the camera is its float64 intrinsics (9) and
extrinsics (12) row-major (exact through Parquet), and ``augmentation`` holds the replay record (JSON) of an
augmented row. Pixels are stored as 8-bit, so an image read back is ``round(x * 255) / 255``: the
quantization is the same for an output and for its replay, so replay stays exact on stored data.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import soundfile as sf
import torch
from PIL import Image

from .sample import PairedSample, PairedSampleError

MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
FLOATS = pa.list_(pa.float32())
PAIRED_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("source_id", pa.string()),
    ("copy_index", pa.int32()),
    ("image", MEDIA),
    ("mask", MEDIA),
    ("boxes", pa.list_(FLOATS)),
    ("box_labels", pa.list_(pa.int64())),
    ("box_mask_ids", pa.list_(pa.int64())),
    ("keypoints", pa.list_(FLOATS)),
    ("keypoint_visible", pa.list_(pa.bool_())),
    ("caption", pa.string()),
    ("text_embedding", FLOATS),
    ("audio", MEDIA),
    ("sample_rate", pa.int32()),
    ("video", pa.list_(pa.binary())),
    ("frame_rate", pa.float64()),
    ("labels", FLOATS),
    ("points", pa.list_(FLOATS)),
    ("point_features", pa.list_(FLOATS)),
    ("point_labels", pa.list_(pa.int64())),
    ("intrinsics", pa.list_(pa.float64())),
    ("extrinsics", pa.list_(pa.float64())),
    ("dropped", pa.list_(pa.string())),
    ("meta", pa.string()),
    ("augmentation", pa.string()),
])


def _hf_features() -> dict:
    value = {"_type": "Value"}
    seq = lambda dtype: {"_type": "Sequence", "feature": {**value, "dtype": dtype}}  # noqa: E731
    return {
        "sample_id": {**value, "dtype": "string"}, "source_id": {**value, "dtype": "string"},
        "copy_index": {**value, "dtype": "int32"}, "image": {"_type": "Image"}, "mask": {"_type": "Image"},
        "boxes": {"_type": "Sequence", "feature": seq("float32")}, "box_labels": seq("int64"),
        "box_mask_ids": seq("int64"), "keypoints": {"_type": "Sequence", "feature": seq("float32")},
        "keypoint_visible": seq("bool"), "caption": {**value, "dtype": "string"},
        "text_embedding": seq("float32"), "audio": {"_type": "Audio"}, "sample_rate": {**value, "dtype": "int32"},
        "video": seq("binary"), "frame_rate": {**value, "dtype": "float64"}, "labels": seq("float32"),
        "points": {"_type": "Sequence", "feature": seq("float32")},
        "point_features": {"_type": "Sequence", "feature": seq("float32")}, "point_labels": seq("int64"),
        "intrinsics": seq("float64"), "extrinsics": seq("float64"),
        "dropped": seq("string"), "meta": {**value, "dtype": "string"}, "augmentation": {**value, "dtype": "string"},
    }


SCHEMA_WITH_METADATA = PAIRED_SCHEMA.with_metadata(
    {b"huggingface": json.dumps({"info": {"features": _hf_features()}}).encode()})


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats as the 8-bit values stored (the reading side divides by 255)."""
    return (x.detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _image_png(x: torch.Tensor) -> bytes:
    arr = quantize(x).permute(1, 2, 0).numpy()
    return _png(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def _mask_png(mask: torch.Tensor) -> bytes:
    m = mask.detach().cpu().numpy()
    if m.min() < 0 or m.max() > 65535:
        raise ValueError("mask ids must be in [0, 65535] to be stored as PNG")
    return _png(m.astype(np.uint8) if m.max() < 256 else m.astype(np.uint16))


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im)


def _decode_image(data: bytes) -> torch.Tensor:
    arr = _decode_png(data)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


def _wav(audio: torch.Tensor, sample_rate: int) -> bytes:
    """32-bit float WAV (format 3), written by hand: libsndfile adds a PEAK chunk with a timestamp,
    so the same samples would not give the same bytes (and shard hashes) twice."""
    data = np.ascontiguousarray(audio.detach().cpu().numpy().T, dtype="<f4").tobytes()
    channels = int(audio.shape[0])
    fmt = struct.pack("<HHIIHH", 3, channels, sample_rate, sample_rate * channels * 4, channels * 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def sample_to_row(s: PairedSample, record: dict | None = None, source_id: str | None = None,
                  copy: int | None = None) -> dict:
    """One Parquet row (a dict matching :data:`PAIRED_SCHEMA`)."""
    def lst(t: torch.Tensor | None) -> list | None:
        return None if t is None else t.detach().cpu().tolist()

    sid = s.sample_id
    return {
        "sample_id": sid, "source_id": source_id, "copy_index": copy,
        "image": None if s.image is None else {"bytes": _image_png(s.image), "path": f"{sid}.png"},
        "mask": None if s.mask is None else {"bytes": _mask_png(s.mask), "path": f"{sid}.mask.png"},
        "boxes": lst(s.boxes), "box_labels": lst(s.box_labels), "box_mask_ids": lst(s.box_mask_ids),
        "keypoints": lst(s.keypoints), "keypoint_visible": lst(s.keypoint_visible), "caption": s.caption,
        "text_embedding": lst(s.text_embedding),
        "audio": None if s.audio is None else {"bytes": _wav(s.audio, s.sample_rate), "path": f"{sid}.wav"},
        "sample_rate": s.sample_rate,
        "video": None if s.video is None else [_image_png(f) for f in s.video],
        "frame_rate": s.frame_rate, "labels": lst(s.labels),
        "points": lst(s.points), "point_features": lst(s.point_features), "point_labels": lst(s.point_labels),
        "intrinsics": None if s.intrinsics is None else lst(s.intrinsics.reshape(-1)),
        "extrinsics": None if s.extrinsics is None else lst(s.extrinsics.reshape(-1)),
        "dropped": list(s.dropped),
        "meta": json.dumps(s.meta, sort_keys=True) if s.meta else None,
        "augmentation": None if record is None else json.dumps(record, sort_keys=True, separators=(",", ":")),
    }


def row_to_sample(row: dict, where: str = "row") -> PairedSample:
    """A :class:`PairedSample` from a row read back; errors name ``where`` and the sample."""
    sid = row.get("sample_id")
    try:
        def t(key: str, dtype: torch.dtype, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
            v = row.get(key)
            if v is None:
                return None
            out = torch.tensor(v, dtype=dtype)
            return out.reshape(shape) if shape is not None else out

        audio = sr = None
        if row.get("audio") is not None:
            data, sr = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32", always_2d=True)
            audio = torch.from_numpy(np.ascontiguousarray(data.T))
        video = None
        if row.get("video") is not None:
            video = torch.stack([_decode_image(b) for b in row["video"]])
        mask = None
        if row.get("mask") is not None:
            mask = torch.from_numpy(_decode_png(row["mask"]["bytes"]).astype(np.int64))
        sample = PairedSample(
            sample_id=sid,
            image=None if row.get("image") is None else _decode_image(row["image"]["bytes"]),
            mask=mask,
            boxes=t("boxes", torch.float32, (-1, 4)),
            box_labels=t("box_labels", torch.int64),
            box_mask_ids=t("box_mask_ids", torch.int64),
            keypoints=t("keypoints", torch.float32, (-1, 2)),
            keypoint_visible=t("keypoint_visible", torch.bool),
            caption=row.get("caption"),
            text_embedding=t("text_embedding", torch.float32),
            audio=audio,
            sample_rate=None if audio is None else int(row.get("sample_rate") or sr),
            video=video,
            frame_rate=row.get("frame_rate"),
            labels=t("labels", torch.float32),
            points=t("points", torch.float32, (-1, 3)),
            point_features=_features(row.get("point_features")),
            point_labels=t("point_labels", torch.int64),
            intrinsics=t("intrinsics", torch.float64, (3, 3)),
            extrinsics=t("extrinsics", torch.float64, (3, 4)),
            dropped=tuple(row.get("dropped") or ()),
            meta=json.loads(row["meta"]) if row.get("meta") else {},
        )
        return sample.validate()
    except PairedSampleError as err:
        raise PairedSampleError(f"{where}: {err}") from None
    except Exception as err:  # a corrupt PNG/WAV or a malformed list: name the row
        raise PairedSampleError(f"{where}: sample {sid!r} cannot be decoded: {type(err).__name__}: {err}") from None


def _features(rows: list | None) -> torch.Tensor | None:
    if rows is None:
        return None
    width = len(rows[0]) if rows else 0
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), width)


def write_table(rows: Iterable[dict], path: str | Path) -> int:
    """Write rows to one Parquet file (the caller makes it atomic); returns the row count."""
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA_WITH_METADATA)
    pq.write_table(table, path, compression="zstd", row_group_size=256)
    return table.num_rows


def write_samples(samples: Iterable[PairedSample], path: str | Path) -> int:
    """Write source samples (no records) to one Parquet file, atomically."""
    from ..storage import atomic_path

    with atomic_path(path) as tmp:
        return write_table((sample_to_row(s) for s in samples), tmp)


def _dataset(path: str | Path) -> ds.Dataset:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such Parquet file or folder of paired samples")
    files = sorted(str(f) for f in p.rglob("*.parquet") if not any(part.startswith((".", "_"))
                                                                  for part in f.relative_to(p).parts)) \
        if p.is_dir() else [str(p)]
    if not files:
        raise ValueError(f"{p}: no .parquet files in this folder")
    try:
        dataset = ds.dataset(files, format="parquet")
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{p}: not a readable Parquet dataset: {err}") from None
    missing = {"sample_id"} - set(dataset.schema.names)
    if missing:
        raise ValueError(f"{p}: not a paired-sample table (no column {sorted(missing)})")
    unknown = set(dataset.schema.names) - set(PAIRED_SCHEMA.names)
    if unknown:
        raise ValueError(f"{p}: unknown columns {sorted(unknown)} (known: {PAIRED_SCHEMA.names})")
    return dataset


def count_rows(path: str | Path) -> int:
    return _dataset(path).count_rows()


def iter_rows(path: str | Path, batch_rows: int = 64) -> Iterator[dict]:
    """Rows of a paired Parquet file or folder, in file order, a batch at a time."""
    dataset = _dataset(path)
    for batch in dataset.to_batches(batch_size=batch_rows):
        yield from batch.to_pylist()


def read_samples(path: str | Path) -> list[PairedSample]:
    """Every sample of a paired Parquet file or folder."""
    return [row_to_sample(r, f"{path}") for r in iter_rows(path)]
