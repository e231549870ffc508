"""Synchronized ops: one parameter draw per sample, applied to every modality the sample holds.

Each op is a class in :data:`OP_TYPES` (the registry replay looks names up in) with

- ``spec``: the JSON-able settings it was built from (a record stores it, so replay rebuilds it);
- ``draw(samples, rng)``: one parameter dict per sample, or ``None`` where the op is not applied;
- ``apply(samples, params)``: the transformed samples and, per sample, an ``effects`` dict.

``apply`` takes a batch; replay calls it with a batch of one, so the batched path and a replay run
the same code. Geometry and photometric jitter use kornia (``AugmentationSequential`` draws the
parameters and composes the geometric children into one matrix; the warps are kornia's); caption
words, stereo channels and the audio-video time coupling are written here because no library does
them.

Over 500 lines on purpose: the ops share one contract (draw, apply, effects) and one registry that
replay reads; each op is short, and keeping them together keeps that contract in view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.linalg import transform_points
from kornia.geometry.transform import warp_perspective

from . import camera as cam
from .record import merge_params, slice_params
from .sample import DROPPABLE, PairedSample
from .text import load_policy

Params = dict[str, Any]
OP_TYPES: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: make an op findable by name for replay."""
    if cls.name in OP_TYPES:
        raise ValueError(f"op {cls.name!r} registered twice")
    OP_TYPES[cls.name] = cls
    return cls


def build_op(name: str, spec: dict) -> Op:
    cls = OP_TYPES.get(name)
    if cls is None:
        raise ValueError(f"unknown op {name!r} in replay record (known: {sorted(OP_TYPES)})")
    return cls(**spec)


class Op:
    """Base class; subclasses set ``name`` and implement ``draw`` and ``apply``."""

    name: ClassVar[str] = ""

    def __init__(self, **spec: Any) -> None:
        self.spec = spec

    def draw(self, samples: Sequence[PairedSample], rng: np.random.Generator) -> list[Params | None]:
        raise NotImplementedError

    def apply(self, samples: Sequence[PairedSample], params: Sequence[Params],
              device: torch.device | str = "cpu") -> tuple[list[PairedSample], list[dict]]:
        raise NotImplementedError


def _groups(samples: Sequence[PairedSample], key: Callable[[PairedSample], Any]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for i, s in enumerate(samples):
        out.setdefault(key(s), []).append(i)
    return out


def _torch_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**62))


def _draw_kornia(seq: K.AugmentationSequential, shape: tuple[int, ...], seed: int) -> list:
    # kornia draws from torch's global generator; fork it so a draw is a function of the seed alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return seq.forward_parameters(torch.Size(shape))


def _uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    lo, hi = lo_hi
    return float(lo if lo == hi else rng.uniform(lo, hi))


# --- time ------------------------------------------------------------------------------------------------------


