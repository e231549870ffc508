"""The bundled speech preset: spoken words from the eSpeak NG synthesizer, written as WAV folders.

eSpeak NG ships inside the optional ``espeakng-loader`` wheel (its shared library and voice data;
GPL-3.0, so it is an optional extra used only to make demo data, never imported by the pipeline).
It is driven through ``ctypes``: nothing is downloaded. The seed fixes every word, voice, rate and
pitch, but eSpeak NG's own pitch jitter makes a clip differ by a few samples from one run to the
next, so the files are made once and kept (``dvc.yaml`` tracks them), never remade behind a
user's back.

- Domain A: male voice variants (``en+m1`` ...); domain B: female variants (``en+f1`` ...).
- Held-out voices: the last variants of each domain speak only the ``test/`` split, so validation
  measures translation of voices the model never heard.
- Rate and pitch are jittered per clip; the spoken word's index is the label (metadata for
  validation only, never used for training).
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .storage import atomic_dir

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "yes", "no", "stop", "go")
MARKER = ".cycleaug-voices.json"
ESPEAK_RATE = 22_050

# espeak_PARAMETER and option values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SynthesizerUnavailable(RuntimeError):
    """eSpeak NG is not installed (``pip install 'cycleaug[voices]'``)."""


class Speaker:
    """A process-wide eSpeak NG instance (the C library keeps global state, hence the lock)."""

    _instance: Speaker | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:
            raise SynthesizerUnavailable(
                "the speech preset needs eSpeak NG: pip install 'cycleaug[voices]' (espeakng-loader, GPL-3.0)"
            ) from err
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                          espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise SynthesizerUnavailable(f"eSpeak NG failed to initialise (returned {rate})")
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events) -> int:
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: C holds only the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    @classmethod
    def get(cls) -> Speaker:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def say(self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> np.ndarray:
        """``text`` spoken by ``voice`` (e.g. ``en+f3``) as int16 mono at :attr:`sample_rate`."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise RuntimeError(f"eSpeak NG could not speak {text!r} (error {err})")
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if not chunks:
            raise RuntimeError(f"eSpeak NG produced no audio for {text!r} in voice {voice!r}")
        return np.concatenate(chunks).astype(np.int16)


@dataclass(frozen=True)
class VoicesPreset:
    """Which voices speak which words; the defaults make about 14 words x 5 takes x 7 voices per domain."""

    voices_a: tuple[str, ...] = ("en+m1", "en+m2", "en+m3", "en+m4", "en+m5", "en+m6", "en+m7")
    voices_b: tuple[str, ...] = ("en+f1", "en+f2", "en+f3", "en+f4", "en+f5")
    held_out_a: int = 2          # the last N voices of A speak only the test split
    held_out_b: int = 1
    words: tuple[str, ...] = WORDS
    takes: int = 4               # clips per (voice, word), each with its own rate and pitch
    rate: tuple[int, int] = (140, 210)   # words per minute, drawn uniformly
    pitch: tuple[int, int] = (30, 70)    # eSpeak pitch 0-100, drawn uniformly
    seed: int = 0


def _wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write_domain(root: Path, voices: tuple[str, ...], held_out: int, preset: VoicesPreset, prefix: str,
                  rng: np.random.Generator) -> int:
    speaker = Speaker.get()
    rows = []
    with atomic_dir(root) as tmp:
        for v_idx, voice in enumerate(voices):
            split = "test" if v_idx >= len(voices) - held_out else "train"
            (tmp / split).mkdir(exist_ok=True)
            for w_idx, word in enumerate(preset.words):
                for take in range(preset.takes):
                    rate = int(rng.integers(preset.rate[0], preset.rate[1] + 1))
                    pitch = int(rng.integers(preset.pitch[0], preset.pitch[1] + 1))
                    audio = speaker.say(word, voice, rate=rate, pitch=pitch)
                    rel = f"{split}/{prefix}_{voice.replace('+', '-')}_{word}_{take}.wav"
                    (tmp / rel).write_bytes(_wav_bytes(audio, speaker.sample_rate))
                    rows.append((rel, w_idx, word, voice, rate, pitch))
        with open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "word", "voice", "rate", "pitch"])
            w.writerows(rows)
        marker = {"preset": "voices", "voices": list(voices), "held_out": held_out, "words": list(preset.words),
                  "takes": preset.takes, "seed": preset.seed}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return len(rows)


def _marker_matches(root: Path, voices: tuple[str, ...], preset: VoicesPreset) -> bool:
    marker = root / MARKER
    if not marker.exists():
        return False
    info = json.loads(marker.read_text(encoding="utf-8"))
    return info.get("voices") == list(voices) and info.get("words") == list(preset.words) and \
        info.get("takes") == preset.takes and info.get("seed") == preset.seed


def make_voices_data(domain_a: str | Path, domain_b: str | Path, preset: VoicesPreset | None = None) -> list[str]:
    """Write the speech preset to two folders, unless both already hold it; returns the folders written.

    Both domains are written together, in one fixed order, when either is missing or was made with
    other settings. A folder that exists without our marker is someone else's data and is never
    overwritten.
    """
    preset = preset or VoicesPreset()
    domains = ((Path(domain_a), preset.voices_a, preset.held_out_a, "A"),
               (Path(domain_b), preset.voices_b, preset.held_out_b, "B"))
    for root, voices, held, prefix in domains:
        if not 0 < held < len(voices):
            raise ValueError(f"held-out voices for {prefix} must be between 1 and {len(voices) - 1}, got {held}")
        if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
            raise FileExistsError(f"{root} holds files that are not the speech preset; refusing to overwrite them")
    if all(_marker_matches(root, voices, preset) for root, voices, _, _ in domains):
        return []
    for k, (root, voices, held, prefix) in enumerate(domains):
        _write_domain(root, voices, held, preset, prefix, np.random.default_rng([preset.seed, k]))
    return [str(root) for root, *_ in domains]
