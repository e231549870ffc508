"""The one table of step inputs (cyclegan_core/inputs.py): dvc.yaml follows it, every key derives from
it, and the library's import graph has no cycle."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import yaml

from cyclegan_core import inputs
from cyclegan_core.config import AudioConfig, DataConfig, GenerateConfig, load_config
from cyclegan_core.generate import generation_key
from cyclegan_core.ingest import processing_key
from cyclegan_core.models import model_fingerprint
from cyclegan_core.runtime import StepRuntime

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cyclegan_core"


def dvc_drift(dvc: dict) -> list[str]:
    """What ``dvc.yaml`` (parsed) declares differently from ``inputs.STAGES``: one line per difference."""
    out = []
    stages = dvc.get("stages", {})
    for name in sorted(set(stages) ^ set(inputs.STAGES)):
        out.append(f"stage {name}: only in {'dvc.yaml' if name in stages else 'inputs.STAGES'}")
    for name, stage in inputs.STAGES.items():
        if name not in stages:
            continue
        got = stages[name]
        if got.get("cmd") != stage.cmd:
            out.append(f"{name}.cmd: dvc.yaml {got.get('cmd')!r}, table {stage.cmd!r}")
        want_deps = set(stage.deps) | {f"cyclegan_core/{m}.py" for m in stage.modules}
        deps = set(got.get("deps") or [])
        out += [f"{name}.deps: missing {d}" for d in sorted(want_deps - deps)]
        out += [f"{name}.deps: not in the table {d}" for d in sorted(deps - want_deps)]
        params = set(got.get("params") or [])
        out += [f"{name}.params: missing {p}" for p in sorted(set(stage.params) - params)]
        out += [f"{name}.params: not in the table {p}" for p in sorted(params - set(stage.params))]
    return out


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_dvc_yaml_declares_exactly_the_tables_params_and_deps(dvc_yaml):
    assert dvc_drift(dvc_yaml) == []


def test_the_drift_check_catches_a_removed_or_extra_dependency(dvc_yaml):
    broken = copy.deepcopy(dvc_yaml)
    broken["stages"]["ingest"]["params"].remove("data.audio")
    broken["stages"]["validate"]["deps"].remove("cyclegan_core/judges.py")
    broken["stages"]["publish"]["deps"].append("cyclegan_core/devices.py")
    assert dvc_drift(broken) == [
        "ingest.params: missing data.audio",
        "validate.deps: missing cyclegan_core/judges.py",
        "publish.deps: not in the table cyclegan_core/devices.py",
    ]


def test_every_declared_setting_and_module_exists():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in inputs.STAGES.items():
        for dotted in stage.params:
            node = raw
            for part in dotted.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: {dotted} is not in params.yaml"
                node = node[part]
        for m in stage.modules:
            assert inputs.module_path(m).is_file(), f"{name}: no module {m}"
    for key, spec in inputs.KEYS.items():
        for dotted in spec.speed:
            assert any(dotted.startswith(p + ".") for p in spec.params), f"{key}: speed key {dotted} outside params"
    # Data deps are the outputs of earlier stages, the collections (the paths params.yaml sets) or the
    # analysts' flags file, tracked in git beside params.yaml (it ships empty).
    outs = {"data/raw/A", "data/raw/B", "data/ingest", "data/models", "data/generated", "data/validated",
            "reports/utility.json", "data/flags.parquet"}
    assert (ROOT / "data" / "flags.parquet").is_file() and raw["paths"]["flags"] == "data/flags.parquet"
    assert {d for s in inputs.STAGES.values() for d in s.deps} <= outs


def test_keys_follow_the_table(monkeypatch):
    cfg = load_config(ROOT / "params.yaml")
    base = inputs.key_of(cfg, "model", A="a", B="b")
    assert model_fingerprint(cfg, "a", "b") == base
    fast = load_config(ROOT / "params.yaml", ["runtime.log_every=3", "runtime.num_threads=1", "validate.kid_subsets=7"])
    assert model_fingerprint(fast, "a", "b") == base  # speed switches and other sections: same model
    assert model_fingerprint(load_config(ROOT / "params.yaml", ["train.lr=0.001"]), "a", "b") != base
    # Audio settings count only for audio collections, and not the ones that decide the inversion.
    image, audio = DataConfig(), DataConfig(kind="audio")
    assert processing_key(image) == processing_key(image.model_copy(update={"audio": AudioConfig(n_mels=32)}))
    assert processing_key(audio) != processing_key(audio.model_copy(update={"audio": AudioConfig(n_mels=32)}))
    assert processing_key(audio) == processing_key(audio.model_copy(update={"audio": AudioConfig(griffin_lim_iters=8)}))
    g, cpu = GenerateConfig(), StepRuntime(device="cpu")
    assert generation_key(g, cpu) == generation_key(g.model_copy(update={"workers": 3, "shards": 5}), cpu)
    assert generation_key(g, cpu, AudioConfig()) != generation_key(g, cpu, AudioConfig(griffin_lim_iters=8))
    # Code: a key moves when one of its modules' source does, and only then.
    before = {k: inputs.code_digest(k) for k in inputs.KEYS}
    real = inputs.module_path

    def edited(name: str) -> Path:
        if name != "gate":
            return real(name)
        copy_ = Path(__file__).parent / "__gate_edit__.py"
        return copy_

    copy_ = Path(__file__).parent / "__gate_edit__.py"
    copy_.write_bytes(real("gate").read_bytes() + b"\n# an edited gate message\n")
    try:
        monkeypatch.setattr(inputs, "module_path", edited)
        after = {k: inputs.code_digest(k) for k in inputs.KEYS}
    finally:
        copy_.unlink()
    assert {k for k in before if before[k] != after[k]} == {"validation"}  # the judges are not retrained


def _imports(path: Path) -> set[str]:
    """The cyclegan_core modules ``path`` imports, at module level or inside functions."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                targets = [node.module or ""]
            found.update(t for t in targets if t.startswith("cyclegan_core"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cyclegan_core"))
    return found


def test_the_library_import_graph_has_no_cycle():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}
    modules = {k.removesuffix(".__init__"): v for k, v in modules.items()}
    graph = {m: {t for t in _imports(p) if t in modules and t != m and not m.startswith(t + ".")}
             for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join([*stack[stack.index(t):], t]) if t in stack else f"{m} -> {t}")
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
    for banned in ("prefect", "dvc"):
        users = [m for m, p in modules.items() if f"import {banned}" in p.read_text() or f"from {banned}" in
                 p.read_text()]
        assert users == [], f"{banned} imported by {users}"


def test_long_modules_say_why():
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert lines <= 500 or "Over 500 lines on purpose" in doc, f"{path.name}: {lines} lines, no reason given"


NOT_IN_ANY_KEY = {"config", "schema", "runtime", "storage", "inputs", "gate"}  # parsing, writing, the error class


def test_the_modality_run_takes_its_code_version_and_params_hash_from_the_table(monkeypatch):
    from cyclegan_core.modality import run as modality_run

    spec = inputs.KEYS["modality"]
    assert spec.run == "modality" and "modality" not in inputs.STAGES  # its own params file, no dvc stage
    package = sorted(p.stem for p in (PACKAGE / "modality").glob("*.py"))
    assert sorted(m.removeprefix("modality.") for m in spec.code if m.startswith("modality.")) == package
    for m in spec.code:
        assert inputs.module_path(m).is_file(), f"modality: no module {m}"
    # Every library module the modality package imports is in the key, but what only parses or writes.
    used = {t.removeprefix("cyclegan_core.") for p in (PACKAGE / "modality").glob("*.py") for t in _imports(p)}
    used = {u for u in used if (PACKAGE / f"{u.replace('.', '/')}.py").is_file()}
    assert used - set(spec.code) - NOT_IN_ANY_KEY == set()
    assert modality_run.code_version() == inputs.code_digest("modality")
    # An edit to a modality module moves the modality key only, not the translation run's code version.
    before = {k: inputs.code_digest(k) for k in inputs.KEYS} | {"pipeline": inputs.pipeline_code_digest()}
    real = inputs.module_path
    copy_ = Path(__file__).parent / "__speech_edit__.py"
    copy_.write_bytes(real("modality.speech").read_bytes() + b"\n# an edited comment\n")
    try:
        monkeypatch.setattr(inputs, "module_path", lambda name: copy_ if name == "modality.speech" else real(name))
        after = {k: inputs.code_digest(k) for k in inputs.KEYS} | {"pipeline": inputs.pipeline_code_digest()}
    finally:
        copy_.unlink()
    assert {k for k in before if before[k] != after[k]} == {"modality"}
    # Settings: where it writes is not in the hash; what it makes is, and data.audio for a speech target only.
    cfg = load_config(ROOT / "params.tts.yaml")
    base = modality_run.params_hash(cfg, "audio")
    moved = load_config(ROOT / "params.tts.yaml", ["modality.output=elsewhere", "modality.reports=r2"])
    assert modality_run.params_hash(moved, "audio") == base
    assert modality_run.params_hash(load_config(ROOT / "params.tts.yaml", ["modality.seed=5"]), "audio") != base
    mels = load_config(ROOT / "params.tts.yaml", ["data.audio.n_mels=32"])
    assert cfg.data.kind != "audio" and modality_run.params_hash(mels, "audio") != base
    assert modality_run.params_hash(mels, "image") == modality_run.params_hash(cfg, "image")
