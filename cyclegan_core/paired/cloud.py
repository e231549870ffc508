"""The 3D op: one rotation, scaling, translation and mirror of a sample's point cloud per draw, with
the matching change to its camera and image (conventions and formulas in ``camera.py``).

The camera moves with a proper similarity of the cloud, so the image does not change; a mirror of
the cloud cannot be seen by a moved camera, so it is done as the horizontal flip of the image (the
article's table: a flip mirrors the cloud in the camera's vertical plane) followed by the proper
similarity that turns that mirror into the drawn one. The flip goes through :class:`Geometry`, so
masks, boxes, keypoints, video, caption words and stereo channels flip with it and the record holds
its matrix like any geometry op's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import camera as cam
from .ops import Geometry, Op, Params, _uniform, register


@register
class CloudTransform(Op):
    """Rotation about a random axis (up to ``degrees``), uniform scaling, translation (world units per
    axis) and, with probability ``mirror_p``, the mirror ``x -> -x`` of the world, drawn once per sample
    that holds ``points``."""

    name = "cloud"

    def __init__(self, p: float = 0.5, degrees: float = 30.0, scale: Sequence[float] = (0.9, 1.1),
                 translate: float = 0.5, mirror_p: float = 0.0, text_policy: str | None = None) -> None:
        super().__init__(p=p, degrees=degrees, scale=list(scale), translate=translate, mirror_p=mirror_p,
                         text_policy=text_policy)
        self._flip = Geometry(hflip_p=1.0, crop=False, affine_p=0.0, text_policy=text_policy)

    def draw(self, samples, rng: np.random.Generator) -> list[Params | None]:
        out: list[Params | None] = []
        sp = self.spec
        for s in samples:
            # p == 0 draws nothing, so the other ops' draws are those of a run without this op.
            if s.points is None or sp["p"] == 0 or rng.random() >= sp["p"]:
                out.append(None)
                continue
            axis = rng.normal(size=3)
            out.append({"axis": [float(v) for v in axis / max(np.linalg.norm(axis), 1e-12)],
                        "degrees": _uniform(rng, (-sp["degrees"], sp["degrees"])),
                        "scale": _uniform(rng, sp["scale"]),
                        "translate": [_uniform(rng, (-sp["translate"], sp["translate"])) for _ in range(3)],
                        "mirror": bool(rng.random() < sp["mirror_p"])})
        return out

    def apply(self, samples, params, device="cpu"):
        outs, effects = [], []
        for s, p in zip(samples, params, strict=True):
            world = cam.similarity(p["scale"], cam.rotation_matrix(torch.tensor(p["axis"]), p["degrees"]),
                                   torch.tensor(p["translate"], dtype=torch.float64), p["mirror"])
            eff: dict = {"cloud_matrix": world.tolist()}
            if s.intrinsics is None:
                outs.append(s.replace(points=cam.transform_points(s.points, world.to(s.points.device))))
                effects.append(eff)
                continue
            if p["mirror"]:
                # The image flips and the cloud mirrors in the camera's plane; the rest is proper.
                hw = s.canvas()
                flipped, flip_eff = self._flip._warp([s], cam.hflip_index(hw[1])[None].float().to(device), hw,
                                                     device)
                s, flip_eff = flipped[0], flip_eff[0]
                eff.update({k: v for k, v in flip_eff.items() if k != "cloud_matrix"})
                world = world @ torch.linalg.inv(torch.tensor(flip_eff["cloud_matrix"], dtype=torch.float64))
            outs.append(s.replace(points=cam.transform_points(s.points, world.to(s.points.device)),
                                  extrinsics=cam.follow(s.extrinsics.cpu(), world).to(s.extrinsics.device)))
            effects.append(eff)
        return outs, effects
