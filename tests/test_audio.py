"""Audio clips: decoding and its quarantine reasons, spectrogram pictures and the way back, figures,
and the bundled eSpeak NG speech preset."""

from __future__ import annotations

import csv
import io
import struct

import numpy as np
import pytest
import soundfile as sf

from cyclegan_core.audio import (
    BadAudio,
    Spectrogram,
    decode_audio,
    decode_wav,
    encode_wav,
    fit_length,
    log_spectral_distance,
    picture_png,
    picture_to_uint8,
    si_sdr,
    uint8_to_picture,
)
from cyclegan_core.config import AudioConfig, ConfigError, config_from_dict

CFG = AudioConfig()


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_decode_resamples_mixes_and_fits():
    stereo = tone(0.3, 22_050, channels=2)
    stereo[:, 1] = 0.0  # the mono mix is the mean of the channels
    clip = decode_audio(wav(stereo, 22_050), CFG)
    assert clip.wave.shape == (CFG.clip_samples,) and clip.wave.dtype == np.float32
    assert (clip.orig_sample_rate, clip.orig_channels) == (22_050, 2)
    assert clip.offset < 0  # 0.3 s is shorter than the clip: padded on both sides
    assert abs(float(np.abs(clip.wave).max()) - 0.25) < 0.02


def test_fit_length_takes_the_loudest_window():
    x = np.zeros(1000, dtype=np.float32)
    x[600:650] = 1.0
    out, offset = fit_length(x, 100)
    assert 550 <= offset <= 600 and out.sum() == 50
    padded, offset = fit_length(np.ones(10, dtype=np.float32), 20)
    assert offset == -5 and padded[5:15].sum() == 10 and padded.sum() == 10


def test_flac_and_ogg_decode():
    for fmt, subtype in (("FLAC", "PCM_16"), ("OGG", "VORBIS")):
        clip = decode_audio(wav(tone(1.0, 16_000), 16_000, subtype=subtype, fmt=fmt), CFG)
        assert clip.wave.shape == (CFG.clip_samples,)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: b"", "empty file"),
        (lambda: b"this is not audio at all" * 10, "not a readable audio file"),
        (lambda: wav(tone(1.0, 16_000), 16_000)[:30], "not a readable audio file"),
        (lambda: wav(np.zeros(0, np.float32), 16_000), "zero-length"),
        (lambda: wav(np.full(800, np.nan, np.float32), 16_000, subtype="FLOAT"), "non-finite"),
        (lambda: wav(np.zeros(8000, np.float32), 16_000), "silent"),
        (lambda: wav(tone(0.2, 500), 500), "absurd sample rate"),
        (lambda: wav(tone(61.0, 1_000), 1_000), "too long"),
    ],
)
def test_bad_audio_has_a_reason(make, reason):
    with pytest.raises(BadAudio, match=reason):
        decode_audio(make(), CFG)


def test_truncated_data_is_named():
    good = wav(tone(1.0, 16_000), 16_000)
    # Cut the sample data but keep the header's promise of 16,000 frames.
    with pytest.raises(BadAudio, match="truncated|corrupt"):
        decode_audio(good[: len(good) // 2], CFG)


def test_absurd_rate_refused_from_the_header():
    data = bytearray(wav(tone(0.1, 16_000), 16_000))
    data[24:28] = struct.pack("<I", 5_000_000)  # the fmt chunk's sample rate
    with pytest.raises(BadAudio, match="absurd sample rate|not a readable"):
        decode_audio(bytes(data), CFG)


@pytest.mark.parametrize("representation", ["mel", "linear"])
def test_pictures_have_model_friendly_shapes(representation):
    cfg = AudioConfig(representation=representation, n_fft=256 if representation == "linear" else 512)
    waves = np.stack([fit_length(tone(0.5, cfg.sample_rate, f), cfg.clip_samples)[0] for f in (300, 900)])
    pics = Spectrogram(cfg).picture(waves)
    assert pics.shape == (2, cfg.bins, cfg.frames)
    assert pics.min() >= 0 and pics.max() <= 1
    # The louder band is where the tone is: the two tones peak in different rows.
    rows = pics.mean(axis=2).argmax(axis=1)
    assert rows[0] < rows[1]


def test_linear_with_source_phase_is_nearly_lossless():
    cfg = AudioConfig(representation="linear", n_fft=256, db_min=-120.0)
    x = np.stack([fit_length(tone(1.0, cfg.sample_rate, 440.0), cfg.clip_samples)[0]])
    spec = Spectrogram(cfg)
    back = spec.invert(spec.picture(x), phase_from=x)
    assert si_sdr(x, back)[0] > 40.0


def voiced(f0: float, rate: int, n: int) -> np.ndarray:
    """A vowel-like sound: 29 harmonics of a slowly wavering pitch under a smooth envelope."""
    t = np.arange(n) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 30))
    return (0.3 * x * np.sin(np.pi * t / t[-1]) ** 2).astype(np.float32)


