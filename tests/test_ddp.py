"""Data-parallel training through torchrun: 2 CPU processes on gloo, end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from cyclegan_core.config import load_config
from cyclegan_core.ingest import manifest_images, read_manifest
from cyclegan_core.models import CheckpointError
from cyclegan_core.pipeline import current_fingerprint, manifest_path, step_ingest
from cyclegan_core.train import Trainer


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cyclegan", "cut"])
def test_torchrun_two_processes_train_one_model(params_file: Path, tmp_path: Path, arch: str):
    raw = yaml.safe_load(params_file.read_text())
    raw["train"].update({"steps": 4})
    raw["runtime"].update({"checkpoint_every": 3, "num_threads": 1, "device": "cpu"})
    raw["model"]["arch"] = arch  # cut: gradients averaged by hand (train_cut), the replica check still holds
    params_file.write_text(yaml.safe_dump(raw))
    cfg = load_config(params_file)
    step_ingest(cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "flows.cli", "--params", str(params_file), "train"],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "on 2 processes" in ln]
    assert len(said) == 1 and "(4 steps)" in said[0], said  # printed once, by rank 0, after the replica check
    folder = Path(cfg.paths.models) / current_fingerprint(cfg)
    meta = json.loads((folder / "model.json").read_text())
    assert meta["steps"] == 4
    rows = (folder / "losses.tsv").read_text().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in rows] == [1, 2, 3, 4]  # rank 0 alone logs
    ckpt = json.loads((folder / "checkpoint.json").read_text())
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    tensors = load_file(str(folder / ckpt["file"]))
    # Each rank's own random state and pools are kept, and they differ (ranks sample differently).
    assert {"rank0.rng", "rank1.rng", "rank0.pool.A", "rank1.pool.A"} <= tensors.keys()
    if arch == "cut":  # no image pool; each rank's patch positions
        assert not (tensors["rank0.patch_rng"] == tensors["rank1.patch_rng"]).all()
    else:
        assert not (tensors["rank0.pool.A"] == tensors["rank1.pool.A"]).all()
    # An exact resume needs the same number of processes.
    images = {d: manifest_images(read_manifest(manifest_path(cfg, d), ("train",))) for d in ("A", "B")}
    with pytest.raises(CheckpointError, match="written by 2 processes, resuming with 1"):
        Trainer(cfg, images["A"], images["B"], folder).try_resume()
