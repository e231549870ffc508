"""Generated paired scenes: coloured shapes with masks, boxes, keypoints, a caption, stereo audio
and a short video, all derived from one scene description (kept in ``meta``).

Used by the tests, the demo command and the benchmark; nothing is downloaded. Because every
modality comes from the description, a scene is an oracle: its caption says where things are
("a red circle left of a blue square"), its stereo audio pans each object's tone by its position,
so a horizontal flip must swap the caption's left/right and the audio channels together.

Each scene also has a point cloud and the camera that renders the image from it: every shape is
extruded to 3D along the camera's viewing rays, between a depth drawn per object and that depth plus
``thickness`` (a slab of the generalized cone through the shape), and points are drawn on it at the
object's pixel centres with per-point labels (the object's mask id) and features (its RGB colour).
Projecting the cloud through the camera gives back exactly the pixel centres, so the cloud, mask and
image agree by construction. The camera (pinhole, centred principal point, a random pose) and the
cloud come from a generator seeded by the scene's id and caption, so scenes drawn before the clouds
existed are unchanged.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .sample import PairedSample, one_hot

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 80, 230), "yellow": (230, 210, 40),
           "white": (235, 235, 235)}
TONES = {"circle": 440.0, "square": 660.0, "triangle": 880.0}
GENERATOR = "cycleaug-scenes-1"
EMBED_DIM = 16


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    cx: float
    cy: float
    r: float
    vx: float  # horizontal speed in px per frame (the video)

    def at(self, frame: int) -> SceneObject:
        return SceneObject(self.shape, self.colour, self.cx + self.vx * frame, self.cy, self.r, self.vx)

    def pixels(self, h: int, w: int) -> np.ndarray:
        """Boolean (h, w) mask of the pixels whose centre lies inside the shape."""
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        dx, dy = xs - self.cx, ys - self.cy
        if self.shape == "circle":
            return dx * dx + dy * dy <= self.r * self.r
        if self.shape == "square":
            return (np.abs(dx) <= self.r) & (np.abs(dy) <= self.r)
        # An upright triangle: apex above the centre, base below it.
        return (dy <= self.r) & (dy >= -self.r) & (np.abs(dx) <= (dy + self.r) / 2.0)

    def keypoints(self) -> list[tuple[float, float]]:
        """The centre and the top of the shape."""
        return [(self.cx, self.cy), (self.cx, self.cy - self.r)]


def describe(objects: list[SceneObject], width: int) -> str:
    """The caption a scene's own description gives: objects named from left to right."""
    ordered = sorted(objects, key=lambda o: o.cx)
    names = [f"a {o.colour} {o.shape}" for o in ordered]
    if len(names) == 1:
        o = ordered[0]
        where = "on the left" if o.cx < width / 3 else ("on the right" if o.cx > 2 * width / 3 else "in the middle")
        return f"{names[0]} {where}"
    if len(names) == 2:
        return f"{names[0]} left of {names[1]}"
    return ", ".join(names[:-1]) + f" and {names[-1]}, from left to right"


def embed_text(text: str, dim: int = EMBED_DIM) -> torch.Tensor:
    """A hashed bag-of-words vector (unit length): a stand-in for a text encoder's embedding."""
    v = torch.zeros(dim, dtype=torch.float32)
    for word in text.lower().replace(",", " ").split():
        v[zlib.crc32(word.encode()) % dim] += 1.0
    return v / v.norm().clamp_min(1e-12)


def _render(objects: list[SceneObject], h: int, w: int, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = np.broadcast_to(background, (h, w, 3)).astype(np.float32).copy()
    ids = np.zeros((h, w), dtype=np.int64)
    for k, o in enumerate(objects):
        inside = o.pixels(h, w)
        img[inside] = np.asarray(COLOURS[o.colour], dtype=np.float32) / 255.0
        ids[inside] = k + 1
    return img, ids


def _place(rng: np.random.Generator, n: int, size: int) -> list[SceneObject]:
    objects: list[SceneObject] = []
    while len(objects) < n:
        r = float(rng.uniform(size * 0.08, size * 0.16))
        cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
        if all((cx - o.cx) ** 2 + (cy - o.cy) ** 2 > (r + o.r + 2) ** 2 for o in objects) and \
                all(abs(cx - o.cx) > 2 for o in objects):
            objects.append(SceneObject(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), cx, cy, r,
                                       float(rng.uniform(-0.5, 0.5))))
    return objects


