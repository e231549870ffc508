"""The Prefect flow against Prefect's test server: a full run, a reuse run, a gate failure."""


import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_flow_runs_reuses_and_gates(prefect_server, params_file, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.augment import augment

    state = augment(params=str(params_file), return_state=True)
    assert state.is_completed(), state.message
    first = state.result()
    assert first["train"]["reused"] is False
    assert first["publish"]["rows"] == {"AtoB": 24, "BtoA": 24}
    assert len(pd.read_parquet(tmp_path / "work" / "published" / "data")) == 48

    second = augment(params=str(params_file))
    assert second["train"]["reused"] is True
    assert second["train"]["fingerprint"] == first["train"]["fingerprint"]

    published = sorted((tmp_path / "work" / "published" / "data").glob("*.parquet"))
    before = {p.name: p.read_bytes() for p in published}
    failed = augment(params=str(params_file), overrides=["validate.run.AtoB.min_mean_realism=1.0"],
                     return_state=True)
    assert failed.is_failed()
    assert "AtoB.mean_realism" in failed.message and "min_mean_realism" in failed.message
    assert {p.name: p.read_bytes() for p in published} == before

    import asyncio

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    posted = asyncio.run(artifacts())
    keys = {a.key for a in posted}
    assert {"validation", "validation-report", "dataset-card", "train-train", "version-diff"} <= keys
    # The first publish (in its subflow) diffed itself against nothing: all 24 rows a direction added.
    diffs = [a.data for a in posted if a.key == "version-diff"]
    assert any("first version" in d and "| AtoB | 0 | 24 | 24 " in d for d in diffs), diffs
