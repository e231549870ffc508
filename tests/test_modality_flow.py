"""A modality run through Prefect holds its output folders (``tasks.policies.holding_outputs``): a second run
into the same ``modality.output`` waits for the first instead of clearing its staging or swapping the
version under it (issue 24)."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
import yaml

from cyclegan_core.config import config_from_dict
from tasks.policies import outputs_limit_name
from tests.test_modality_reader import scenes_project, scenes_section


def test_a_modality_runs_lock_is_named_after_the_folders_it_writes(tmp_path):
    section = scenes_section(tmp_path)
    base = config_from_dict({"modality": section})
    name = outputs_limit_name(base)
    assert name.startswith("cycleaug-train-publish-outputs-")
    # Other pipeline folders: the same modality folders, the same lock.
    assert outputs_limit_name(config_from_dict({"modality": section, "paths": {"published": str(tmp_path / "p")}})) \
        == name
    assert outputs_limit_name(config_from_dict({"modality": section | {"output": str(tmp_path / "o2")}})) != name
    assert outputs_limit_name(config_from_dict({"modality": section | {"reports": str(tmp_path / "r2")}})) != name
    assert outputs_limit_name(config_from_dict({"modality": section | {"enabled": False}})) != name


@pytest.mark.slow
def test_a_second_modality_run_into_the_same_folder_waits_for_the_first(tmp_path, prefect_server):
    from prefect.concurrency.sync import concurrency

    from flows.modality import modality_run
    from tasks.policies import ensure_concurrency_limit

    root = scenes_project(tmp_path)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"modality": scenes_section(root)}))
    name = outputs_limit_name(config_from_dict({"modality": scenes_section(root)}))
    ensure_concurrency_limit(name)
    states = []
    with concurrency(name, occupy=1, strict=True):  # another run holds the folders
        runner = threading.Thread(target=lambda: states.append(modality_run(params=str(params), return_state=True)))
        runner.start()
        time.sleep(8)  # long enough for the ~2 s run, had it not waited
        assert runner.is_alive() and not (root / "out").exists() and not (root / ".out.scored").exists()
    runner.join(120)
    assert not runner.is_alive() and states[0].is_completed()
    assert len(pd.read_parquet(root / "out" / "data")) == states[0].result()["rows"] > 0
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert limit.limit == 1 and limit.active_slots == 0


def test_without_prefect_a_second_run_into_the_same_folder_waits_for_the_first(tmp_path):
    from cyclegan_core.modality.run import run_modality
    from cyclegan_core.storage import folder_lock

    root = scenes_project(tmp_path)
    cfg = config_from_dict({"modality": scenes_section(root)})
    results = []
    with folder_lock(root / "out"):  # another run (here: this thread) is writing the folder
        runner = threading.Thread(target=lambda: results.append(run_modality(cfg)))
        runner.start()
        time.sleep(6)  # long enough for the ~2 s run, had it not waited
        assert runner.is_alive() and not (root / "out").exists() and not (root / ".out.scored").exists()
    runner.join(120)
    assert not runner.is_alive() and results[0].passed
    assert len(pd.read_parquet(root / "out" / "data")) == results[0].rows > 0
    assert not list(root.glob(".out.*"))  # no staging left; the lock file is .out-writer.lock
