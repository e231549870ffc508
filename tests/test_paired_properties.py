"""Property tests (hypothesis) of synchronized augmentation on generated scenes: boxes keep enclosing
their objects' mask pixels after any geometry, a flip applied twice is the identity on every
modality, audio and video stay the same length after temporal ops, and replay is exact."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cyclegan_core.paired import record as rec
from cyclegan_core.paired.augment import SyncAugmenter, replay
from cyclegan_core.paired.ops import Geometry, SpeedChange, TemporalCrop
from cyclegan_core.paired.sample import PairedSample
from cyclegan_core.paired.scenes import make_scene, make_scenes
from cyclegan_core.paired.settings import PairedConfig
from cyclegan_core.paired.text import hflip_caption

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

geometries = st.builds(
    dict,
    hflip_p=st.sampled_from([0.0, 0.5, 1.0]),
    crop=st.booleans(),
    crop_scale=st.tuples(st.floats(0.2, 0.6), st.floats(0.6, 1.0)),
    output_size=st.none() | st.tuples(st.integers(12, 40), st.integers(12, 40)),
    affine_p=st.sampled_from([0.0, 1.0]),
    degrees=st.floats(0.0, 180.0),
    translate=st.floats(0.0, 0.4),
    scale=st.tuples(st.floats(0.5, 1.0), st.floats(1.0, 1.6)),
    shear=st.floats(0.0, 30.0),
)


@FAST
@given(geometry=geometries, seed=st.integers(0, 2**31), size=st.integers(16, 40))
def test_boxes_enclose_their_mask_pixels_after_any_geometry(geometry, seed, size):
    rng = np.random.default_rng(seed)
    scenes = [make_scene(rng, f"s{i}", size=size, frames=1) for i in range(3)]
    op = Geometry(**geometry)
    outs, effects = op.apply(scenes, op.draw(scenes, rng))
    for src, out, eff in zip(scenes, outs, effects, strict=True):
        oh, ow = out.mask.shape
        assert out.image.shape[-2:] == (oh, ow) and out.video.shape[-2:] == (oh, ow)
        assert bool((out.boxes[:, 0::2] >= 0).all() and (out.boxes[:, 0::2] <= ow).all())
        assert bool((out.boxes[:, 1::2] >= 0).all() and (out.boxes[:, 1::2] <= oh).all())
        kept = set(out.box_mask_ids.tolist())
        for box, obj in zip(out.boxes, out.box_mask_ids, strict=True):
            ys, xs = torch.nonzero(out.mask == obj, as_tuple=True)
            cx, cy = xs + 0.5, ys + 0.5  # pixel centres, in the boxes' continuous coordinates
            tol = 1e-3
            assert bool((cx >= box[0] - tol).all() and (cx <= box[2] + tol).all()), (box, eff)
            assert bool((cy >= box[1] - tol).all() and (cy <= box[3] + tol).all()), (box, eff)
        for obj in set(src.box_mask_ids.tolist()) - kept:  # a box was removed only if its object left
            assert not bool((out.mask == obj).any()), eff
        inside = ((out.keypoints[:, 0] >= 0) & (out.keypoints[:, 0] <= ow) &
                  (out.keypoints[:, 1] >= 0) & (out.keypoints[:, 1] <= oh))
        assert torch.equal(out.keypoint_visible, inside & src.keypoint_visible)


WORDS = ["left", "Left", "LEFT", "right", "Right", "leftmost", "rightwards", "clockwise", "counterclockwise",
         "lEft", "bright", "leftover", "a", "red", "circle", "of", "the", "-", ",", "hand", "lefthand"]


@FAST
@given(seed=st.integers(0, 2**31), words=st.lists(st.sampled_from(WORDS), max_size=12),
       seps=st.sampled_from([" ", "  ", "-", ", "]))
def test_flip_twice_is_identity_on_every_modality(seed, words, seps):
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, "s", size=24, frames=3).replace(caption=seps.join(words))
    flip = Geometry(hflip_p=1.0, crop=False, affine_p=0.0)
    once, eff = flip.apply([scene], flip.draw([scene], rng))
    twice, _ = flip.apply(once, flip.draw(once, rng))
    out = twice[0]
    assert eff[0]["mirrored"]
    assert torch.equal(once[0].audio, scene.audio.flip(0))  # stereo channels swapped by one flip
    for name in ("boxes", "keypoints", "points", "intrinsics"):  # float coordinates: up to rounding
        torch.testing.assert_close(getattr(out, name), getattr(scene, name), atol=1e-4, rtol=0)
    same = scene.replace(boxes=out.boxes, keypoints=out.keypoints, points=out.points, intrinsics=out.intrinsics)
    assert out.equals(same), out.differences(same)


def test_flip_rewrites_spatial_words_with_case_kept():
    assert hflip_caption("A red circle left of a blue square")[0] == "A red circle right of a blue square"
    assert hflip_caption("Left-hand side, RIGHTMOST lEft bright")[0] == "Right-hand side, LEFTMOST lEft bright"
    assert hflip_caption("turn clockwise")[0] == "turn counterclockwise"


@FAST
@given(frames=st.integers(2, 40), fps=st.sampled_from([5.0, 8.0, 12.5, 24.0, 29.97, 30.0]),
       sr=st.sampled_from([8000, 11025, 16000, 22050, 44100]), crop_p=st.sampled_from([0.0, 1.0]),
       speed_p=st.sampled_from([0.0, 1.0]), fraction=st.floats(0.05, 1.0), rate=st.floats(0.5, 2.0),
       seed=st.integers(0, 2**31))
@example(frames=31, fps=30.0, sr=11025, crop_p=1.0, speed_p=0.0, fraction=1.0, rate=1.0, seed=0)  # a .5 tie
def test_audio_length_follows_video_duration_after_temporal_ops(frames, fps, sr, crop_p, speed_p, fraction, rate,
                                                                 seed):
    n_audio = round(frames / fps * sr)
    sample = PairedSample("s", video=torch.rand(frames, 1, 4, 4), frame_rate=fps,
                          audio=torch.randn(2, n_audio), sample_rate=sr).validate()
    rng = np.random.default_rng(seed)
    for op in (TemporalCrop(p=crop_p, fraction=(fraction, fraction)), SpeedChange(p=speed_p, rate=(rate, rate))):
        params = op.draw([sample], rng)
        if params[0] is not None:
            sample = op.apply([sample], params)[0][0]
    t = sample.video.shape[0]
    assert sample.audio.shape == (2, round(t / fps * sr))
    if crop_p and not speed_p:
        assert t == min(frames, max(1, round(frames * fraction)))
    sample.validate()


def _config(hflip_p, affine_p, jitter_p, noise_p, mixup_p, drop_p, output_size):
    return PairedConfig(
        geometry={"hflip_p": hflip_p, "affine_p": affine_p, "output_size": output_size, "shear": 10.0},
        photometric={"jitter_p": jitter_p, "pixel_noise_p": noise_p, "audio_noise_p": noise_p},
        temporal={"crop_p": 0.5, "speed_p": 0.5},
        mixup={"p": mixup_p},
        dropout={"image": drop_p, "video": drop_p, "audio": drop_p, "caption": drop_p, "text_embedding": drop_p})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), hflip_p=st.sampled_from([0.0, 0.5, 1.0]), affine_p=st.sampled_from([0.0, 1.0]),
       jitter_p=st.sampled_from([0.0, 1.0]), noise_p=st.sampled_from([0.0, 1.0]),
       mixup_p=st.sampled_from([0.0, 0.5, 1.0]), drop_p=st.sampled_from([0.0, 0.5]),
       output_size=st.none() | st.just((20, 28)))
def test_replay_of_the_json_record_is_exact(seed, hflip_p, affine_p, jitter_p, noise_p, mixup_p, drop_p,
                                             output_size):
    sources = make_scenes(4, seed=seed % 1000, size=24, frames=3, frame_rate=6.0, sample_rate=4000)
    aug = SyncAugmenter.from_config(_config(hflip_p, affine_p, jitter_p, noise_p, mixup_p, drop_p, output_size))
    by_id = {s.sample_id: s for s in sources}
    for out, record in aug.augment(sources, seed, [f"{s.sample_id}.x" for s in sources]):
        again = replay(by_id[record["source_id"]], rec.loads(rec.dumps(record)), by_id)
        assert out.equals(again), (out.differences(again), [e["op"] for e in record["ops"]])
        out.validate()  # every output is a well-formed sample (lengths, shapes, flags)
