"""Crashes and faults: SIGKILL at random points of generate and publish, and a full disk in publish.

The steps run as ``python -m flows.cli <step>`` in separate processes. Importing torch and friends
takes seconds on a busy CI machine, so most kills go to children forked from a process that has
already imported the code (a fork server): the child then runs the CLI module exactly as
``python -m flows.cli`` would, and the random kill points fall on real work rather than on
imports. Two kills use a plain fresh ``python -m flows.cli`` process as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cyclegan_core.publish import verify
from tests.conftest import tiny_collections, tiny_settings

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

FORK_SERVER = r"""
import json, os, runpy, sys
import flows.cli, cyclegan_core.pipeline  # noqa: F401 - imported once, before forking
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
for line in sys.stdin:
    argv = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.argv = ["flows.cli", *argv]
        code = 0
        try:
            runpy.run_module("flows.cli", run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"status": status}), flush=True)
"""


class ForkServer:
    """Runs ``flows.cli`` steps in forked children of a process that has the code imported."""

    def __init__(self, cwd: Path, params: Path) -> None:
        self.params = params
        self.proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER, str(cwd / "steps.log")], cwd=cwd,
                                     env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self, step: str, *options: str) -> int:
        self.proc.stdin.write(json.dumps(["--params", str(self.params), *options, step]) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self) -> int:
        """The child's wait status (as ``os.waitpid`` gives it)."""
        return json.loads(self.proc.stdout.readline())["status"]

    def run(self, step: str) -> float:
        t0 = time.perf_counter()
        self.start(step)
        status = self.wait()
        assert os.waitstatus_to_exitcode(status) == 0, f"{step} failed, see steps.log"
        return time.perf_counter() - t0

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def dataset_state(published: Path) -> dict:
    """What a consumer gets: sample ids per direction, row count and the shard hashes."""
    manifest = json.loads((published / "manifest.json").read_text())
    table = pq.read_table(published / "data", columns=["sample_id", "direction"])
    ids = table.column("sample_id").to_pylist()
    return {"ids": sorted(ids), "unique": len(set(ids)) == len(ids),
            "shards": sorted((s["file"], s["sha256"], s["rows"]) for s in manifest["shards"])}


