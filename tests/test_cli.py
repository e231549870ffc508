"""The ``cycleaug`` step commands as ``dvc.yaml`` calls them: separate processes, one per step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cycleaug(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_step_commands_in_sequence(params_file, tmp_path):
    for step in ("ingest", "train", "generate", "validate", "publish"):
        r = _cycleaug("--params", str(params_file), step, cwd=tmp_path)
        assert r.returncode == 0, f"{step}: {r.stderr[-2000:]}"
    assert "AtoB: published 24, dropped 0; held-out cycle PSNR" in r.stderr  # cyclegan_core.overview's lines
    out = json.loads(_cycleaug("--params", str(params_file), "train", cwd=tmp_path).stdout)
    assert out["reused"] is True
    assert len(pd.read_parquet(tmp_path / "work" / "published" / "data")) == 48
    r = _cycleaug("--params", str(params_file), "verify", cwd=tmp_path)
    assert r.returncode == 0 and "every shard matches" in r.stdout


def test_bad_config_is_exit_2_with_the_key(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("model:\n  norm: group\n")
    r = _cycleaug("--params", str(bad), "ingest", cwd=tmp_path)
    assert r.returncode == 2 and "model.norm" in r.stderr and "'instance'" in r.stderr


def test_set_runtime_keys_and_a_moved_key_is_exit_2_saying_where(params_file, tmp_path):
    r = _cycleaug("--params", str(params_file), "--set", "runtime.device=cpu", "--set",
                  "runtime.generate.precision=bf16", "ingest", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cycleaug("--params", str(params_file), "--set", "train.device=cpu", "ingest", cwd=tmp_path)
    assert r.returncode == 2 and "train.device: moved to runtime.device" in r.stderr, r.stderr
    r = _cycleaug("--params", str(params_file), "--set", "runtime.device=gpu", "ingest", cwd=tmp_path)
    assert r.returncode == 2 and "runtime.device" in r.stderr and "'gpu'" in r.stderr, r.stderr


def test_gate_failure_blocks_publish(params_file, tmp_path):
    for step in ("ingest", "train", "generate"):
        assert _cycleaug("--params", str(params_file), step, cwd=tmp_path).returncode == 0
    bound = ["--set", "validate.run.BtoA.min_mean_cycle_psnr=99"]
    r = _cycleaug("--params", str(params_file), *bound, "validate", "--strict", cwd=tmp_path)
    assert r.returncode == 1 and "BtoA.mean_cycle_psnr" in r.stderr
    r = _cycleaug("--params", str(params_file), *bound, "publish", cwd=tmp_path)
    assert r.returncode == 1 and "nothing published" in r.stderr
    assert not (tmp_path / "work" / "published").exists()


def test_a_completed_run_without_its_result_data_still_reports():
    # A real Prefect state as the server hands back a final state without its data.
    from prefect.states import Completed

    from flows.cli import _finished_line

    assert "returned its final state without the run's summary" in _finished_line(Completed())
    done = Completed(data={"seconds": 12.5, "train": {"reused": True}, "generate": {"translated": {"AtoB": 2,
                                                                                                  "BtoA": 3}}})
    assert _finished_line(done) == "\nCycleAug finished in 12.5 s (model reused; translated 5 new samples)."


def test_params_and_set_go_before_or_after_the_subcommand():
    from flows.cli import build_parser, parse_args

    args = parse_args(["--set", "train.steps=3", "run", "--set", "train.lr=0.1", "--params", "p.yaml", "--retrain"])
    assert args.set == ["train.steps=3", "train.lr=0.1"] and args.params == "p.yaml" and args.retrain
    assert parse_args(["ingest"]).params == "params.yaml" and parse_args(["ingest"]).set == []
    text = build_parser().format_help()
    assert "start here:" in text and "cycleaug run --set train.steps=300" in text
    sub = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "Train a model for the current data" in sub and "--set" in sub


def test_run_with_a_missing_collection_says_so_in_one_line_before_any_server(tmp_path):
    (tmp_path / "B").mkdir()
    (tmp_path / "params.yaml").write_text("{}\n")
    r = _cycleaug("--set", f"data.domain_a={tmp_path / 'nope'}", "--set", f"data.domain_b={tmp_path / 'B'}", "run",
                  cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "collection A (data.domain_a)" in r.stderr and "not found" in r.stderr
    assert not (tmp_path / ".prefect").exists()  # no Prefect server was started


def test_a_temporary_server_that_does_not_start_in_time_gets_a_hint(params_file, tmp_path):
    # One second is shorter than any start of Prefect's temporary server (its imports alone take longer).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "fresh-home"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}
    r = subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(params_file), "run"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "temporary Prefect server did not start within 1 s" in r.stderr and "PREFECT_API_URL=" in r.stderr


@pytest.mark.slow
def test_run_with_arch_cut_publishes_a_gated_dataset(params_file, tmp_path):
    """``cycleaug --set model.arch=cut run``: the whole flow (a temporary Prefect server) with two CUT models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    r = subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(params_file), "--set", "model.arch=cut",
                        "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    published = tmp_path / "work" / "published"
    assert len(pd.read_parquet(published / "data")) == 48
    assert "- model_arch: `cut`" in (published / "README.md").read_text()
    metrics = json.loads((tmp_path / "work" / "reports" / "metrics.json").read_text())
    assert metrics["gate_passed"] and metrics["model"]["arch"] == "cut"


def test_relative_paths_are_from_the_params_files_folder(tmp_path):
    """Run from another folder: the params file's relative paths (and --set's) resolve from its folder."""
    import yaml

    from tests.conftest import tiny_collections, tiny_settings

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    tiny_collections(project / "raw")
    raw = tiny_settings(Path("work"), Path("raw/A"), Path("raw/B"))  # every path relative
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    r = _cycleaug("--params", "../project/params.yaml", "--set", "paths.ingest=work/elsewhere-ingest", "ingest",
                  cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (project / "work" / "elsewhere-ingest" / "A" / "manifest.parquet").is_file()
    assert not any(elsewhere.iterdir())  # nothing written where the command was typed
    uris = pd.read_parquet(project / "work" / "elsewhere-ingest" / "A" / "manifest.parquet", columns=["uri"]).uri
    assert all(u.startswith("raw/A/") for u in uris), uris[:3]  # no folder of this machine in the rows
