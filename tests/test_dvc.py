"""`dvc repro` and versioned releases on a copy of this repository, in real git + dvc repositories.

One repository (module scope, tiny params) is made once: the whole pipeline runs, a second
`dvc repro` does nothing, the result is committed, tagged v1 and pushed to a local-directory
remote; then a generate-only change reruns generate and what follows but never training, and a
per-sample bound drops rows: that is tagged v2 and pushed. The tests check that run, a second clone
that pulls identical bytes, `dvc get --rev <tag>`, and the reader opening each tag by rev.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from cyclegan_core.reader import open_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
GIT_ID = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]


def _run(args: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{' '.join(args)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    tmp = tmp_path_factory.mktemp("dvc")
    repo = tmp / "repo"
    for rel in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split():
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["default"]["typed_per_digit"] = 10
    params["train"].update(steps=4, batch_size=2)
    params["runtime"].update(checkpoint_every=2)
    params["model"].update(ngf=4, ndf=4, n_blocks=1)
    params["validate"].update(classifier_epochs=1, sample={"AtoB": {}, "BtoA": {}}, run={"AtoB": {}, "BtoA": {}})
    params["generate"]["splits"] = ["test"]
    params["utility"].update(steps=3, seeds=1, run={"AtoB": {}, "BtoA": {}})
    params["publish"]["max_shard_mb"] = 0.1  # several hash-prefix shards even on tiny data
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp / "dvc-site")}
    git = ["git", *GIT_ID]
    remote = tmp / "remote"
    _run(["git", "init", "-q"], repo, env)
    # The remote goes into .dvc/config before any data is committed, so every commit can be pushed.
    _run(["dvc", "remote", "add", "-d", "local", str(remote)], repo, env)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-qm", "copy"], repo, env)

    out = {"repo": repo, "remote": remote, "env": env, "tmp": tmp}
    # The README's command, with the environment NOT on PATH (as in a fresh shell): `make repro` puts it
    # there for the stage commands. VENV names the environment running these tests (set up already).
    bare = {**env, "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                           if Path(p).resolve() != Path(sys.executable).parent.resolve())}
    assert shutil.which("cycleaug", path=bare["PATH"]) is None
    out["first"] = _run(["make", "repro", f"VENV={sys.prefix}", "STAMP="], repo, bare)
    out["second"] = _run(["dvc", "repro"], repo, env)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-qm", "v1: held-out samples"], repo, env)
    _run(["git", "tag", "v1"], repo, env)
    _run(["dvc", "push"], repo, env)
    out["v1"] = _files(repo / "data" / "augmented")

    # v2: a generate-only change, and a per-sample bound that drops the worse half of AtoB.
    v1 = _table(out["v1"])
    psnr = sorted(v1.filter(pc.equal(v1["direction"], "AtoB")).column("cycle_psnr").to_pylist())
    params["generate"]["batch_size"] = 5
    params["validate"]["sample"]["AtoB"] = {"min_cycle_psnr": psnr[len(psnr) // 2]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out["third"] = _run(["dvc", "repro"], repo, env)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-qm", "v2: stricter AtoB bound"], repo, env)
    _run(["git", "tag", "v2"], repo, env)
    _run(["dvc", "push"], repo, env)
    out["v2"] = _files(repo / "data" / "augmented")
    out["bound"] = psnr[len(psnr) // 2]
    old = os.environ.get("DVC_SITE_CACHE_DIR")
    os.environ["DVC_SITE_CACHE_DIR"] = env["DVC_SITE_CACHE_DIR"]  # for DVC's filesystem in this process
    yield out
    if old is None:
        os.environ.pop("DVC_SITE_CACHE_DIR", None)
    else:
        os.environ["DVC_SITE_CACHE_DIR"] = old


def test_dvc_repro_runs_what_changed(versions):
    first = versions["first"]
    for stage in ("default_data", "ingest", "train", "generate", "validate", "utility", "publish"):
        assert f"Running stage '{stage}'" in first
    assert "manifest.json" in versions["v1"]
    assert "Running stage" not in versions["second"]

    third = versions["third"]
    assert "Running stage 'train'" not in third and "Running stage 'ingest'" not in third
    for stage in ("generate", "validate", "utility", "publish"):
        assert f"Running stage '{stage}'" in third


def test_second_clone_pulls_identical_bytes(versions):
    repo, env = versions["repo"], versions["env"]
    clone = versions["tmp"] / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], versions["tmp"], env)
    assert not (clone / "data" / "augmented").exists()
    _run(["dvc", "pull"], clone, env)
    for out in ("augmented", "validated", "generated", "ingest", "models", "raw"):
        assert _files(clone / "data" / out) == _files(repo / "data" / out), out
    assert _files(clone / "data" / "augmented") == versions["v2"]
    assert "in sync" in _run(["dvc", "status", "--cloud"], clone, env)


def test_dvc_get_returns_each_tagged_version(versions):
    repo, env, tmp = versions["repo"], versions["env"], versions["tmp"]
    for tag in ("v1", "v2"):
        target = tmp / f"get-{tag}"
        _run(["dvc", "get", str(repo), "data/augmented", "--rev", tag, "-o", str(target)], tmp, env)
        assert _files(target) == versions[tag], tag
        assert open_dataset(str(target)).verify() == []
    assert versions["v1"]["manifest.json"] != versions["v2"]["manifest.json"]


def _table(files: dict[str, bytes]) -> pa.Table:
    tables = [pq.read_table(pa.BufferReader(b)) for name, b in sorted(files.items()) if name.endswith(".parquet")]
    return pa.concat_tables(tables).sort_by([("direction", "ascending"), ("source_id", "ascending")])


def test_reader_opens_each_version_by_rev(versions):
    # A fresh clone with no DVC cache: the reader fetches each tag's shards from the remote.
    env, tmp = versions["env"], versions["tmp"]
    clone = tmp / "reader-clone"
    _run(["git", "clone", "-q", str(versions["repo"]), str(clone)], tmp, env)
    counts, atob = {}, {}
    for tag in ("v1", "v2"):
        dataset = open_dataset(repo=str(clone), rev=tag)
        table = dataset.to_table().sort_by([("direction", "ascending"), ("source_id", "ascending")])
        assert table.equals(_table(versions[tag])), tag
        assert dataset.verify() == []
        counts[tag] = table.num_rows
        kept = dataset.to_pandas(["cycle_psnr"], direction="AtoB")
        atob[tag] = len(kept)
        rows = sum(1 for _ in dataset.torch(["sample_id", "image"], direction="BtoA"))
        assert rows == dataset.rows["BtoA"]
    assert counts["v1"] > counts["v2"] > 0 and atob["v1"] > atob["v2"] > 0
    assert min(open_dataset(repo=str(clone), rev="v2").to_pandas(["cycle_psnr"], direction="AtoB").cycle_psnr) >= (
        versions["bound"])


def test_an_audio_setting_reruns_ingest(versions):
    # data.audio is part of ingest's key (cyclegan_core/inputs.py), so dvc.yaml declares it for ingest.
    repo, env = versions["repo"], versions["env"]
    params = repo / "params.yaml"
    before = params.read_text()
    raw = yaml.safe_load(before)
    raw["data"]["audio"]["n_mels"] = 32
    try:
        params.write_text(yaml.safe_dump(raw, sort_keys=False))
        status = _run(["dvc", "status", "ingest"], repo, env)
        assert "modified:" in status and "data.audio" in status, status
    finally:
        params.write_text(before)
    assert "up to date" in _run(["dvc", "status", "ingest"], repo, env)


def test_diff_between_two_tags_shows_the_dropped_rows(versions):
    """`cycleaug diff v1 v2` in the repository: v2's stricter AtoB bound removed rows, BtoA kept its rows."""
    repo, env = versions["repo"], versions["env"]
    v1, v2 = _table(versions["v1"]), _table(versions["v2"])
    counts = {tag: {d: t.filter(pc.equal(t["direction"], d)).num_rows for d in ("AtoB", "BtoA")}
              for tag, t in (("v1", v1), ("v2", v2))}
    out = _run(["cycleaug", "diff", "v1", "v2", "--json", "diff.json"], repo, env)
    doc = json.loads((repo / "diff.json").read_text())
    atob, btoa = doc["directions"]["AtoB"], doc["directions"]["BtoA"]
    assert atob["rows"] == {"old": counts["v1"]["AtoB"], "new": counts["v2"]["AtoB"]}
    assert atob["removed"]["total"] == counts["v1"]["AtoB"] - counts["v2"]["AtoB"] > 0 and atob["added"]["total"] == 0
    assert btoa["removed"]["total"] == btoa["added"]["total"] == 0
    assert btoa["unchanged"]["total"] + btoa["changed"]["total"] == counts["v2"]["BtoA"]
    assert atob["held_out_figures"]["cycle_psnr"]["delta"] > 0  # the worse half was dropped
    assert doc["settings"]["params_hash"]["changed"]
    assert f"| AtoB | {counts['v1']['AtoB']} | {counts['v2']['AtoB']} | 0 |" in out
    (repo / "diff.json").unlink()
