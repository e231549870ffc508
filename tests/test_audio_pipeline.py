"""Audio domains end to end on tiny generated clips: ingest (with quarantine), train, generate (WAV out),
validate (spectrogram and waveform cycle figures, the gate), publish (Hugging Face ``Audio`` columns),
the listening page, and the real readers on the result."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from cyclegan_core import pipeline
from cyclegan_core.config import config_from_dict
from cyclegan_core.gate import GateFailed
from tests.conftest import tiny_settings

RATE = 8_000


def _clip(f0: float, pulses: int, rng: np.random.Generator, seconds: float = 0.5) -> np.ndarray:
    """A harmonic tone at ``f0`` Hz (the 'voice') in ``pulses`` bursts (the 'word', the label)."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in (1, 2, 3))
    gate = np.zeros_like(t)
    for p in range(pulses):
        start = (p + 0.5) / (pulses + 1) * seconds
        gate += np.exp(-0.5 * ((t - start) / 0.03) ** 2)
    return (0.3 * tone * np.clip(gate, 0, 1) + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def write_voices(root: Path, f0: float, n: int = 12, n_test: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        split = "test" if i < n_test else "train"
        (root / split).mkdir(parents=True, exist_ok=True)
        rel = f"{split}/clip{i:03d}.wav"
        label = i % 3
        sf.write(root / rel, _clip(f0 * rng.uniform(0.95, 1.05), label + 1, rng), RATE, subtype="PCM_16")
        rows.append((rel, label))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return root


def audio_settings(tmp_path: Path, **sections) -> dict:
    a = write_voices(tmp_path / "raw" / "A", 150.0)
    b = write_voices(tmp_path / "raw" / "B", 420.0, seed=1)
    raw = tiny_settings(tmp_path / "work", a, b)
    raw["data"] = {"kind": "audio", "domain_a": str(a), "domain_b": str(b),
                   "audio": {"sample_rate": RATE, "n_fft": 256, "hop_length": 128, "frames": 32, "n_mels": 32,
                             "griffin_lim_iters": 4}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.fixture
def audio_cfg(tmp_path: Path):
    return config_from_dict(audio_settings(tmp_path))


def test_audio_pipeline_end_to_end(audio_cfg, tmp_path: Path):
    cfg = audio_cfg
    # Bad clips beside the good ones: quarantined with a reason, the run goes on.
    bad = Path(cfg.data.domain_a) / "train"
    (bad / "empty.wav").write_bytes(b"")
    (bad / "noise.ogg").write_bytes(b"OggS" + b"\x00" * 40)
    buf = io.BytesIO()
    sf.write(buf, np.full(800, np.nan, np.float32), RATE, format="WAV", subtype="FLOAT")
    (bad / "nan.wav").write_bytes(buf.getvalue())
    ing = pipeline.step_ingest(cfg)
    assert ing["A"].samples == 12 and ing["A"].quarantined == 3 and ing["B"].samples == 12
    with open(ing["A"].quarantine, newline="") as f:
        reasons = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    assert "empty" in reasons["train/empty.wav"] and "NaN" in reasons["train/nan.wav"]
    assert "not a readable audio file" in reasons["train/noise.ogg"]
    man = pq.read_table(ing["A"].manifest)
    row = man.slice(0, 1).to_pylist()[0]
    assert row["orig_sample_rate"] == RATE and row["audio"][:4] == b"RIFF" and row["orig_width"] is None
    from cyclegan_core.images import decode_png

    assert decode_png(row["image"]).shape == (32, 32, 1)  # bins x frames, gray

    train = pipeline.step_train(cfg)
    assert not train.reused
    gen = pipeline.step_generate(cfg)
    assert gen.rows == {"AtoB": 12, "BtoA": 12}
    val = pipeline.step_validate(cfg)
    fig = val.figures["AtoB"]
    assert fig["mean_cycle_si_sdr"] is not None and fig["mean_cycle_lsd"] > 0
    assert fig["label_accuracy_untranslated"] is not None  # the raw-source figure beside the translated one
    vrow = pq.read_table(Path(cfg.paths.validated) / "AtoB").to_pylist()[0]
    assert {"cycle_lsd", "cycle_si_sdr"} <= set(vrow)
    page = Path(cfg.paths.reports) / "listen" / "index.html"
    html = page.read_text()
    assert html.count("<audio") >= 6 and (page.parent / "clips").is_dir()
    for src in (p.split('"')[0] for p in html.split('src="')[1:]):
        assert (page.parent / src).exists(), src

    pub = pipeline.step_publish(cfg)
    assert sum(pub.rows.values()) == 24
    files = sorted(Path(cfg.paths.published).glob("data/*.parquet"))
    schema = pq.read_schema(files[0])
    feats = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert feats["audio"] == {"_type": "Audio"} and feats["source_audio"] == {"_type": "Audio"}
    assert feats["image"] == {"_type": "Image"}
    t = pq.read_table(files[0]).to_pylist()[0]
    wave, rate = sf.read(io.BytesIO(t["audio"]["bytes"]))
    assert rate == RATE == t["sample_rate"] and abs(len(wave) / RATE - t["duration_s"]) < 1e-9
    assert t["audio"]["path"].endswith(".wav") and t["source_id"] and t["cycle_si_sdr"] is not None
    card = (Path(cfg.paths.published) / "README.md").read_text()
    assert "dtype: audio" in card and f"at {RATE} Hz" in card

    # `datasets` recognises the Audio feature from our metadata alone (decoding would need torchcodec,
    # which has no build for the torch we pin: read the bytes instead and decode them with soundfile).
    import datasets

    shards = str(Path(cfg.paths.published) / "data" / "AtoB-*.parquet")
    ds = datasets.load_dataset("parquet", data_files={"AtoB": shards}, split="AtoB")
    assert all(isinstance(ds.features[c], datasets.Audio) for c in ("audio", "source_audio", "reconstruction_audio"))
    for c in ("audio", "source_audio", "reconstruction_audio"):
        ds = ds.cast_column(c, datasets.Audio(decode=False))
    raw = ds[0]["audio"]
    assert sf.read(io.BytesIO(raw["bytes"]))[1] == RATE

    # Our reader: pandas without the clips, and a torch DataLoader that decodes them to waveforms.
    import torch

    from cyclegan_core.export import export_image_folder, export_webdataset
    from cyclegan_core.reader import open_dataset

    published = open_dataset(cfg.paths.published)
    df = published.to_pandas(columns=["sample_id", "direction", "cycle_si_sdr", "label"])
    assert len(df) == 24 and df["cycle_si_sdr"].notna().all()
    loader = torch.utils.data.DataLoader(published.torch(columns=["sample_id", "audio", "image"]), batch_size=None)
    first = next(iter(loader))
    assert first["audio"].dtype == torch.float32 and first["audio"].ndim == 1
    assert first["audio"].numel() == cfg.data.audio.clip_samples and tuple(first["image"].shape) == (1, 32, 32)
    # Exports: an audiofolder (WAV files + metadata.csv without byte columns) and WebDataset tars with the clips.
    folder = export_image_folder(published, tmp_path / "export")
    wavs = sorted((tmp_path / "export").rglob("*.wav"))
    assert folder.files == len(wavs) == 24
    metas = sorted((tmp_path / "export").glob("*/metadata.csv"))  # one per split
    assert metas
    for meta in metas:
        header = meta.read_text().splitlines()[0].split(",")
        assert header[0] == "file_name" and not {"audio", "source_audio", "image"} & set(header)
    export_webdataset(published, tmp_path / "wds")
    import tarfile

    with tarfile.open(sorted((tmp_path / "wds").glob("*.tar"))[0]) as tar:
        names = tar.getnames()
    assert any(n.endswith(".source.wav") for n in names) and any(n.endswith(".rec.wav") for n in names)


def test_audio_gate_fails_on_si_sdr_and_publishes_nothing(tmp_path: Path):
    cfg = config_from_dict(audio_settings(tmp_path, validate={"run": {"AtoB": {"min_mean_cycle_si_sdr": 60.0}}}))
    pipeline.step_ingest(cfg)
    pipeline.step_train(cfg)
    pipeline.step_generate(cfg)
    val = pipeline.step_validate(cfg)
    assert not val.passed and any("AtoB.mean_cycle_si_sdr" in f and "min_mean_cycle_si_sdr" in f
                                  for f in val.failures)
    with pytest.raises(GateFailed, match="mean_cycle_si_sdr"):
        pipeline.step_publish(cfg)
    assert not (Path(cfg.paths.published) / "manifest.json").exists()


def test_inversion_of_an_untouched_picture_gives_the_clip_back(tmp_path: Path):
    # generate.invert_audio on the source's own picture: the source's phase rebuilds the clip almost
    # exactly; Griffin-Lim rebuilds its magnitudes (low log-spectral distance) with a phase of its own.
    from cyclegan_core.audio import Spectrogram, decode_wav, encode_wav, log_spectral_distance, picture_to_uint8, si_sdr
    from cyclegan_core.generate import invert_audio
    from cyclegan_core.images import encode_png

    raw = audio_settings(tmp_path)
    raw["data"]["audio"] = {"sample_rate": RATE, "n_fft": 64, "hop_length": 16, "frames": 32,
                            "representation": "linear", "inversion": "source_phase", "griffin_lim_iters": 32}
    cfg = config_from_dict(raw).data.audio
    spec = Spectrogram(cfg)
    rng = np.random.default_rng(0)
    clips = np.stack([_clip(200.0, 2, rng, cfg.clip_samples / RATE)[:cfg.clip_samples] for _ in range(3)])
    wavs = [encode_wav(c, RATE) for c in clips]
    pngs = [encode_png(p) for p in picture_to_uint8(spec.picture(clips))]
    back = np.stack([decode_wav(w)[0] for w in invert_audio(pngs, wavs, cfg)])
    assert si_sdr(clips, back).min() > 15.0
    gl = cfg.model_copy(update={"inversion": "griffin_lim"})
    back_gl = np.stack([decode_wav(w)[0] for w in invert_audio(pngs, wavs, gl)])
    assert log_spectral_distance(spec.picture(clips), spec.picture(back_gl), cfg).mean() < 6.0
    # Each clip starts from the same phase whatever batch it is in: alone or in a batch, the result
    # differs by float rounding at most (a 16-bit step), not by a different random start.
    alone = decode_wav(invert_audio(pngs[1:2], wavs[1:2], gl)[0])[0]
    assert np.abs(alone - back_gl[1]).max() <= 2 / 32768


@pytest.mark.slow
def test_voices_preset_through_the_flow(prefect_server, tmp_path: Path, monkeypatch):
    # The README's second demo, shortened: the bundled speech preset is made (eSpeak NG), ingested,
    # translated and published by the Prefect flow; the listening page is posted as an artifact.
    import asyncio

    import yaml
    from prefect.client.orchestration import get_client

    from flows.augment import augment

    pytest.importorskip("espeakng_loader")
    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "params.voices.yaml").read_text())
    raw["train"].update({"steps": 60})
    raw["runtime"].update({"checkpoint_every": 30})
    raw["model"].update({"ngf": 8, "ndf": 8, "n_blocks": 2})
    raw["validate"].update({"classifier_epochs": 2, "run": {"AtoB": {}, "BtoA": {}}})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    state = augment(params="params.yaml", return_state=True)
    assert state.is_completed(), state.message
    run = state.result()
    assert run["ingest"]["A"]["samples"] == 392 and run["ingest"]["B"]["samples"] == 280
    published, dropped = run["publish"]["rows"], run["publish"]["dropped"]
    assert sum(published.values()) > 0 and sum(published.values()) + sum(dropped.values()) == 392 + 280
    summary = json.loads((tmp_path / "data/voices/validated/summary.json").read_text())
    for d in ("AtoB", "BtoA"):
        f = summary["directions"][d]
        assert f["label_accuracy"] is not None and f["label_accuracy_untranslated"] is not None
        assert f["label_accuracy_heard"] is not None and f["mean_cycle_lsd"] is not None
    assert (tmp_path / "reports/voices/listen/index.html").exists()

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    keys = {a.key for a in asyncio.run(artifacts())}
    assert {"cycleaug-listen", "cycleaug-report"} <= keys


def test_audio_ingest_from_an_fsspec_url_resamples_and_quarantines(tmp_path: Path):
    # Clips in an fsspec memory filesystem, at another rate and in stereo: mixed down, resampled, cut;
    # a far too long clip is quarantined without being decoded.
    import fsspec

    from cyclegan_core.ingest import ingest_collection

    fs = fsspec.filesystem("memory")
    rng = np.random.default_rng(3)
    for i in range(3):
        stereo = np.stack([_clip(300.0, 2, rng, 1.2)] * 2, axis=1)
        buf = io.BytesIO()
        sf.write(buf, stereo, RATE, format="FLAC")
        fs.pipe(f"/voices-{tmp_path.name}/train/c{i}.flac", buf.getvalue())
    long = io.BytesIO()
    sf.write(long, np.zeros(RATE * 40, np.float32) + 0.1, RATE, format="WAV")
    fs.pipe(f"/voices-{tmp_path.name}/train/long.wav", long.getvalue())
    raw = audio_settings(tmp_path)
    raw["data"]["audio"].update({"sample_rate": 4000, "max_seconds": 30.0})
    cfg = config_from_dict(raw).data
    res = ingest_collection(f"memory://voices-{tmp_path.name}", "A", tmp_path / "ingest", cfg)
    assert res.samples == 3 and res.quarantined == 1
    rows = pq.read_table(res.manifest).to_pylist()
    wave, rate = sf.read(io.BytesIO(rows[0]["audio"]))
    assert rate == 4000 and wave.ndim == 1 and len(wave) == cfg.audio.clip_samples
    assert rows[0]["orig_sample_rate"] == RATE and rows[0]["orig_channels"] == 2 and rows[0]["clip_offset"] >= 0
    with open(res.quarantine, newline="") as f:
        assert "too long" in next(r for r in csv.DictReader(f) if r["path"] == "train/long.wav")["reason"]
    # A second run reuses every clip: nothing is decoded again.
    again = ingest_collection(f"memory://voices-{tmp_path.name}", "A", tmp_path / "ingest", cfg)
    assert again.reused == 3 and again.decoded == 0 and again.manifest_sha256 == res.manifest_sha256
