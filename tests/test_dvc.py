"""`dvc repro` on a copy of this repository: the whole pipeline, a no-op second run, and a
generate-only parameter change that reruns generate and what follows but never training."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{' '.join(args)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def test_dvc_repro_runs_what_changed(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    for rel in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split():
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["default"]["typed_per_digit"] = 10
    params["train"].update(steps=4, batch_size=2, checkpoint_every=2)
    params["model"].update(ngf=4, ndf=4, n_blocks=1)
    params["validate"].update(classifier_epochs=1, sample={"AtoB": {}, "BtoA": {}}, run={"AtoB": {}, "BtoA": {}})
    params["generate"]["splits"] = ["test"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site")}
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    _run(["git", "init", "-q"], repo, env)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-qm", "copy"], repo, env)

    first = _run(["dvc", "repro"], repo, env)
    for stage in ("default_data", "ingest", "train", "generate", "validate", "publish"):
        assert f"Running stage '{stage}'" in first
    assert (repo / "data" / "augmented" / "manifest.json").exists()
    assert "Running stage" not in _run(["dvc", "repro"], repo, env)

    params["generate"]["batch_size"] = 5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run(["dvc", "repro"], repo, env)
    assert "Running stage 'train'" not in third and "Running stage 'ingest'" not in third
    for stage in ("generate", "validate", "publish"):
        assert f"Running stage '{stage}'" in third
