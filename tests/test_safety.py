"""Safety: nothing read back is unpickled, no shell strings, paths from configs and manifests stay
inside their folders. The code checks parse every Python file of the repository (AST, not grep, so
comments and strings do not count and aliases do)."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from cyclegan_core.config import ConfigError, load_config
from cyclegan_core.publish import verify
from cyclegan_core.storage import PathEscape, atomic_dir, confined, escapes

ROOT = Path(__file__).resolve().parents[1]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}


def _sources() -> list[Path]:
    skip = {".venv", ".git", "data", ".dvc", "node_modules", "__pycache__"}
    files = [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]
    assert len(files) > 20
    return files


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(tree: ast.AST) -> list[str]:
    """Every unpickling, shell or eval construct in one module, as ``line: what``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{node.lineno}: import {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if name.endswith("torch.load") and not _is_true(_kw(node, "weights_only")):
            found.append(f"{node.lineno}: {name} without weights_only=True")
        if last in ("read_pickle", "loads") and name.split(".")[0] in ("pd", "pandas", "pickle"):
            found.append(f"{node.lineno}: {name}")
        if last == "load" and name.split(".")[0] in ("np", "numpy") and _is_true(_kw(node, "allow_pickle")):
            found.append(f"{node.lineno}: {name}(allow_pickle=True)")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            loader = _dotted(_kw(node, "Loader") or ast.Constant(None))
            if "Safe" not in loader:
                found.append(f"{node.lineno}: {name} without a safe loader")
        if name in ("os.system", "os.popen", "eval", "exec", "commands.getoutput") or name.startswith("os.spawn"):
            found.append(f"{node.lineno}: {name}")
        if name.split(".")[0] == "subprocess" or last in ("Popen", "create_subprocess_shell"):
            if _is_true(_kw(node, "shell")) or last == "create_subprocess_shell":
                found.append(f"{node.lineno}: {name} with a shell")
            cmd = node.args[0] if node.args else _kw(node, "args")
            if isinstance(cmd, ast.Constant | ast.JoinedStr | ast.BinOp):
                found.append(f"{node.lineno}: {name} with a command string, not an argument list")
    return found


def test_the_checker_catches_what_it_looks_for():
    bad = """
import pickle
import subprocess, os, torch, yaml, numpy as np
torch.load(path)
torch.load(path, weights_only=False)
np.load(p, allow_pickle=True)
yaml.load(text)
subprocess.run(f"convert {name}", shell=True)
subprocess.check_output("ls " + folder)
os.system("rm -rf " + x)
"""
    assert len(unsafe_calls(ast.parse(bad))) == 9  # the f-string run counts twice: shell and string
    good = """
import subprocess, torch, yaml
torch.load(path, weights_only=True)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
subprocess.run(["git", "ls-files"], check=True)
"""
    assert unsafe_calls(ast.parse(good)) == []


def test_no_unpickling_shell_strings_or_eval_in_the_repository():
    problems = []
    for path in _sources():
        for hit in unsafe_calls(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            problems.append(f"{path.relative_to(ROOT)}:{hit}")
    assert problems == []


def test_confined_refuses_escapes(tmp_path):
    root = tmp_path / "dataset"
    (root / "data").mkdir(parents=True)
    assert confined(root, "data/a.parquet") == (root / "data" / "a.parquet").resolve()
    for rel in ("../secret", "data/../../secret", "/etc/passwd", "..", ""):
        with pytest.raises(PathEscape, match="'../' escapes and absolute paths are refused"):
            confined(root, rel, "shard file")
    os.symlink(tmp_path, root / "data" / "out")  # a link inside pointing outside
    with pytest.raises(PathEscape, match="outside"):
        confined(root, "data/out/x.parquet")
    assert escapes("a/../../b") and not escapes("a/../b") and not escapes("..a/b")


def test_tampered_published_manifest_cannot_read_outside(tmp_path):
    ds = tmp_path / "ds"
    (ds / "data").mkdir(parents=True)
    (tmp_path / "private.txt").write_text("not part of the dataset")
    (ds / "manifest.json").write_text(json.dumps({"shards": [
        {"file": "../private.txt", "rows": 1, "sha256": "0" * 64},
        {"file": "/etc/hostname", "rows": 1, "sha256": "0" * 64},
    ]}))
    problems = verify(ds)
    assert len(problems) == 2 and all("refused" in p for p in problems)


def test_config_paths_may_not_escape_the_project():
    for key in ("paths.ingest", "paths.published", "paths.reports", "data.domain_a"):
        with pytest.raises(ConfigError, match=rf"{key}: '\.\./\.\./x' leaves the project folder"):
            load_config(None, [f"{key}=../../x"])
    with pytest.raises(ConfigError, match="paths.models: 's3://b/m': step outputs are local folders"):
        load_config(None, ["paths.models=s3://b/m"])
    # Absolute paths are an explicit choice and stay allowed; so are ../ that stay inside.
    cfg = load_config(None, ["paths.published=/srv/datasets/digits", "paths.reports=out/../reports"])
    assert cfg.paths.published == "/srv/datasets/digits"


def test_atomic_dir_swaps_whole_versions_and_repairs_an_interrupted_swap(tmp_path):
    target = tmp_path / "published"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("2")
    assert (target / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published"]
    # A crash between the two renames of the portable swap leaves only .published.old.tmp:
    os.replace(target, tmp_path / ".published.old.tmp")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        raise RuntimeError("killed while building the next version")
    assert (target / "v").read_text() == "2"  # the previous version was put back, not deleted


def test_folder_exchange_is_one_atomic_step(tmp_path):
    from cyclegan_core.storage import _exchange

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "v").write_text("new")
    (tmp_path / "cur").mkdir()
    (tmp_path / "cur" / "v").write_text("old")
    if not _exchange(tmp_path / "new", tmp_path / "cur"):
        pytest.skip("this filesystem or kernel has no renameat2(RENAME_EXCHANGE); the two-rename fallback is used")
    assert (tmp_path / "cur" / "v").read_text() == "new" and (tmp_path / "new" / "v").read_text() == "old"
