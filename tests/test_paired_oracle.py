"""The generated-scene oracle: an augmented caption must say what the transformed ground truth says."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cyclegan_core.paired.augment import SyncAugmenter
from cyclegan_core.paired.oracle import check_caption, parse_caption, transformed_objects
from cyclegan_core.paired.scenes import _render, make_scene
from cyclegan_core.paired.settings import PairedConfig


def test_parse_caption_reads_meaning_not_wording():
    assert parse_caption("a red circle right of a blue square") == parse_caption("a blue square left of a red circle")
    three = "a red circle, a blue square and a green triangle, from left to right"
    flipped = "a red circle, a blue square and a green triangle, from right to left"
    assert parse_caption(three)[1] == tuple(reversed(parse_caption(flipped)[1]))
    assert parse_caption("a red circle on the left") == ("single", "a red circle", "left")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), size=st.integers(24, 48), hflip_p=st.sampled_from([0.0, 1.0]))
@example(seed=34, size=33, hflip_p=1.0)  # a centre flipped exactly onto the 2/3 boundary is "in the middle"
def test_flipped_scene_caption_and_mask_match_the_transformed_ground_truth(seed, size, hflip_p):
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, "s", size=size, frames=1)
    cfg = PairedConfig(geometry={"hflip_p": hflip_p, "crop": False, "affine_p": 0.0}, mixup={"p": 0.0},
                       dropout={"video": 0.0, "audio": 0.0, "caption": 0.0}, photometric={"jitter_p": 0.0})
    ((out, record),) = SyncAugmenter.from_config(cfg).augment([scene], seed)
    check = check_caption(out, record)
    assert check is not None and check.ok, check
    objects = transformed_objects(out, record)
    _, ids = _render(objects, size, size, np.zeros(3, dtype=np.float32))
    assert torch.equal(torch.from_numpy(ids), out.mask)  # re-rendered ground truth == warped mask
    centres = torch.tensor([[o.cx, o.cy] for o in objects], dtype=torch.float32)
    torch.testing.assert_close(out.keypoints[0::2], centres, atol=1e-4, rtol=0)


def test_text_policy_is_yaml_data_and_edits_are_recorded():
    from cyclegan_core.paired.text import load_policy

    policy = load_policy()
    assert policy.mirror["left"] == "right" and policy.mirror["right"] == "left"
    assert policy.hue_shifted("a red circle", 0.05) == ("a red circle", [])  # below min_shift_degrees
    assert policy.hue_shifted("a Red circle and a white square", 1 / 3)[0] == "a Green circle and a white square"
    assert policy.speed_changed("it moves slowly", 1.2)[0] == "it moves quickly"
    assert policy.speed_changed("it moves slowly", 1.0)[0] == "it moves slowly"


def test_large_hue_shifts_rename_colours_to_the_colour_the_object_now_has():
    from cyclegan_core.paired.oracle import check_colours
    from cyclegan_core.paired.scenes import make_scenes

    scenes = make_scenes(48, seed=4, size=32, frames=1)
    cfg = PairedConfig(geometry={"hflip_p": 0.0, "crop": False, "affine_p": 0.0}, mixup={"p": 0.0},
                       dropout={"video": 0.0, "audio": 0.0, "caption": 0.0},
                       photometric={"jitter_p": 1.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
                                    "hue": 0.5, "pixel_noise_p": 0.0}, temporal={"crop_p": 0.0, "speed_p": 0.0})
    outs = SyncAugmenter.from_config(cfg).augment(scenes, 7)
    pairs = [p for o, _ in outs for p in check_colours(o)]
    edited = sum("caption_edits" in e.get("effects", {}) for _, r in outs for e in r["ops"])
    assert edited >= 20 and len(pairs) >= 40
    accuracy = sum(a == b for a, b in pairs) / len(pairs)
    assert accuracy >= 0.8, accuracy  # misses: hues near a boundary between two named colours
