"""A modality run's published version (format ``cycleaug-modality-1``) read like a translation's:
``open_dataset`` rows, pandas and a torch DataLoader with both halves of each pair, and ``cycleaug verify``
against its manifest (issue 24)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from torch.utils.data import DataLoader

from cyclegan_core import reader
from cyclegan_core.audio import encode_wav
from cyclegan_core.config import config_from_dict
from cyclegan_core.images import decode_png
from cyclegan_core.modality import publish as modality_publish
from cyclegan_core.modality.gates import MEDIA, write_scenes
from cyclegan_core.modality.run import run_modality
from cyclegan_core.paired.scenes import make_scenes
from cyclegan_core.reader import open_dataset
from flows.cli import main

NO_RUN_BOUNDS = {"min_real_accuracy": None, "min_fidelity_accuracy": None, "max_fid": None, "max_kid": None,
                 "min_mean_realism": None, "min_pass_rate": None}


def scenes_section(root: Path) -> dict:
    return {"enabled": True, "translator": "caption_to_scene", "settings": {"points_per_object": 0},
            "source": str(root / "captions.csv"), "output": str(root / "out"), "reports": str(root / "reports"),
            "batch_size": 4, "utility_per_class": None, "max_shard_mb": 0.01,
            "target": {"collections": [str(root / "real.parquet")], "text_column": "caption", "judge_epochs": 2},
            "sample": {"min_fidelity": 0.75}, "run": NO_RUN_BOUNDS}


def scenes_project(root: Path) -> Path:
    """120 real scenes and 8 captions to draw: a scenes modality run of about 2 s (``scenes_section``)."""
    write_scenes(root / "real.parquet", 120, seed=0)
    captions = list(dict.fromkeys(s.caption for s in make_scenes(20, seed=7, points_per_object=0)))[:8]
    pd.DataFrame({"text_id": [f"c{i}" for i in range(len(captions))], "text": captions}).to_csv(
        root / "captions.csv", index=False)
    return root


@pytest.fixture(scope="module")
def scenes_version(tmp_path_factory) -> Path:
    """A scenes modality run's version, through the library: 8 captions, each drawn once."""
    root = scenes_project(tmp_path_factory.mktemp("scenes"))
    result = run_modality(config_from_dict({"modality": scenes_section(root)}))
    assert result.passed and result.rows > 0
    return root


