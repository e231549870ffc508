"""Validate: score every translation, decide which pass, and gate the run.

Per sample: cycle reconstruction (L1 and PSNR between x and F(G(x)), on [0, 1]), realism (the
probability a domain classifier gives the target domain) and, when sources carry labels, the label
a classifier trained on real target-domain samples predicts for the translation. Per direction,
on held-out samples: means, pass rate, label accuracy (and that of the untranslated sources, for
comparison) and a Fréchet distance on the domain classifier's features. The judge classifiers are
trained on the real training samples and cached under a key of their data and settings.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import DIRECTIONS, Config, RunThresholds, SampleThresholds
from .generate import read_generated
from .images import decode_png, to_tensor
from .ingest import manifest_digest, manifest_images, read_manifest
from .storage import atomic_dir, atomic_path, write_json_atomic

METRIC_COLUMNS = ("cycle_l1", "cycle_psnr", "realism", "pred_label", "label_ok")
VALIDATED_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("cycle_l1", pa.float64()),
        ("cycle_psnr", pa.float64()),
        ("realism", pa.float64()),
        ("pred_label", pa.int64()),
        ("label_ok", pa.bool_()),
        ("passed", pa.bool_()),
        ("fail_reason", pa.string()),
    ]
)
PSNR_CAP = 100.0


class GateFailed(RuntimeError):
    """A run-level threshold failed; nothing is published. The message names every failure."""


class SmallCNN(nn.Module):
    """A small convolutional classifier; ``features`` is its 128-d penultimate layer.

    The 4x4 adaptive pool keeps where strokes are (a digit is its layout), at any input size.
    """

    FEATURES = 128

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, self.FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(self.FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(images: np.ndarray, labels: np.ndarray, classes: int, epochs: int, seed: int) -> SmallCNN:
    """Fit a :class:`SmallCNN` on uint8 images (N, H, W, C) with small shifts as augmentation."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallCNN(images.shape[3], classes)
    x, y = to_tensor(images), torch.as_tensor(labels, dtype=torch.long)
    # Balance classes so a large domain does not make the judge lazy.
    counts = torch.bincount(y, minlength=classes).clamp(min=1).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (classes * counts))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    pad = max(1, images.shape[1] // 16)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
            batch = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
            opt.zero_grad(set_to_none=True)
            loss_fn(net(batch), y[idx]).backward()
            opt.step()
    return net.eval()


@dataclass
class Judges:
    """The classifiers validation uses: domain (0 = A, 1 = B) and one digit/label model per domain."""

    domain: SmallCNN
    label: dict[str, SmallCNN]


def _judge_key(cfg: Config, man_a: pa.Table, man_b: pa.Table) -> str:
    src = (Path(__file__)).read_bytes()
    payload = {
        "A": manifest_digest(man_a, "train"), "B": manifest_digest(man_b, "train"),
        "epochs": cfg.validate_.classifier_epochs, "seed": cfg.validate_.classifier_seed,
        "code": hashlib.sha256(src).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_or_train_judges(cfg: Config, manifest_a: str | Path, manifest_b: str | Path) -> tuple[Judges, str]:
    """Judges for these training samples, trained once and cached in ``paths.judges``."""
    man = {"A": read_manifest(manifest_a, ("train",)), "B": read_manifest(manifest_b, ("train",))}
    key = _judge_key(cfg, man["A"], man["B"])
    folder = Path(cfg.paths.judges) / key
    c = cfg.data.channels
    labelled = {
        d: t for d, t in man.items() if t.num_rows and all(v is not None for v in t.column("label").to_pylist())
    }
    n_classes = {d: int(max(t.column("label").to_pylist())) + 1 for d, t in labelled.items()}
    weights = folder / "judges.safetensors"
    if weights.exists():
        info = json.loads((folder / "judges.json").read_text(encoding="utf-8"))
        tensors = load_file(str(weights))
        domain = SmallCNN(c, 2)
        domain.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("domain.")})
        labels = {}
        for d, classes in info["label_classes"].items():
            net = SmallCNN(c, classes)
            net.load_state_dict({k[len(d) + 7:]: v for k, v in tensors.items() if k.startswith(f"label_{d}.")})
            labels[d] = net.eval()
        return Judges(domain.eval(), labels), key

    epochs, seed = cfg.validate_.classifier_epochs, cfg.validate_.classifier_seed
    imgs = {d: manifest_images(t) for d, t in man.items()}
    domain = train_classifier(
        np.concatenate([imgs["A"], imgs["B"]]),
        np.concatenate([np.zeros(len(imgs["A"]), np.int64), np.ones(len(imgs["B"]), np.int64)]),
        2, epochs, seed,
    )
    labels = {
        d: train_classifier(imgs[d], np.asarray(t.column("label").to_pylist()), n_classes[d], epochs, seed)
        for d, t in labelled.items()
    }
    tensors = {f"domain.{k}": v for k, v in domain.state_dict().items()}
    for d, net in labels.items():
        tensors.update({f"label_{d}.{k}": v for k, v in net.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "judges.json", {"label_classes": {d: n_classes[d] for d in labels}})
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
    return Judges(domain, labels), key


def cycle_errors(src: np.ndarray, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean absolute error and PSNR (dB, capped at 100) on [0, 1], uint8 (N, H, W, C) in."""
    a = src.astype(np.float64) / 255.0
    b = rec.astype(np.float64) / 255.0
    l1 = np.abs(a - b).mean(axis=(1, 2, 3))
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_CAP)
    return l1, np.minimum(psnr, PSNR_CAP)


@torch.inference_mode()
def _classify(net: SmallCNN, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and penultimate features, in batches."""
    probs, feats = [], []
    for start in range(0, len(images), 256):
        x = to_tensor(images[start:start + 256])
        f = net.features(x)
        probs.append(torch.softmax(net.head(f), dim=1).numpy())
        feats.append(f.numpy())
    if not probs:
        return np.zeros((0, net.head.out_features)), np.zeros((0, net.head.in_features))
    return np.concatenate(probs), np.concatenate(feats)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float | None:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula)."""
    if len(x) < 2 or len(y) < 2:
        return None
    from scipy import linalg

    mu1, mu2 = x.mean(0), y.mean(0)
    # A small ridge keeps the product invertible when features are few or partly constant
    # (ReLU units that never fire), the usual fix in FID code.
    eps = np.eye(x.shape[1]) * 1e-6
    s1, s2 = np.cov(x, rowvar=False) + eps, np.cov(y, rowvar=False) + eps
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return max(0.0, float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def sample_failures(m: dict, t: SampleThresholds) -> list[str]:
    out = []
    if m["cycle_psnr"] < t.min_cycle_psnr:
        out.append(f"cycle_psnr {m['cycle_psnr']:.2f} < {t.min_cycle_psnr}")
    if m["cycle_l1"] > t.max_cycle_l1:
        out.append(f"cycle_l1 {m['cycle_l1']:.4f} > {t.max_cycle_l1}")
    if m["realism"] < t.min_realism:
        out.append(f"realism {m['realism']:.3f} < {t.min_realism}")
    return out


def run_failures(direction: str, fig: dict, t: RunThresholds) -> list[str]:
    """Each failed run-level bound as '<direction>.<figure> = <value> < <bound> (<key>)'."""
    checks = [
        ("mean_cycle_psnr", t.min_mean_cycle_psnr, "min_mean_cycle_psnr"),
        ("mean_realism", t.min_mean_realism, "min_mean_realism"),
        ("label_accuracy", t.min_label_accuracy, "min_label_accuracy"),
        ("pass_rate", t.min_pass_rate, "min_pass_rate"),
    ]
    out = []
    for figure, bound, key in checks:
        value = fig.get(figure)
        if value is None:
            if figure == "label_accuracy" and bound > 0 and fig.get("labelled", 0) == 0:
                out.append(f"{direction}.label_accuracy: no labelled held-out samples, bound {bound} "
                           f"(validate.run.{direction}.{key})")
            elif figure != "label_accuracy" and bound > 0:
                out.append(f"{direction}.{figure}: no held-out samples to measure, bound {bound} "
                           f"(validate.run.{direction}.{key})")
            continue
        if value < bound:
            out.append(f"{direction}.{figure} = {value:.4g} < {bound} (validate.run.{direction}.{key})")
    return out


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


@dataclass(frozen=True)
class ValidateResult:
    out_dir: str
    summary: str
    passed: bool
    failures: list[str]
    figures: dict

    def to_dict(self) -> dict:
        return asdict(self)


def validate(cfg: Config, manifest_a: str | Path, manifest_b: str | Path, generated_dir: str | Path,
             out_dir: str | Path) -> ValidateResult:
    """Score every generated row; write ``<direction>.parquet`` and ``summary.json`` to ``out_dir``."""
    judges, judge_key = load_or_train_judges(cfg, manifest_a, manifest_b)
    held_out = {"A": read_manifest(manifest_a, ("test",)), "B": read_manifest(manifest_b, ("test",))}
    figures: dict[str, dict] = {}
    failures: list[str] = []
    with atomic_dir(out_dir) as tmp:
        for direction in DIRECTIONS:
            target = direction[-1]
            gen = read_generated(generated_dir, direction,
                                 ["sample_id", "split", "label", "source_image", "image", "reconstruction"])
            n = gen.num_rows
            src = np.stack([decode_png(b) for b in gen.column("source_image").to_pylist()]) if n else None
            out = np.stack([decode_png(b) for b in gen.column("image").to_pylist()]) if n else None
            rec = np.stack([decode_png(b) for b in gen.column("reconstruction").to_pylist()]) if n else None
            l1, psnr = cycle_errors(src, rec) if n else (np.zeros(0), np.zeros(0))
            probs, feats = _classify(judges.domain, out) if n else (np.zeros((0, 2)), np.zeros((0, SmallCNN.FEATURES)))
            realism = probs[:, 0 if target == "A" else 1]
            labels = gen.column("label").to_pylist()
            pred: list[int | None] = [None] * n
            pred_src: list[int | None] = [None] * n
            if target in judges.label and n:
                pred = [int(v) for v in _classify(judges.label[target], out)[0].argmax(1)]
                pred_src = [int(v) for v in _classify(judges.label[target], src)[0].argmax(1)]
            ok = [None if lb is None or p is None else lb == p for lb, p in zip(labels, pred, strict=True)]

            rows = []
            thresholds = cfg.validate_.sample[direction]
            for i, sid in enumerate(gen.column("sample_id").to_pylist()):
                m = {"cycle_l1": float(l1[i]), "cycle_psnr": float(psnr[i]), "realism": float(realism[i])}
                why = sample_failures(m, thresholds)
                rows.append({"sample_id": sid, "split": gen.column("split")[i].as_py(), **m,
                             "pred_label": pred[i], "label_ok": ok[i], "passed": not why,
                             "fail_reason": "; ".join(why) or None})
            table = pa.Table.from_pylist(rows, schema=VALIDATED_SCHEMA)
            pq.write_table(table, tmp / f"{direction}.parquet")

            test = np.asarray([r["split"] == "test" for r in rows], dtype=bool)
            passed = np.asarray([r["passed"] for r in rows], dtype=bool)
            lab = [i for i in range(n) if test[i] and ok[i] is not None]
            real_target = held_out[target]
            _, real_feats = _classify(judges.domain, manifest_images(real_target)) if real_target.num_rows else (
                None, np.zeros((0, SmallCNN.FEATURES)))
            fig = {
                "generated": n, "passed": int(passed.sum()), "dropped": int(n - passed.sum()),
                "held_out": int(test.sum()), "labelled": len(lab),
                "mean_cycle_l1": _mean(l1[test]), "mean_cycle_psnr": _mean(psnr[test]),
                "p10_cycle_psnr": float(np.percentile(psnr[test], 10)) if test.any() else None,
                "mean_realism": _mean(realism[test]),
                "pass_rate": _mean(passed[test].astype(float)),
                "label_accuracy": float(np.mean([ok[i] for i in lab])) if lab else None,
                "label_accuracy_untranslated": (
                    float(np.mean([pred_src[i] == labels[i] for i in lab])) if lab else None
                ),
                "fid_domain_features": frechet_distance(feats[test], real_feats),
            }
            figures[direction] = fig
            failures += run_failures(direction, fig, cfg.validate_.run[direction])
        summary = {"passed": not failures, "failures": failures, "directions": figures, "judges": judge_key}
        write_json_atomic(tmp / "summary.json", nan_to_none(summary))
    return ValidateResult(str(out_dir), str(Path(out_dir) / "summary.json"), not failures, failures, figures)


def read_validated(out_dir: str | Path, direction: str) -> pa.Table:
    return pq.read_table(Path(out_dir) / f"{direction}.parquet")


def check_gate(summary: dict) -> None:
    """Raise :class:`GateFailed` naming each failed run-level threshold, if any failed."""
    if not summary["passed"]:
        raise GateFailed("quality gate failed, nothing published: " + "; ".join(summary["failures"]))


def nan_to_none(obj):
    """JSON-safe copy: NaN and Inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    return obj
