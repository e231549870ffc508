"""Alignment checks: after a synchronized draw, does the pair still hold?

Each check compares an output with its source through the recorded geometry matrix:

- ``object_in_frame``: every annotated object (each box; its mask pixels when there is a mask)
  keeps at least ``min_object_fraction`` of its area inside the frame;
- ``keypoints_visible``: at least ``min_keypoint_fraction`` of the keypoints visible in the source
  are still visible (an invisible keypoint cannot be referenced).

A failing draw is redrawn up to ``max_redraws`` times; then the sample is kept unaugmented or
dropped (``on_fail``), and the record says which checks rejected how many draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.geometry.linalg import transform_points

from .sample import PairedSample


@dataclass(frozen=True)
class AlignmentPolicy:
    min_object_fraction: float = 0.25
    min_keypoint_fraction: float = 0.0
    max_redraws: int = 3
    on_fail: str = "keep"  # "keep": the unaugmented source; "drop": no output

    def __post_init__(self) -> None:
        if self.on_fail not in ("keep", "drop"):
            raise ValueError(f"on_fail must be 'keep' or 'drop', got {self.on_fail!r}")


def geometry_matrix(record: dict) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """The composed matrix of the record's geometry ops (identity when none) and the output size."""
    m = torch.eye(3, dtype=torch.float64)
    size = None
    for entry in record["ops"]:
        if "matrix" in entry.get("effects", {}):  # geometry, and the image flip of a mirrored cloud
            m = torch.tensor(entry["effects"]["matrix"], dtype=torch.float64) @ m
            size = tuple(entry["effects"]["out_size"])
    return m, size


def _object_fractions(src: PairedSample, out: PairedSample, m: torch.Tensor, size: tuple[int, int]) -> list[float]:
    det = abs(float(torch.linalg.det(m[:2, :2])))
    fractions = []
    if src.mask is not None and out.mask is not None:
        ids = src.box_mask_ids.tolist() if src.box_mask_ids is not None else \
            [i for i in src.mask.unique().tolist() if i > 0]
        for obj in ids:
            if obj < 0:
                continue
            area = int((src.mask == obj).sum()) * det
            if area > 0:
                fractions.append(min(1.0, int((out.mask == obj).sum()) / area))
        return fractions
    if src.boxes is not None and src.boxes.shape[0]:
        oh, ow = size
        x0, y0, x1, y1 = src.boxes.double().unbind(-1)
        corners = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                               torch.stack([x1, y1], -1), torch.stack([x0, y1], -1)], 1) - 0.5
        pts = transform_points(m[None], corners.reshape(1, -1, 2)).reshape(-1, 4, 2) + 0.5
        lo, hi = pts.amin(1), pts.amax(1)
        full = (hi - lo).prod(-1)
        clo = torch.stack([lo[:, 0].clamp(0, ow), lo[:, 1].clamp(0, oh)], -1)
        chi = torch.stack([hi[:, 0].clamp(0, ow), hi[:, 1].clamp(0, oh)], -1)
        inside = (chi - clo).clamp_min(0).prod(-1)
        fractions = [float(a / f) if f > 0 else 0.0 for a, f in zip(inside, full, strict=True)]
    return fractions


def check_alignment(src: PairedSample, out: PairedSample, record: dict, policy: AlignmentPolicy) -> dict[str, str]:
    """Failed checks of one output, ``{check: reason}`` (empty when the pair holds)."""
    m, size = geometry_matrix(record)
    if size is None:
        return {}
    failed: dict[str, str] = {}
    fractions = _object_fractions(src, out, m, size)
    if fractions and min(fractions) < policy.min_object_fraction:
        k = min(range(len(fractions)), key=fractions.__getitem__)
        failed["object_in_frame"] = (f"object {k} keeps {fractions[k]:.2f} of its area in the frame "
                                     f"< {policy.min_object_fraction}")
    if src.keypoint_visible is not None and out.keypoint_visible is not None and policy.min_keypoint_fraction > 0:
        before = int(src.keypoint_visible.sum())
        after = int((out.keypoint_visible & src.keypoint_visible.to(out.keypoint_visible.device)).sum())
        if before and after / before < policy.min_keypoint_fraction:
            failed["keypoints_visible"] = (f"{after} of {before} visible keypoints stay visible "
                                           f"< {policy.min_keypoint_fraction}")
    return failed
