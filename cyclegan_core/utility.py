"""Downstream utility: does training on the published translations make a classifier better on real data?

Per direction X->Y the same downstream classifier (``utility.model``, by default :func:`small_cnn`) is
trained from scratch on six training sets and tested on real held-out Y samples of the "evaluation"
half (:data:`cyclegan_core.classifiers.HALVES`), which no model, judge, calibration or bound of the
run has seen (Ravuri & Vinyals 2019's "classification accuracy score", train on synthetic, test on real):

- ``few_real``: ``utility.labels_per_class`` real Y training samples per class, the low-label setting;
- ``few_real_plus_published``: those plus the published X->Y translations with their X labels;
- ``published_only``: the published translations alone;
- ``source_only``: the untranslated sources of the published rows (no adaptation: the baseline of the last);
- ``few_real_plus_all``: the few real ones plus every translation, before the gate (does the gate help?);
- ``all_real``: every real Y training sample (the ceiling).

Every arm runs ``utility.seeds`` times (the seed draws the few labels, the initial weights and the
batches) for the same number of steps. The 95% interval of an arm's accuracy, and of the two gains
(``few_real_plus_published - few_real``, ``published_only - source_only``, paired by seed), adds
two variances: between seeds, and of the test set (over its samples, of the seed-averaged outcome).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from .classifiers import half_mask
from .config import DIRECTIONS, Config, ConfigError, UtilityBounds
from .generate import SOURCE_DOMAIN
from .images import decode_png, to_tensor
from .storage import parquet_batches
from .validate import read_validated

ARMS = ("few_real", "few_real_plus_published", "published_only", "source_only", "few_real_plus_all", "all_real")
ARM_TITLES = {
    "few_real": "(a) few real labels",
    "few_real_plus_published": "(b) (a) + published translations",
    "published_only": "(c) published translations only",
    "source_only": "(d) untranslated sources only",
    "few_real_plus_all": "(e) (a) + all translations (no gate)",
    "all_real": "(f) all real labels",
}
GAINS = {"utility_gain": ("few_real_plus_published", "few_real"),
         "transfer_gain": ("published_only", "source_only"),
         "gate_gain": ("few_real_plus_published", "few_real_plus_all")}
Z95 = 1.959963984540054


def small_cnn(channels: int, classes: int, height: int = 32, width: int = 32) -> nn.Module:
    """The default downstream classifier: two strided conv layers and two linear layers (about 38k weights).

    Deliberately not the validation judges' network: a different, smaller model, trained per arm. Strided
    convolutions instead of conv + pool cost a quarter of the arithmetic at the same accuracy on the demo
    (measured: 41 s instead of 64-86 s for the 36 classifiers of the step, accuracies within seed noise).
    """
    del height, width  # the adaptive pool takes any size
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, classes),
    )


def model_factory(spec: str | None) -> Callable[..., nn.Module]:
    """The factory ``utility.model`` names (``module:function``), or :func:`small_cnn`."""
    if spec is None:
        return small_cnn
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"utility.model={spec!r}: cannot import it ({err})") from None
    if not callable(fn):
        raise ConfigError(f"utility.model={spec!r}: not a function")
    return fn


def _build(factory: Callable[..., nn.Module], channels: int, classes: int, shape: tuple[int, int],
           spec: str | None) -> nn.Module:
    net = factory(channels, classes, *shape)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"utility.model={spec!r}: returned {type(net).__name__}, not a torch.nn.Module")
    return net


def draw_weights(labels: np.ndarray, groups: np.ndarray, classes: int, real_share: float) -> torch.Tensor:
    """Sampling weights: each class equally often within each group (0 real, 1 translated), and the real
    group drawn ``real_share`` of the time when both are present (a few real samples are not drowned)."""
    y, g = torch.as_tensor(labels, dtype=torch.long), torch.as_tensor(groups, dtype=torch.long)
    w = torch.zeros(len(y), dtype=torch.float64)
    present = [k for k in (0, 1) if bool((g == k).any())]
    for k in present:
        m = g == k
        counts = torch.bincount(y[m], minlength=classes).double().clamp(min=1)
        share = 1.0 if len(present) == 1 else (real_share if k == 0 else 1.0 - real_share)
        w[m] = share / torch.unique(y[m]).numel() / counts[y[m]]
    return w


def fit_classifier(net: nn.Module, images: np.ndarray, labels: np.ndarray, classes: int, steps: int,
                   batch_size: int, lr: float, seed: int, weights: torch.Tensor | None = None) -> nn.Module:
    """Train ``net`` for ``steps`` batches drawn by ``weights`` (default: class-balanced), with small random
    shifts; every arm gets the same budget."""
    gen = torch.Generator().manual_seed(seed)
    x, y = to_tensor(images), torch.as_tensor(labels, dtype=torch.long)
    if weights is None:
        weights = draw_weights(labels, np.zeros(len(labels), np.int64), classes, 1.0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    pad = max(1, images.shape[1] // 16)
    net.train()
    for _ in range(steps):
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=gen)
        dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
        batch = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(batch), y[idx]).backward()
        opt.step()
    return net.eval()


@torch.inference_mode()
def predict(net: nn.Module, images: np.ndarray, batch: int = 512) -> np.ndarray:
    out = [net(to_tensor(images[s:s + batch])).argmax(1).numpy() for s in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def few_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of up to ``per_class`` samples of each class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def interval(per_seed: np.ndarray, per_sample: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> dict:
    """Mean and 95% normal interval of a figure measured per seed (rows) and test sample (columns).

    ``per_seed``: the figure per seed; ``per_sample``: the seed-averaged outcome per test sample. The
    variance of the mean adds the seed-to-seed variance over the seeds and the test-set variance over
    the samples (the test set is shared by the seeds, so its noise is not in the first term). The
    interval is clipped to the figure's range [``lo``, ``hi``].
    """
    k, n = len(per_seed), len(per_sample)
    mean = float(np.mean(per_seed))
    var = (np.var(per_seed, ddof=1) / k if k > 1 else 0.0) + (np.var(per_sample, ddof=1) / n if n > 1 else 0.0)
    half = Z95 * math.sqrt(var)
    return {"mean": mean, "low": max(lo, mean - half), "high": min(hi, mean + half),
            "seeds": [float(v) for v in per_seed]}


@dataclass(frozen=True)
class UtilityResult:
    path: str
    ran: bool
    passed: bool
    failures: list[str]
    figures: dict
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _labelled(table: pa.Table) -> bool:
    values = table.column("label").to_pylist()
    return bool(values) and None not in values


DECODE_ROWS = 256  # PNGs read at a time from a Parquet file


def bounded_sample(ids: list[str], limit: int, salt: str) -> np.ndarray:
    """Positions (ascending) of at most ``limit`` of ``ids``: all of them when they fit, else those whose
    sha256 of ``salt`` and the id is smallest, so the same samples are drawn whatever the order or the run."""
    if len(ids) <= limit:
        return np.arange(len(ids))
    keys = np.array([hashlib.sha256(f"{salt}\0{s}".encode()).digest() for s in ids])
    return np.sort(np.argsort(keys, kind="stable")[:limit])


def decode_at(files: list[Path], column: str, positions: np.ndarray) -> np.ndarray:
    """The PNGs of ``column`` at ``positions`` (ascending, counted over ``files`` in order) as one uint8
    (N, H, W, C) array, read DECODE_ROWS rows at a time: only the chosen rows are ever decoded."""
    out: list[np.ndarray] = []
    offset, j = 0, 0
    if not len(positions):  # an empty set still has the pictures' shape, to stack with the others
        first = next((b for f in files for b in parquet_batches(f, [column], 1) if b.num_rows), None)
        return np.zeros((0, *decode_png(first.column(0)[0].as_py()).shape) if first else (0, 0, 0, 0), np.uint8)
    for f in files:
        for batch in parquet_batches(f, [column], DECODE_ROWS):
            hi = int(np.searchsorted(positions, offset + batch.num_rows))
            col = batch.column(0)
            out += [decode_png(col[int(p) - offset].as_py()) for p in positions[j:hi]]
            j, offset = hi, offset + batch.num_rows
            if j == len(positions):
                return np.stack(out)
    if j < len(positions):
        raise IndexError(f"{column}: {len(positions) - j} rows beyond the {offset} rows of {[str(f) for f in files]}")
    return np.stack(out)


def _small(path: str | Path, columns: list[str]) -> pa.Table:
    return pq.read_table(path, columns=columns)


def _direction_sets(cfg: Config, direction: str, generated_dir: str | Path, validated_dir: str | Path,
                    manifests: dict[str, str | Path]) -> dict | str:
    """The training and evaluation sets of one direction, or why the direction cannot be measured.

    Each set is at most ``utility.max_train_samples`` (the evaluation set ``max_eval_samples``) samples,
    drawn by sample id (:func:`bounded_sample`); the ids, labels and pass flags are read as small columns
    and only the drawn rows' PNGs are decoded, in batches."""
    u = cfg.utility
    target = direction[-1]
    source = SOURCE_DOMAIN[direction]
    manifest = _small(manifests[target], ["sample_id", "split", "label"])
    split = manifest.column("split").to_pylist()
    real_pos = np.array([i for i, s in enumerate(split) if s == "train"], np.int64)
    held_pos = np.array([i for i, s in enumerate(split) if s == "test"], np.int64)
    real_train, held_out = manifest.take(real_pos), manifest.take(held_pos)
    if not (_labelled(real_train) and _labelled(held_out)):
        return f"the target collection {target} has no labels (labels.csv) for every sample"
    files = sorted((Path(generated_dir) / direction).glob("part-*.parquet"))
    gen = pa.concat_tables([_small(f, ["sample_id", "label"]) for f in files]) if files else None
    if gen is None or not gen.num_rows or None in gen.column("label").to_pylist():
        return f"the sources ({source}) have no labels (labels.csv) for every sample"
    # The validated output, only its two small columns.
    val = read_validated(validated_dir, direction, ["sample_id", "passed"])
    passed = dict(zip(*(val.column(c).to_pylist() for c in ("sample_id", "passed")), strict=True))
    ids = gen.column("sample_id").to_pylist()
    keep = np.flatnonzero([bool(passed.get(s)) for s in ids])
    in_eval = half_mask(held_out.column("sample_id").to_pylist(), "test", "evaluation")
    eval_pos = held_pos[np.flatnonzero(in_eval)]
    if not len(eval_pos):
        return f"no held-out {target} samples in the evaluation half"
    target_ids = manifest.column("sample_id").to_pylist()

    def drawn(pos: np.ndarray, limit: int, name: str, pool: list[str]) -> np.ndarray:
        return pos[bounded_sample([pool[i] for i in pos], limit, f"utility:{direction}:{name}")]

    real_pos = drawn(real_pos, u.max_train_samples, "real", target_ids)
    eval_pos = drawn(eval_pos, u.max_eval_samples, "evaluation", target_ids)
    pub_pos = drawn(keep, u.max_train_samples, "published", ids)
    all_pos = drawn(np.arange(len(ids)), u.max_train_samples, "all", ids)
    union = np.union1d(pub_pos, all_pos)
    translated = decode_at(files, "image", union)
    labels = np.asarray(gen.column("label").to_pylist(), dtype=np.int64)
    target_labels = np.asarray(manifest.column("label").to_pylist(), dtype=np.int64)
    target_file = [Path(manifests[target])]
    return {
        "real": (decode_at(target_file, "image", real_pos), target_labels[real_pos]),
        "published": (translated[np.searchsorted(union, pub_pos)], labels[pub_pos]),
        "all": (translated[np.searchsorted(union, all_pos)], labels[all_pos]),
        "source": (decode_at(files, "source_image", pub_pos), labels[pub_pos]),
        "test": (decode_at(target_file, "image", eval_pos), target_labels[eval_pos]),
    }


