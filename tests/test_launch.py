"""The training launcher (torchrun as an argument list, no shell) and which failures are retried."""

import sys

import pytest
import yaml

from cyclegan_core import pipeline
from cyclegan_core.config import config_from_dict
from tasks.launch import run_torchrun, torchrun_command
from tasks.policies import transient_storage_error
from tests.conftest import tiny_settings


def test_torchrun_command_is_an_argument_list():
    cmd = torchrun_command("p.yaml", ["train.steps=3", "data.mode=L"], 2, retrain=True)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[5:] == ["-m", "flows.cli", "--params", "p.yaml", "--set", "train.steps=3", "--set", "data.mode=L",
                       "train", "--retrain"]


@pytest.mark.slow
def test_torchrun_trains_the_model_the_flow_then_uses(tmp_path, collections):
    raw = tiny_settings(tmp_path / "work", *collections)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    cfg = config_from_dict(raw)
    pipeline.step_ingest(cfg)
    assert pipeline.choose_model(cfg).train
    lines: list[str] = []
    run_torchrun(str(params), ["runtime.log_every=2"], 1, log=lines.append, timeout=300)
    choice = pipeline.choose_model(cfg)
    assert not choice.train and (choice.folder / "model.safetensors").exists()
    assert any("torch.distributed.run" in ln for ln in lines)


class _State:
    def __init__(self, exc):
        self.exc = exc

    def result(self):
        raise self.exc


@pytest.mark.parametrize(("exc", "retry"), [
    (ConnectionResetError("peer"), True), (TimeoutError("slow"), True), (OSError(5, "I/O error"), True),
    (FileNotFoundError("gone"), False), (PermissionError("no"), False), (ValueError("bad image"), False),
])
def test_only_transient_storage_errors_are_retried(exc, retry):
    assert transient_storage_error(None, None, _State(exc)) is retry