@pytest.fixture(scope="module")
def speech_version(tmp_path_factory) -> Path:
    """A speech version written by the modality publisher from a staged part of 6 clips (2 of them failed)."""
    root = tmp_path_factory.mktemp("speech")
    rate, words = 16_000, ["go", "no", "yes"]
    clips = [encode_wav(0.5 * np.sin(2 * np.pi * (200 + 50 * k) * np.arange(rate // 4 + 400 * k) / rate), rate)
             for k in range(6)]
    ids = [hashlib.sha256(b).hexdigest() for b in clips]
    part = root / "part-00000.parquet"
    pq.write_table(pa.table({
        "sample_id": ids, "text_id": [f"t{k % 3}" for k in range(6)], "text": [words[k % 3] for k in range(6)],
        "audio": pa.array([{"bytes": b, "path": f"{s[:16]}.wav"} for b, s in zip(clips, ids, strict=True)], MEDIA),
        "sample_rate": pa.array([rate] * 6, pa.int32()),
        "duration_s": [(rate // 4 + 400 * k) / rate for k in range(6)],
        "label": pa.array([k % 3 for k in range(6)], pa.int64()), "pred_label": pa.array([k % 3 for k in range(6)],
                                                                                          pa.int64()),
        "fidelity": [0.9] * 6, "read_back": [True] * 6, "margin": [1.0] * 6, "realism": [0.5] * 6,
        "params": [json.dumps({"take": k}) for k in range(6)],
        "passed": [k not in (1, 4) for k in range(6)],
        "fail_reason": ["" if k not in (1, 4) else "x" for k in range(6)],
    }), part)
    provenance = {"translator": "text_to_speech", "translator_settings": "{}", "code_version": "c" * 64,
                  "params_hash": "p" * 64, "seed": 0, "flow_run_id": None}
    modality_publish.publish_pairs([part], root / "out", provenance=provenance, figures={"generated": 6},
                                   label_names=words, max_shard_bytes=2**20, source="transcripts.csv",
                                   target=["real"], media="audio")
    return root


def test_the_reader_knows_the_modality_publishers_format():
    assert reader.MODALITY_FORMAT == modality_publish.FORMAT


def test_a_scenes_version_reads_as_caption_image_pairs(scenes_version):
    ds = open_dataset(str(scenes_version / "out"))
    manifest = json.loads((scenes_version / "out" / "manifest.json").read_text())
    assert ds.is_modality and ds.pair_columns == ("text", "image") and ds.rows == manifest["rows"]
    df = ds.to_pandas(columns=["sample_id", "text", "image", "read_back"])
    assert len(df) == manifest["rows"]["train"] and df.read_back.all()
    captions = set(pd.read_csv(scenes_version / "captions.csv").text)
    for row in df.itertuples():  # both halves: the caption and the drawn scene
        assert row.text in captions and hashlib.sha256(row.image["bytes"]).hexdigest() == row.sample_id
    # The usual selections: a modality version's split is its shards' direction, and every row passed.
    assert len(ds.to_table(split="train", passed=True)) == len(df) and len(ds.to_table(passed=False)) == 0
    with pytest.raises(ValueError, match=r"no direction \['test'\]"):
        ds.to_table(split="test")
    torch_ds = ds.torch(columns=["sample_id", "text", "image"], split="train")
    assert len(torch_ds) == len(df) and len(ds.torch(passed=False)) == 0
    seen = {}
    for row in DataLoader(torch_ds, batch_size=None):
        assert tuple(row["image"].shape) == (3, 64, 64)
        want = decode_png(df.set_index("sample_id").image[row["sample_id"]]["bytes"])
        assert np.array_equal(row["image"].permute(1, 2, 0).numpy(), want)
        seen[row["sample_id"]] = row["text"]
    assert seen == dict(zip(df.sample_id, df.text, strict=True))  # every pair once


def test_a_speech_version_reads_as_text_clip_pairs(speech_version):
    ds = open_dataset(str(speech_version / "out"))
    assert ds.pair_columns == ("text", "audio") and ds.rows == {"train": 4}  # the 2 failed clips are not in it
    df = ds.to_pandas()
    rows = list(ds.torch(columns=["sample_id", "text", "audio"]))
    assert sorted(r["sample_id"] for r in rows) == sorted(df.sample_id)
    for r in rows:  # the clip comes as its float32 waveform, the text beside it
        wave, rate = sf.read(io.BytesIO(df.set_index("sample_id").audio[r["sample_id"]]["bytes"]), dtype="float32")
        assert rate == 16_000 and r["audio"].dtype.is_floating_point and np.allclose(r["audio"].numpy(), wave)
        assert r["text"] in ("go", "no", "yes")
    assert ds.verify() == []


def test_cycleaug_verify_checks_a_modality_version_against_its_manifest(scenes_version, capsys):
    params = scenes_version / "verify.yaml"
    params.write_text(yaml.safe_dump({"modality": scenes_section(scenes_version)}))
    assert main(["--params", str(params), "verify"]) == 0  # modality.output, without --dataset
    assert "every shard matches manifest.json" in capsys.readouterr().out
    shard = scenes_version / "out" / json.loads((scenes_version / "out" / "manifest.json").read_text())[
        "shards"][0]["file"]
    original = shard.read_bytes()
    try:
        shard.write_bytes(original[:-9] + bytes(b ^ 1 for b in original[-9:-8]) + original[-8:])
        assert main(["--params", str(params), "verify"]) == 1
        assert f"{shard.relative_to(scenes_version / 'out')}: sha256 differs from manifest.json" in \
            capsys.readouterr().out
        (scenes_version / "out" / "data" / "train-extra.parquet").write_bytes(original)
        assert any("train-extra.parquet: not listed" in p for p in open_dataset(str(scenes_version / "out")).verify())
    finally:
        shard.write_bytes(original)
        (scenes_version / "out" / "data" / "train-extra.parquet").unlink(missing_ok=True)
    assert main(["--params", str(params), "verify", "--dataset", str(scenes_version / "out")]) == 0
