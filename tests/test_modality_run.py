"""The ``modality`` run kind (issue 24): source texts -> speech in batches -> the cross-modal gate ->
published pairs, and a broken translator that the gate stops."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from cyclegan_core.config import ConfigError, config_from_dict
from cyclegan_core.gate import GateFailed
from cyclegan_core.modality import TranslatedItem
from cyclegan_core.modality.run import ModalityError, run_failures, run_modality, sample_reasons, source_batches
from cyclegan_core.modality.settings import ModalityConfig, ModalityRunBounds, ModalitySampleBounds
from cyclegan_core.voices import WORDS as PRESET_WORDS
from flows.cli import main

WORDS = ["yes", "no", "stop", "go"]
REAL_VOICES = tuple(f"en+m{k}" for k in range(1, 8)) + tuple(f"en+f{k}" for k in range(1, 6))


class WrongWord:
    """A deliberately broken translator: every text gets the clip of the next word of the speech preset's
    (``yes`` -> ``no``, ``go`` -> ``zero``); ``tests.test_modality_run:wrong_word`` in a config."""

    name, source, target = "wrong_word", "text", "speech"

    def __init__(self, **settings) -> None:
        from cyclegan_core.modality.speech import text_to_speech

        self.tts = text_to_speech(**settings)

    def settings(self) -> dict:
        return {"translator": self.name, **self.tts.settings()}

    def translate(self, batch, seed):
        out = []
        for i, text in enumerate(batch):
            wrong = PRESET_WORDS[(PRESET_WORDS.index(text) + 1) % len(PRESET_WORDS)]
            for take in self.tts.plan(text, seed):
                out.append(TranslatedItem(self.tts.speak(wrong, take["voice"], take["rate"], take["pitch"]), text, i,
                                          take))
        return out


def wrong_word(**settings) -> WrongWord:
    return WrongWord(**settings)


class MirroredScenes:
    """A deliberately broken scene translator: each caption's scene drawn mirrored (left and right swapped)."""

    name, source, target = "mirrored_scenes", "text", "image"

    def __init__(self, **settings) -> None:
        from cyclegan_core.modality.scenes import caption_to_scene

        self.inner = caption_to_scene(**settings)

    def settings(self) -> dict:
        return {"translator": self.name, **self.inner.settings()}

    def translate(self, batch, seed):
        return [TranslatedItem(np.ascontiguousarray(it.output[:, ::-1]), it.source, it.index, it.params)
                for it in self.inner.translate(batch, seed)]


def mirrored_scenes(**settings) -> MirroredScenes:
    return MirroredScenes(**settings)


@pytest.fixture(scope="module")
def speech_project(tmp_path_factory) -> Path:
    """A real target collection (4 words x 12 voices x 3 takes, eSpeak NG) and a source CSV of the 4 words."""
    pytest.importorskip("espeakng_loader")
    from cyclegan_core.modality.speech import TextToSpeech

    root = tmp_path_factory.mktemp("speech")
    real = root / "real"
    real.mkdir()
    items = TextToSpeech(voices=REAL_VOICES, per_text=36).translate(WORDS, seed=3)
    with open(real / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "word"])
        for k, it in enumerate(items):
            (real / f"clip{k:04d}.wav").write_bytes(it.output)
            w.writerow([f"clip{k:04d}.wav", it.source])
    (root / "transcripts.csv").write_text("text_id,text\n" + "".join(f"t{i},{w}\n" for i, w in enumerate(WORDS)))
    return root


def modality_settings(root: Path, **extra) -> dict:
    section = {"enabled": True, "translator": "text_to_speech",
               "settings": {"voices": ["en+m3", "en+f2", "en+m6"], "per_text": 3},
               "source": str(root / "transcripts.csv"), "target": {"collections": [str(root / "real")]},
               "batch_size": 3, "output": str(root / "published"), "reports": str(root / "reports"),
               # ~50 real clips per role here: the bounds of a small judge (the demo's judge has ~220)
               "run": {"min_real_accuracy": 0.6, "min_fidelity_accuracy": 0.6, "min_pass_rate": 0.5}}
    return {"modality": section | extra}


