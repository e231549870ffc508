"""Modality translation (issue 24, library side): the translator registry and ``module:function``
resolution, text to speech, caption to scene and back, and the fidelity judges."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from cyclegan_core.modality import TranslatedItem, TranslatorError, available, register, resolve_translator
from cyclegan_core.modality.fidelity import ROLES, judge_role, role_masks, scene_fidelity
from cyclegan_core.modality.scenes import caption_agreement, read_scene
from cyclegan_core.paired.scenes import COLOURS, SHAPES, describe, make_scenes


class Reverse:
    """A plug-in translator of one's own (text -> a blank image), for the registry tests."""

    name, source, target = "reverse", "text", "image"

    def settings(self) -> dict:
        return {"translator": self.name}

    def translate(self, batch, seed):
        return [TranslatedItem(np.zeros((4, 4, 3), np.uint8), t, i) for i, t in enumerate(batch)]


def make_reverse(**settings) -> Reverse:
    return Reverse()


def make_nothing() -> object:
    return object()


def make_same() -> Reverse:
    r = Reverse()
    r.target = "text"
    return r


NOT_A_FUNCTION = 3


def test_registry_resolves_builtins_names_and_module_function_strings():
    assert {"text_to_speech", "caption_to_scene", "scene_to_caption"} <= set(available())
    t = resolve_translator("caption_to_scene", {"size": 32})
    assert (t.name, t.source, t.target, t.settings()["size"]) == ("caption_to_scene", "text", "image", 32)
    own = resolve_translator(f"{__name__}:make_reverse")
    assert own.translate(["a"], 0)[0].source == "a"
    register("reverse-test", make_reverse)
    assert "reverse-test" in available() and resolve_translator("reverse-test").name == "reverse"


@pytest.mark.parametrize(("spec", "kwargs", "says"), [
    ("no_such_translator", None, "unknown translator 'no_such_translator': known are"),
    ("no_such_module_xyz:make", None, "module 'no_such_module_xyz' cannot be imported"),
    (f"{__name__}:missing", None, "has no 'missing'"),
    (f"{__name__}:NOT_A_FUNCTION", None, "is a int, not a callable factory"),
    (f"{__name__}:make_nothing", None, "without name, source, target, settings, translate"),
    (f"{__name__}:make_same", None, "source and target are both 'text'"),
    ("caption_to_scene", {"colour": "red"}, "its settings do not fit the factory"),
    ("a:b:c", None, "exactly one ':'"),
    ("", None, "a registered name or 'module:function'"),
])
def test_resolution_errors_name_what_is_wrong(spec, kwargs, says):
    with pytest.raises(TranslatorError, match=re.escape(says)):
        resolve_translator(spec, kwargs)


def test_builtin_names_cannot_be_taken():
    with pytest.raises(TranslatorError, match="built in"):
        register("text_to_speech", make_reverse)


def test_judge_roles_are_disjoint_and_stable():
    ids = [f"clip-{i}" for i in range(300)]
    masks = role_masks(ids)
    assert sum(m.astype(int) for m in masks.values()).tolist() == [1] * 300
    assert all(40 < m.sum() < 160 for m in masks.values())  # each role gets a share
    assert [judge_role(s) for s in ids[:20]] == [judge_role(s) for s in ids[:20]]
    assert set(ROLES) == set(masks)


