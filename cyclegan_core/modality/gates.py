"""The cross-modal gates of a modality run, one per target modality: each reads the real target collection,
deals it into the roles of :func:`~cyclegan_core.modality.fidelity.judge_role`, learns its judge from the
``validation`` role only, and scores generated items against the ``held_out`` role.

- :class:`SpeechGate` (``text -> speech``): a spoken-word judge (:func:`~.fidelity.train_word_judge`)
  reads each clip back into a word (fidelity: the probability of the text's word; read back: its top
  word is the text's word); realism is its margin for that word among the held-out real clips'
  margins, FID/KID are on its 128-d features. The real collection: folders of clips, each with a
  ``labels.csv`` (``path`` and the text column).
- :class:`SceneGate` (``text -> image``, captions to scenes): the caption oracle reads each image back
  from its pixels (:func:`~.scenes.read_scene`; fidelity: the caption agreement's mean over count,
  colour, shape and place; read back: the described caption means the caption); a small CNN trained
  on the validation role's real scenes to count their objects gives the features (FID/KID) and the
  margin (realism) for the count the caption names. The real collection: Parquet files with an
  ``image`` column (``{bytes, path}`` PNG, as the paired package and Hugging Face write it) and the
  caption column.

Each gate gives the run: ``labels`` (class names), ``real_accuracy`` (the read-back accuracy on held-out
real items), ``check_sources``, ``encode`` (the bytes a row stores and its id hashes), ``score``,
``media`` (the published columns of the generated modality), and for the utility figures
(:mod:`cyclegan_core.modality.utility`) ``pictures`` (what a classifier sees of an item) with the
labelled ``training_set`` (the training role's real items) and ``held_set``.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from ..config import AudioConfig
from ..judges import classify
from ..metrics import conformal_realism
from .fidelity import ROLES, clip_pictures, role_masks, target_scores, train_word_judge, word_of
from .settings import ModalityConfig, ModalityTargetConfig
from .translators import TranslatedItem, Translator, TranslatorError

MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
DEFAULT_TARGET = ModalityTargetConfig().collections
DEFAULT_SCENES = "data/raw/scenes/scenes.parquet"  # made (600 generated scenes) when a scenes run names it


class ModalityError(ValueError):
    """A modality run that cannot start: the message says which setting or file is wrong."""


def _held_out(ids: Sequence[str], n: int) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    masks = role_masks(ids)
    held = np.flatnonzero(masks["held_out"])
    if len(held) < 2:
        raise ModalityError(f"the real target collections hold {n} items, {len(held)} of them held out; "
                            "alignment needs more real items")
    return {r: int(masks[r].sum()) for r in ROLES}, np.flatnonzero(masks["validation"]), held


# --- speech ---------------------------------------------------------------------------------------------
def ensure_default_target(t: ModalityTargetConfig) -> list[str]:
    """Make the bundled speech preset where the default target folders point, when missing."""
    if tuple(t.collections) != DEFAULT_TARGET or all((Path(c) / "labels.csv").exists() for c in t.collections):
        return []
    from ..voices import make_voices_data

    return make_voices_data(*DEFAULT_TARGET)


def read_speech_target(t: ModalityTargetConfig) -> tuple[list[bytes], list[str], list[str]]:
    """(clips, texts, ids) of the real target collections; an id is the sha256 of the clip's bytes."""
    wavs, texts, ids, seen = [], [], [], set()
    for folder in t.collections:
        root = Path(folder)
        labels = root / "labels.csv"
        if not labels.is_file():
            raise ModalityError(f"modality.target.collections: {labels} not found; a real target collection is a "
                                f"folder of clips with a labels.csv naming each file's path and its {t.text_column}")
        with open(labels, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not {"path", t.text_column} <= set(reader.fieldnames or ()):
                raise ModalityError(f"{labels}: needs the columns path and {t.text_column} "
                                    f"(modality.target.text_column); it has {', '.join(reader.fieldnames or ())}")
            for row in reader:
                data = (root / row["path"]).read_bytes()
                sid = hashlib.sha256(data).hexdigest()
                if sid not in seen:
                    seen.add(sid)
                    wavs.append(data)
                    texts.append(row[t.text_column])
                    ids.append(sid)
    return wavs, texts, ids


class SpeechGate:
    """Fidelity and alignment of generated clips (see the module docstring)."""

    media_column = "audio"

    def __init__(self, t: ModalityTargetConfig, audio: AudioConfig) -> None:
        wavs, texts, ids = read_speech_target(t)
        self.roles, _, held = _held_out(ids, len(wavs))
        words = sorted({word_of(x) for x in texts})
        self.judge = train_word_judge(wavs, texts, ids, "validation", audio, words, t.judge_epochs, t.judge_seed)
        self.audio = audio
        train = np.flatnonzero(role_masks(ids)["training"])
        self.training_set = (clip_pictures([wavs[i] for i in train], audio),
                             self.judge.classes([texts[i] for i in train]))
        held_pictures = clip_pictures([wavs[i] for i in held], audio)
        logits, self.real_features = classify(self.judge.net, held_pictures)
        target = self.judge.classes([texts[i] for i in held])
        self.held_set = (held_pictures, target)
        _, self.real_scores = target_scores(logits, target)
        self.real_accuracy = float((logits.argmax(axis=1) == target).mean())
        self.trained_on = len(self.judge.trained_on)
        if self.judge.trained_on & {ids[i] for i in held}:  # role_masks makes this impossible
            raise AssertionError("a held-out clip taught the validation judge")

    @property
    def labels(self) -> list[str]:
        return list(self.judge.words)

    def check_sources(self, texts: set[str]) -> None:
        unknown = sorted(texts - set(self.judge.words))
        if unknown:
            raise ModalityError(f"the real target clips say {', '.join(self.judge.words)}; the judge cannot check "
                                f"source texts saying {', '.join(unknown)} (add real clips of them to "
                                "modality.target.collections, or leave those texts out)")

    def encode(self, items: Sequence[TranslatedItem]) -> list[bytes]:
        bad = [k for k, it in enumerate(items) if not isinstance(it.output, bytes | bytearray)]
        if bad:
            raise TranslatorError(f"a speech translator returns WAV bytes; item {bad[0]} is a "
                                  f"{type(items[bad[0]].output).__name__}")
        return [bytes(it.output) for it in items]

    def score(self, items: Sequence[TranslatedItem], blobs: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Per item: the source's class, the judge's class, fidelity, read-back, margin, realism, features."""
        logits, features = self.judge.logits_and_features(blobs)
        label = self.judge.classes([it.source for it in items])
        prob, margin = target_scores(logits, label)
        pred = logits.argmax(axis=1)
        return {"label": label, "pred_label": pred, "fidelity": prob, "read_back": pred == label,
                "read_as": [self.judge.words[k] for k in pred], "margin": margin,
                "realism": conformal_realism(margin, self.real_scores), "features": features}

    def pictures(self, blobs: Sequence[bytes]) -> np.ndarray:
        """What the judge and the utility classifiers see of generated items: spectrogram pictures."""
        return clip_pictures(blobs, self.audio)

    def media(self, items: Sequence[TranslatedItem], blobs: Sequence[bytes], sample_ids: Sequence[str],
              scores: dict) -> dict[str, pa.Array]:
        del items, scores
        infos = [sf.info(io.BytesIO(b)) for b in blobs]
        return {"audio": pa.array([{"bytes": b, "path": f"{s[:16]}.wav"} for b, s in zip(blobs, sample_ids,
                                                                                         strict=True)], MEDIA),
                "sample_rate": pa.array([i.samplerate for i in infos], pa.int32()),
                "duration_s": pa.array([i.frames / i.samplerate for i in infos], pa.float64())}


# --- scenes ---------------------------------------------------------------------------------------------
def ensure_default_scenes(t: ModalityTargetConfig) -> bool:
    """Write 600 generated scenes (image and caption) where the default scenes file is named, when missing."""
    if DEFAULT_SCENES not in t.collections or Path(DEFAULT_SCENES).exists():
        return False
    write_scenes(DEFAULT_SCENES, 600, seed=0)
    return True


def write_scenes(path: str | Path, n: int, seed: int = 0) -> int:
    """``n`` of the paired package's generated scenes as a Parquet file of ``image`` (PNG) and ``caption``."""
    from ..images import encode_png
    from ..paired.scenes import make_scenes
    from ..storage import atomic_path

    scenes = make_scenes(n, seed=seed, points_per_object=0)
    images = [encode_png((s.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for s in scenes]
    table = pa.table({"sample_id": [s.sample_id for s in scenes],
                      "image": pa.array([{"bytes": b, "path": f"{s.sample_id}.png"} for b, s in
                                         zip(images, scenes, strict=True)], MEDIA),
                      "caption": [s.caption for s in scenes]})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return n


def read_scene_target(t: ModalityTargetConfig) -> tuple[list[bytes], list[str], list[str]]:
    """(PNG bytes, captions, ids) of the real scenes; an id is the sha256 of the PNG."""
    pngs, captions, ids, seen = [], [], [], set()
    for path in t.collections:
        p = Path(path)
        if not p.is_file():
            raise ModalityError(f"modality.target.collections: {p} not found; real scenes are a Parquet file with "
                                f"an image column ({{bytes, path}} PNG) and a {t.text_column} column")
        names = pq.read_schema(p).names
        if not {"image", t.text_column} <= set(names):
            raise ModalityError(f"{p}: needs the columns image and {t.text_column}; it has {', '.join(names)}")
        for batch in pq.ParquetFile(p).iter_batches(batch_size=256, columns=["image", t.text_column]):
            for image, caption in zip(batch.column("image").to_pylist(), batch.column(t.text_column).to_pylist(),
                                      strict=True):
                sid = hashlib.sha256(image["bytes"]).hexdigest()
                if sid not in seen:
                    seen.add(sid)
                    pngs.append(image["bytes"])
                    captions.append(caption)
                    ids.append(sid)
    return pngs, captions, ids


def _count(caption: str) -> int:
    from .scenes import caption_objects

    return len(caption_objects(caption)[0])


def _read_back(captions: Sequence[str], images: Sequence[np.ndarray]) -> tuple[list[str], list[dict]]:
    from ..paired.scenes import describe
    from .scenes import caption_agreement, read_scene

    described = []
    for image in images:
        objects = read_scene(image)
        described.append(describe(objects, np.asarray(image).shape[1]) if objects else "")
    return described, [caption_agreement(c, d) for c, d in zip(captions, described, strict=True)]


class SceneGate:
    """Fidelity and alignment of scenes drawn from captions (see the module docstring)."""

    media_column = "image"

    def __init__(self, t: ModalityTargetConfig) -> None:
        from ..classifiers import train_classifier
        from ..images import decode_png

        ensure_default_scenes(t)
        pngs, captions, ids = read_scene_target(t)
        self.roles, val, held = _held_out(ids, len(pngs))
        images = [decode_png(b) for b in pngs]
        counts = sorted({_count(c) for c in captions})
        self.index = {n: k for k, n in enumerate(counts)}
        if len(counts) < 2:
            raise ModalityError("the real scenes all hold one number of objects; the count judge needs two or more")
        labels = np.asarray([self.index[_count(captions[i])] for i in val], dtype=np.int64)
        self.net = train_classifier(np.stack([images[i] for i in val]), labels, len(counts), t.judge_epochs,
                                    t.judge_seed)
        self.trained_on = len(val)
        held_images, held_captions = [images[i] for i in held], [captions[i] for i in held]
        logits, self.real_features = classify(self.net, np.stack(held_images))
        _, self.real_scores = target_scores(logits, self.classes(held_captions))
        train = np.flatnonzero(role_masks(ids)["training"])
        self.training_set = (np.stack([images[i] for i in train]), self.classes([captions[i] for i in train]))
        self.held_set = (np.stack(held_images), self.classes(held_captions))
        _, agreement = _read_back(held_captions, held_images)
        self.real_accuracy = float(np.mean([a["exact"] for a in agreement]))
        self.labels = [f"{n} object{'s' if n > 1 else ''}" for n in counts]

    def classes(self, captions: Sequence[str]) -> np.ndarray:
        return np.asarray([self.index.get(_count(c), -1) for c in captions], dtype=np.int64)

    def check_sources(self, texts: set[str]) -> None:
        try:
            unknown = sorted({t for t in texts if _count(t) not in self.index})
        except TranslatorError as err:
            raise ModalityError(f"modality.source: {err}") from None
        if unknown:
            raise ModalityError(f"the real scenes hold {', '.join(self.labels)}; the count judge cannot check "
                                f"captions such as {unknown[0]!r}")

    def pictures(self, blobs: Sequence[bytes]) -> np.ndarray:
        from ..images import decode_png

        return np.stack([decode_png(b) for b in blobs])

    def encode(self, items: Sequence[TranslatedItem]) -> list[bytes]:
        from ..images import encode_png

        bad = [k for k, it in enumerate(items) if not (isinstance(it.output, np.ndarray) and it.output.ndim == 3
                                                       and it.output.dtype == np.uint8 and it.output.shape[2] == 3)]
        if bad:
            raise TranslatorError(f"a scene translator returns uint8 (H, W, 3) images; item {bad[0]} is not one")
        return [encode_png(it.output) for it in items]

    def score(self, items: Sequence[TranslatedItem], blobs: Sequence[bytes]) -> dict:
        del blobs
        captions, images = [it.source for it in items], [it.output for it in items]
        described, agreement = _read_back(captions, images)
        logits, features = classify(self.net, np.stack(images))
        label = self.classes(captions)
        _, margin = target_scores(logits, label)
        return {"label": label, "pred_label": logits.argmax(axis=1),
                "fidelity": np.asarray([a["mean"] for a in agreement]),
                "read_back": np.asarray([a["exact"] == 1.0 for a in agreement]), "read_as": described,
                "margin": margin, "realism": conformal_realism(margin, self.real_scores), "features": features}

    def media(self, items: Sequence[TranslatedItem], blobs: Sequence[bytes], sample_ids: Sequence[str],
              scores: dict) -> dict[str, pa.Array]:
        return {"image": pa.array([{"bytes": b, "path": f"{s[:16]}.png"} for b, s in zip(blobs, sample_ids,
                                                                                         strict=True)], MEDIA),
                "width": pa.array([it.output.shape[1] for it in items], pa.int32()),
                "height": pa.array([it.output.shape[0] for it in items], pa.int32()),
                "described": pa.array(scores["read_as"], pa.string())}


def make_gate(translator: Translator, m: ModalityConfig, audio: AudioConfig) -> SpeechGate | SceneGate:
    """The gate for the translator's target modality (its real collection made first where it is the default)."""
    if translator.source != "text":
        raise ModalityError(f"translator {m.translator!r} translates {translator.source}; a modality run reads "
                            "texts (modality.source) and makes another modality from them")
    if translator.target == "speech":
        ensure_default_target(m.target)
        return SpeechGate(m.target, audio)
    if translator.target == "image":
        return SceneGate(m.target)
    raise ModalityError(f"translator {m.translator!r} makes {translator.target}; the gates of a modality run are "
                        "for speech (text_to_speech) and scene images (caption_to_scene)")