def listing(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_passing_run_publishes_pairs_and_a_broken_translator_publishes_nothing(speech_project):
    root = speech_project
    cfg = config_from_dict(modality_settings(root))
    result = run_modality(cfg, flow_run_id="run-1")
    assert result.passed and result.generated == 12 and result.rows + result.dropped == 12 and result.rows >= 6
    out = root / "published"
    manifest = json.loads((out / "manifest.json").read_text())
    for shard in manifest["shards"]:  # the manifest lists each shard with its sha256
        assert hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]

    df = pd.read_parquet(out / "data")
    assert len(df) == result.rows == manifest["rows"]["train"]
    names = ["go", "no", "stop", "yes"]  # the judge's classes, sorted
    settings = json.loads(df.translator_settings.iloc[0])
    assert settings["voices"] == ["en+m3", "en+f2", "en+m6"] and settings["per_text"] == 3
    assert set(df.translator) == {"text_to_speech"} and set(df.flow_run_id) == {"run-1"}
    for row in df.itertuples():  # both modalities in every row: the text and its clip
        wave, rate = sf.read(io.BytesIO(row.audio["bytes"]))
        assert rate == 16_000 and 0.1 < len(wave) / rate < 2.0 and np.abs(wave).max() > 0.05
        assert hashlib.sha256(row.audio["bytes"]).hexdigest() == row.sample_id
        assert names[row.label] == row.text == names[row.pred_label] and row.fidelity >= 0.5  # only passing rows
        assert json.loads(row.params)["voice"] in settings["voices"]
    report = json.loads((root / "reports" / "modality.json").read_text())
    assert report["passed"] and report["figures"]["fidelity_accuracy"] >= 0.6
    assert report["figures"]["generated"] == 12 and report["figures"]["held_out_real"] > 20
    utility = report["figures"]["utility"]  # train on the published clips, test on held-out real ones
    assert utility["generated_items"] == result.rows and utility["test_items"] == report["figures"]["held_out_real"]
    assert all(len(utility[a]["runs"]) == 2 and 0 <= utility[a]["mean"] <= 1 for a in
               ("real_few", "real_few+generated", "generated", "real_all"))
    assert utility["real_all"]["mean"] > utility["chance"]
    assert not list(root.glob(".published.*"))  # no staging left behind

    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(root / "hf-cache"))
    assert ds.features["label"].names == names and ds.features["audio"].__class__.__name__ == "Audio"
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    assert sorted(ds["sample_id"]) == sorted(df.sample_id) and ds[0]["audio"]["bytes"][:4] == b"RIFF"

    # The broken translator: every clip says another word. The gate fails and the version above stays.
    before = listing(out)
    broken = config_from_dict(modality_settings(root, translator=f"{__name__}:wrong_word"))
    with pytest.raises(GateFailed, match=r"fidelity_accuracy = 0 < 0\.6 \(modality\.run\.min_fidelity_accuracy\)"):
        run_modality(broken)
    assert listing(out) == before
    report = json.loads((root / "reports" / "modality.json").read_text())
    assert not report["passed"] and report["figures"]["fidelity_accuracy"] == 0.0
    assert report["figures"]["passed"] == 0 and "read_back false" in report["dropped_examples"][0]["reason"]
    assert not list(root.glob(".published.*"))

    # A first run with the broken translator publishes nothing at all; the CLI says why and exits 1.
    fresh = modality_settings(root, translator=f"{__name__}:wrong_word", output=str(root / "fresh"))
    (root / "broken.yaml").write_text(yaml.safe_dump(fresh))
    assert main(["--params", str(root / "broken.yaml"), "modality"]) == 1
    assert not (root / "fresh").exists()


