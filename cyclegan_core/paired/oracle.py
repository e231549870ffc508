"""The generated-scene oracle: describe an augmented scene again from its transformed ground truth
and check the augmented caption says the same thing.

A scene's caption is a function of its objects (``scenes.describe``). After augmentation the ground
truth is known exactly: each object's centre goes through the recorded geometry matrix, and the
transformed mask says which objects are still in the frame. Describing that gives the caption the
augmented sample *should* have; comparing it with the caption the ops produced measures how often
the caption edits keep the text true (exact figures instead of impressions). Captions are compared
by meaning -- the left-to-right order of the objects named, or the place of a single object --
because "a red circle right of a blue square" and "a blue square left of a red circle" say the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .align import geometry_matrix
from .sample import PairedSample
from .scenes import SceneObject, describe

_NAME = r"an? \w+ \w+"


@dataclass(frozen=True)
class CaptionCheck:
    sample_id: str
    caption: str
    expected: str
    ok: bool
    reason: str


def parse_caption(text: str) -> tuple:
    """The meaning of a scene caption: ``("order", names left to right)`` or ``("single", name, place)``."""
    t = text.strip()
    m = re.fullmatch(rf"({_NAME}) (on the left|on the right|in the middle)", t, flags=re.I)
    if m:
        return ("single", m.group(1).lower(), m.group(2).lower().split()[-1])
    m = re.fullmatch(rf"({_NAME}) (left|right) of ({_NAME})", t, flags=re.I)
    if m:
        a, side, b = m.group(1).lower(), m.group(2).lower(), m.group(3).lower()
        return ("order", (a, b) if side == "left" else (b, a))
    m = re.fullmatch(rf"((?:{_NAME}, )*)({_NAME}) and ({_NAME}), from (left to right|right to left)", t, flags=re.I)
    if m:
        head = [n.lower() for n in m.group(1).rstrip(", ").split(", ")] if m.group(1) else []
        names = [*head, m.group(2).lower(), m.group(3).lower()]
        return ("order", tuple(names) if m.group(4).lower() == "left to right" else tuple(reversed(names)))
    return ("unparsed", t)


def transformed_objects(out: PairedSample, record: dict) -> list[SceneObject]:
    """The scene's objects after the recorded geometry: centres through the matrix, and only those
    whose mask pixels are still in the frame."""
    objects = out.meta.get("objects")
    if objects is None:
        raise ValueError(f"sample {out.sample_id!r} is not a generated scene (no meta.objects)")
    matrix, _ = geometry_matrix(record)
    present = set(out.mask.unique().tolist()) if out.mask is not None else {o["id"] for o in objects}
    result = []
    for o in objects:
        if o["id"] not in present:
            continue
        cx, cy = o["center"]
        p = matrix @ torch.tensor([cx - 0.5, cy - 0.5, 1.0], dtype=torch.float64)
        result.append(SceneObject(o["shape"], o["colour"], float(p[0] / p[2]) + 0.5, float(p[1] / p[2]) + 0.5,
                                  o["radius"], o["vx"]))
    return result


def check_caption(out: PairedSample, record: dict) -> CaptionCheck | None:
    """Compare the augmented caption with the description of the transformed scene (None when the
    sample has no caption to check: dropped, or mixed with another scene)."""
    if out.caption is None or "caption" in out.dropped or any(e["op"] == "mixup" for e in record["ops"]):
        return None
    objects = transformed_objects(out, record)
    if not out.caption:  # the policy emptied it: right only when no object is left to name
        return CaptionCheck(out.sample_id, "", describe(objects, out.canvas()[1]) if objects else "", not objects,
                            "" if not objects else "the caption was emptied but objects remain")
    width = out.canvas()[1]
    if not objects:
        return CaptionCheck(out.sample_id, out.caption, "", False, "every object left the frame")
    expected = describe(objects, width)
    got, want = parse_caption(out.caption), parse_caption(expected)
    if got == want:
        return CaptionCheck(out.sample_id, out.caption, expected, True, "")
    if len(objects) < len(out.meta["objects"]):
        reason = "an object left the frame but the caption still names it"
    elif got[0] != want[0]:
        reason = "the number of objects named changed"
    elif got[0] == "single":
        reason = "the single object's place (left/middle/right third) changed"
    else:
        reason = "the left-to-right order changed (rotation or shear)"
    return CaptionCheck(out.sample_id, out.caption, expected, False, reason)


def check_colours(out: PairedSample, policy_path: str | None = None) -> list[tuple[str, str]]:
    """``(colour word in the caption, colour the object now has)`` for each chromatic object named.

    The colour an object has is the policy's named hue nearest to the mean hue of its pixels in the
    augmented image. Call it on outputs whose geometry kept the objects' left-to-right order (the
    caption names them in that order).
    """
    from kornia.color import rgb_to_hsv

    from .text import load_policy

    policy = load_policy(policy_path)
    got = parse_caption(out.caption or "")
    objects = sorted(out.meta.get("objects", []), key=lambda o: o["center"][0])
    if got[0] == "unparsed" or out.mask is None or out.image is None or out.image.shape[0] != 3:
        return []
    names = [got[1]] if got[0] == "single" else list(got[1])
    pairs = []
    for name, obj in zip(names, objects, strict=False):
        if obj["colour"] not in policy.hue_colours:
            continue  # white and the like have no hue
        pixels = out.image[:, out.mask == obj["id"]]
        if pixels.shape[1] == 0:
            continue
        hue = float(rgb_to_hsv(pixels.mean(1).view(1, 3, 1, 1)).flatten()[0]) * 180.0 / torch.pi
        now = min(policy.hue_colours, key=lambda n: abs((policy.hue_colours[n] - hue + 180.0) % 360.0 - 180.0))
        pairs.append((name.split()[1], now))
    return pairs


@dataclass(frozen=True)
class CloudCheck:
    sample_id: str
    world_error: float  # max |augmented point - ground-truth transform of the source point| (world units)
    pixel_error: float  # max |project(cloud', camera') - A(project(cloud, camera))| (pixels)
    on_object: float  # share of the points inside the frame that land on their own object's mask pixels
    near_object: float  # ... that land within one pixel of them (nearest-neighbour mask warps move edges)
    in_frame: int


def check_cloud(src: PairedSample, out: PairedSample, record: dict) -> CloudCheck | None:
    """Check an augmented cloud against the transformed ground truth: the source cloud through the
    recorded 3D transforms, its projection through the recorded 2D map, and the transformed mask."""
    from . import camera as cam

    if src.points is None or out.points is None or src.intrinsics is None or \
            any(e["op"] == "mixup" for e in record["ops"]):
        return None
    world = torch.eye(4, dtype=torch.float64)
    for entry in record["ops"]:
        if "cloud_matrix" in entry.get("effects", {}):
            world = torch.tensor(entry["effects"]["cloud_matrix"], dtype=torch.float64) @ world
    expected = src.points.double() @ world[:3, :3].T + world[:3, 3]
    world_error = float((out.points.double().cpu() - expected).abs().max()) if len(expected) else 0.0
    m, _ = geometry_matrix(record)
    a = cam.continuous(m)
    uv_src, _ = cam.project(src.points, src.intrinsics, src.extrinsics)
    want = torch.cat([uv_src, torch.ones(len(uv_src), 1, dtype=torch.float64)], 1) @ a.T
    want = want[:, :2] / want[:, 2:3]
    got, _ = cam.project(out.points.cpu(), out.intrinsics.cpu(), out.extrinsics.cpu())
    pixel_error = float((got - want).abs().max()) if len(got) else 0.0
    on_object = near_object = 1.0
    inside = 0
    if out.mask is not None and out.point_labels is not None:
        mask = out.mask.cpu()
        h, w = mask.shape
        ij = got.floor().long()
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
        inside = int(ok.sum())
        if inside:
            x, y, lab = ij[ok, 0], ij[ok, 1], out.point_labels.cpu()[ok]
            on_object = float((mask[y, x] == lab).double().mean())
            near = torch.zeros_like(lab, dtype=torch.bool)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = (y + dy).clamp(0, h - 1), (x + dx).clamp(0, w - 1)
                    near |= mask[yy, xx] == lab
            near_object = float(near.double().mean())
    return CloudCheck(out.sample_id, world_error, pixel_error, on_object, near_object, inside)
