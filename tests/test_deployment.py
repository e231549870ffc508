"""The scheduled deployment against a real Prefect server: ``prefect server start`` on a free loopback
port with its own PREFECT_HOME, ``cycleaug serve`` registers the deployments, a triggered run
completes, and its report and metrics table are read back through the REST API. Everything
started here is stopped by PID (its process group)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import tiny_settings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    # A new session makes the process a group leader, so its children (uvicorn, flow runs) stop with it.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    proc.stdout and proc.stdout.close()


def wait_for(what: str, check, timeout: float, logs: list[Path]):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tails}")


@pytest.fixture
def prefect_api(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    port = free_port()
    log = tmp_path / "server.log"
    server = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                   env, log)
    url = f"http://127.0.0.1:{port}/api"

    def healthy():
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("the Prefect server", healthy, 180, [log])
        yield url, env | {"PREFECT_API_URL": url}
    finally:
        stop(server)


def test_served_deployment_runs_and_reports(prefect_api, tmp_path, collections):
    url, env = prefect_api
    raw = tiny_settings(tmp_path / "work", *collections)
    raw["orchestrate"] = {"schedule": {"cron": "30 1 * * *", "retrain_cron": None, "tags": ["cycleaug", "test"]}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    log = tmp_path / "serve.log"
    serve = start([sys.executable, "-m", "flows.cli", "--params", str(params), "serve"],
                  env | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}, log)
    api = httpx.Client(base_url=url, timeout=30)
    try:
        def deployment():
            r = api.post("/deployments/filter", json={"deployments": {"name": {"any_": ["nightly"]}}})
            return r.json()[0] if r.status_code == 200 and r.json() else None

        dep = wait_for("the nightly deployment", deployment, 180, [log])
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["30 1 * * *"]
        assert {"cycleaug", "test", "nightly"} <= set(dep["tags"])
        assert dep["parameters"] == {"params": str(params), "overrides": [], "retrain": False}
        limit = dep.get("concurrency_limit") or (dep.get("global_concurrency_limit") or {}).get("limit")
        assert limit == 1
        gcls = api.post("/v2/concurrency_limits/filter", json={}).json()
        assert {"name": "cycleaug-train-publish", "limit": 1} in [{"name": g["name"], "limit": g["limit"]}
                                                                 for g in gcls]

        # Right after registering, the server may still answer with an error (the runner updates the
        # deployment, SQLite is busy): ask again until the run is created.
        def create_run():
            r = api.post(f"/deployments/{dep['id']}/create_flow_run", json={})
            return r.json() if r.status_code in (200, 201) and "id" in r.json() else None

        run = wait_for("a flow run created from the deployment", create_run, 60, [log])

        def finished():
            state = api.get(f"/flow_runs/{run['id']}").json()["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = wait_for("the triggered flow run", finished, 400, [log])
        assert state["type"] == "COMPLETED", state

        # Validation and publishing run as subflows (mapped over shards): their artifacts are theirs.
        subflows = api.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
        ids = [run["id"], *(f["id"] for f in subflows.json())]
        arts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": ids}}}).json()
        by_key = {a["key"]: a for a in arts if a["key"]}
        assert {"cycleaug-report", "cycleaug-metrics", "validation", "dataset-card"} <= set(by_key)
        report = by_key["cycleaug-report"]
        assert report["type"] == "markdown" and "# CycleAug run" in report["data"] and "trained" in report["data"]
        metrics = by_key["cycleaug-metrics"]
        assert metrics["type"] == "table" and '"published": 24' in metrics["data"]
        assert any(a["type"] == "progress" and a["data"] == 100.0 for a in arts)
    finally:
        stop(serve)
    assert serve.returncode is not None

    # prefect.yaml registers the same deployments on a process work pool (what a Prefect worker runs).
    try:
        cli = [sys.executable, "-m", "prefect", "--no-prompt"]
        run_env = env | {"CYCLEAUG_ROOT": str(ROOT)}
        for args in (["work-pool", "create", "cycleaug", "--type", "process"], ["deploy", "--all"]):
            done = subprocess.run([*cli, *args], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        deployed = api.post("/deployments/filter", json={"deployments": {"name": {"any_": ["nightly", "retrain"]}}})
        pools = {d["name"]: d["work_pool_name"] for d in deployed.json()}
        assert pools == {"nightly": "cycleaug", "retrain": "cycleaug"}
    finally:
        api.close()


def test_prefect_yaml_matches_the_served_deployments():
    from prefect.flows import load_flow_from_entrypoint

    from cyclegan_core.config import load_config
    from flows.augment import augment

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    cfg = load_config(ROOT / "params.yaml")
    s = cfg.orchestrate.schedule
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"nightly", "retrain"}
    assert deps["nightly"]["schedules"][0]["cron"] == s.cron
    assert deps["retrain"]["schedules"][0]["cron"] == s.retrain_cron
    for name, d in deps.items():
        assert d["concurrency_limit"] == 1 and set(s.tags) | {name} <= set(d["tags"])
        assert d["parameters"]["retrain"] is (name == "retrain")
        assert set(d["parameters"]) == set(augment.parameters.properties)
        flow = load_flow_from_entrypoint(str(ROOT / d["entrypoint"]))
        assert flow.name == augment.name