@pytest.mark.slow
def test_cycleaug_run_goes_through_the_prefect_flow(speech_project, prefect_server, capsys):
    root = speech_project
    params = root / "prefect.yaml"
    params.write_text(yaml.safe_dump(modality_settings(root, output=str(root / "via-prefect"))))
    assert main(["--params", str(params), "run"]) == 0
    said = capsys.readouterr().out
    assert re.search(r"CycleAug modality run finished in .* pairs published", said) and "FID" in said
    assert len(pd.read_parquet(root / "via-prefect" / "data")) > 0
    flow_run_id = pd.read_parquet(root / "via-prefect" / "data", columns=["flow_run_id"]).flow_run_id.iloc[0]
    assert flow_run_id  # the Prefect flow run is the provenance
    params.write_text(yaml.safe_dump(modality_settings(root, translator=f"{__name__}:wrong_word",
                                                       output=str(root / "broken-prefect"))))
    assert main(["--params", str(params), "run"]) == 1
    assert "modality gate failed" in capsys.readouterr().err and not (root / "broken-prefect").exists()


# --- the parts, without eSpeak ------------------------------------------------------------------------------
def test_sources_are_read_in_batches_from_csv_and_parquet(tmp_path):
    texts = [f"word {i}" for i in range(10)]
    (tmp_path / "s.csv").write_text("text_id,text\n" + "".join(f"id{i},{t}\n" for i, t in enumerate(texts)))
    pq.write_table(pa.table({"text": texts, "other": list(range(10))}), tmp_path / "s.parquet")
    by_csv = list(source_batches(ModalityConfig(source=str(tmp_path / "s.csv"), batch_size=4)))
    assert [len(b[1]) for b in by_csv] == [4, 4, 2] and by_csv[2] == (["id8", "id9"], texts[8:])
    by_parquet = list(source_batches(ModalityConfig(source=str(tmp_path / "s.parquet"), id_column=None,
                                                    batch_size=3)))
    assert [t for _, b in by_parquet for t in b] == texts and by_parquet[1][0] == ["row-3", "row-4", "row-5"]
    with pytest.raises(ModalityError, match="has no column text_id"):
        list(source_batches(ModalityConfig(source=str(tmp_path / "s.parquet"))))
    (tmp_path / "dup.csv").write_text("text_id,text\na,yes\na,no\n")
    from cyclegan_core.modality.run import scan_sources

    with pytest.raises(ModalityError, match="id 'a' appears twice"):
        scan_sources(ModalityConfig(source=str(tmp_path / "dup.csv")))
    with pytest.raises(ConfigError, match=r"modality\.source.*\.csv or \.parquet"):
        config_from_dict({"modality": {"source": "texts.json"}})


def test_bounds_name_the_figure_the_value_and_the_key():
    scores = {"read_back": np.array([True, False, True]), "read_as": ["go", "go", "no"],
              "fidelity": np.array([0.9, 0.3, 0.6]), "realism": np.array([0.5, 0.1, 0.01])}
    reasons = sample_reasons(scores, ModalitySampleBounds(min_realism=0.05))
    assert reasons[0] == "" and reasons[1] == "fidelity 0.3 < 0.5; read_back false (the judge read 'go')"
    assert reasons[2] == "realism 0.01 < 0.05"
    figures = {"real_accuracy": 0.95, "fidelity_accuracy": 0.5, "fid": 4.0, "kid": None, "mean_realism": 0.4,
               "pass_rate": 0.9}
    assert run_failures(figures, ModalityRunBounds()) == [
        "fidelity_accuracy = 0.5 < 0.8 (modality.run.min_fidelity_accuracy)", "fid = 4 > 3.0 (modality.run.max_fid)"]
    assert run_failures(figures, ModalityRunBounds(max_kid=0.1, min_fidelity_accuracy=None, max_fid=None)) == [
        "kid: not measured, bound 0.1 (modality.run.max_kid)"]


def test_a_translator_from_another_modality_is_refused_before_any_work(tmp_path):
    (tmp_path / "s.csv").write_text("text_id,text\na,a red circle on the left\n")
    cfg = config_from_dict({"modality": {"enabled": True, "translator": "scene_to_caption",
                                         "source": str(tmp_path / "s.csv"), "output": str(tmp_path / "out"),
                                         "target": {"collections": [str(tmp_path / "none")]}}})
    with pytest.raises(ModalityError, match="translates image; a modality run reads texts"):
        run_modality(cfg)
    assert not (tmp_path / "out").exists()
    missing = config_from_dict({"modality": {"enabled": True, "translator": "caption_to_scene",
                                             "source": str(tmp_path / "s.csv"),
                                             "target": {"collections": [str(tmp_path / "none.parquet")]}}})
    with pytest.raises(ModalityError, match=r"none\.parquet not found; real scenes are a Parquet file"):
        run_modality(missing)


