"""Mixup, modality dropout, Parquet round trips, bad input and configuration of the paired subpackage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from cyclegan_core.config import ConfigError, config_from_dict, load_config
from cyclegan_core.paired.augment import SyncAugmenter, replay
from cyclegan_core.paired.io import iter_rows, quantize, read_samples, row_to_sample, sample_to_row, write_samples
from cyclegan_core.paired.ops import Mixup, ModalityDropout
from cyclegan_core.paired.sample import PairedSample, PairedSampleError
from cyclegan_core.paired.scenes import describe, make_scenes
from cyclegan_core.paired.settings import PairedConfig


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(6, seed=3, size=24, frames=4, frame_rate=8.0, sample_rate=4000)


def test_mixup_uses_one_lambda_for_every_mixed_modality(scenes):
    a, b = scenes[0], scenes[1]
    out, effects = Mixup.mix(a, b, 0.3)
    assert sorted(effects["mixed"]) == ["audio", "image", "labels", "text_embedding", "video"]
    for key in effects["mixed"]:
        torch.testing.assert_close(getattr(out, key), 0.3 * getattr(a, key) + 0.7 * getattr(b, key))
    # Annotations that cannot be interpolated come whole from the dominant sample (lambda < 0.5: b).
    assert effects["dominant"] == "partner" and out.caption == b.caption and torch.equal(out.boxes, b.boxes)
    assert torch.equal(out.mask, b.mask) and out.sample_id == a.sample_id
    soft = Mixup.mix(a, b, 0.75)[0].labels
    assert float(soft.sum()) == pytest.approx(0.75 * float(a.labels.sum()) + 0.25 * float(b.labels.sum()))


def test_mixup_fits_a_shorter_partner_track_and_keeps_unmatched_shapes(scenes):
    a = scenes[0]
    b = scenes[1].replace(audio=scenes[1].audio[:, :100], video=scenes[1].video[:2])
    out, effects = Mixup.mix(a, b, 0.6)
    assert out.audio.shape == a.audio.shape and "audio" in effects["mixed"]
    shorter, _ = Mixup.mix(a, b, 0.4)  # b dominates: a's track is cut to b's length, with b's video
    assert shorter.audio.shape == b.audio.shape and torch.equal(shorter.video, b.video)
    torch.testing.assert_close(out.audio[:, 100:], 0.6 * a.audio[:, 100:])
    assert "video" in effects["kept_from_dominant"] and torch.equal(out.video, a.video)


def test_modality_dropout_masks_with_a_flag_and_keeps_one(scenes):
    drop = ModalityDropout(p={"image": 1.0, "video": 1.0, "audio": 1.0, "caption": 1.0, "text_embedding": 1.0})
    rng = np.random.default_rng(0)
    params = drop.draw(scenes, rng)
    outs, _ = drop.apply(scenes, params)
    for src, out, p in zip(scenes, outs, params, strict=True):
        assert len(p["dropped"]) == 4  # five present, one kept
        assert set(out.dropped) == set(p["dropped"])
        for m in p["dropped"]:
            value = getattr(out, m)
            assert value == "" if m == "caption" else (value.shape == getattr(src, m).shape and not value.any())
        kept = {"image", "video", "audio", "caption", "text_embedding"} - set(p["dropped"])
        (k,) = kept
        assert getattr(out, k) is getattr(src, k)
    with pytest.raises(ValueError, match="unknown modalities"):
        ModalityDropout(p={"boxes": 0.5})


def test_parquet_round_trip_keeps_every_modality(scenes, tmp_path):
    write_samples(scenes, tmp_path / "s.parquet")
    back = read_samples(tmp_path / "s.parquet")
    for s, r in zip(scenes, back, strict=True):
        stored = s.replace(image=quantize(s.image).float() / 255, video=quantize(s.video).float() / 255)
        assert r.equals(stored), r.differences(stored)
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert list(df.caption) == [s.caption for s in scenes]
    assert b"huggingface" in pq.read_schema(tmp_path / "s.parquet").metadata


def test_generated_scene_is_consistent(scenes):
    for s in scenes:
        objects = s.meta["objects"]
        assert s.boxes.shape[0] == len(objects) == int(s.mask.max())
        assert s.audio.shape[1] == round(s.video.shape[0] / s.frame_rate * s.sample_rate)
        names = [f"a {o['colour']} {o['shape']}" for o in sorted(objects, key=lambda o: o["center"][0])]
        assert s.caption.startswith(names[0]) and all(n in s.caption for n in names)
    two = [type("O", (), {"colour": "red", "shape": "circle", "cx": 5.0})(),
           type("O", (), {"colour": "blue", "shape": "square", "cx": 20.0})()]
    assert describe(two, 32) == "a red circle left of a blue square"


def test_bad_samples_and_files_are_named(scenes, tmp_path):
    with pytest.raises(PairedSampleError, match="'x'.*share"):
        PairedSample("x", image=torch.rand(3, 8, 8), video=torch.rand(2, 3, 9, 8), frame_rate=2.0).validate()
    with pytest.raises(PairedSampleError, match="same time span"):
        PairedSample("y", video=torch.rand(4, 1, 4, 4), frame_rate=4.0, audio=torch.rand(1, 50),
                     sample_rate=100).validate()
    row = sample_to_row(scenes[0])
    row["image"] = {"bytes": b"not a png", "path": "x.png"}
    with pytest.raises(PairedSampleError, match="data.parquet.*scene-00000.*cannot be decoded"):
        row_to_sample(row, "data.parquet")
    with pytest.raises(FileNotFoundError, match="nope"):
        list(iter_rows(tmp_path / "nope"))
    (tmp_path / "bad.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.parquet"):
        list(iter_rows(tmp_path / "bad.parquet"))


def test_replay_needs_the_mixup_partner(scenes):
    cfg = PairedConfig(mixup={"p": 1.0}, dropout={"video": 0, "audio": 0, "caption": 0})
    out, record = SyncAugmenter.from_config(cfg).augment(scenes[:2], seed=1)[0]
    assert record["ops"][-1]["op"] == "mixup"
    with pytest.raises(KeyError, match="partner source"):
        replay(scenes[0], record, {})
    assert replay(scenes[0], record, {s.sample_id: s for s in scenes}).equals(out)


def test_paired_config_defaults_match_params_yaml_and_reject_bad_values():
    assert load_config("params.yaml").paired == PairedConfig()
    with pytest.raises(ConfigError, match="paired.geometry.crop_scale"):
        config_from_dict({"paired": {"geometry": {"crop_scale": [0.9, 0.5]}}})
    with pytest.raises(ConfigError, match="paired.dropout.sound.*unknown key"):
        config_from_dict({"paired": {"dropout": {"sound": 0.2}}})
    with pytest.raises(ConfigError, match="paired.device"):
        config_from_dict({"paired": {"device": "tpu"}})


def test_photometric_and_noise_touch_only_the_signal_modalities(scenes):
    from cyclegan_core.paired.ops import AudioNoise, Photometric, PixelNoise

    rng = np.random.default_rng(5)
    for op in (Photometric(p=1.0, brightness=0.5, hue=0.2), PixelNoise(p=1.0, std=(0.1, 0.1)),
               AudioNoise(p=1.0, snr_db=(5.0, 5.0))):
        outs, effects = op.apply(scenes, op.draw(scenes, rng))
        signal = {"image", "video"} if not isinstance(op, AudioNoise) else {"audio"}
        for src, out, eff in zip(scenes, outs, effects, strict=True):
            # A large hue shift may also rename colour words -- a recorded caption edit, never silent.
            edited = {"caption"} if "caption_edits" in eff else set()
            assert set(src.differences(out)) == signal | edited, op.name
            if "image" in signal:
                assert float(out.image.min()) >= 0.0 and float(out.image.max()) <= 1.0
