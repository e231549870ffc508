"""Inputs and published outputs on fsspec URLs: ``memory://`` and ``s3://`` against moto's S3 server
on 127.0.0.1; retries with backoff on transient storage errors; credentials never written anywhere."""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from pathlib import Path
from typing import ClassVar

import fsspec
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from cyclegan_core import pipeline, storage
from cyclegan_core.config import ConfigError, DataConfig, config_from_dict, load_config
from cyclegan_core.ingest import ingest_collection, read_manifest
from cyclegan_core.storage import RetriesExhausted, is_transient, redact_url, upload_dir, with_retries
from tests.conftest import tiny_collections, tiny_settings

REGION = "eu-west-1"  # moto refuses s3fs's bucket creation in us-east-1 (location constraint)
KEY_ID = "AKIACYCLEAUG8TESTKEY"


def _copy_to(fs, local: Path, root: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"{root}/{p.relative_to(local).as_posix()}", p.read_bytes())


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port, credentials and endpoint in the environment only."""
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    secret = f"cycleaug-secret-{uuid.uuid4().hex}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": secret,
                     "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(k, v)
        S3FileSystem.clear_instance_cache()
        fs = fsspec.filesystem("s3")
        fs.mkdir("cycleaug8", region_name=REGION)
        yield fs, secret
        S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture(scope="module")
def remote_run(s3, tmp_path_factory):
    """The whole pipeline with collection A on memory://, B on s3://, published to s3:// too."""
    fs, _ = s3
    base = tmp_path_factory.mktemp("remote")
    a, b = tiny_collections(base / "raw")
    mem = fsspec.filesystem("memory")
    _copy_to(mem, a, "/robust8/A")
    _copy_to(fs, b, "cycleaug8/raw/B")
    raw = tiny_settings(base / "work", "memory://robust8/A", "s3://cycleaug8/raw/B")
    raw["paths"]["publish_url"] = "s3://cycleaug8/datasets/digits"
    cfg = config_from_dict(raw)
    handler = _Capture()
    logging.getLogger().addHandler(handler)
    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)  # botocore and s3fs debug logs included
    try:
        out = pipeline.run_all(cfg)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(old_level)
    yield base, cfg, out, handler
    mem.rm("/robust8", recursive=True)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, f"{record.name}: {record.getMessage()}"))

    def text(self, level: int = logging.DEBUG) -> str:
        return "\n".join(t for n, t in self.records if n >= level)


@pytest.mark.slow
def test_pipeline_reads_and_publishes_on_memory_and_s3(s3, remote_run):
    fs, _ = s3
    _, cfg, out, _ = remote_run
    assert out["ingest"]["A"]["samples"] == 24 and out["ingest"]["B"]["samples"] == 24
    uris = read_manifest(Path(cfg.paths.ingest) / "B" / "manifest.parquet").column("uri").to_pylist()
    assert all(u.startswith("s3://cycleaug8/raw/B/") for u in uris)
    assert read_manifest(Path(cfg.paths.ingest) / "A" / "manifest.parquet").column("uri")[0].as_py().startswith(
        "memory://")
    # The remote copy is the local version, byte for byte, and readers open it straight from S3.
    local = json.loads((Path(cfg.paths.published) / "manifest.json").read_text())
    remote = json.loads(fs.cat_file("cycleaug8/datasets/digits/manifest.json"))
    assert remote == local
    for shard in remote["shards"]:
        assert storage.sha256_bytes(fs.cat_file(f"cycleaug8/datasets/digits/{shard['file']}")) == shard["sha256"]
    df = pd.read_parquet("s3://cycleaug8/datasets/digits/data")
    assert len(df) == sum(local["rows"].values()) and df["sample_id"].is_unique
    # The same version published to memory:// as well; an object of an older version is removed.
    mem = fsspec.filesystem("memory")
    mem.pipe_file("/pub8/ds/data/stale-00000-of-00009.parquet", b"old")
    mem_cfg = config_from_dict({**cfg.to_dict(), "paths": {**cfg.to_dict()["paths"], "publish_url": "memory://pub8/ds"}})
    pipeline.step_publish(mem_cfg)
    assert not mem.exists("/pub8/ds/data/stale-00000-of-00009.parquet")
    table = pq.read_table("/pub8/ds/data", filesystem=mem)
    assert table.num_rows == len(df)
    mem.rm("/pub8", recursive=True)