@pytest.mark.parametrize("representation", ["mel", "linear"])
def test_griffin_lim_rebuilds_the_magnitude(representation):
    cfg = AudioConfig(representation=representation, n_fft=512 if representation == "mel" else 256)
    x = np.stack([voiced(f0, cfg.sample_rate, cfg.clip_samples) for f0 in (120.0, 210.0)])
    pics = Spectrogram(cfg).picture(x)
    lsd = {}
    for iters in (1, 24):
        spec = Spectrogram(cfg.model_copy(update={"griffin_lim_iters": iters}))
        back = spec.invert(pics)
        assert back.shape == x.shape
        lsd[iters] = log_spectral_distance(pics, spec.picture(back), cfg)
    # Mel pictures lose detail in the wide high bands, so the way back gains less there.
    gain = 0.6 if representation == "linear" else 0.9
    assert (lsd[24] < 6.0).all() and (lsd[24] < gain * lsd[1]).all(), lsd
    # Seeded: the same pictures give the same waveform.
    assert np.array_equal(spec.invert(pics), spec.invert(pics))


def test_uint8_pictures_lose_little():
    pics = np.random.default_rng(1).random((3, CFG.bins, CFG.frames)).astype(np.float32)
    again = uint8_to_picture(picture_to_uint8(pics))
    assert log_spectral_distance(pics, again, CFG).max() < (CFG.db_max - CFG.db_min) / 255


def test_si_sdr_values():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 16_000))
    noise = rng.standard_normal((1, 16_000))
    noisy = ref + noise * 10 ** (-20 / 20)  # 20 dB below the reference
    assert abs(si_sdr(ref, noisy)[0] - 20.0) < 0.3
    assert abs(si_sdr(ref, 3.0 * noisy)[0] - si_sdr(ref, noisy)[0]) < 1e-9  # scale-invariant
    assert si_sdr(ref, ref)[0] > 100


def test_wav_roundtrip_and_png():
    x = fit_length(tone(1.0, 16_000), CFG.clip_samples)[0]
    back, rate = decode_wav(encode_wav(x, 16_000))
    assert rate == 16_000 and np.abs(back - x).max() < 1e-4
    png = picture_png(Spectrogram(CFG).picture(x[None])[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_rejects_shapes_the_models_cannot_take():
    with pytest.raises(ConfigError, match="frames"):
        config_from_dict({"data": {"audio": {"frames": 30}}})
    with pytest.raises(ConfigError, match="multiple of 4"):
        config_from_dict({"data": {"audio": {"n_mels": 30}}})
    with pytest.raises(ConfigError, match="representation"):
        config_from_dict({"data": {"audio": {"representation": "cqt"}}})


def test_listening_page_links_every_clip(tmp_path):
    import re

    from cyclegan_core.audio import listening_page

    spec = Spectrogram(CFG)
    x = fit_length(tone(0.5, 16_000), CFG.clip_samples)[0]
    pic = spec.picture(x[None])[0]
    kinds = ("source", "translation", "cycle")
    clips = {f"{k}_wav": encode_wav(x, 16_000) for k in kinds} | {f"{k}_picture": pic for k in kinds}
    rows = [{"direction": d, "sample_id": f"{d}{i}" + "0" * 20, "label": 3, "pred_label": 3,
             "metrics": {"cycle_si_sdr": 12.5}, **clips}
            for d in ("AtoB", "BtoA") for i in range(2)]
    page = listening_page(rows, tmp_path / "listen")
    html = page.read_text(encoding="utf-8")
    links = re.findall(r'src="([^"]+)"', html)
    assert len(links) == 4 * 3 * 2 and all((page.parent / link).is_file() for link in links)
    assert "<audio controls" in html and "cycle_si_sdr: 12.50" in html
    assert decode_wav((page.parent / links[1]).read_bytes())[1] == 16_000


# --- the speech preset -------------------------------------------------------------------------
espeak = pytest.importorskip("espeakng_loader")


def test_voices_preset_writes_labelled_folders(tmp_path):
    from cyclegan_core.voices import VoicesPreset, make_voices_data

    preset = VoicesPreset(voices_a=("en+m1", "en+m3"), voices_b=("en+f1", "en+f2"), held_out_a=1,
                          words=("one", "seven"), takes=2)
    made = make_voices_data(tmp_path / "A", tmp_path / "B", preset)
    assert made == [str(tmp_path / "A"), str(tmp_path / "B")]
    for d, voices in (("A", preset.voices_a), ("B", preset.voices_b)):
        with open(tmp_path / d / "labels.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 2 * 2 * 2
        held = {r["voice"] for r in rows if r["path"].startswith("test/")}
        assert held == {voices[-1]}  # the held-out voice speaks only the test split
        for r in rows:
            samples, rate = sf.read(tmp_path / d / r["path"])
            assert rate == 22_050 and 0.2 < len(samples) / rate < 1.5 and np.abs(samples).max() > 0.05
            assert preset.words[int(r["label"])] == r["word"]
    assert make_voices_data(tmp_path / "A", tmp_path / "B", preset) == []  # already there


def test_voices_preset_never_overwrites_foreign_folders(tmp_path):
    from cyclegan_core.voices import VoicesPreset, make_voices_data

    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "mine.wav").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not the speech preset"):
        make_voices_data(tmp_path / "A", tmp_path / "B", VoicesPreset(words=("one",), takes=1))
    assert (tmp_path / "A" / "mine.wav").read_bytes() == b"x"


def test_unknown_voice_is_named():
    from cyclegan_core.voices import Speaker

    with pytest.raises(ValueError, match="no voice"):
        Speaker.get().say("one", "xx+nonexistent")
