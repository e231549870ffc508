"""Modality translation figures (issue 24): text -> speech with eSpeak NG judged by a spoken-word
classifier trained on real clips, and caption -> scene -> caption agreement.

Speech. "Real" target clips are the bundled speech data's kind (eSpeak NG, the preset's 12 voices
en+m1..m7 and en+f1..f5, ``--takes`` takes per voice and word at jittered rates and pitches), dealt
into the three roles of :mod:`cyclegan_core.modality.fidelity` by content hash: the training-time
judge and the validation judge learn from two disjoint thirds (other seeds), the last third is held
out. The translator speaks each bundled word in a voice set: ``seen`` (two of the real voices),
``unseen`` (en-us variants no real clip uses). Figures: the validation judge's word accuracy on the
generated clips against its accuracy on the held-out real clips, FID and KID of the generated clips'
judge features against the held-out real clips', and their mean conformal realism (0.5 = like a real
clip); the training-time judge's figures beside it, and as the floor the validation judge's figures
for real clips it never learned from (the training-time judge's third).

Scenes. The captions of ``--scenes`` generated scenes are drawn by ``caption_to_scene`` and read back
by ``scene_to_caption``; agreement per attribute, with a mirrored drawing as a control.

    PYTHONPATH=$PWD python benchmarks/modality_translation.py [--takes 3 --scenes 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cyclegan_core.modality import resolve_translator
from cyclegan_core.modality.fidelity import (
    ROLES,
    role_masks,
    scene_fidelity,
    speech_alignment,
    speech_fidelity,
    train_word_judges,
)
from cyclegan_core.modality.scenes import ATTRIBUTES
from cyclegan_core.paired.scenes import make_scenes
from cyclegan_core.voices import WORDS, VoicesPreset

VOICE_SETS = {"seen": ("en+m3", "en+f2"), "unseen": ("en-us+croak", "en-us+klatt", "en-us+m8", "en-us+f4")}


def speech(takes: int, per_text: int, epochs: int) -> None:
    preset = VoicesPreset()
    voices = preset.voices_a + preset.voices_b
    t0 = time.perf_counter()
    real = resolve_translator("text_to_speech", {"voices": list(voices), "per_text": takes * len(voices)})
    items = real.translate(list(WORDS), seed=11)
    wavs, texts = [i.output for i in items], [i.source for i in items]
    ids = [f"{i.source}|{i.params['voice']}|{i.params['take']}" for i in items]
    masks = role_masks(ids)
    print(f"real clips: {len(items)} ({len(WORDS)} words x {len(voices)} voices x {takes} takes), "
          + ", ".join(f"{r} {int(masks[r].sum())}" for r in ROLES) + f"; {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    judges = train_word_judges(wavs, texts, ids, epochs=epochs)
    print(f"two judges trained ({epochs} epochs each): {time.perf_counter() - t0:.1f} s")
    held = np.flatnonzero(masks["held_out"])
    hw, ht, hi = [wavs[i] for i in held], [texts[i] for i in held], [ids[i] for i in held]
    print("\n| voices | texts x takes | judge | word acc., real held-out | word acc., generated "
          "| FID | KID | realism |\n|---|---|---|---|---|---|---|---|")
    for name, vs in VOICE_SETS.items():
        tts = resolve_translator("text_to_speech", {"voices": list(vs), "per_text": per_text})
        gen = tts.translate(list(WORDS), seed=1)
        gw, gt = [g.output for g in gen], [g.source for g in gen]
        for role in ("validation", "training"):
            al, gf, rf = speech_alignment(judges[role], gw, gt, hw, ht, hi)
            print(f"| {name} ({', '.join(vs)}) | {len(WORDS)} x {per_text} | {role} | {rf.accuracy:.3f} | "
                  f"{gf.accuracy:.3f} | {al.fid:.3f} | {al.kid:.4f} ± {al.kid_std:.4f} | {al.realism_mean:.3f} |")
    # The floor: real clips the validation judge never learned from (the training-time judge's third).
    tr = np.flatnonzero(masks["training"])
    al, gf, rf = speech_alignment(judges["validation"], [wavs[i] for i in tr], [texts[i] for i in tr], hw, ht, hi)
    print(f"| real clips (the training-time judge's third) | {len(tr)} | validation | {rf.accuracy:.3f} | "
          f"{gf.accuracy:.3f} | {al.fid:.3f} | {al.kid:.4f} ± {al.kid_std:.4f} | {al.realism_mean:.3f} |")
    # A broken translator: every text gets the clip of another word.
    tts = resolve_translator("text_to_speech", {"voices": list(VOICE_SETS["seen"]), "per_text": per_text})
    gen = tts.translate(list(WORDS), seed=1)
    shifted = [WORDS[(WORDS.index(g.source) + 1) % len(WORDS)] for g in gen]
    broken = speech_fidelity(judges["validation"], [g.output for g in gen], shifted)
    print(f"| broken (clip of the next word) | {len(WORDS)} x {per_text} | validation | | {broken.accuracy:.3f} "
          "| | | |")


def scenes(n: int) -> None:
    t0 = time.perf_counter()
    captions = [s.caption for s in make_scenes(n, seed=2, points_per_object=0)]
    drawn = resolve_translator("caption_to_scene").translate(captions, seed=0)
    images = [d.output for d in drawn]
    rows = {"caption -> scene -> caption": scene_fidelity(captions, images),
            "control: scene mirrored": scene_fidelity(captions, [im[:, ::-1] for im in images])}
    print(f"\nscenes: {n} captions, {time.perf_counter() - t0:.1f} s\n")
    print("| drawing | " + " | ".join(ATTRIBUTES) + " | mean | exact |\n" + "|---" * (len(ATTRIBUTES) + 3) + "|")
    for name, agree in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean([a[k] for a in agree]):.3f}"
                                          for k in (*ATTRIBUTES, "mean", "exact")) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--takes", type=int, default=3, help="real clips per voice and word")
    p.add_argument("--per-text", type=int, default=4, help="generated clips per word")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--scenes", type=int, default=500)
    a = p.parse_args()
    speech(a.takes, a.per_text, a.epochs)
    scenes(a.scenes)


if __name__ == "__main__":
    main()