class Reader(threading.Thread):
    """Opens every shard a reader can see in the published and generated folders, over and over."""

    def __init__(self, work: Path) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.stop = threading.Event()
        self.reads = 0
        self.problems: list[str] = []

    def _check(self, folder: Path, pattern: str) -> None:
        if not folder.exists():
            self.problems.append(f"{folder} missing")
            return
        for path in sorted(folder.glob(pattern)):
            try:
                meta = pq.read_metadata(path)
                table = pq.read_table(path)
            except FileNotFoundError:
                continue  # listed, then swapped out: the reader sees the next version, not a broken file
            except Exception as err:  # any unreadable shard is what this test looks for
                self.problems.append(f"{path}: {type(err).__name__}: {err}")
                continue
            if table.num_rows != meta.num_rows:
                self.problems.append(f"{path}: {table.num_rows} rows read, footer says {meta.num_rows}")
            self.reads += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self._check(self.work / "published" / "data", "*.parquet")
            self._check(self.work / "generated", "*/part-*.parquet")
            manifest = self.work / "published" / "manifest.json"
            try:
                listed = json.loads(manifest.read_text())["shards"]
            except FileNotFoundError:
                self.problems.append("published/manifest.json missing")
                continue
            except ValueError as err:
                self.problems.append(f"manifest.json unreadable: {err}")
                continue
            if len(listed) != len(list((self.work / "published" / "data").glob("*.parquet"))):
                self.problems.append("manifest.json and data/ disagree on the shard count")


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A finished uninterrupted run (ingest, train, generate, validate, publish) and its fork server."""
    base = tmp_path_factory.mktemp("kill")
    a, b = tiny_collections(base / "raw", n=24, n_test=6)
    params = base / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_settings(base / "work", a, b, train={"steps": 2},
                                                generate={"batch_size": 4, "shards": 3})))
    server = ForkServer(base, params)
    timings = {step: server.run(step) for step in ("ingest", "train", "generate", "validate", "publish")}
    print(f"\nuninterrupted run, seconds per step: { {k: round(v, 1) for k, v in timings.items()} }")
    yield base, params, server, timings
    server.close()


@pytest.mark.slow
def test_sigkill_during_generate_and_publish_then_rerun(pipeline_dir):
    base, params, server, timings = pipeline_dir
    work = base / "work"
    reference = dataset_state(work / "published")
    assert reference["unique"] and len(reference["ids"]) > 0
    rng = random.Random(8)
    reader = Reader(work)
    reader.start()
    kills, in_write, finished_first = 0, 0, 0
    try:
        step_i = 0
        while kills < 12:
            step = ("generate", "publish")[step_i % 2]
            step_i += 1
            pid = server.start(step)
            time.sleep(rng.uniform(0.0, timings[step] * 1.1))
            target = work / ("generated" if step == "generate" else "published")
            writing = any(target.parent.glob(f".{target.name}.*.tmp"))
            with contextlib.suppress(ProcessLookupError):  # already finished and reaped
                os.kill(pid, signal.SIGKILL)
            status = server.wait()
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                kills += 1
                in_write += writing
            else:
                finished_first += 1  # the step won the race; the next round tries again
            # After every kill the published version is the previous one, whole.
            assert verify(work / "published") == []
            assert dataset_state(work / "published") == reference
        # Two kills of fresh `python -m flows.cli` processes, as dvc repro or cron starts them.
        for step, delay in (("generate", rng.uniform(1.0, 4.0)), ("publish", rng.uniform(1.0, 4.0))):
            proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "--params", str(params), step], cwd=base,
                                    env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            kills += proc.returncode == -signal.SIGKILL
            assert verify(work / "published") == []
        # Rerun without interruption: the same dataset as the uninterrupted run.
        for step in ("generate", "validate", "publish"):
            server.run(step)
    finally:
        reader.stop.set()
        reader.join(timeout=30)
    final = dataset_state(work / "published")
    assert final == reference, "rerun after kills differs from the uninterrupted run"
    assert final["unique"]
    assert verify(work / "published") == []
    assert reader.reads > 50 and reader.problems == [], reader.problems[:5]
    leftovers = [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    print(f"\nkills={kills} (of them {in_write} while a new version was being written), "
          f"steps that finished before their kill={finished_first}, reader shard reads={reader.reads}, "
          f"reader problems=0, rows={len(final['ids'])}, timings={ {k: round(v, 1) for k, v in timings.items()} }")


def _file_size_limit(limit: int):
    def apply() -> None:
        # Without SIGXFSZ ignored the kernel kills the writer; ignored, write() fails with EFBIG,
        # which is what a program sees on a full disk or quota (ENOSPC/EDQUOT) too.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_full_disk_during_publish_fails_cleanly_and_keeps_the_previous_version(pipeline_dir):
    base, params, _, _ = pipeline_dir
    work = base / "work"
    before = dataset_state(work / "published")
    manifest_before = (work / "published" / "manifest.json").read_bytes()
    # Another params hash, so a successful publish would change every shard.
    r = subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(params), "--set", "publish.grid_samples=3",
                        "publish"], cwd=base, env=ENV, capture_output=True, text=True, timeout=300,
                       preexec_fn=_file_size_limit(4096))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "cycleaug publish: out of disk space or over a file-size limit: [Errno 27]" in r.stderr
    assert "File too large; outputs written before are left as they were" in r.stderr
    assert "Traceback" not in r.stderr
    assert (work / "published" / "manifest.json").read_bytes() == manifest_before
    assert dataset_state(work / "published") == before and verify(work / "published") == []
    assert [p.name for p in work.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
def test_enospc_on_a_real_tiny_filesystem_keeps_the_previous_version(pipeline_dir):
    """The same fault as a real full disk: a tmpfs with room for one version and a half (needs root)."""
    base, params, server, _ = pipeline_dir
    disk = base / "tinydisk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        out = disk / "augmented"
        server.start("publish", "--set", f"paths.published={out}")
        assert os.waitstatus_to_exitcode(server.wait()) == 0
        before, manifest_before = dataset_state(out), (out / "manifest.json").read_bytes()
        st = os.statvfs(disk)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        subprocess.run(["mount", "-o", f"remount,size={used + used // 2}", str(disk)], check=True)
        r = subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(params), "--set",
                            f"paths.published={out}", "--set", "publish.grid_samples=3", "publish"], cwd=base, env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 1, r.stderr[-2000:]
        assert "cycleaug publish: out of disk space or over a file-size limit: [Errno 28]" in r.stderr
        assert "Traceback" not in r.stderr
        assert (out / "manifest.json").read_bytes() == manifest_before
        assert dataset_state(out) == before and verify(out) == []
        assert sorted(p.name for p in disk.iterdir()) == ["augmented"]  # the half-built version is gone
    finally:
        subprocess.run(["umount", str(disk)], check=False)
