"""The cross-modal gate's measurements: fidelity (read the generated item back into the source modality
and check it says what the source said) and distribution alignment (generated items against held-out
real target items, on a judge's features). Functions only: the gate that acts on them is wired later.

No teaching to the test. The real target samples are dealt, by content hash of their ids
(:func:`judge_role`), into three roles that never share a sample:

- ``training``: what a training-time judge may learn from (one a translator is tuned or filtered
  with, at training time);
- ``validation``: what the gate's fidelity judge learns from, a different model (another seed) on
  these other samples;
- ``held_out``: what no judge learns from: the reference that FID/KID and conformal realism measure
  generated items against, and the real baseline of fidelity (the judge's accuracy on real clips).

:func:`train_word_judges` trains the two judges and checks their samples are disjoint.

Speech. The word judge is a :class:`~cyclegan_core.classifiers.SmallCNN` on clips as spectrogram
pictures (:mod:`cyclegan_core.audio`: decoded, resampled, cut to the loudest window, log-mel on a
fixed dB range), predicting the spoken word. Fidelity of a generated clip is the probability the
judge gives the word of its text; realism is the judge's margin for that word (its logit less the
best other) ranked among the held-out real clips' margins for their own words
(:func:`~cyclegan_core.metrics.conformal_realism`: 0.5 on average for a real clip); FID and KID are
measured on the judge's 128-d penultimate features, scaled by the real features' RMS (:func:`alignment`).

Scenes. Fidelity of a drawn scene is the per-attribute agreement of its caption with what
:func:`~cyclegan_core.modality.scenes.read_scene` reads from the pixels (:func:`scene_fidelity`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..audio import Spectrogram, decode_audio, picture_to_uint8
from ..classifiers import SmallCNN, train_classifier
from ..config import AudioConfig
from ..metrics import conformal_realism, frechet_distance, kernel_inception_distance, softmax
from .scenes import caption_agreement, read_scene

ROLES = ("training", "validation", "held_out")
JUDGE_ROLES = ("training", "validation")


def judge_role(sample_id: str) -> str:
    """The role of one real target sample (see the module docstring), stable by content hash."""
    h = int.from_bytes(hashlib.sha256(f"cycleaug-modality-role:{sample_id}".encode()).digest()[:4], "little")
    return ROLES[h % 3]


def role_masks(sample_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Boolean masks over ``sample_ids``, one per role; every sample is in exactly one."""
    roles = np.asarray([judge_role(s) for s in sample_ids])
    return {r: roles == r for r in ROLES}


def word_of(text: str) -> str:
    """The word a transcript says, as the judge names its classes (stripped, lower case)."""
    return text.strip().lower()


def clip_pictures(wavs: Sequence[bytes], cfg: AudioConfig, batch: int = 256) -> np.ndarray:
    """uint8 spectrogram pictures (N, bins, frames, 1) of audio files, as the audio domains make them."""
    spec = Spectrogram(cfg)
    out = [np.zeros((0, cfg.bins, cfg.frames, 1), dtype=np.uint8)]
    for start in range(0, len(wavs), batch):
        waves = np.stack([decode_audio(w, cfg).wave for w in wavs[start:start + batch]])
        out.append(picture_to_uint8(spec.picture(waves)))
    return np.concatenate(out)


