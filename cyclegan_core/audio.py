"""Audio as a domain: decode and check clips, log-magnitude spectrograms as 1-channel images, back to
waveforms, and the figures that say whether a translation kept what was said.

A clip is decoded with ``soundfile`` (WAV, FLAC, OGG), mixed to mono, resampled with soxr (through
``soxr``, the resampler librosa uses) and cut to the loudest window of the configured length (or
padded), with the offset recorded. Its spectrogram (mel or linear STFT, ``torch.stft``) in decibels
is mapped from a fixed range ``[db_min, db_max]`` onto [0, 1], so one picture means the same level
in every clip and the CycleGAN models train on it as on any gray image (height = frequency bins,
width = frames, both multiples of 4). The way back is the source's phase (linear spectrograms) or
Griffin-Lim (batched, in torch, seeded). Nothing here knows about Prefect or DVC.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .config import AudioConfig

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000


class BadAudio(ValueError):
    """A file that cannot become a training clip; the message is the reason."""


@dataclass(frozen=True)
class Clip:
    """A normalized clip and where it came from (``offset`` < 0 means padding before the audio)."""

    wave: np.ndarray          # float32 (clip_samples,), mono, at the configured rate
    orig_sample_rate: int
    orig_channels: int
    orig_frames: int
    offset: int               # first source sample (at the configured rate) of the clip

    def info(self) -> dict:
        d = asdict(self)
        del d["wave"]
        return d


def decode_audio(data: bytes, cfg: AudioConfig) -> Clip:
    """Decode, check and normalize one audio file; raises :class:`BadAudio` naming the problem."""
    if not data:
        raise BadAudio("empty file (0 bytes)")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise BadAudio(f"not a readable audio file (corrupt or unknown header): {err}") from None
    rate, frames, channels = int(info.samplerate), int(info.frames), int(info.channels)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadAudio(f"absurd sample rate {rate} Hz (allowed {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE})")
    if frames <= 0 or channels <= 0:
        raise BadAudio("zero-length audio (no samples)")
    short = _wav_shortfall(data)
    if short:
        raise BadAudio(f"truncated: the WAV header promises {short[0]} bytes of samples, the file holds {short[1]}")
    seconds = frames / rate
    if seconds > cfg.max_seconds:
        raise BadAudio(f"too long: {seconds:.1f} s > data.audio.max_seconds={cfg.max_seconds}")
    try:
        samples, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise BadAudio(f"corrupt or truncated audio: {err}") from None
    if len(samples) == 0:
        raise BadAudio("zero-length audio (no samples could be read)")
    if len(samples) < frames * 0.99:
        raise BadAudio(f"truncated: the header promises {frames} frames, only {len(samples)} could be read")
    if not np.isfinite(samples).all():
        raise BadAudio("non-finite samples (NaN or Inf)")
    mono = samples.mean(axis=1)
    if not np.any(mono):
        raise BadAudio("silent (every sample is 0)")
    if rate != cfg.sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, cfg.sample_rate, quality="HQ").astype(np.float32)
    wave, offset = fit_length(mono, cfg.clip_samples)
    return Clip(wave, rate, channels, frames, offset)


def _wav_shortfall(data: bytes) -> tuple[int, int] | None:
    """(declared, present) sizes of a RIFF/WAVE data chunk cut short; libsndfile reads such files
    without complaint, silently dropping the promised tail."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"data":
            present = len(data) - pos - 8
            return (size, present) if present < size and size != 0xFFFFFFFF else None
        pos += 8 + size + (size & 1)
    return None


def fit_length(wave: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Cut ``wave`` to its loudest window of ``n`` samples, or centre-pad it; returns the offset."""
    if len(wave) >= n:
        energy = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
        window = energy[n:] - energy[:-n]
        start = int(np.argmax(window))  # the first of equally loud windows: deterministic
        return np.ascontiguousarray(wave[start:start + n], dtype=np.float32), start
    before = (n - len(wave)) // 2
    out = np.zeros(n, dtype=np.float32)
    out[before:before + len(wave)] = wave
    return out, -before


def encode_wav(wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """WAV bytes of a mono float waveform in [-1, 1] (clipped), deterministic."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), sample_rate, format="WAV",
             subtype=subtype)
    return buf.getvalue()


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the sample rate of audio bytes written by :func:`encode_wav`."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return wave.mean(axis=1), int(rate)


