"""Caption to scene and scene to caption, with the paired package's scene generator and caption grammar.

``caption_to_scene`` reads a scene caption (``"a red circle left of a blue square"``, ``"a green
triangle on the right"``, ``"a, b and c, from left to right"``: the grammar of
:func:`cyclegan_core.paired.scenes.describe`, parsed by the caption oracle's
:func:`~cyclegan_core.paired.oracle.parse_caption`) and draws a scene that shows it: one object per
name, in the named colour and shape, in its own horizontal slot in the caption's left-to-right order
(or in the named third for a single object), at a size and height drawn from the seed, through
:func:`~cyclegan_core.paired.scenes.scene_from_objects` (so the scene has a mask, boxes, audio and the
rest). ``scene_to_caption`` goes the other way from pixels alone (:func:`read_scene`: palette colours,
connected components, the shape from how the component fills its box), then describes what it found
with the scene grammar; it needs no ``meta``, so it reads any image drawn in the scenes' palette.

:func:`caption_agreement` compares two captions attribute by attribute (how many objects, their
colours, their shapes, their places or order), by meaning as the oracle does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..paired.oracle import parse_caption
from ..paired.scenes import COLOURS, SHAPES, SceneObject, describe, scene_from_objects
from .translators import TranslatedItem, TranslatorError

ATTRIBUTES = ("count", "colour", "shape", "place")
_PALETTE = np.asarray(list(COLOURS.values()), dtype=np.float64)
_PALETTE_NAMES = list(COLOURS)


def caption_objects(caption: str) -> tuple[list[tuple[str, str]], str | None]:
    """The (colour, shape) of each object a caption names, left to right, and the single object's
    third (``left``/``middle``/``right``, None for several); a :class:`TranslatorError` if the caption
    is not in the scene grammar or names a colour or shape the scenes do not draw."""
    meaning = parse_caption(caption)
    if meaning[0] == "single":
        names, place = [meaning[1]], meaning[2]
    elif meaning[0] == "order":
        names, place = list(meaning[1]), None
    else:
        raise TranslatorError(f"caption {caption!r} is not in the scene grammar (e.g. 'a red circle left of "
                              "a blue square', 'a green triangle on the right')")
    objects = []
    for name in names:
        _, colour, shape = name.split()
        if colour not in COLOURS or shape not in SHAPES:
            raise TranslatorError(f"caption {caption!r}: {name!r} is not drawable (colours: {', '.join(COLOURS)}; "
                                  f"shapes: {', '.join(SHAPES)})")
        objects.append((colour, shape))
    return objects, place


def place_objects(caption: str, size: int, rng: np.random.Generator) -> list[SceneObject]:
    """Objects where ``caption`` says they are (see the module docstring), never overlapping."""
    named, place = caption_objects(caption)
    n = len(named)
    slot = size / n
    r_hi = min(size * 0.16, slot * 0.4 - 1.0)
    if r_hi < 2.0:
        raise TranslatorError(f"caption {caption!r}: {n} objects do not fit side by side in {size} pixels")
    r_lo = min(size * 0.08, r_hi)
    objects = []
    for k, (colour, shape) in enumerate(named):
        r = float(rng.uniform(r_lo, r_hi))
        if place is None:
            # Neighbouring centres are at least 0.8 slot apart and radii at most 0.4 slot - 1: no overlap.
            cx = slot * (k + 0.5) + float(rng.uniform(-0.1, 0.1)) * slot
        else:
            third = ("left", "middle", "right").index(place)
            lo, hi = max(r + 1.0, third * size / 3 + 1.0), min(size - r - 1.0, (third + 1) * size / 3 - 1.0)
            cx = float(rng.uniform(lo, hi))
        cy = float(rng.uniform(r + 1.0, size - r - 1.0))
        objects.append(SceneObject(shape, colour, cx, cy, r, 0.0))
    return objects


def _item_seed(seed: int, text: str) -> list[int]:
    return [int(seed), int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")]


@dataclass
class CaptionToScene:
    """Draw the scene a caption describes: a uint8 (size, size, 3) image; ``extra["scene"]`` is the whole
    :class:`~cyclegan_core.paired.sample.PairedSample` (mask, boxes, caption, audio, video)."""

    size: int = 64
    per_text: int = 1
    points_per_object: int = 0
    name: ClassVar[str] = "caption_to_scene"
    source: ClassVar[str] = "text"
    target: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        if self.size < 16:
            raise TranslatorError(f"caption_to_scene: size must be at least 16 pixels, got {self.size}")
        if self.per_text < 1:
            raise TranslatorError(f"caption_to_scene: per_text must be at least 1, got {self.per_text}")

    def settings(self) -> dict:
        return {"translator": self.name, "generator": "cycleaug-scenes-1", "size": self.size,
                "per_text": self.per_text, "points_per_object": self.points_per_object}

    def translate(self, batch: Sequence[str], seed: int) -> list[TranslatedItem]:
        out = []
        for i, caption in enumerate(batch):
            if not isinstance(caption, str):
                raise TranslatorError(f"caption_to_scene: item {i} is not a text: {caption!r}")
            rng = np.random.default_rng(_item_seed(seed, caption))
            for take in range(self.per_text):
                objects = place_objects(caption, self.size, rng)
                background = rng.uniform(0.05, 0.3, 3).astype(np.float32)
                scene = scene_from_objects(objects, background, f"caption-{i}-{take}", self.size,
                                           points_per_object=self.points_per_object)
                image = (scene.image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
                out.append(TranslatedItem(image, caption, i, {"take": take, "objects": len(objects)},
                                          {"scene": scene}))
        return out


def read_scene(image: np.ndarray, min_pixels: int = 4) -> list[SceneObject]:
    """The objects a uint8 (H, W, 3) scene image shows, read from its pixels alone.

    A pixel is an object's when its brightest channel is above 130 (scene backgrounds are at most
    0.3 x 255); it takes the nearest palette colour. Each connected component of one colour of at
    least ``min_pixels`` pixels is an object: a square when it fills more than 90% of its box, else a
    triangle when its upper half holds under 0.6 times the pixels of its lower half (the apex is on
    top), else a circle. Its centre is the mean pixel centre, its radius half its box's width.
    """
    from scipy import ndimage

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"read_scene needs an (H, W, 3) image, got shape {img.shape}")
    fg = img.max(axis=2) > 130
    dist = ((img[..., None, :].astype(np.float64) - _PALETTE) ** 2).sum(axis=-1)
    nearest = dist.argmin(axis=-1)
    objects = []
    for c, colour in enumerate(_PALETTE_NAMES):
        labels, count = ndimage.label(fg & (nearest == c))
        for k in range(1, count + 1):
            ys, xs = np.nonzero(labels == k)
            if len(xs) < min_pixels:
                continue
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            fill = len(xs) / ((x1 - x0) * (y1 - y0))
            mid = (y0 + y1) / 2.0
            upper, lower = int((ys + 0.5 < mid).sum()), int((ys + 0.5 > mid).sum())
            if fill > 0.9:
                shape = "square"
            elif upper < 0.6 * max(lower, 1):
                shape = "triangle"
            else:
                shape = "circle"
            objects.append(SceneObject(shape, colour, float(xs.mean() + 0.5), float(ys.mean() + 0.5),
                                       (x1 - x0) / 2.0, 0.0))
    return objects


@dataclass
class SceneToCaption:
    """Describe a scene image in the scene grammar from its pixels (:func:`read_scene`)."""

    min_pixels: int = 4
    name: ClassVar[str] = "scene_to_caption"
    source: ClassVar[str] = "image"
    target: ClassVar[str] = "text"

    def settings(self) -> dict:
        return {"translator": self.name, "reader": "palette-components-1", "min_pixels": self.min_pixels}

    def translate(self, batch: Sequence[np.ndarray], seed: int) -> list[TranslatedItem]:
        out = []
        for i, image in enumerate(batch):
            objects = read_scene(image, self.min_pixels)
            caption = describe(objects, np.asarray(image).shape[1]) if objects else ""
            out.append(TranslatedItem(caption, image, i, {"objects": len(objects)}))
        return out


def caption_agreement(caption: str, described: str) -> dict[str, float]:
    """How far ``described`` (a back-translation) says what ``caption`` says, per attribute on [0, 1].

    ``count``: the same number of objects; ``colour`` and ``shape``: the share of positions (left to
    right, out of the larger count) whose colour / shape agree; ``place``: the same third for a single
    object, the same left-to-right order of names for several. ``mean`` averages the four and
    ``exact`` is 1 when the two captions mean the same (the oracle's comparison). A caption outside
    the grammar agrees with nothing.
    """
    want, got = parse_caption(caption), parse_caption(described)
    if want[0] == "unparsed" or got[0] == "unparsed":
        scores = dict.fromkeys(ATTRIBUTES, 0.0)
    else:
        a = [want[1]] if want[0] == "single" else list(want[1])
        b = [got[1]] if got[0] == "single" else list(got[1])
        n = max(len(a), len(b))
        pairs = [(x.split(), y.split()) for x, y in zip(a, b, strict=False)]
        scores = {"count": float(len(a) == len(b)),
                  "colour": sum(x[1] == y[1] for x, y in pairs) / n,
                  "shape": sum(x[2] == y[2] for x, y in pairs) / n,
                  "place": 0.0 if want[0] != got[0] else
                  float(want[2] == got[2] if want[0] == "single" else want == got)}
    scores["mean"] = float(np.mean([scores[k] for k in ATTRIBUTES]))
    scores["exact"] = float(want == got and want[0] != "unparsed")
    return scores


def caption_to_scene(**settings) -> CaptionToScene:
    """The registered factory: ``CaptionToScene(**settings)``."""
    return CaptionToScene(**settings)


def scene_to_caption(**settings) -> SceneToCaption:
    """The registered factory: ``SceneToCaption(**settings)``."""
    return SceneToCaption(**settings)
