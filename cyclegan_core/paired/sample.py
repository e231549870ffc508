"""The paired multimodal sample: every modality a sample may hold, their shapes and conventions.

Conventions (shared by every op, the Parquet format and the replay records):

- ``image`` (C, H, W) and ``video`` (T, C, H, W) are float32 in [0, 1]; when both are present they
  share C, H and W, because they are aligned on one spatial canvas.
- ``mask`` (H, W) int64 holds an object id per pixel (0 = background); ``box_mask_ids`` names the
  mask id of each box's object (-1 when a box has no mask).
- ``boxes`` (N, 4) xyxy and ``keypoints`` (K, 2) xy are float32 in continuous pixel coordinates:
  pixel (i, j) covers [j, j+1) x [i, i+1), so a box that tightly encloses pixels x0..x1 is
  [x0, x1 + 1] (the COCO convention). A keypoint outside [0, W] x [0, H] is invisible.
- ``audio`` (channels, samples) float32 at ``sample_rate``; with ``video`` at ``frame_rate`` the two
  cover the same time span (within one frame).
- ``labels`` (num_classes,) float32 soft labels (one-hot or multi-hot for hard labels), so mixup can
  interpolate them; ``text_embedding`` (D,) float32 is a caption embedding given as a vector.
- ``dropped`` names modalities masked by modality dropout: their data is zeroed (empty caption) but
  kept, with this flag, never removed.
- ``points`` (N, 3) float32 is a point cloud in world coordinates, with optional ``point_features``
  (N, F) float32 and ``point_labels`` (N,) int64 (an object id per point); ``intrinsics`` (3, 3) and
  ``extrinsics`` (3, 4) float64 are the camera that produced the image (``camera.py`` has the
  conventions: ``(u, v, 1) ~ K [R | t] P`` in continuous pixel coordinates).
- ``meta`` is JSON-able data about the sample (a generated scene's description, for instance).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

#: Every modality a sample may hold, in the order records and tables list them.
MODALITIES = ("image", "mask", "boxes", "keypoints", "caption", "text_embedding", "audio", "video", "labels",
              "points")
#: Modalities that modality dropout may mask (inputs a model reads, not targets).
DROPPABLE = ("image", "video", "audio", "caption", "text_embedding")


class PairedSampleError(ValueError):
    """A sample whose modalities are malformed or do not fit together; the message names the sample."""


@dataclass
class PairedSample:
    """One paired multimodal sample; every modality is optional (see the module docstring)."""

    sample_id: str
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    box_labels: torch.Tensor | None = None
    box_mask_ids: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    keypoint_visible: torch.Tensor | None = None
    caption: str | None = None
    text_embedding: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    sample_rate: int | None = None
    video: torch.Tensor | None = None
    frame_rate: float | None = None
    labels: torch.Tensor | None = None
    points: torch.Tensor | None = None
    point_features: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    extrinsics: torch.Tensor | None = None
    dropped: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> PairedSample:
        return dataclasses.replace(self, **changes)

    def present(self) -> tuple[str, ...]:
        """The modalities this sample holds."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    def canvas(self) -> tuple[int, int] | None:
        """(H, W) of the spatial canvas shared by image, mask and video frames, or None."""
        if self.image is not None:
            return int(self.image.shape[-2]), int(self.image.shape[-1])
        if self.video is not None:
            return int(self.video.shape[-2]), int(self.video.shape[-1])
        if self.mask is not None:
            return int(self.mask.shape[-2]), int(self.mask.shape[-1])
        return None

    def channels(self) -> int | None:
        if self.image is not None:
            return int(self.image.shape[0])
        if self.video is not None:
            return int(self.video.shape[1])
        return None

    def validate(self) -> PairedSample:
        """Check shapes, dtypes and cross-modal consistency; raise :class:`PairedSampleError`."""
        sid = self.sample_id

        def bad(msg: str) -> PairedSampleError:
            return PairedSampleError(f"sample {sid!r}: {msg}")

        if self.image is not None and (self.image.ndim != 3 or not self.image.is_floating_point()):
            raise bad(f"image must be a float (C, H, W) tensor, got {self.image.dtype} {tuple(self.image.shape)}")
        if self.video is not None:
            if self.video.ndim != 4 or not self.video.is_floating_point() or self.video.shape[0] < 1:
                raise bad(f"video must be a float (T, C, H, W) tensor, got {tuple(self.video.shape)}")
            if self.frame_rate is None or not self.frame_rate > 0:
                raise bad("video needs a positive frame_rate")
            if self.image is not None and tuple(self.video.shape[1:]) != tuple(self.image.shape):
                raise bad(f"video frames {tuple(self.video.shape[1:])} and image {tuple(self.image.shape)} must "
                          "share (C, H, W): they are aligned on one canvas")
        canvas = self.canvas()
        if self.mask is not None:
            if self.mask.ndim != 2 or self.mask.dtype != torch.int64:
                raise bad(f"mask must be an int64 (H, W) tensor, got {self.mask.dtype} {tuple(self.mask.shape)}")
            if tuple(self.mask.shape) != canvas:
                raise bad(f"mask {tuple(self.mask.shape)} does not match the canvas {canvas}")
        if self.boxes is not None:
            if self.boxes.ndim != 2 or self.boxes.shape[1] != 4 or self.boxes.dtype != torch.float32:
                raise bad(f"boxes must be a float32 (N, 4) xyxy tensor, got {tuple(self.boxes.shape)}")
            if self.boxes.shape[0] and bool((self.boxes[:, 2:] < self.boxes[:, :2]).any()):
                raise bad("boxes must have x1 >= x0 and y1 >= y0 (xyxy)")
            n = self.boxes.shape[0]
            for name in ("box_labels", "box_mask_ids"):
                t = getattr(self, name)
                if t is not None and (t.dtype != torch.int64 or tuple(t.shape) != (n,)):
                    raise bad(f"{name} must be an int64 ({n},) tensor, got {t.dtype} {tuple(t.shape)}")
        if self.keypoints is not None:
            if self.keypoints.ndim != 2 or self.keypoints.shape[1] != 2 or self.keypoints.dtype != torch.float32:
                raise bad(f"keypoints must be a float32 (K, 2) tensor, got {tuple(self.keypoints.shape)}")
            k = self.keypoints.shape[0]
            vis = self.keypoint_visible
            if vis is None or vis.dtype != torch.bool or tuple(vis.shape) != (k,):
                raise bad(f"keypoints need keypoint_visible, a bool ({k},) tensor")
        if (self.boxes is not None or self.keypoints is not None) and canvas is None:
            raise bad("boxes and keypoints need an image, video or mask to give the frame size")
        if self.text_embedding is not None and (self.text_embedding.ndim != 1 or
                                                not self.text_embedding.is_floating_point()):
            raise bad("text_embedding must be a float (D,) vector")
        if self.labels is not None and (self.labels.ndim != 1 or not self.labels.is_floating_point()):
            raise bad("labels must be a float (num_classes,) soft-label vector")
        if self.audio is not None:
            if self.audio.ndim != 2 or not self.audio.is_floating_point():
                raise bad(f"audio must be a float (channels, samples) tensor, got {tuple(self.audio.shape)}")
            if self.sample_rate is None or self.sample_rate <= 0:
                raise bad("audio needs a positive sample_rate")
            if self.video is not None:
                video_s = self.video.shape[0] / self.frame_rate
                audio_s = self.audio.shape[1] / self.sample_rate
                if abs(video_s - audio_s) > 1.0 / self.frame_rate + 1e-9:
                    raise bad(f"audio lasts {audio_s:.4f} s but video {video_s:.4f} s: they must cover the same "
                              "time span (within one frame)")
        self._validate_cloud(bad, canvas)
        unknown = set(self.dropped) - set(DROPPABLE)
        if unknown:
            raise bad(f"dropped names unknown modalities {sorted(unknown)}")
        return self

    def _validate_cloud(self, bad, canvas: tuple[int, int] | None) -> None:
        pts = self.points
        if pts is not None and (pts.ndim != 2 or pts.shape[1] != 3 or pts.dtype != torch.float32):
            raise bad(f"points must be a float32 (N, 3) tensor, got {pts.dtype} {tuple(pts.shape)}")
        n = None if pts is None else pts.shape[0]
        feats, labels = self.point_features, self.point_labels
        if (feats is not None or labels is not None) and pts is None:
            raise bad("point_features and point_labels need points")
        if feats is not None and (feats.ndim != 2 or feats.shape[0] != n or feats.dtype != torch.float32):
            raise bad(f"point_features must be a float32 ({n}, F) tensor, got {feats.dtype} {tuple(feats.shape)}")
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != n or labels.dtype != torch.int64):
            raise bad(f"point_labels must be an int64 ({n},) tensor, got {labels.dtype} {tuple(labels.shape)}")
        k, e = self.intrinsics, self.extrinsics
        if (k is None) != (e is None):
            raise bad("a camera needs both intrinsics (3, 3) and extrinsics (3, 4)")
        if k is not None:
            if k.shape != (3, 3) or e.shape != (3, 4) or k.dtype != torch.float64 or e.dtype != torch.float64:
                raise bad(f"intrinsics must be float64 (3, 3) and extrinsics float64 (3, 4), got "
                          f"{k.dtype} {tuple(k.shape)} and {e.dtype} {tuple(e.shape)}")
            if not torch.equal(k[2].cpu(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)):
                raise bad(f"intrinsics must have last row (0, 0, 1), got {k[2].tolist()}")
            if abs(float(torch.linalg.det(k[:2, :2]))) < 1e-12:
                raise bad("intrinsics are singular")
            r = e[:, :3].cpu()
            if not torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-6) or \
                    float(torch.linalg.det(r)) < 0:
                raise bad("extrinsics [R | t] need a rotation R (orthonormal, det +1)")
            if canvas is None:
                raise bad("a camera needs an image, video or mask: it is the camera of that canvas")

    def equals(self, other: PairedSample) -> bool:
        """Exact equality of every field (tensors bit for bit); for replay checks."""
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
                if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                    return False
                if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
                    return False
            elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
                continue
            elif a != b:
                return False
        return True

    def differences(self, other: PairedSample) -> list[str]:
        """Names of the fields that differ (for readable test failures)."""
        out = []
        for f in dataclasses.fields(self):
            one = PairedSample(sample_id="x", **{f.name: getattr(self, f.name)}) if f.name != "sample_id" else None
            two = PairedSample(sample_id="x", **{f.name: getattr(other, f.name)}) if f.name != "sample_id" else None
            if f.name == "sample_id":
                if self.sample_id != other.sample_id:
                    out.append("sample_id")
            elif not one.equals(two):
                out.append(f.name)
        return out

    def to(self, device: torch.device | str) -> PairedSample:
        changes = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        return self.replace(**changes)


def one_hot(class_ids: list[int], num_classes: int) -> torch.Tensor:
    """Hard class label(s) as a (multi-)hot float vector, the form mixup can interpolate."""
    out = torch.zeros(num_classes, dtype=torch.float32)
    for c in class_ids:
        if not 0 <= c < num_classes:
            raise ValueError(f"class id {c} outside [0, {num_classes})")
        out[c] = 1.0
    return out