@dataclass
class WordJudge:
    """A spoken-word classifier, and the role of the samples it learned from."""

    net: SmallCNN
    words: tuple[str, ...]
    cfg: AudioConfig
    role: str
    seed: int
    trained_on: frozenset[str]  # the sample ids it learned from

    def classes(self, texts: Sequence[str]) -> np.ndarray:
        index = {w: i for i, w in enumerate(self.words)}
        unknown = sorted({word_of(t) for t in texts} - set(index))
        if unknown:
            raise ValueError(f"the word judge knows {', '.join(self.words)}; it cannot judge {', '.join(unknown)}")
        return np.asarray([index[word_of(t)] for t in texts], dtype=np.int64)

    def logits_and_features(self, wavs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        from ..judges import classify

        return classify(self.net, clip_pictures(wavs, self.cfg))

    def predict(self, wavs: Sequence[bytes]) -> list[str]:
        logits, _ = self.logits_and_features(wavs)
        return [self.words[i] for i in logits.argmax(axis=1)] if len(logits) else []


def target_scores(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the probability of the target class, and its margin (its logit less the best other)."""
    if not len(logits):
        return np.zeros(0), np.zeros(0)
    rows = np.arange(len(logits))
    prob = softmax(logits)[rows, target]
    others = logits.copy()
    others[rows, target] = -np.inf
    return prob, logits[rows, target] - others.max(axis=1)


def train_word_judge(wavs: Sequence[bytes], texts: Sequence[str], sample_ids: Sequence[str], role: str,
                     cfg: AudioConfig | None = None, words: Sequence[str] | None = None, epochs: int = 40,
                     seed: int = 0) -> WordJudge:
    """A word judge trained on the real clips of ``role`` only (``training`` or ``validation``)."""
    if role not in JUDGE_ROLES:
        raise ValueError(f"a judge learns from the {' or '.join(JUDGE_ROLES)} samples, never from {role!r}")
    if not len(wavs) == len(texts) == len(sample_ids):
        raise ValueError(f"{len(wavs)} clips, {len(texts)} texts and {len(sample_ids)} ids: one of each per clip")
    cfg = cfg or AudioConfig()
    keep = np.flatnonzero(role_masks(sample_ids)[role])
    vocabulary = tuple(words) if words is not None else tuple(sorted({word_of(texts[i]) for i in keep}))
    if len(vocabulary) < 2:
        raise ValueError(f"the {role} samples say {len(vocabulary)} distinct word(s); a judge needs two or more")
    index = {w: i for i, w in enumerate(vocabulary)}
    keep = np.asarray([i for i in keep if word_of(texts[i]) in index], dtype=np.int64)
    pictures = clip_pictures([wavs[i] for i in keep], cfg)
    labels = np.asarray([index[word_of(texts[i])] for i in keep], dtype=np.int64)
    net = train_classifier(pictures, labels, len(vocabulary), epochs, seed)
    return WordJudge(net, vocabulary, cfg, role, seed, frozenset(sample_ids[i] for i in keep))


def train_word_judges(wavs: Sequence[bytes], texts: Sequence[str], sample_ids: Sequence[str],
                      cfg: AudioConfig | None = None, epochs: int = 40, seed: int = 0) -> dict[str, WordJudge]:
    """The training-time and the validation judge: other samples, another seed, the same vocabulary."""
    words = tuple(sorted({word_of(t) for t in texts}))
    judges = {role: train_word_judge(wavs, texts, sample_ids, role, cfg, words, epochs, seed + k)
              for k, role in enumerate(JUDGE_ROLES)}
    shared = judges["training"].trained_on & judges["validation"].trained_on
    if shared:
        raise AssertionError(f"{len(shared)} samples taught both judges")  # role_masks makes this impossible
    return judges


@dataclass(frozen=True)
class SpeechFidelity:
    """Per clip: the judge's word, the probability it gives the text's word, and whether it is that word."""

    predicted: list[str]
    probability: np.ndarray
    margin: np.ndarray
    correct: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")


def speech_fidelity(judge: WordJudge, wavs: Sequence[bytes], texts: Sequence[str],
                    logits: np.ndarray | None = None) -> SpeechFidelity:
    """How far each clip says its text's word, to ``judge`` (give ``logits`` to skip the forward pass)."""
    target = judge.classes(texts)
    if logits is None:
        logits, _ = judge.logits_and_features(wavs)
    prob, margin = target_scores(logits, target)
    predicted = [judge.words[i] for i in logits.argmax(axis=1)] if len(logits) else []
    return SpeechFidelity(predicted, prob, margin, logits.argmax(axis=1) == target if len(logits) else
                          np.zeros(0, dtype=bool))


@dataclass(frozen=True)
class Alignment:
    """Generated items against held-out real ones on a judge's features and scores."""

    fid: float | None
    kid: float | None
    kid_std: float | None
    kid_subset: int | None
    realism: np.ndarray  # per generated item, conformal p-value among the real items' scores
    real_realism: float | None  # the same for the real items among themselves (0.5 by construction)

    @property
    def realism_mean(self) -> float:
        return float(np.mean(self.realism)) if len(self.realism) else float("nan")


def alignment(gen_features: np.ndarray, real_features: np.ndarray, gen_scores: np.ndarray,
              real_scores: np.ndarray, kid_subset: int = 1000, seed: int = 0) -> Alignment:
    """FID, KID and conformal realism of generated items against held-out real items.

    Both feature sets are divided by the real features' root-mean-square value first: a small
    judge's ReLU features run to tens, where KID's cubic kernel ``(x.y / d + 1)^3`` is dominated by
    a few large products and its unbiased estimate swings by more than its size (measured: -113 +-
    83 on 56 clips). On the unit scale that Inception's pool features have, it is a usable figure;
    FID is then in the same units whatever the judge.
    """
    from ..metrics import leave_one_out_realism

    gen_features, real_features = np.asarray(gen_features, np.float64), np.asarray(real_features, np.float64)
    scale = float(np.sqrt(np.mean(real_features ** 2))) if real_features.size else 1.0
    if scale > 0:
        gen_features, real_features = gen_features / scale, real_features / scale
    kid = kernel_inception_distance(gen_features, real_features, kid_subset, seed=seed)
    return Alignment(frechet_distance(gen_features, real_features), kid[0] if kid else None,
                     kid[1] if kid else None, kid[2] if kid else None,
                     conformal_realism(np.asarray(gen_scores, dtype=np.float64),
                                       np.asarray(real_scores, dtype=np.float64)),
                     leave_one_out_realism(np.asarray(real_scores, dtype=np.float64)))


def speech_alignment(judge: WordJudge, gen_wavs: Sequence[bytes], gen_texts: Sequence[str],
                     real_wavs: Sequence[bytes], real_texts: Sequence[str],
                     real_ids: Sequence[str] | None = None) -> tuple[Alignment, SpeechFidelity, SpeechFidelity]:
    """Alignment of generated clips with held-out real ones on ``judge``, and the judge's fidelity on
    both (the real figure is the baseline the generated one is read against).

    With ``real_ids`` the real clips must be held out: one the judge learned from is refused.
    """
    if real_ids is not None:
        seen = judge.trained_on.intersection(real_ids)
        if seen:
            raise ValueError(f"{len(seen)} of the reference clips taught the {judge.role} judge; "
                             "measure against held-out clips only")
    g_logits, g_feats = judge.logits_and_features(gen_wavs)
    r_logits, r_feats = judge.logits_and_features(real_wavs)
    gen = speech_fidelity(judge, gen_wavs, gen_texts, g_logits)
    real = speech_fidelity(judge, real_wavs, real_texts, r_logits)
    return alignment(g_feats, r_feats, gen.margin, real.margin), gen, real


def scene_fidelity(captions: Sequence[str], images: Sequence[np.ndarray]) -> list[dict[str, float]]:
    """Per scene: how far what its pixels show (:func:`read_scene`) says what its caption says."""
    from ..paired.scenes import describe

    out = []
    for caption, image in zip(captions, images, strict=True):
        objects = read_scene(image)
        out.append(caption_agreement(caption, describe(objects, np.asarray(image).shape[1]) if objects else ""))
    return out
