"""The production set-up: a Prefect server on PostgreSQL, ``cycleaug serve``, overlapping runs, the failure
notification.

A real PostgreSQL (its own data folder, a Unix socket and no TCP port) runs a real ``prefect server
start`` (free loopback port, PREFECT_HOME in tmp). ``cycleaug serve`` registers the deployments with
``orchestrate.notify_url`` pointing at an HTTP server on loopback. Then a deployment run and an
ad-hoc ``cycleaug run`` over the same ``params.yaml`` overlap; both complete, the published version
holds each source once, training and publishing ran one at a time (task-run times read back from
the API), the later run found the earlier one's results as JSON records on disk, and no
notification was sent. A deployment run whose gate fails is then POSTed to the webhook by the
server's automation. Every process started here is stopped by its pid (process group), on failure too.

PostgreSQL comes from the system (Debian's ``postgresql``; ``.ci/run`` installs it): Prefect's
PostgreSQL migrations create the ``pg_trgm`` extension, which the ``pgserver`` wheel's bundled
build does not ship.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_collections, tiny_settings
from tests.test_deployment import free_port, start, stop, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
GATE_FAILS = "validate.run.AtoB.min_mean_realism=1.0"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def postgres_bindir() -> Path | None:
    """A PostgreSQL ``bin`` folder with ``initdb`` and ``postgres`` whose installation has ``pg_trgm``."""
    found = [Path(p).resolve().parent for p in (shutil.which("postgres"),) if p]
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    for bindir in found:
        shares = [bindir.parent / "share" / "postgresql", bindir.parent / "share",
                  Path("/usr/share/postgresql") / bindir.parent.name]
        if (bindir / "initdb").exists() and (bindir / "postgres").exists() and any(
                (s / "extension" / "pg_trgm.control").exists() for s in shares):
            return bindir
    return None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on a Unix socket in a fresh folder; yields the SQLAlchemy URL Prefect takes."""
    bindir = postgres_bindir()
    if bindir is None:
        message = "no PostgreSQL with pg_trgm (apt-get install postgresql)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    # Outside pytest's tmp folders: PostgreSQL refuses to run as root, and its user must reach this one.
    root = Path(tempfile.mkdtemp(prefix="cycleaug-pg-"))
    user = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid}
    data, log = root / "data", root / "postgres.log"
    proc = None
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120, **user)
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data), "-k", str(root),
                                     "-c", "listen_addresses=", "-c", "fsync=off"],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **user)
        wait_for("PostgreSQL", lambda: "ready to accept connections" in log.read_text(errors="replace"), 60, [log])
        yield f"postgresql+asyncpg://postgres@/postgres?host={root}", root
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # fast shutdown: ends the sessions, then the server
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Webhook:
    """An HTTP server on loopback that keeps the JSON body of every POST."""

    url: str = ""
    posts: list[dict] = field(default_factory=list)


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                hook.posts.append(json.loads(body))
            except ValueError:
                hook.posts.append({"unparsed": body.decode(errors="replace")})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/cycleaug"
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class Served:
    api: httpx.Client
    env: dict
    params: Path
    work: Path
    home: Path
    logs: list[Path]
    pg_socket: Path

    def deployment(self, name: str) -> dict:
        found = self.api.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}).json()
        return found[0]

    def create_run(self, name: str, **body) -> dict:
        dep = self.deployment(name)

        def create():
            r = self.api.post(f"/deployments/{dep['id']}/create_flow_run", json=body)
            return r.json() if r.status_code in (200, 201) and "id" in r.json() else None

        return wait_for(f"a flow run of {name}", create, 60, self.logs)

    def final_state(self, run_id: str, timeout: float) -> dict:
        def finished():
            state = self.api.get(f"/flow_runs/{run_id}").json()["state"]
            return state if state and state["type"] in FINAL else None

        return wait_for(f"flow run {run_id}", finished, timeout, self.logs)