@pytest.mark.slow
def test_credentials_never_appear_in_outputs_logs_or_metadata(s3, remote_run, capfd):
    fs, secret = s3
    base, _, _, logs = remote_run
    assert "cycleaug8" in logs.text()  # the capture did see the storage traffic
    assert secret not in logs.text()  # not even in botocore's debug logs
    assert KEY_ID not in logs.text(logging.INFO)  # botocore's debug logs show the key id, nothing else does
    needles = (secret.encode(), KEY_ID.encode())
    checked = 0
    for p in base.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert not any(n in data for n in needles), f"credential in {p}"
            checked += 1
    for key in fs.find("cycleaug8"):
        data = fs.cat_file(key)
        assert not any(n in data for n in needles), f"credential in s3://{key}"
        checked += 1
    for path in pq.ParquetDataset("cycleaug8/datasets/digits/data", filesystem=fs).files:
        meta = pq.read_schema(path, filesystem=fs).metadata or {}
        assert not any(n in b"".join(meta.values()) for n in needles)
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    assert checked > 20


def test_credentials_in_urls_are_refused_and_redacted():
    with pytest.raises(ConfigError, match="credentials do not belong in a URL"):
        load_config(None, ["paths.publish_url=s3://AKIA:hunter2@bucket/x"])
    with pytest.raises(ConfigError, match="credentials do not belong in a URL"):
        load_config(None, ["data.domain_a=ftp://user:hunter2@host/photos"])
    assert redact_url("ftp://user:hunter2@host/photos") == "ftp://***@host/photos"
    shown = redact_url("https://h.example/a.png?X-Amz-Signature=abc123&X-Amz-Credential=AKIA&v=2")
    assert "abc123" not in shown and "AKIA" not in shown and "v=2" in shown
    assert redact_url("s3://bucket/key with spaces.png") == "s3://bucket/key with spaces.png"


class FlakyFS(MemoryFileSystem):
    """memory:// whose reads and writes fail ``fail_times`` times per path before working."""

    protocol = ("flaky8",)
    fail_times: ClassVar[dict[str, int | str]] = {}
    calls: ClassVar[list[str]] = []

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("flaky8://", "memory://", 1))

    def _flaky(self, path: str, op: str) -> None:
        key = self._strip_protocol(path)
        FlakyFS.calls.append(f"{op} {key}")
        left = FlakyFS.fail_times.get(key, 0)
        if left == "permanent":
            raise PermissionError(f"access denied: {key}")
        if left:
            FlakyFS.fail_times[key] = left - 1
            raise ConnectionResetError(f"connection reset by peer while reading {key}")

    def cat_file(self, path, start=None, end=None, **kw):
        self._flaky(path, "read")
        return super().cat_file(path, start, end, **kw)

    def pipe_file(self, path, value, **kw):
        self._flaky(path, "write")
        return super().pipe_file(path, value, **kw)


@pytest.fixture
def flaky(monkeypatch, collections):
    fsspec.register_implementation("flaky8", FlakyFS, clobber=True)
    FlakyFS.fail_times, FlakyFS.calls = {}, []
    waits: list[float] = []
    monkeypatch.setattr(storage, "_sleep", waits.append)
    a, _ = collections
    _copy_to(fsspec.filesystem("memory"), a, "/flaky8/A")
    yield FlakyFS, waits
    fsspec.filesystem("memory").rm("/flaky8", recursive=True)


def test_transient_read_errors_are_retried_with_backoff(flaky, tmp_path):
    fs_cls, waits = flaky
    files = sorted(p for p in fsspec.filesystem("memory").find("/flaky8/A") if p.endswith(".png"))
    for p in files:
        fs_cls.fail_times[p] = 2
    fs_cls.fail_times[files[0]] = 99  # never recovers
    fs_cls.fail_times[files[1]] = "permanent"
    cfg = DataConfig(image_size=16, retries=3, retry_backoff_s=0.4)
    r = ingest_collection("flaky8://flaky8/A", "A", tmp_path / "out", cfg)
    assert (r.samples, r.quarantined) == (len(files) - 2, 2)
    q = (tmp_path / "out" / "quarantine.csv").read_text()
    assert f"unreadable: RetriesExhausted: flaky8://{files[0]}: gave up after 4 attempts: ConnectionResetError" in q
    assert "unreadable: PermissionError: access denied" in q
    # Two waits per recovering file, three for the hopeless one, none for the permanent error;
    # each wait is in [d/2, d] with d = 0.4 * 2**k.
    assert len(waits) == 2 * (len(files) - 2) + 3
    reads = [c for c in fs_cls.calls if c.startswith("read") and c.endswith(".png")]
    assert reads.count(f"read {files[1]}") == 1 and reads.count(f"read {files[0]}") == 4
    hopeless, rest = waits[:3], waits[3:]  # files are read in sorted order: files[0] first
    assert 0.2 <= hopeless[0] <= 0.4 and 0.4 <= hopeless[1] <= 0.8 and 0.8 <= hopeless[2] <= 1.6
    assert all(0.2 <= w <= 0.4 for w in rest[0::2]) and all(0.4 <= w <= 0.8 for w in rest[1::2])