def test_the_demo_params_select_the_modality_run():
    from cyclegan_core.config import load_config
    from cyclegan_core.modality import resolve_translator

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "params.tts.yaml")
    assert cfg.modality.enabled and not load_config(root / "params.yaml").modality.enabled
    tts = resolve_translator(cfg.modality.translator, cfg.modality.settings)
    assert (tts.source, tts.target) == ("text", "speech") and tts.settings()["per_text"] == 4
    texts = pd.read_csv(root / cfg.modality.source)[cfg.modality.source_column].tolist()
    assert texts == list(PRESET_WORDS)  # the bundled transcripts: the words the real clips say


@pytest.mark.slow
def test_caption_to_scene_run_publishes_image_caption_pairs_and_a_mirrored_drawing_fails(tmp_path):
    from cyclegan_core.modality.gates import write_scenes
    from cyclegan_core.modality.scenes import caption_agreement
    from cyclegan_core.paired.scenes import make_scenes

    write_scenes(tmp_path / "real.parquet", 240, seed=0)
    captions = list(dict.fromkeys(s.caption for s in make_scenes(40, seed=7, points_per_object=0)))[:24]
    pd.DataFrame({"text_id": [f"c{i}" for i in range(len(captions))], "text": captions}).to_csv(
        tmp_path / "captions.csv", index=False)
    section = {"enabled": True, "translator": "caption_to_scene", "settings": {"points_per_object": 0},
               "source": str(tmp_path / "captions.csv"), "output": str(tmp_path / "out"),
               "reports": str(tmp_path / "reports"), "batch_size": 5,
               "target": {"collections": [str(tmp_path / "real.parquet")], "text_column": "caption",
                          "judge_epochs": 4},
               "sample": {"min_fidelity": 0.75},
               "run": {"min_real_accuracy": 0.9, "min_fidelity_accuracy": 0.9, "max_fid": None,
                       "min_mean_realism": None, "min_pass_rate": 0.8}}
    result = run_modality(config_from_dict({"modality": section}))
    assert result.passed and result.generated == len(captions) and result.rows >= 0.8 * len(captions)
    df = pd.read_parquet(tmp_path / "out" / "data")
    from cyclegan_core.images import decode_png
    from cyclegan_core.modality.scenes import SceneToCaption

    for row in df.itertuples():  # every published image shows what its caption says, read from its pixels alone
        image = decode_png(row.image["bytes"])
        assert image.shape == (64, 64, 3) and hashlib.sha256(row.image["bytes"]).hexdigest() == row.sample_id
        back = SceneToCaption().translate([image], 0)[0].output
        assert back == row.described and caption_agreement(row.text, back)["exact"] == 1.0 and row.read_back
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(str(tmp_path / "out"), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.features["image"].__class__.__name__ == "Image" and ds[0]["image"].size == (64, 64)

    utility = json.loads((tmp_path / "reports" / "modality.json").read_text())["figures"]["utility"]
    assert utility["generated_items"] == result.rows and utility["chance"] == pytest.approx(1 / 3)
    assert utility["real_all"]["mean"] > utility["chance"]  # counting objects is learnable from these scenes

    before = listing(tmp_path / "out")
    broken = config_from_dict({"modality": section | {"translator": f"{__name__}:mirrored_scenes",
                                                      "utility_per_class": None}})
    with pytest.raises(GateFailed, match=r"fidelity_accuracy = .* < 0\.9 \(modality\.run\.min_fidelity_accuracy\)"):
        run_modality(broken)
    assert listing(tmp_path / "out") == before
    report = json.loads((tmp_path / "reports" / "modality.json").read_text())
    assert report["figures"]["fidelity_accuracy"] < 0.6 and report["figures"]["real_accuracy"] >= 0.9
