"""What every stored output depends on, declared once: the config keys and the code modules.

:data:`KEYS` names each thing the pipeline stores and reuses by key (a decoded sample, a trained
model, a translation, the validation judges, a validation, a utility report, a published version)
with the settings and the source that decide its bytes. Every fingerprint and cache key reads it:

- :func:`settings` / :func:`settings_digest`: the values of those keys in a config (minus the
  ``speed`` keys, which decide where a step puts its outputs or how fast it runs, not what it makes);
- :func:`code_digest`: sha256 of those modules' source.

The ``modality`` key is a modality run's (``modality.enabled``, :mod:`cyclegan_core.modality.run`): one
step, translate, gate and publish, with its own params file (``params.tts.yaml``); it has no ``dvc.yaml``
stage (a stage's params come from ``params.yaml``, whose modality run is off) and stays out of
:func:`pipeline_code_digest`, the translation run's code version.

:data:`STAGES` lists the pipeline's steps as ``dvc.yaml`` declares them: the keys whose inputs each
step's outputs depend on, the further settings it reads (where it writes, which stored model it
picks), further code, and the data it reads. ``tests/test_inputs.py`` checks that ``dvc.yaml``
declares exactly these params and deps, so a change to (say) ``data.audio.n_mels`` reruns ingest
under ``dvc repro`` as it changes ingest's key.

The ``runtime`` section (device, precision, memory format, compile, the training loop's speed switches:
:mod:`cyclegan_core.runtime`) is in no key's settings, as a block: how and where torch runs never
moves a model fingerprint. Where it can change stored bytes in float math the key names the step
(``Inputs.runtime``) and adds that step's :meth:`~cyclegan_core.runtime.StepRuntime.rounding`: a
translation's key does (and ``dvc.yaml``'s generate stage lists those runtime keys).

Settings under ``data.audio`` count only for audio collections: :func:`config_tree` leaves them out
(as ``None``) for images, so an image run's keys do not move when unused audio settings do.
Not in any key: ``config.py`` and ``runtime.py`` (the values they parse are), logging, storage, progress and
the run overview (``overview.py``: it reads stored outputs, it decides no stored byte).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, DataConfig
from .runtime import StepRuntime

PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Inputs:
    """The settings and code one stored output depends on."""

    params: tuple[str, ...]  # dotted config keys or whole sections
    code: tuple[str, ...]  # module names inside cyclegan_core
    speed: tuple[str, ...] = ()  # keys under ``params`` left out of the key: they decide where or how fast, not what
    why: str = ""
    runtime: str = ""  # the step whose runtime rounding (precision, memory format, compile) the key adds
    run: str = "translation"  # the run kind whose outputs these are (``modality``: a modality run's, no dvc stage)


def runtime_params(step: str) -> tuple[str, ...]:
    """The ``runtime`` keys a step's rounding comes from: the shared ones and the step's own block."""
    return (*(f"runtime.{k}" for k in StepRuntime.model_fields), f"runtime.{step}")

# Every module of the modality package (a module added there counts without a change here).
MODALITY_CODE = tuple(f"modality.{p.stem}" for p in sorted((PACKAGE / "modality").glob("*.py")))

KEYS: dict[str, Inputs] = {
    "default_data": Inputs(("data.kind", "data.default"), ("default_data", "voices"),
                           why="the bundled collections"),
    "decode": Inputs(
        ("data.kind", "data.image_size", "data.mode", "data.max_image_pixels", "data.min_image_side", "data.audio"),
        ("images", "audio"),
        speed=("data.audio.inversion", "data.audio.griffin_lim_iters", "data.audio.extensions"),
        why="one normalized sample (ingest reuses it from the last manifest while this key holds)",
    ),
    "model": Inputs(("model", "train"),
                    ("models", "networks", "translator", "cut", "train", "train_cut", "classifiers", "loader",
                     "sampleids"),
                    why="a trained model, with the training samples' digests"),
    "translation": Inputs(
        ("generate", "data.audio"), ("generate", "images", "audio"),
        speed=("generate.workers", "generate.shards", "generate.splits"), runtime="generate",
        why="one translated row, with the model and the source (and the device type where not cpu)",
    ),
    "judges": Inputs(("validate.classifier_epochs", "validate.classifier_seed", "validate.judge_blur_sigma",
                      "validate.judge_max_samples"),
                     ("judges", "classifiers", "streamstats"), why="validation's domain and label classifiers"),
    "validation": Inputs(("data", "model.arch", "validate", "publish.grid_samples"),
                         ("validate", "scoring", "streamstats", "metrics", "figures", "gate", "judges", "classifiers",
                          "models", "report", "images", "audio", "labelnames"),
                         speed=("data.ingest_chunk_files",),
                         why="the validated figures, per-sample scores, the gate and its report"),
    "utility": Inputs(("utility",), ("utility", "classifiers", "report"), why="the downstream-utility report"),
    "publication": Inputs(("data", "model", "train", "generate", "validate", "utility", "publish"),
                          ("publish", "report", "pipeline", "flags", "history", "diff", "labelnames"),
                          speed=("data.ingest_chunk_files",),
                          why="a published version (its rows record this settings digest as params_hash); the "
                              "analysts' flags file is one of its data inputs"),
    "modality": Inputs(
        ("modality", "data.audio"),
        (*MODALITY_CODE, "audio", "classifiers", "judges", "metrics", "voices", "publish", "images", "paired.scenes",
         "paired.oracle"),
        speed=("modality.output", "modality.reports"), run="modality",
        why="a modality run's published pairs (their rows record this code digest as code_version and this "
            "settings digest as params_hash); data.audio counts for a speech target only",
    ),
}


@dataclass(frozen=True)
class Stage:
    """One step as ``dvc.yaml`` runs it."""

    cmd: str
    keys: tuple[str, ...]  # entries of KEYS whose settings and code the step's outputs depend on
    reads: tuple[str, ...] = ()  # further settings: where it writes, which stored model it picks
    code: tuple[str, ...] = ()  # further modules (the step's own code, beyond what any key holds)
    deps: tuple[str, ...] = ()  # data it reads (earlier stages' outputs, relative to the repository)

    @property
    def params(self) -> list[str]:
        """Every setting the step reads, in declaration order, without repeats or keys inside a listed section."""
        runtime = [p for k in self.keys if KEYS[k].runtime for p in runtime_params(KEYS[k].runtime)]
        listed = list(dict.fromkeys([p for k in self.keys for p in KEYS[k].params] + runtime + list(self.reads)))
        return [p for p in listed if not any(p.startswith(q + ".") for q in listed)]

    @property
    def modules(self) -> list[str]:
        return sorted({m for k in self.keys for m in KEYS[k].code} | set(self.code))


STAGES: dict[str, Stage] = {
    "default_data": Stage("cycleaug default-data", ("default_data",), reads=("data.domain_a", "data.domain_b")),
    "ingest": Stage(
        "cycleaug ingest", ("decode",),
        reads=("data.domain_a", "data.domain_b", "data.test_fraction", "data.extensions", "data.max_file_bytes",
               "paths.ingest"),
        code=("ingest", "labelnames"), deps=("data/raw/A", "data/raw/B"),
    ),
    "train": Stage("cycleaug train", ("model",),
                   reads=("paths.models", "orchestrate.retrain", "orchestrate.retrain_growth"),
                   deps=("data/ingest",)),
    "generate": Stage("cycleaug generate", ("translation",),
                      reads=("data.kind", "paths.generated", "orchestrate.retrain", "orchestrate.retrain_growth"),
                      code=("models",), deps=("data/ingest", "data/models")),
    "validate": Stage("cycleaug validate --strict", ("judges", "validation"),
                      reads=("paths.judges", "paths.validated"),
                      deps=("data/ingest", "data/models", "data/generated")),
    "utility": Stage("cycleaug utility --strict", ("utility",),
                     deps=("data/ingest", "data/generated", "data/validated")),
    "publish": Stage("cycleaug publish", ("publication",),
                     reads=("paths.published", "paths.publish_url", "paths.flags"),
                     deps=("data/ingest", "data/models", "data/generated", "data/validated", "reports/utility.json",
                           "data/flags.parquet")),
}


def module_path(name: str) -> Path:
    """The source of a module named inside cyclegan_core (``paired.scenes``, ``modality.__init__``)."""
    return PACKAGE / f"{name.replace('.', '/')}.py"


def code_digest(key: str) -> str:
    """sha256 of the source of the modules ``KEYS[key]`` names (by name, in name order)."""
    h = hashlib.sha256()
    for name in sorted(KEYS[key].code):
        h.update(name.encode() + b"\0" + module_path(name).read_bytes() + b"\0")
    return h.hexdigest()


def pipeline_code_digest() -> str:
    """sha256 of every module a translation run's keys name: the code version a published row records
    (a modality run's rows record :func:`code_digest` of ``modality``)."""
    h = hashlib.sha256()
    for name in sorted({m for k in KEYS.values() if k.run == "translation" for m in k.code}):
        h.update(name.encode() + b"\0" + module_path(name).read_bytes() + b"\0")
    return h.hexdigest()


def data_tree(data: DataConfig) -> dict[str, Any]:
    """``data`` as a plain dict, with ``audio`` None unless the collections are audio."""
    tree = data.model_dump(mode="json")
    if data.kind != "audio":
        tree["audio"] = None
    return tree


def config_tree(cfg: Config) -> dict[str, Any]:
    """The whole config as a plain dict, in the form :func:`settings` reads."""
    return cfg.to_dict() | {"data": data_tree(cfg.data)}


def _lookup(tree: dict[str, Any] | None, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _drop(value: Any, dotted: str, speed: set[str]) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: _drop(v, f"{dotted}.{k}", speed) for k, v in value.items() if f"{dotted}.{k}" not in speed}


def settings(tree: dict[str, Any] | Config, key: str) -> dict[str, Any]:
    """``{dotted key: value}`` of the settings ``KEYS[key]`` names, without its speed keys.

    ``tree`` is a config, or a plain dict shaped like one (:func:`config_tree`); keys it lacks are None.
    """
    if isinstance(tree, Config):
        tree = config_tree(tree)
    spec = KEYS[key]
    speed = set(spec.speed)
    return {p: _drop(_lookup(tree, p), p, speed) for p in spec.params}


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def settings_digest(tree: dict[str, Any] | Config, key: str) -> str:
    return digest(settings(tree, key))


def key_of(tree: dict[str, Any] | Config, key: str, **data: Any) -> str:
    """The key of one stored output: its settings, its code and the content hashes in ``data``."""
    return digest({"settings": settings(tree, key), "code": code_digest(key), "data": data})
