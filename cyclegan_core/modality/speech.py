"""Text to speech with eSpeak NG (the ``voices`` extra): each text spoken in several voices, rates and
pitches, as the bundled speech preset (:mod:`cyclegan_core.voices`) does, as WAV bytes at the
configured rate (resampled from eSpeak's own rate, 22,050 Hz, with soxr).

The choices for one text are drawn from a generator seeded by the run seed and the text itself, so a
text gets the same voices, rates and pitches whatever batch it is in. eSpeak NG's own pitch jitter
can still move a clip by a few samples between runs (see :mod:`cyclegan_core.voices`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..audio import encode_wav
from ..voices import Speaker
from .translators import TranslatedItem, TranslatorError

DEFAULT_VOICES = ("en+m1", "en+m3", "en+m5", "en+f1", "en+f3", "en+f5")


def text_seed(seed: int, text: str) -> list[int]:
    """The generator seed of one text: the run seed and the text's hash (batch-independent)."""
    return [int(seed), int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")]


@dataclass
class TextToSpeech:
    """Speak each text ``per_text`` times, each take in a voice, rate and pitch of its own.

    Voices are taken in turn from a per-text shuffle of ``voices`` (so ``per_text`` <= the number of
    voices gives distinct voices); rate (words per minute) and pitch (eSpeak's 0-100) are drawn
    uniformly from their ranges.
    """

    voices: tuple[str, ...] = DEFAULT_VOICES
    per_text: int = 3
    rate: tuple[int, int] = (140, 210)
    pitch: tuple[int, int] = (30, 70)
    sample_rate: int = 16_000
    name: ClassVar[str] = "text_to_speech"
    source: ClassVar[str] = "text"
    target: ClassVar[str] = "speech"

    def __post_init__(self) -> None:
        self.voices = tuple(self.voices)
        self.rate, self.pitch = tuple(self.rate), tuple(self.pitch)
        if not self.voices:
            raise TranslatorError("text_to_speech: voices must name at least one eSpeak NG voice")
        if self.per_text < 1:
            raise TranslatorError(f"text_to_speech: per_text must be at least 1, got {self.per_text}")
        for what, (lo, hi) in (("rate", self.rate), ("pitch", self.pitch)):
            if lo > hi:
                raise TranslatorError(f"text_to_speech: {what} range {lo}-{hi} is empty")
        if not 1_000 <= self.sample_rate <= 192_000:
            raise TranslatorError(f"text_to_speech: sample_rate {self.sample_rate} Hz is outside 1,000-192,000")

    def settings(self) -> dict:
        return {"translator": self.name, "engine": "espeak-ng", "voices": list(self.voices),
                "per_text": self.per_text, "rate": list(self.rate), "pitch": list(self.pitch),
                "sample_rate": self.sample_rate}

    def plan(self, text: str, seed: int) -> list[dict]:
        """The (voice, rate, pitch) of each take of ``text``: what :meth:`translate` will speak."""
        rng = np.random.default_rng(text_seed(seed, text))
        order = rng.permutation(len(self.voices))
        takes = []
        for take in range(self.per_text):
            takes.append({"voice": self.voices[int(order[take % len(order)])], "take": take,
                          "rate": int(rng.integers(self.rate[0], self.rate[1] + 1)),
                          "pitch": int(rng.integers(self.pitch[0], self.pitch[1] + 1))})
        return takes

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> bytes:
        speaker = Speaker.get()
        samples = speaker.say(text, voice, rate=rate, pitch=pitch).astype(np.float32) / 32768.0
        if self.sample_rate != speaker.sample_rate:
            import soxr

            samples = soxr.resample(samples, speaker.sample_rate, self.sample_rate, quality="HQ").astype(np.float32)
        return encode_wav(samples, self.sample_rate)

    def translate(self, batch: Sequence[str], seed: int) -> list[TranslatedItem]:
        out = []
        for i, text in enumerate(batch):
            if not isinstance(text, str) or not text.strip():
                raise TranslatorError(f"text_to_speech: item {i} is not a non-empty text: {text!r}")
            for take in self.plan(text, seed):
                wav = self.speak(text, take["voice"], take["rate"], take["pitch"])
                out.append(TranslatedItem(wav, text, i, take))
        return out


def text_to_speech(**settings) -> TextToSpeech:
    """The registered factory: ``TextToSpeech(**settings)`` (lists become tuples)."""
    return TextToSpeech(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