def test_backoff_waits_really_and_grows():
    failures = iter([ConnectionResetError("reset"), TimeoutError("timed out"), OSError("503 SlowDown")])
    stamps: list[float] = []

    def call():
        stamps.append(time.perf_counter())
        err = next(failures, None)
        if err:
            raise err
        return "ok"

    assert with_retries(call, what="s3://b/k", retries=3, backoff_s=0.04) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 3 and gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08
    with pytest.raises(RetriesExhausted, match="gave up after 2 attempts"):
        with_retries(lambda: (_ for _ in ()).throw(ConnectionResetError("x")), what="m://x", retries=1,
                     backoff_s=0.0)
    assert is_transient(ConnectionResetError()) and is_transient(OSError("503 Service Unavailable"))
    assert not is_transient(FileNotFoundError("x")) and not is_transient(PermissionError("x"))
    assert not is_transient(ValueError("bad"))


def test_upload_retries_each_object_and_commits_the_manifest_last(flaky, tmp_path):
    fs_cls, waits = flaky
    local = tmp_path / "version"
    (local / "data").mkdir(parents=True)
    for k in range(3):
        (local / "data" / f"AtoB-{k:05d}-of-00003.parquet").write_bytes(b"shard %d" % k)
    (local / "manifest.json").write_text("{}")
    (local / "README.md").write_text("card")
    for rel in ("data/AtoB-00001-of-00003.parquet", "manifest.json"):
        fs_cls.fail_times[f"/flaky8/pub/{rel}"] = 1
    written = upload_dir(local, "flaky8://flaky8/pub", retries=2, backoff_s=0.1)
    assert written[-1] == "manifest.json"
    writes = [c.split(" ", 1)[1] for c in fs_cls.calls if c.startswith("write")]
    assert writes[-1] == "/flaky8/pub/manifest.json" and len(waits) == 2
    assert fsspec.filesystem("memory").cat_file("/flaky8/pub/data/AtoB-00001-of-00003.parquet") == b"shard 1"


def test_models_url_shares_a_trained_model_between_workspaces(tmp_path):
    """A model trained in one workspace is fetched, not retrained, by another with the same data and config;
    an upload that never finished (no model.json) is never used."""
    a, b = tiny_collections(tmp_path / "raw")
    url = f"memory://models-{uuid.uuid4().hex}/store"
    first = config_from_dict(tiny_settings(tmp_path / "one", a, b, paths={"models_url": url}))
    pipeline.step_ingest(first)
    trained = pipeline.step_train(first)
    assert not trained.reused
    fs = fsspec.filesystem("memory")
    remote = f"{url}/{trained.fingerprint}"
    assert fs.exists(f"{remote}/model.json") and fs.exists(f"{remote}/model.safetensors")

    second = config_from_dict(tiny_settings(tmp_path / "two", a, b, paths={"models_url": url}))
    pipeline.step_ingest(second)
    choice = pipeline.choose_model(second)
    assert not choice.train and "fetched from" in choice.reason
    fetched = pipeline.step_train(second)
    assert fetched.reused and fetched.fingerprint == trained.fingerprint
    assert (Path(fetched.model_dir) / "model.safetensors").read_bytes() == \
        (Path(trained.model_dir) / "model.safetensors").read_bytes()
    assert pipeline.step_generate(second).rows == {"AtoB": 24, "BtoA": 24}  # the fetched model translates

    fs.rm_file(f"{remote}/model.json")  # as if the upload had died before its last object
    third = config_from_dict(tiny_settings(tmp_path / "three", a, b, paths={"models_url": url}))
    pipeline.step_ingest(third)
    assert pipeline.choose_model(third).train
