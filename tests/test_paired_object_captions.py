"""Caption edits for objects: a crop that removes an object takes its phrase out, a rotation that
changes a place, a relation or a list order rewrites it; the rules are YAML data and every edit is
recorded. The oracle (describe the transformed ground truth) checks them on generated scenes."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyclegan_core.paired.augment import SyncAugmenter
from cyclegan_core.paired.oracle import check_caption
from cyclegan_core.paired.scenes import make_scene
from cyclegan_core.paired.settings import PairedConfig
from cyclegan_core.paired.text import load_policy

PHRASES = [[2, "a red circle"], [1, "a blue square"], [3, "a green triangle"]]
THREE = "a red circle, a blue square and a green triangle, from left to right"


def test_removed_objects_phrases_go_and_the_rest_is_rewritten():
    rules = load_policy().objects
    centres = {2: 10.0, 1: 30.0, 3: 50.0}
    text, edits = rules.rewrite(THREE, PHRASES, centres, {1}, 60.0)
    assert text == "a red circle and a green triangle, from left to right"
    assert edits[0]["rule"] == "removed" and edits[0]["object"] == 1 and edits[0]["old"] == THREE
    text, _ = rules.rewrite(THREE, PHRASES, {2: 10.0}, {1, 3}, 60.0)
    assert text == "a red circle on the left"
    text, _ = rules.rewrite(THREE, PHRASES, {3: 50.0, 1: 30.0}, {2}, 60.0)
    assert text == "a blue square and a green triangle, from left to right"
    text, _ = rules.rewrite("a red circle left of a blue square", PHRASES[:2], {1: 5.0}, {2}, 60.0)
    assert text == "a blue square on the left"
    assert rules.rewrite("a red circle in the middle", PHRASES[:1], {}, {2}, 60.0)[0] == ""


def test_rotations_rewrite_places_relations_and_orders():
    rules = load_policy().objects
    assert rules.rewrite("a red circle left of a blue square", PHRASES[:2], {2: 40.0, 1: 20.0}, set(), 60.0)[0] \
        == "a red circle right of a blue square"
    assert rules.rewrite("a red circle on the left", PHRASES[:1], {2: 45.0}, set(), 60.0)[0] == \
        "a red circle on the right"
    assert rules.rewrite(THREE, PHRASES, {2: 50.0, 1: 30.0, 3: 10.0}, set(), 60.0)[0] == THREE.replace(
        "left to right", "right to left")
    text, edits = rules.rewrite(THREE, PHRASES, {2: 30.0, 1: 10.0, 3: 50.0}, set(), 60.0)
    assert text == "a blue square, a red circle and a green triangle, from left to right"
    assert edits == [{"rule": "spatial", "old": THREE, "new": text}]
    # A caption that does not name the objects as meta.phrases says is left alone.
    assert rules.rewrite("two shapes", PHRASES, {}, {1}, 60.0) == ("two shapes", [])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), size=st.integers(32, 64),
       geometry=st.sampled_from([{"hflip_p": 0.5, "affine_p": 0.0, "crop_scale": (0.15, 0.5)},
                                 {"hflip_p": 0.5, "crop": False, "affine_p": 1.0, "degrees": 90.0},
                                 {"hflip_p": 0.5, "affine_p": 1.0, "degrees": 45.0, "crop_scale": (0.3, 1.0)}]))
def test_caption_oracle_holds_after_crops_that_remove_objects_and_rotations(seed, size, geometry):
    rng = np.random.default_rng(seed)
    scenes = [make_scene(rng, f"s{i}", size=size, frames=1, points_per_object=0) for i in range(4)]
    cfg = PairedConfig(geometry=geometry, mixup={"p": 0.0}, alignment={"enabled": False},
                       dropout={"video": 0.0, "audio": 0.0, "caption": 0.0}, photometric={"jitter_p": 0.0})
    outs = SyncAugmenter.from_config(cfg).augment(scenes, seed)
    checks = [check_caption(o, r) for o, r in outs]
    wrong = [c for c in checks if not c.ok]
    # Ties at a third's boundary or between two centres are the only misses: at most one in four.
    assert len(wrong) <= 1, wrong
    for (o, r), src in zip(outs, scenes, strict=True):
        if o.caption != src.caption:  # every change is a recorded edit
            assert any("caption_edits" in e["effects"] or "caption_object_edits" in e["effects"] for e in r["ops"])