# --- scenes -----------------------------------------------------------------------------------------------
def test_reader_describes_the_generated_scenes():
    scenes = make_scenes(60, seed=3, points_per_object=0)
    images = [(s.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for s in scenes]
    agree = [caption_agreement(s.caption, describe(read_scene(im), 64)) for s, im in zip(scenes, images, strict=True)]
    assert np.mean([a["exact"] for a in agree]) >= 0.95


def test_caption_scene_caption_agrees_and_a_wrong_caption_does_not():
    scenes = make_scenes(40, seed=5, points_per_object=0)
    captions = [s.caption for s in scenes]
    drawn = resolve_translator("caption_to_scene").translate(captions, seed=1)
    back = resolve_translator("scene_to_caption").translate([d.output for d in drawn], seed=0)
    agree = [caption_agreement(c, b.output) for c, b in zip(captions, back, strict=True)]
    assert np.mean([a["mean"] for a in agree]) >= 0.95
    assert np.mean([a["exact"] for a in agree]) >= 0.9
    # Against another scene's caption, most attributes disagree: the agreement is not a constant.
    other = [caption_agreement(c, b.output) for c, b in zip(captions[1:] + captions[:1], back, strict=True)]
    assert np.mean([a["exact"] for a in other]) < 0.3
    assert drawn[0].extra["scene"].caption is not None


def test_broken_scenes_fail_the_fidelity_check():
    captions = ["a red circle left of a blue square", "a green triangle on the right"]
    drawn = resolve_translator("caption_to_scene").translate(captions, seed=0)
    good = scene_fidelity(captions, [d.output for d in drawn])
    assert [g["exact"] for g in good] == [1.0, 1.0]
    blank = [np.zeros_like(d.output) for d in drawn]
    assert [g["mean"] for g in scene_fidelity(captions, blank)] == [0.0, 0.0]
    swapped = [d.output[:, ::-1] for d in drawn]  # mirrored: left and right are wrong
    bad = scene_fidelity(captions, swapped)
    assert [b["place"] for b in bad] == [0.0, 0.0] and bad[0]["count"] == 1.0


NAMES = st.tuples(st.sampled_from(sorted(COLOURS)), st.sampled_from(SHAPES))


@settings(max_examples=40, deadline=None)
@given(names=st.lists(NAMES, min_size=1, max_size=4), place=st.sampled_from(["left", "middle", "right"]),
       seed=st.integers(0, 2**16))
def test_every_object_named_is_drawn_where_the_caption_says(names, place, seed):
    phrases = [f"a {c} {s}" for c, s in names]
    if len(phrases) == 1:
        caption = f"{phrases[0]} {'in the middle' if place == 'middle' else 'on the ' + place}"
    elif len(phrases) == 2:
        caption = f"{phrases[0]} left of {phrases[1]}"
    else:
        caption = ", ".join(phrases[:-1]) + f" and {phrases[-1]}, from left to right"
    item = resolve_translator("caption_to_scene").translate([caption], seed)[0]
    scene = item.extra["scene"]
    objects = scene.meta["objects"]
    assert [(o["colour"], o["shape"]) for o in sorted(objects, key=lambda o: o["center"][0])] == names
    image = item.output
    for o in objects:  # each object's own pixels are drawn in its colour
        mask = scene.mask.numpy() == o["id"]
        assert mask.sum() > 10
        assert (image[mask] == np.asarray(COLOURS[o["colour"]], np.uint8)).all()
    if len(names) == 1:
        cx = objects[0]["center"][0]
        assert {"left": cx < 64 / 3, "middle": 64 / 3 <= cx <= 2 * 64 / 3, "right": cx > 2 * 64 / 3}[place]
    assert caption_agreement(caption, resolve_translator("scene_to_caption").translate([image], 0)[0].output)[
        "exact"] == 1.0


def test_captions_outside_the_grammar_are_refused():
    with pytest.raises(TranslatorError, match="not in the scene grammar"):
        resolve_translator("caption_to_scene").translate(["a dog on a sofa"], 0)
    with pytest.raises(TranslatorError, match="not drawable"):
        resolve_translator("caption_to_scene").translate(["a purple circle on the left"], 0)


# --- speech -------------------------------------------------------------------------------------------------
def test_text_to_speech_makes_wavs_at_the_rate_that_differ_by_voice():
    pytest.importorskip("espeakng_loader")
    tts = resolve_translator("text_to_speech", {"voices": ["en+m1", "en+f3", "en+m5"], "per_text": 3,
                                                "sample_rate": 16_000})
    items = tts.translate(["yes", "stop"], seed=0)
    assert len(items) == 6 and [i.index for i in items] == [0, 0, 0, 1, 1, 1]
    waves = []
    for item in items:
        info = sf.info(io.BytesIO(item.output))
        assert (info.format, info.samplerate, info.channels) == ("WAV", 16_000, 1)
        wave, _ = sf.read(io.BytesIO(item.output))
        assert 0.1 < len(wave) / 16_000 < 2.0 and np.abs(wave).max() > 0.05
        waves.append(wave)
    assert len({i.params["voice"] for i in items[:3]}) == 3  # three takes, three voices
    n = min(len(waves[0]), len(waves[1]))
    assert not np.allclose(waves[0][:n], waves[1][:n], atol=1e-3)
    same = [tts.speak("yes", v, 175, 50) for v in ("en+m1", "en+f3")]  # the voice alone changes the clip
    assert same[0] != same[1]
    assert tts.settings()["voices"] == ["en+m1", "en+f3", "en+m5"]
    with pytest.raises(TranslatorError, match="do not fit the factory"):
        resolve_translator("text_to_speech", {"target": "image"})  # name, source and target are fixed
    assert tts.plan("yes", 0) == [i.params for i in items[:3]]  # the same choices in any batch
    assert tts.translate(["stop"], seed=0)[0].params == items[3].params


@pytest.mark.slow
def test_word_judge_scores_the_right_word_high_and_another_low():
    pytest.importorskip("espeakng_loader")
    from cyclegan_core.modality.fidelity import speech_alignment, speech_fidelity, train_word_judges
    from cyclegan_core.modality.speech import TextToSpeech

    voices = tuple(f"en+m{k}" for k in range(1, 8)) + tuple(f"en+f{k}" for k in range(1, 6))
    words = ["yes", "no", "stop", "go"]
    items = TextToSpeech(voices=voices, per_text=36).translate(words, seed=3)
    wavs, texts = [i.output for i in items], [i.source for i in items]
    ids = [f"{i.source}-{i.params['voice']}-{i.params['take']}" for i in items]
    judges = train_word_judges(wavs, texts, ids, epochs=40)
    assert not judges["training"].trained_on & judges["validation"].trained_on
    held = role_masks(ids)["held_out"]
    hw = [w for w, h in zip(wavs, held, strict=True) if h]
    ht = [t for t, h in zip(texts, held, strict=True) if h]
    judge = judges["validation"]
    right = speech_fidelity(judge, hw, ht)
    wrong = speech_fidelity(judge, hw, [words[(words.index(t) + 1) % 4] for t in ht])
    # About 50 clips per judge: measured 0.75 and 0.91 word accuracy (chance 0.25), median probability
    # of the right word 0.9, of the next word 0.02 (eSpeak's jitter moves these a little between runs).
    assert right.accuracy >= 0.6
    assert np.median(right.probability) > 0.7 and np.median(wrong.probability) < 0.1
    assert right.probability.mean() > 5 * wrong.probability.mean()
    with pytest.raises(ValueError, match="taught the validation judge"):
        speech_alignment(judge, hw, ht, wavs, texts, ids)