@pytest.fixture(scope="module")
def served(postgres, webhook, tmp_path_factory):
    """A Prefect server on ``postgres`` and ``cycleaug serve`` on it, with ``notify_url`` = ``webhook``."""
    db_url, pg_socket = postgres
    tmp = tmp_path_factory.mktemp("postgres")
    home = tmp / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    port = free_port()
    server_log, serve_log = tmp / "server.log", tmp / "serve.log"
    server = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                   env, server_log)
    url = f"http://127.0.0.1:{port}/api"
    env |= {"PREFECT_API_URL": url}
    serve = None
    api = httpx.Client(base_url=url, timeout=30)
    try:
        def healthy():
            try:
                return api.get("/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the Prefect server on PostgreSQL", healthy, 240, [server_log])
        raw = tiny_settings(tmp / "work", *tiny_collections(tmp / "raw"))
        raw["orchestrate"] = {"notify_url": webhook.url,
                              "schedule": {"cron": "30 1 * * *", "retrain_cron": None, "tags": ["cycleaug", "test"]}}
        params = tmp / "params.yaml"
        params.write_text(yaml.safe_dump(raw))
        serve = start([sys.executable, "-m", "flows.cli", "--params", str(params), "serve"],
                      env | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}, serve_log)

        def registered():
            r = api.post("/deployments/filter", json={"deployments": {"name": {"any_": ["nightly"]}}})
            return r.status_code == 200 and r.json()

        wait_for("the nightly deployment", registered, 180, [serve_log, server_log])
        yield Served(api, env, params, tmp / "work", home, [serve_log, server_log], pg_socket)
    finally:
        api.close()
        if serve is not None:
            stop(serve)
        stop(server)


def _is_publish(served, flow_run: dict) -> bool:
    return served.api.get(f"/flows/{flow_run['flow_id']}").json()["name"] == "cycleaug-publish"


def _time(value: str) -> float:
    return pd.Timestamp(value).timestamp()


def _rows_in_database(pg_socket: Path, ids: list[str]) -> int:
    import asyncpg

    async def count():
        conn = await asyncpg.connect(host=str(pg_socket), user="postgres", database="postgres")
        try:
            return await conn.fetchval("SELECT count(*) FROM flow_run WHERE id::text = ANY($1::text[])", ids)
        finally:
            await conn.close()

    return asyncio.run(count())