# --- spectrograms ------------------------------------------------------------------------------
class Spectrogram:
    """Waveforms <-> [0, 1] log-magnitude pictures (``bins`` x ``frames``), batched in torch."""

    def __init__(self, cfg: AudioConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.window = torch.hann_window(cfg.n_fft, device=self.device)
        self.mel_basis: torch.Tensor | None = None
        if cfg.representation == "mel":
            import librosa

            basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                                        fmax=cfg.fmax or cfg.sample_rate / 2)
            self.mel_basis = torch.from_numpy(basis.astype(np.float32))
            self.mel_pinv = torch.linalg.pinv(self.mel_basis).to(self.device)  # on the CPU: the same on every device
            self.mel_basis = self.mel_basis.to(self.device)

    @property
    def bins(self) -> int:
        return self.cfg.bins

    def stft(self, waves: torch.Tensor) -> torch.Tensor:
        """Complex STFT (N, n_fft/2+1, frames) of waveforms (N, clip_samples)."""
        c = self.cfg
        return torch.stft(waves, c.n_fft, c.hop_length, window=self.window, center=True, return_complex=True)

    def _to_unit(self, magnitude: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        db = 20.0 * torch.log10(magnitude.clamp_min(10 ** (c.db_min / 20.0)))
        return ((db - c.db_min) / (c.db_max - c.db_min)).clamp(0.0, 1.0)

    def _from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        db = unit.clamp(0.0, 1.0) * (c.db_max - c.db_min) + c.db_min
        return torch.pow(10.0, db / 20.0)

    def magnitude_to_picture(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(N, n_fft/2+1, frames) linear magnitudes -> (N, bins, frames) pictures on [0, 1]."""
        if self.mel_basis is not None:
            magnitude = torch.einsum("mf,nft->nmt", self.mel_basis, magnitude)
        else:
            magnitude = magnitude[:, :-1]  # drop the Nyquist bin so the height is a multiple of 4
        return self._to_unit(magnitude)

    def picture(self, waves: np.ndarray | torch.Tensor) -> np.ndarray:
        """Waveforms (N, clip_samples) -> float32 pictures (N, bins, frames) on [0, 1]."""
        w = torch.as_tensor(np.asarray(waves, dtype=np.float32), device=self.device)
        return self.magnitude_to_picture(self.stft(w).abs()).cpu().numpy()

    def magnitude(self, pictures: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Pictures (N, bins, frames) on [0, 1] -> linear magnitudes (N, n_fft/2+1, frames)."""
        p = self._from_unit(torch.as_tensor(np.asarray(pictures, dtype=np.float32), device=self.device))
        if self.mel_basis is not None:
            return torch.einsum("fm,nmt->nft", self.mel_pinv, p).clamp_min(0.0)
        return torch.cat([p, torch.zeros_like(p[:, :1])], dim=1)

    def invert(self, pictures: np.ndarray, phase_from: np.ndarray | None = None) -> np.ndarray:
        """Pictures -> waveforms (N, clip_samples): with ``phase_from`` waveforms, their STFT phase;
        otherwise Griffin-Lim (``griffin_lim_iters`` iterations, momentum 0.99, seeded)."""
        c = self.cfg
        mag = self.magnitude(pictures)
        if phase_from is not None:
            spec = self.stft(torch.as_tensor(np.asarray(phase_from, dtype=np.float32), device=self.device))
            phase = torch.polar(torch.ones_like(mag), spec.angle())
            out = torch.istft(mag * phase, c.n_fft, c.hop_length, window=self.window, length=c.clip_samples)
            return out.cpu().numpy()
        return self.griffin_lim(mag).cpu().numpy()

    def griffin_lim(self, mag: torch.Tensor) -> torch.Tensor:
        """Fast Griffin-Lim (Perraudin et al. 2013, as librosa's ``griffinlim``), batched."""
        c = self.cfg
        gen = torch.Generator().manual_seed(0)
        # One starting phase for every row, so a clip's result does not depend on its batch.
        start = (2 * math.pi * torch.rand(mag.shape[1:], generator=gen)).to(mag.device)
        angles = torch.polar(torch.ones_like(mag), start.expand_as(mag))
        previous = torch.zeros_like(angles)
        momentum = 0.99
        for _ in range(c.griffin_lim_iters):
            wave = torch.istft(mag * angles, c.n_fft, c.hop_length, window=self.window, length=c.clip_samples)
            rebuilt = self.stft(wave)
            angles = rebuilt - (momentum / (1 + momentum)) * previous
            angles = angles / angles.abs().clamp_min(1e-16)
            previous = rebuilt
        return torch.istft(mag * angles, c.n_fft, c.hop_length, window=self.window, length=c.clip_samples)


def picture_to_uint8(pictures: np.ndarray) -> np.ndarray:
    """[0, 1] pictures (N, H, W) -> uint8 images (N, H, W, 1), low frequencies in row 0."""
    return np.round(np.clip(pictures, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None]


def uint8_to_picture(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, 1) -> [0, 1] float32 pictures (N, H, W)."""
    return images[..., 0].astype(np.float32) / 255.0


# --- figures -----------------------------------------------------------------------------------
def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Scale-invariant signal-to-distortion ratio (dB) per row of (N, T) arrays (Le Roux et al. 2019)."""
    ref = np.atleast_2d(reference).astype(np.float64)
    est = np.atleast_2d(estimate).astype(np.float64)
    ref = ref - ref.mean(axis=1, keepdims=True)
    est = est - est.mean(axis=1, keepdims=True)
    scale = (est * ref).sum(axis=1, keepdims=True) / np.maximum((ref**2).sum(axis=1, keepdims=True), 1e-12)
    target = scale * ref
    noise = est - target
    return 10 * np.log10(np.maximum((target**2).sum(axis=1), 1e-12) / np.maximum((noise**2).sum(axis=1), 1e-12))


def log_spectral_distance(a: np.ndarray, b: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Mean over frames of the RMS difference in dB between two picture batches (N, bins, frames)."""
    span = cfg.db_max - cfg.db_min
    diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) * span
    return np.sqrt((diff**2).mean(axis=1)).mean(axis=1)


def picture_png(picture: np.ndarray, scale: int = 2) -> bytes:
    """A viridis PNG of one [0, 1] picture (bins, frames), low frequencies at the bottom."""
    from matplotlib import colormaps
    from PIL import Image

    rgb = (colormaps["viridis"](np.clip(picture[::-1], 0, 1))[:, :, :3] * 255).round().astype(np.uint8)
    img = Image.fromarray(rgb)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- a page to listen to ---------------------------------------------------------------------
LISTEN_KINDS = ("source", "translation", "cycle")


def listening_page(rows: list[dict], out_dir: str | Path, title: str = "CycleAug audio translations") -> Path:
    """Write ``index.html`` with spectrograms and ``<audio>`` players, the WAV and PNG files beside it.

    Each row holds ``direction``, ``sample_id``, ``<kind>_wav`` bytes and ``<kind>_picture`` arrays
    for kind in source / translation / cycle, and optional ``label``, ``pred_label`` and ``metrics``
    (name -> float). The page is self-contained with relative links, so the folder can be copied,
    attached to a Prefect artifact link, or opened from disk.
    """
    from html import escape

    from .storage import atomic_dir

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "clips").mkdir()
        body = []
        for direction in sorted({r["direction"] for r in rows}):
            src, dst = direction[0], direction[-1]
            body.append(f"<h2>{escape(direction)}</h2><table><tr><th>sample</th>"
                        f"<th>source ({src})</th><th>translation ({src}&rarr;{dst})</th>"
                        f"<th>cycle ({dst}&rarr;{src})</th><th>figures</th></tr>")
            for r in (r for r in rows if r["direction"] == direction):
                sid = str(r["sample_id"])[:16]
                cells = [f"<td><code>{escape(sid)}</code></td>"]
                for kind in LISTEN_KINDS:
                    stem = f"clips/{direction}_{sid}_{kind}"
                    (tmp / f"{stem}.wav").write_bytes(r[f"{kind}_wav"])
                    (tmp / f"{stem}.png").write_bytes(picture_png(r[f"{kind}_picture"]))
                    cells.append(f'<td><img src="{stem}.png" alt="{kind} spectrogram"><br>'
                                 f'<audio controls preload="none" src="{stem}.wav"></audio></td>')
                figs = dict(r.get("metrics", {}))
                if r.get("label") is not None:
                    figs["label"] = r["label"]
                if r.get("pred_label") is not None:
                    figs["predicted"] = r["pred_label"]
                text = "<br>".join(f"{escape(k)}: {v:.2f}" if isinstance(v, float) else f"{escape(k)}: {v}"
                                   for k, v in figs.items())
                cells.append(f"<td>{text}</td>")
                body.append("<tr>" + "".join(cells) + "</tr>")
            body.append("</table>")
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>body{{font-family:sans-serif}}"
            "td{vertical-align:top;padding:4px}img{image-rendering:pixelated}</style></head><body>"
            f"<h1>{escape(title)}</h1><p>Spectrograms: low frequencies at the bottom, time to the right.</p>"
            + "".join(body) + "</body></html>\n"
        )
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return out_dir / "index.html"