def scene_camera(size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A pinhole camera (focal 1.5 x size, principal point at the centre) at a random pose."""
    from .camera import rotation_matrix

    f = 1.5 * size
    k = torch.tensor([[f, 0.0, size / 2.0], [0.0, f, size / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    axis = torch.from_numpy(rng.normal(size=3))
    r = rotation_matrix(axis, float(rng.uniform(-25.0, 25.0)))
    t = torch.from_numpy(rng.uniform(-2.0, 2.0, 3))
    return k, torch.cat([r, t[:, None]], 1)


def scene_cloud(objects: list[SceneObject], ids: np.ndarray, k: torch.Tensor, ext: torch.Tensor,
                rng: np.random.Generator, per_object: int, thickness: float = 0.5) -> dict:
    """Points on the shapes extruded along the viewing rays (see the module docstring), in world coordinates."""
    pts, labels, feats, depths = [], [], [], []
    for n, o in enumerate(objects):
        ys, xs = np.nonzero(ids == n + 1)
        depth = float(rng.uniform(4.0, 8.0))
        depths.append(depth)
        if not len(xs):
            continue
        pick = rng.integers(0, len(xs), per_object)
        uv1 = np.stack([xs[pick] + 0.5, ys[pick] + 0.5, np.ones(per_object)], 1)
        z = rng.uniform(depth, depth + thickness, per_object)
        pts.append(torch.from_numpy(uv1 * z[:, None]))
        labels += [n + 1] * per_object
        feats += [[c / 255.0 for c in COLOURS[o.colour]]] * per_object
    cam = torch.cat(pts) @ torch.linalg.inv(k).T if pts else torch.zeros(0, 3, dtype=torch.float64)
    r, t = ext[:, :3], ext[:, 3]
    world = (cam - t) @ r  # P = R^T (X_c - t)
    return {"points": world.float(), "point_labels": torch.tensor(labels, dtype=torch.int64),
            "point_features": torch.tensor(feats, dtype=torch.float32).reshape(-1, 3), "depths": depths}


def make_scene(rng: np.random.Generator, sample_id: str, size: int = 64, frames: int = 8, frame_rate: float = 8.0,
               sample_rate: int = 8000, max_objects: int = 3, points_per_object: int = 48) -> PairedSample:
    """One generated scene with every modality (see the module docstring)."""
    objects = _place(rng, int(rng.integers(1, max_objects + 1)), size)
    background = rng.uniform(0.05, 0.3, 3).astype(np.float32)
    return scene_from_objects(objects, background, sample_id, size, frames, frame_rate, sample_rate,
                              points_per_object)


def scene_from_objects(objects: list[SceneObject], background: np.ndarray, sample_id: str, size: int = 64,
                       frames: int = 8, frame_rate: float = 8.0, sample_rate: int = 8000,
                       points_per_object: int = 48) -> PairedSample:
    """The scene of given objects on a given (3,) RGB background in [0, 1], with every modality: what
    :func:`make_scene` draws once it has placed them (the caption-to-scene translator places its own)."""
    img, ids = _render(objects, size, size, background)
    video = np.stack([_render([o.at(t) for o in objects], size, size, background)[0] for t in range(frames)])
    boxes, box_ids = [], []
    for k in range(len(objects)):
        ys, xs = np.nonzero(ids == k + 1)
        if len(xs):
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            box_ids.append(k + 1)
    kps = [p for o in objects for p in o.keypoints()]
    n_audio = round(frames / frame_rate * sample_rate)
    t = np.arange(n_audio) / sample_rate
    audio = np.zeros((2, n_audio), dtype=np.float64)
    for o in objects:
        tone = 0.2 * np.sin(2 * np.pi * TONES[o.shape] * t)
        pan = np.clip(o.cx / size, 0.0, 1.0)  # left objects are loud on the left channel
        audio[0] += (1.0 - pan) * tone
        audio[1] += pan * tone
    caption = describe(objects, size)
    cloud: dict = {}
    intrinsics = extrinsics = None
    if points_per_object > 0:
        rng3 = np.random.default_rng(zlib.crc32(f"{sample_id}|{caption}".encode()))
        intrinsics, extrinsics = scene_camera(size, rng3)
        cloud = scene_cloud(objects, ids, intrinsics, extrinsics, rng3, points_per_object)
    return PairedSample(
        sample_id=sample_id,
        image=torch.from_numpy(img).permute(2, 0, 1).contiguous(),
        mask=torch.from_numpy(ids),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        box_labels=torch.tensor([SHAPES.index(objects[i - 1].shape) for i in box_ids], dtype=torch.int64),
        box_mask_ids=torch.tensor(box_ids, dtype=torch.int64),
        keypoints=torch.tensor(kps, dtype=torch.float32).reshape(-1, 2),
        keypoint_visible=torch.ones(len(kps), dtype=torch.bool),
        caption=caption,
        text_embedding=embed_text(caption),
        audio=torch.from_numpy(audio.astype(np.float32)),
        sample_rate=sample_rate,
        video=torch.from_numpy(video).permute(0, 3, 1, 2).contiguous(),
        frame_rate=float(frame_rate),
        labels=one_hot(sorted({SHAPES.index(o.shape) for o in objects}), len(SHAPES)),
        points=cloud.get("points"), point_features=cloud.get("point_features"),
        point_labels=cloud.get("point_labels"), intrinsics=intrinsics, extrinsics=extrinsics,
        meta={"generator": GENERATOR, "size": size,
              "phrases": [[k + 1, f"a {o.colour} {o.shape}"] for k, o in
                          sorted(enumerate(objects), key=lambda ko: ko[1].cx)],
              "objects": [{"id": k + 1, "shape": o.shape, "colour": o.colour, "center": [o.cx, o.cy],
                           "radius": o.r, "vx": o.vx,
                           **({"depth": cloud["depths"][k]} if cloud else {})} for k, o in enumerate(objects)]},
    ).validate()


def make_scenes(n: int, seed: int = 0, **kwargs) -> list[PairedSample]:
    """``n`` scenes, ``scene-00000`` onwards; the same seed gives the same scenes."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, f"scene-{i:05d}", **kwargs) for i in range(n)]
