"""Alignment checks: failing draws are redrawn, then the sample is kept unaugmented or dropped, and the
record says which checks rejected how many draws."""

from __future__ import annotations

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from cyclegan_core.paired.align import AlignmentPolicy, check_alignment
from cyclegan_core.paired.augment import SyncAugmenter, replay
from cyclegan_core.paired.scenes import make_scenes
from cyclegan_core.paired.settings import PairedConfig

QUIET = {"mixup": {"p": 0.0}, "dropout": {"video": 0.0, "audio": 0.0, "caption": 0.0},
         "photometric": {"jitter_p": 0.0, "pixel_noise_p": 0.0, "audio_noise_p": 0.0},
         "temporal": {"crop_p": 0.0, "speed_p": 0.0}}


def _cfg(geometry: dict, alignment: dict) -> PairedConfig:
    return PairedConfig(geometry=geometry, alignment=alignment, **QUIET)


@settings(max_examples=10, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(seed=st.integers(0, 2**31), fraction=st.sampled_from([0.3, 0.6, 0.9]), on_fail=st.sampled_from(["keep", "drop"]),
       redraws=st.integers(0, 3), keypoints=st.sampled_from([0.0, 0.8]))
def test_every_output_passes_or_is_kept_or_dropped_with_the_reason(seed, fraction, on_fail, redraws, keypoints):
    scenes = make_scenes(6, seed=seed % 997, size=32, frames=1)
    geometry = {"crop_scale": [0.2, 0.5], "affine_p": 1.0, "translate": 0.4, "degrees": 90.0}
    alignment = {"min_object_fraction": fraction, "min_keypoint_fraction": keypoints, "max_redraws": redraws,
                 "on_fail": on_fail}
    policy = AlignmentPolicy(fraction, keypoints, redraws, on_fail)
    by_id = {s.sample_id: s for s in scenes}
    for out, record in SyncAugmenter.from_config(_cfg(geometry, alignment)).augment(scenes, seed):
        src = by_id[record["source_id"]]
        info = record.get("alignment", {"outcome": "augmented", "rejected": {}})
        assert sum(info["rejected"].values()) <= (redraws + 1) * 2
        if "draws" in info:  # the draws made; every rejected one failed at least one check
            failed = info["draws"] - (info["outcome"] == "augmented")
            assert failed >= 1 and max(info["rejected"].values()) <= failed <= sum(info["rejected"].values())
            assert info["outcome"] == "augmented" or info["draws"] == redraws + 1
        if info["outcome"] == "augmented":
            assert out is not None and check_alignment(src, out, record, policy) == {}
            assert replay(src, record, by_id).equals(out)
        elif info["outcome"] == "kept_source":
            assert on_fail == "keep" and record["ops"] == [] and info["reasons"]
            assert out.equals(src.replace(sample_id=record["sample_id"]))
        else:
            assert on_fail == "drop" and out is None and info["reasons"]


def test_an_object_pushed_out_of_the_frame_is_rejected_and_counted():
    scenes = make_scenes(8, seed=1, size=32, frames=1)
    # Large translations push objects out of the frame for most draws.
    geometry = {"hflip_p": 0.0, "crop": False, "affine_p": 1.0, "translate": 1.0, "degrees": 0.0}
    outs = SyncAugmenter.from_config(_cfg(geometry, {"min_object_fraction": 0.9, "max_redraws": 1,
                                                     "on_fail": "drop"})).augment(scenes, 0)
    rejected = sum(r.get("alignment", {}).get("rejected", {}).get("object_in_frame", 0) for _, r in outs)
    assert rejected >= 4
    assert any(o is None for o, _ in outs)
    # With the checks off the same draws leave objects (partly) outside the frame, unflagged.
    off = SyncAugmenter.from_config(_cfg(geometry, {"enabled": False})).augment(scenes, 0)
    assert all(o is not None and "alignment" not in r for o, r in off)
    policy = AlignmentPolicy(0.9, 0.0, 1, "drop")
    src = {s.sample_id: s for s in scenes}
    assert sum(bool(check_alignment(src[r["source_id"]], o, r, policy)) for o, r in off) >= 4