def _audio_window(audio: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """``count`` samples from ``start``, zero-padded where the track is short by rounding."""
    part = audio[:, start:start + count]
    if part.shape[1] < count:
        part = F.pad(part, (0, count - part.shape[1]))
    return part


@register
class TemporalCrop(Op):
    """Keep one time window of video and audio together.

    The window is drawn on the frame grid when there is video (``frames`` frames from
    ``start_frame``) and converted to samples with ``round(frame * sample_rate / frame_rate)``, so
    the audio of the window holds exactly ``round(frames / frame_rate * sample_rate)`` samples.
    """

    name = "temporal_crop"

    def __init__(self, p: float = 0.5, fraction: Sequence[float] = (0.5, 1.0)) -> None:
        super().__init__(p=p, fraction=list(fraction))
        self.p, self.fraction = p, tuple(fraction)

    def draw(self, samples, rng):
        out: list[Params | None] = []
        for s in samples:
            length = s.video.shape[0] if s.video is not None else (s.audio.shape[1] if s.audio is not None else 0)
            if length < 2 or rng.random() >= self.p:
                out.append(None)
                continue
            n = min(length, max(1, round(length * _uniform(rng, self.fraction))))
            start = int(rng.integers(0, length - n + 1))
            out.append({"start": start, "length": n, "unit": "frames" if s.video is not None else "samples"})
        return out

    def apply(self, samples, params, device="cpu"):
        outs, effects = [], []
        for s, p in zip(samples, params, strict=True):
            start, n = p["start"], p["length"]
            if p["unit"] == "frames":
                video = s.video[start:start + n]
                audio, eff = s.audio, {"seconds": [start / s.frame_rate, (start + n) / s.frame_rate]}
                if s.audio is not None:
                    a0 = round(start * s.sample_rate / s.frame_rate)
                    count = round(n / s.frame_rate * s.sample_rate)  # as documented (31 frames at 30 fps, 11025 Hz:
                    # n * sr / fps is exactly 11392.5 and rounds to even, the documented form gives 11393)
                    audio = _audio_window(s.audio, a0, count)
                    eff["audio_samples"] = [a0, a0 + count]
                outs.append(s.replace(video=video, audio=audio))
            else:
                outs.append(s.replace(audio=s.audio[:, start:start + n]))
                eff = {"seconds": [start / s.sample_rate, (start + n) / s.sample_rate]}
            effects.append(eff)
        return outs, effects


@register
class SpeedChange(Op):
    """Play video and audio ``rate`` times faster (or slower): one rate for both, lengths kept in step.

    Video keeps its frame rate and gets ``round(T / rate)`` frames (nearest earlier frame); audio is
    resampled (linear) to exactly ``round(T' / frame_rate * sample_rate)`` samples, so pitch moves
    with speed as in Kaldi-style speed perturbation.
    """

    name = "speed"

    def __init__(self, p: float = 0.3, rate: Sequence[float] = (0.8, 1.25), text_policy: str | None = None) -> None:
        super().__init__(p=p, rate=list(rate), text_policy=text_policy)
        self.p, self.rate = p, tuple(rate)
        self.policy = load_policy(text_policy)

    def draw(self, samples, rng):
        out: list[Params | None] = []
        for s in samples:
            if (s.video is None and s.audio is None) or rng.random() >= self.p:
                out.append(None)
            else:
                out.append({"rate": _uniform(rng, self.rate)})
        return out

    def apply(self, samples, params, device="cpu"):
        outs, effects = [], []
        for s, p in zip(samples, params, strict=True):
            rate = p["rate"]
            video, audio, eff = s.video, s.audio, {}
            if s.video is not None:
                t_new = max(1, round(s.video.shape[0] / rate))
                idx = torch.clamp((torch.arange(t_new, dtype=torch.float64) * rate).floor().long(), 0,
                                  s.video.shape[0] - 1)
                video = s.video[idx.to(s.video.device)]
                eff["frames"] = [int(s.video.shape[0]), t_new]
            if s.audio is not None:
                if video is not None:
                    n_new = round(video.shape[0] / s.frame_rate * s.sample_rate)
                else:
                    n_new = max(1, round(s.audio.shape[1] / rate))
                audio = F.interpolate(s.audio[None], size=n_new, mode="linear", align_corners=False)[0]
                eff["audio_samples"] = [int(s.audio.shape[1]), n_new]
            caption = s.caption
            if caption:
                caption, edits = self.policy.speed_changed(caption, rate)
                if edits:
                    eff["caption_edits"] = edits
            outs.append(s.replace(video=video, audio=audio, caption=caption))
            effects.append(eff)
        return outs, effects


# --- space -----------------------------------------------------------------------------------------------------


@register
class Geometry(Op):
    """Flip, resized crop and affine (rotation, translation, scale, shear), composed into one matrix.

    kornia's ``AugmentationSequential`` draws the parameters of every child for the whole batch and
    composes them into one 3x3 matrix per sample; image and video frames are warped once with it
    (bilinear), the mask once (nearest), so there is a single resampling. Boxes are the enclosure of
    their transformed corners, clipped to the frame (boxes left empty are removed and listed in the
    effects); keypoints are transformed and marked invisible outside the frame. A mirroring matrix
    also swaps left/right words in the caption and the two channels of stereo audio. A camera's
    intrinsics go through the same matrix, and a mirroring matrix mirrors the point cloud in the
    camera's vertical plane (``camera.after_warp``), so the cloud still projects onto the same pixels.
    """

    name = "geometry"

    def __init__(self, hflip_p: float = 0.5, crop: bool = True, crop_scale: Sequence[float] = (0.6, 1.0),
                 crop_ratio: Sequence[float] = (0.75, 4 / 3), output_size: Sequence[int] | None = None,
                 affine_p: float = 0.5, degrees: float = 15.0, translate: float = 0.1,
                 scale: Sequence[float] = (0.9, 1.1), shear: float = 0.0, min_box_area: float = 0.0,
                 text_policy: str | None = None) -> None:
        super().__init__(hflip_p=hflip_p, crop=crop, crop_scale=list(crop_scale), crop_ratio=list(crop_ratio),
                         output_size=None if output_size is None else list(output_size), affine_p=affine_p,
                         degrees=degrees, translate=translate, scale=list(scale), shear=shear,
                         min_box_area=min_box_area, text_policy=text_policy)
        self.policy = load_policy(text_policy)
        self.output_size = None if output_size is None else (int(output_size[0]), int(output_size[1]))
        self.min_box_area = min_box_area
        self._seqs: dict[tuple[int, int], K.AugmentationSequential] = {}

    def _seq(self, in_hw: tuple[int, int]) -> K.AugmentationSequential:
        """The kornia sequence for one input size (the crop's output size defaults to the input's)."""
        if in_hw not in self._seqs:
            sp = self.spec
            out_hw = self.output_size or in_hw
            children: list[Any] = [K.RandomHorizontalFlip(p=sp["hflip_p"])]
            if sp["crop"]:
                children.append(K.RandomResizedCrop(out_hw, scale=tuple(sp["crop_scale"]),
                                                    ratio=tuple(sp["crop_ratio"]), cropping_mode="resample", p=1.0))
            elif out_hw != in_hw:
                children.append(K.Resize(out_hw, p=1.0))
            shear = sp["shear"] or None
            children.append(K.RandomAffine(degrees=sp["degrees"], translate=(sp["translate"], sp["translate"]),
                                           scale=tuple(sp["scale"]), shear=shear, p=sp["affine_p"]))
            self._seqs[in_hw] = K.AugmentationSequential(*children, data_keys=None)
        return self._seqs[in_hw]

    def out_size(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return self.output_size or in_hw

    def draw(self, samples, rng):
        out: list[Params | None] = [None] * len(samples)
        for hw, idx in _groups(samples, PairedSample.canvas).items():
            if hw is None:
                continue
            drawn = _draw_kornia(self._seq(hw), (len(idx), 1, *hw), _torch_seed(rng))
            for k, i in enumerate(idx):
                out[i] = {"kornia": slice_params(drawn, k), "in_size": list(hw)}
        return out

    def matrices(self, in_hw: tuple[int, int], params: Sequence[Params], device) -> torch.Tensor:
        """(B, 3, 3) matrices mapping input pixel indices to output pixel indices."""
        b = len(params)
        merged = merge_params([p["kornia"] for p in params], (b, 1, *in_hw), torch.device(device))
        probe = torch.zeros(b, 1, *in_hw, device=device)
        return self._seq(in_hw).get_transformation_matrix(probe, merged, recompute=True)

    def apply(self, samples, params, device="cpu"):
        outs: list[PairedSample | None] = [None] * len(samples)
        effects: list[dict | None] = [None] * len(samples)
        for hw, idx in _groups(samples, lambda s: tuple(s.canvas())).items():
            sub = [samples[i] for i in idx]
            mats = self.matrices(hw, [params[i] for i in idx], device)
            for i, s, e in zip(idx, *self._warp(sub, mats, hw, device), strict=True):
                outs[i], effects[i] = s, e
        return outs, effects

    @staticmethod
    def _pixel_exact(mats: torch.Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[str | None]:
        """Per sample: "identity" or "hflip" where the matrix only moves whole pixels, else None.

        Those cases are done by indexing (and their matrix snapped to exact values): a warp through
        normalized coordinates is off by rounding, so a flip applied twice would not give the
        input back bit for bit.
        """
        if in_hw != out_hw:
            return [None] * len(mats)
        eye = torch.eye(3, dtype=mats.dtype, device=mats.device)
        flip = eye.clone()
        flip[0, 0], flip[0, 2] = -1.0, in_hw[1] - 1.0
        kinds: list[str | None] = []
        for m in mats:
            if torch.allclose(m, eye, atol=1e-5, rtol=0):
                kinds.append("identity")
            elif torch.allclose(m, flip, atol=1e-5, rtol=0):
                kinds.append("hflip")
            else:
                kinds.append(None)
        return kinds

    def _warp(self, samples: list[PairedSample], mats: torch.Tensor, in_hw, device):
        oh, ow = self.out_size(in_hw)
        n = len(samples)
        kinds = self._pixel_exact(mats, in_hw, (oh, ow))
        mats = mats.clone()
        for i, kind in enumerate(kinds):
            if kind is not None:
                mats[i] = torch.eye(3, dtype=mats.dtype, device=mats.device)
                if kind == "hflip":
                    mats[i, 0, 0], mats[i, 0, 2] = -1.0, ow - 1.0
        new: list[dict[str, Any]] = [{} for _ in range(n)]

        def exact(x: torch.Tensor, kind: str) -> torch.Tensor:
            return x.flip(-1) if kind == "hflip" else x.clone()

        for key, mode in (("image", "bilinear"), ("mask", "nearest")):
            have = [i for i, s in enumerate(samples) if getattr(s, key) is not None and kinds[i] is None]
            for i, s in enumerate(samples):
                if getattr(s, key) is not None and kinds[i] is not None:
                    new[i][key] = exact(getattr(s, key).to(device), kinds[i])
            if not have:
                continue
            batch = torch.stack([getattr(samples[i], key) for i in have]).to(device)
            if key == "mask":
                batch = batch[:, None].float()  # ids < 2**24 are exact in float32
            warped = warp_perspective(batch, mats[have], (oh, ow), mode=mode, padding_mode="zeros",
                                      align_corners=True)
            for k, i in enumerate(have):
                new[i][key] = warped[k, 0].round().long() if key == "mask" else warped[k]
        for i, s in enumerate(samples):
            if s.video is not None and kinds[i] is not None:
                new[i]["video"] = exact(s.video.to(device), kinds[i])
        have = [i for i, s in enumerate(samples) if s.video is not None and kinds[i] is None]
        if have:
            counts = torch.tensor([samples[i].video.shape[0] for i in have], device=device)
            frames = torch.cat([samples[i].video for i in have]).to(device)
            warped = warp_perspective(frames, mats[have].repeat_interleave(counts, dim=0), (oh, ow),
                                      mode="bilinear", padding_mode="zeros", align_corners=True)
            for i, part in zip(have, torch.split(warped, counts.tolist()), strict=True):
                new[i]["video"] = part
        outs, effects = [], []
        for i, s in enumerate(samples):
            m = mats[i:i + 1]
            mirrored = bool(torch.linalg.det(m[0, :2, :2]) < 0)
            eff: dict[str, Any] = {"matrix": m[0].tolist(), "out_size": [oh, ow], "mirrored": mirrored}
            changes = new[i]
            if s.boxes is not None:
                boxes, keep = self._boxes(s.boxes.to(device), m, oh, ow)
                changes["boxes"] = boxes[keep]
                for name in ("box_labels", "box_mask_ids"):
                    if getattr(s, name) is not None:
                        changes[name] = getattr(s, name).to(device)[keep]
                removed = (~keep).nonzero().flatten().tolist()
                if removed:
                    eff["boxes_removed"] = removed
            if s.keypoints is not None:
                pts = transform_points(m, (s.keypoints.to(device) - 0.5)[None])[0] + 0.5
                inside = (pts[:, 0] >= 0) & (pts[:, 0] <= ow) & (pts[:, 1] >= 0) & (pts[:, 1] <= oh)
                changes["keypoints"] = pts
                changes["keypoint_visible"] = s.keypoint_visible.to(device) & inside
            if s.intrinsics is not None:
                k_new, world = cam.after_warp(s.intrinsics, s.extrinsics, m[0], in_hw[1])
                changes["intrinsics"] = k_new.to(s.intrinsics.device)
                if world is not None and s.points is not None:
                    changes["points"] = cam.transform_points(s.points, world.to(s.points.device))
                    eff["cloud_matrix"] = world.tolist()
            if mirrored and s.caption:
                changes["caption"], edits = self.policy.mirrored(s.caption)
                if edits:
                    eff["caption_edits"] = edits
            if s.caption and s.meta.get("phrases") and self.policy.objects is not None:
                caption, edits = self._object_edits(s, changes, m, ow)
                if edits:
                    changes["caption"] = caption
                    eff["caption_object_edits"] = edits
            if mirrored and s.audio is not None and s.audio.shape[0] == 2:
                changes["audio"] = s.audio.flip(0)
                eff["audio_channels_swapped"] = True
            outs.append(s.replace(**changes))
            effects.append(eff)
        return outs, effects

    def _object_edits(self, s: PairedSample, changes: dict, m: torch.Tensor, ow: int) -> tuple[str, list[dict]]:
        """Caption edits for objects the draw removed and for spatial words it changed (the policy's
        ``objects`` rules), from the objects' transformed box centres."""
        caption = changes.get("caption", s.caption)
        ids = [int(obj) for obj, _ in s.meta["phrases"]]
        if s.mask is not None and "mask" in changes:
            present = set(changes["mask"].unique().tolist())
        elif "box_mask_ids" in changes:
            present = set(changes["box_mask_ids"].tolist())
        else:  # nothing says which objects are left: remove none
            present = set(ids)
        # Where each object is: its recorded centre when the sample has one (generated scenes: the same
        # point the caption was written from; a triangle's box centre is not it), else its box centre.
        points: dict[int, tuple[float, float]] = {}
        if s.boxes is not None and s.box_mask_ids is not None and s.boxes.shape[0]:
            for k, (x0, y0, x1, y1) in zip(s.box_mask_ids.tolist(), s.boxes.tolist(), strict=True):
                points[int(k)] = ((x0 + x1) / 2, (y0 + y1) / 2)
        for o in s.meta.get("objects") or []:
            points[int(o["id"])] = (float(o["center"][0]), float(o["center"][1]))
        centres: dict[int, float] = {}
        if points:
            mid = torch.tensor([[x - 0.5, y - 0.5] for x, y in points.values()], dtype=torch.float64, device=m.device)
            pts = transform_points(m.double(), mid[None])[0] + 0.5
            centres = {k: float(x) for k, x in zip(points, pts[:, 0].tolist(), strict=True)}
        removed = {i for i in ids if i not in present}
        return self.policy.objects.rewrite(caption, s.meta["phrases"], centres, removed, float(ow))

    def _boxes(self, boxes: torch.Tensor, m: torch.Tensor, oh: int, ow: int) -> tuple[torch.Tensor, torch.Tensor]:
        if boxes.shape[0] == 0:
            return boxes, torch.zeros(0, dtype=torch.bool, device=boxes.device)
        x0, y0, x1, y1 = boxes.unbind(-1)
        # Corners in pixel-index coordinates (pixel centres at integers) -- kornia's matrices use those.
        corners = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                               torch.stack([x1, y1], -1), torch.stack([x0, y1], -1)], 1) - 0.5
        pts = transform_points(m, corners.reshape(1, -1, 2)).reshape(-1, 4, 2) + 0.5
        lo, hi = pts.amin(1), pts.amax(1)
        lo = torch.stack([lo[:, 0].clamp(0, ow), lo[:, 1].clamp(0, oh)], -1)
        hi = torch.stack([hi[:, 0].clamp(0, ow), hi[:, 1].clamp(0, oh)], -1)
        out = torch.cat([lo, hi], -1)
        wh = hi - lo
        keep = (wh[:, 0] > 0) & (wh[:, 1] > 0) & (wh[:, 0] * wh[:, 1] > self.min_box_area)
        return out, keep


# --- signal ----------------------------------------------------------------------------------------------------


@register
class Photometric(Op):
    """Colour jitter (kornia ``ColorJitter``) on image and video frames only, one draw per sample."""

    name = "photometric"

    def __init__(self, p: float = 0.8, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.05, text_policy: str | None = None) -> None:
        super().__init__(p=p, brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
                         text_policy=text_policy)
        self._seqs: dict[int, K.AugmentationSequential] = {}
        self.policy = load_policy(text_policy)

    def _seq(self, channels: int) -> K.AugmentationSequential:
        if channels not in self._seqs:
            sp = self.spec
            colour = channels == 3  # saturation and hue mean nothing on one channel
            self._seqs[channels] = K.AugmentationSequential(
                K.ColorJitter(sp["brightness"], sp["contrast"], sp["saturation"] if colour else 0.0,
                              sp["hue"] if colour else 0.0, p=1.0),
                data_keys=["input"])
        return self._seqs[channels]

    def draw(self, samples, rng):
        out: list[Params | None] = [None] * len(samples)
        chosen = [i for i, s in enumerate(samples) if s.channels() in (1, 3) and rng.random() < self.spec["p"]]
        for c, idx in _groups([samples[i] for i in chosen], PairedSample.channels).items():
            drawn = _draw_kornia(self._seq(c), (len(idx), c, 1, 1), _torch_seed(rng))
            for k, j in enumerate(idx):
                out[chosen[j]] = {"kornia": slice_params(drawn, k), "channels": c}
        return out

    def apply(self, samples, params, device="cpu"):
        outs: list[PairedSample | None] = [None] * len(samples)
        effects: list[dict] = [{} for _ in samples]
        for (c, _), idx in _groups(samples, lambda s: (s.channels(), s.canvas())).items():
            seq = self._seq(c)
            sub = [samples[i] for i in idx]
            ps = [params[i]["kornia"] for i in idx]
            changes: list[dict] = [{} for _ in idx]
            have = [k for k, s in enumerate(sub) if s.image is not None]
            if have:
                imgs = torch.stack([sub[k].image for k in have]).to(device)
                merged = merge_params([ps[k] for k in have], tuple(imgs.shape), torch.device(device))
                res = seq(imgs, params=merged)
                for j, k in enumerate(have):
                    changes[k]["image"] = res[j]
            have = [k for k, s in enumerate(sub) if s.video is not None]
            if have:
                counts = [sub[k].video.shape[0] for k in have]
                frames = torch.cat([sub[k].video for k in have]).to(device)
                per_frame = [ps[k] for k, t in zip(have, counts, strict=True) for _ in range(t)]
                merged = merge_params(per_frame, tuple(frames.shape), torch.device(device))
                res = seq(frames, params=merged)
                for k, part in zip(have, torch.split(res, counts), strict=True):
                    changes[k]["video"] = part
            for k, i in enumerate(idx):
                outs[i] = sub[k].replace(**changes[k])
                effects[i] = {}
                hue = _param(ps[k], "hue_factor") if c == 3 else 0.0
                if sub[k].caption and hue:
                    caption, edits = self.policy.hue_shifted(sub[k].caption, hue)
                    if edits:
                        outs[i] = outs[i].replace(caption=caption)
                        effects[i] = {"caption_edits": edits, "hue_degrees": hue * 360.0}
        return outs, effects


def _param(kornia_params: list, key: str) -> float:
    """One scalar of a sample's kornia draw (0.0 when the op did not draw it)."""
    for _, data in kornia_params:
        if key in data:
            return float(data[key].reshape(-1)[0])
    return 0.0


def _noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU from a recorded seed, so a record replays the same noise on any device.
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


@register
class PixelNoise(Op):
    """Additive Gaussian noise on image and video frames (clipped to [0, 1]); std and seed recorded."""

    name = "pixel_noise"

    def __init__(self, p: float = 0.3, std: Sequence[float] = (0.0, 0.05)) -> None:
        super().__init__(p=p, std=list(std))

    def draw(self, samples, rng):
        return [{"std": _uniform(rng, self.spec["std"]), "seed": _torch_seed(rng)}
                if (s.image is not None or s.video is not None) and rng.random() < self.spec["p"] else None
                for s in samples]

    def apply(self, samples, params, device="cpu"):
        outs = []
        for s, p in zip(samples, params, strict=True):
            g = torch.Generator().manual_seed(p["seed"])
            changes = {}
            for key in ("image", "video"):
                x = getattr(s, key)
                if x is not None:
                    changes[key] = (x + p["std"] * _noise(x.shape, g).to(x.device)).clamp(0.0, 1.0)
            outs.append(s.replace(**changes))
        return outs, [{} for _ in samples]


@register
class AudioNoise(Op):
    """Additive white noise at a drawn signal-to-noise ratio (dB) on the audio track; seed recorded."""

    name = "audio_noise"

    def __init__(self, p: float = 0.3, snr_db: Sequence[float] = (10.0, 40.0)) -> None:
        super().__init__(p=p, snr_db=list(snr_db))

    def draw(self, samples, rng):
        return [{"snr_db": _uniform(rng, self.spec["snr_db"]), "seed": _torch_seed(rng)}
                if s.audio is not None and rng.random() < self.spec["p"] else None for s in samples]

    def apply(self, samples, params, device="cpu"):
        outs, effects = [], []
        for s, p in zip(samples, params, strict=True):
            rms = float(s.audio.double().pow(2).mean().sqrt()) if s.audio.numel() else 0.0
            std = rms * 10.0 ** (-p["snr_db"] / 20.0)
            g = torch.Generator().manual_seed(p["seed"])
            outs.append(s.replace(audio=s.audio + std * _noise(s.audio.shape, g).to(s.audio.device)))
            effects.append({"noise_std": std})
        return outs, effects


# --- two samples and dropout -----------------------------------------------------------------------------------

#: What mixup interpolates when both samples hold it (with the same shape; audio is fitted to length).
MIXED = ("image", "video", "audio", "text_embedding", "labels")


@register
class Mixup(Op):
    """Convex mix of two samples with one lambda for image, video, audio, text embedding and soft labels.

    ``lam`` ~ Beta(alpha, alpha). Modalities that cannot be interpolated (mask, boxes, keypoints,
    caption) come from the dominant sample (``lam >= 0.5`` keeps the first), and the other audio
    track is cut or zero-padded to the dominant one's length; the effects list what was mixed and
    what was kept. ``params["partner"]`` is the partner's own replay record, so a
    replay rebuilds the partner from its source first.
    """

    name = "mixup"
    needs_partner: ClassVar[bool] = True

    def __init__(self, p: float = 0.2, alpha: float = 0.4) -> None:
        super().__init__(p=p, alpha=alpha)

    def draw_lambda(self, rng: np.random.Generator) -> float:
        return float(rng.beta(self.spec["alpha"], self.spec["alpha"]))

    @staticmethod
    def mix(a: PairedSample, b: PairedSample, lam: float) -> tuple[PairedSample, dict]:
        lam = float(lam)
        dominant, other = (a, b) if lam >= 0.5 else (b, a)
        changes: dict[str, Any] = {}
        mixed, kept = [], []
        for key in MIXED:
            x, y = getattr(a, key), getattr(b, key)
            if x is None or y is None:
                if getattr(dominant, key) is not None:
                    kept.append(key)
                changes[key] = getattr(dominant, key)
                continue
            if key == "audio" and x.shape[0] == y.shape[0] and x.shape[1] != y.shape[1]:
                # The other track is fitted to the dominant one, whose video (and timeline) is kept.
                if dominant is a:
                    y = _audio_window(y, 0, x.shape[1])
                else:
                    x = _audio_window(x, 0, y.shape[1])
            if x.shape != y.shape:
                kept.append(key)
                changes[key] = getattr(dominant, key)
                continue
            changes[key] = lam * x + (1.0 - lam) * y.to(x.device)
            mixed.append(key)
        for key in ("mask", "boxes", "box_labels", "box_mask_ids", "keypoints", "keypoint_visible", "caption",
                    "sample_rate", "frame_rate", "meta", "points", "point_features", "point_labels", "intrinsics",
                    "extrinsics"):
            changes[key] = getattr(dominant, key)
        if changes["audio"] is not None and changes["audio"] is not dominant.audio:
            changes["sample_rate"] = a.sample_rate
        changes["dropped"] = tuple(sorted(set(a.dropped) | set(b.dropped)))
        effects = {"mixed": mixed, "kept_from_dominant": kept, "dominant": "self" if dominant is a else "partner"}
        del other
        return a.replace(**changes), effects


@register
class ModalityDropout(Op):
    """Mask whole modalities with a per-modality probability; the mask is a recorded flag.

    A dropped image, video, audio track or text embedding is zeroed with its shape kept, a dropped
    caption becomes ``""``; the sample's ``dropped`` lists them. With ``keep_one`` at least one of
    the droppable modalities present stays.
    """

    name = "modality_dropout"

    def __init__(self, p: dict[str, float] | None = None, keep_one: bool = True) -> None:
        p = dict(p or {})
        unknown = set(p) - set(DROPPABLE)
        if unknown:
            raise ValueError(f"modality dropout: unknown modalities {sorted(unknown)} (droppable: {DROPPABLE})")
        super().__init__(p=p, keep_one=keep_one)

    def draw(self, samples, rng):
        out: list[Params | None] = []
        for s in samples:
            present = [m for m in DROPPABLE if getattr(s, m) is not None and m not in s.dropped]
            dropped = [m for m in present if rng.random() < self.spec["p"].get(m, 0.0)]
            if self.spec["keep_one"] and present and len(dropped) == len(present):
                dropped.pop(int(rng.integers(len(dropped))))
            out.append({"dropped": dropped} if dropped else None)
        return out

    def apply(self, samples, params, device="cpu"):
        outs = []
        for s, p in zip(samples, params, strict=True):
            changes: dict[str, Any] = {}
            for m in p["dropped"]:
                changes[m] = "" if m == "caption" else torch.zeros_like(getattr(s, m))
            changes["dropped"] = tuple(sorted(set(s.dropped) | set(p["dropped"])))
            outs.append(s.replace(**changes))
        return outs, [{} for _ in samples]