def _arm_data(sets: dict, arm: str, few: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels and group (0 real, 1 translated or untranslated source) of one arm's training set."""
    rx, ry = sets["real"]
    real = (rx, ry) if arm == "all_real" else (rx[few], ry[few])
    parts = {"few_real": [(real, 0)], "all_real": [(real, 0)], "published_only": [(sets["published"], 1)],
             "source_only": [(sets["source"], 1)], "few_real_plus_published": [(real, 0), (sets["published"], 1)],
             "few_real_plus_all": [(real, 0), (sets["all"], 1)]}[arm]
    return (np.concatenate([x for (x, _), _ in parts]), np.concatenate([y for (_, y), _ in parts]),
            np.concatenate([np.full(len(y), g, np.int64) for (_, y), g in parts]))


def measure_direction(cfg: Config, sets: dict, progress: Callable[[int, int], None] | None = None) -> dict:
    """Every arm over every seed for one direction: accuracies with intervals, gains, per-class figures."""
    u = cfg.utility
    factory = model_factory(u.model)
    test_x, test_y = sets["test"]
    classes = int(max(sets["real"][1].max(), test_y.max(), sets["all"][1].max())) + 1
    shape = test_x.shape[1:3]
    correct = {arm: np.zeros((u.seeds, len(test_y)), dtype=bool) for arm in ARMS}
    sizes: dict[str, int] = {}
    done, total = 0, len(ARMS) * u.seeds
    for s in range(u.seeds):
        few = few_per_class(sets["real"][1], u.labels_per_class, seed=s)
        for arm in ARMS:
            x, y, groups = _arm_data(sets, arm, few)
            sizes[arm] = len(y)
            if len(y) == 0:  # e.g. the gate passed nothing: the arm cannot be trained
                correct[arm][s] = False
            else:
                torch.manual_seed(1000 * s + 17)  # the same initial weights for every arm of a seed
                net = _build(factory, test_x.shape[3], classes, shape, u.model)
                fit_classifier(net, x, y, classes, u.steps, u.batch_size, u.lr, seed=s,
                               weights=draw_weights(y, groups, classes, u.real_share))
                correct[arm][s] = predict(net, test_x) == test_y
            done += 1
            if progress:
                progress(done, total)
    out: dict = {}
    for arm in ARMS:
        c = correct[arm].astype(np.float64)
        out[arm] = interval(c.mean(axis=1), c.mean(axis=0), 0.0, 1.0) | {
            "train_samples": sizes[arm],
            "per_class": [float(c[:, test_y == k].mean()) if (test_y == k).any() else None for k in range(classes)],
        }
    for name, (a, b) in GAINS.items():
        d = correct[a].astype(np.float64) - correct[b].astype(np.float64)
        out[name] = interval(d.mean(axis=1), d.mean(axis=0)) | {
            "per_class": [float(d[:, test_y == k].mean()) if (test_y == k).any() else None for k in range(classes)],
        }
    out["evaluated_on"] = len(test_y)
    out["classes"] = classes
    return out


def utility_failures(direction: str, fig: dict, bounds: UtilityBounds) -> list[str]:
    """Each failed utility bound, as the validation gate words them."""
    out: list[str] = []
    if "skipped" in fig:  # no labels: the step did not run, so its bounds do not apply (the log says why)
        return out
    for key, gain in (("min_utility_gain", "utility_gain"), ("min_transfer_gain", "transfer_gain")):
        bound = getattr(bounds, key)
        if bound is None:
            continue
        where = f"(utility.run.{direction}.{key})"
        if fig[gain]["low"] < bound:
            g = fig[gain]
            out.append(f"{direction}.{gain} = {g['mean']:+.3f} (95% interval {g['low']:+.3f} to {g['high']:+.3f}), "
                       f"lower bound < {bound} {where}")
    return out


def measure_utility(cfg: Config, manifest_a: str | Path, manifest_b: str | Path, generated_dir: str | Path,
                    validated_dir: str | Path, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The utility figures of both directions (a direction without labels says why it was skipped)."""
    manifests = {"A": manifest_a, "B": manifest_b}
    out: dict = {}
    for direction in DIRECTIONS:
        sets = _direction_sets(cfg, direction, generated_dir, validated_dir, manifests)
        if isinstance(sets, str):
            out[direction] = {"skipped": sets}
            continue
        cb = (lambda i, n, d=direction: progress(f"utility {d}", i, n)) if progress else None
        out[direction] = measure_direction(cfg, sets, cb)
    return out


def settings(cfg: Config) -> dict:
    u = cfg.utility
    return {"labels_per_class": u.labels_per_class, "seeds": u.seeds, "steps": u.steps, "batch_size": u.batch_size,
            "lr": u.lr, "model": u.model or "cyclegan_core.utility:small_cnn",
            "max_train_samples": u.max_train_samples, "max_eval_samples": u.max_eval_samples,
            "evaluation": "held-out target samples of the 'evaluation' half (by content hash), unseen by "
                          "judges, realism calibration and FID/KID", "interval": "95% normal, seeds + test set"}


def utility_report(figures: dict, started: float, cfg: Config) -> dict:
    """The ``reports/utility.json`` document: figures per direction, the settings, the bounds and their outcome."""
    failures = [f for d in DIRECTIONS for f in utility_failures(d, figures.get(d, {}), cfg.utility.run[d])]
    return {**figures, "settings": settings(cfg), "passed": not failures, "failures": failures,
            "bounds": {d: cfg.utility.run[d].model_dump() for d in DIRECTIONS},
            "seconds": round(time.perf_counter() - started, 2)}