def test_overlapping_deployment_and_adhoc_runs_on_postgres(served, webhook):
    run = served.create_run("nightly")
    adhoc_log = served.work.parent / "adhoc.log"
    served.logs.append(adhoc_log)
    adhoc = start([sys.executable, "-m", "flows.cli", "--params", str(served.params), "run"], served.env, adhoc_log)
    try:
        state = served.final_state(run["id"], 600)
        assert state["type"] == "COMPLETED", state
        assert adhoc.wait(timeout=600) == 0, adhoc_log.read_text(errors="replace")[-4000:]
    finally:
        stop(adhoc)
    out = adhoc_log.read_text(errors="replace")
    assert "CycleAug finished in" in out, out[-3000:]  # its final state resolved with its result (no MissingResult)

    runs = served.api.post("/flow_runs/filter", json={"flows": {"name": {"any_": ["cycleaug-augment"]}}}).json()
    runs = [r for r in runs if r["state_type"] != "SCHEDULED"]  # the cron's next runs are there too
    assert len(runs) == 2 and {r["state_type"] for r in runs} == {"COMPLETED"}
    by_id = {r["id"]: r for r in runs}
    assert run["id"] in by_id
    other = next(r for r in runs if r["id"] != run["id"])
    assert other["deployment_id"] is None  # the ad-hoc run
    # They overlapped: each started before the other ended.
    (s1, e1), (s2, e2) = [(_time(r["start_time"]), _time(r["end_time"])) for r in runs]
    assert s1 < e2 and s2 < e1
    assert _rows_in_database(served.pg_socket, list(by_id)) == 2  # the server's records are in PostgreSQL

    # Training and publishing ran one at a time: no two of these overlap (training is a task; publishing a
    # subflow mapped over shards, which holds the slot from its start to its end).
    subflows = {rid: served.api.post("/flow_runs/filter", json={
        "flow_runs": {"parent_flow_run_id": {"any_": [rid]}}}).json() for rid in by_id}
    owner = {sub["id"]: rid for rid, subs in subflows.items() for sub in subs}
    tasks = served.api.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [*by_id, *owner]}}}).json()
    guarded = sorted([(_time(t["start_time"]), _time(t["end_time"]), t["name"], t["flow_run_id"]) for t in tasks
                      if t["name"].startswith("train-or-reuse") and t["start_time"]]
                     + [(_time(f["start_time"]), _time(f["end_time"]), "publish subflow", rid)
                        for rid, subs in subflows.items() for f in subs
                        if f["name"] and f["start_time"] and f.get("flow_id") and _is_publish(served, f)],
                     key=lambda t: t[0])
    assert {t[3] for t in guarded if t[2].startswith("train-or-reuse")} == set(by_id)
    assert sum(t[2] == "publish subflow" for t in guarded) == 2
    for before, after in itertools.pairwise(guarded):
        assert before[1] <= after[0], (before, after)
    # The later run found the earlier one's results (written by another process) and reused them.
    later = max(runs, key=lambda r: _time(r["end_time"]))
    later_tasks = {t["name"].rsplit("-", 1)[0]: t["state_name"] for t in tasks
                   if owner.get(t["flow_run_id"]) == later["id"]}
    assert later_tasks.get("validate") == "Cached" and later_tasks.get("publish") == "Cached", later_tasks

    # The published version holds every source once per direction, and no sample twice.
    table = pd.read_parquet(served.work / "published" / "data", columns=["sample_id", "source_id", "direction"])
    assert len(table) == 48 and table["sample_id"].is_unique
    assert table.groupby("direction")["source_id"].nunique().to_dict() == {"AtoB": 24, "BtoA": 24}
    assert not table.duplicated(["direction", "source_id"]).any()
    from cyclegan_core.reader import open_dataset

    assert open_dataset(str(served.work / "published")).verify() == []

    # Nothing persisted is a pickle: task results are JSON records made with the JSON serializer (json/);
    # a flow run's result is the JSON value alone (its record's metadata is kept by the server).
    records = [p for p in (served.home / "storage").rglob("*") if p.is_file()]
    tasks_json = [p for p in records if p.parent.name == "json"]
    assert tasks_json and len(records) > len(tasks_json)
    for path in records:
        raw = path.read_bytes()
        assert not raw.startswith(b"\x80"), path  # a pickle's first byte
        value = json.loads(raw)
        if path in tasks_json:
            assert value["metadata"]["serializer"]["type"] == "json", path

    limits = {g["name"]: g for g in served.api.post("/v2/concurrency_limits/filter", json={}).json()}
    outputs = [g for name, g in limits.items() if re.fullmatch(r"cycleaug-train-publish-outputs-[0-9a-f]{12}", name)]
    assert len(outputs) == 1 and outputs[0]["limit"] == 1 and outputs[0]["active_slots"] == 0
    assert limits["cycleaug-train-publish"]["active_slots"] == 0
    assert [p for p in webhook.posts if p.get("flow_run_id") in by_id] == []  # no notification for completed runs


def test_a_failed_gate_is_posted_to_the_webhook(served, webhook):
    automations = served.api.post("/automations/filter", json={}).json()
    assert [a["name"] for a in automations] == ["cycleaug-failed-runs"]
    dep = served.deployment("nightly")
    assert f"prefect.deployment.{dep['id']}" in json.dumps(automations[0]["trigger"])

    run = served.create_run("nightly", parameters={"params": str(served.params), "overrides": [GATE_FAILS],
                                                   "retrain": False})
    state = served.final_state(run["id"], 600)
    assert state["type"] == "FAILED", state

    post = wait_for("the webhook's POST", lambda: next(
        (p for p in webhook.posts if p.get("flow_run_id") == run["id"]), None), 120, served.logs)
    assert post["state"] == "Failed" and post["flow_run_name"] == run["name"] and post["deployment"] == "nightly"
    assert "AtoB.mean_realism" in post["message"] and "min_mean_realism" in post["message"], post
