"""Validate: score every translation, decide which pass, and gate the run.

Per sample (x a source, G the direction's generator, F the way back):
- cycle reconstruction between x and F(G(x)) on [0, 1]: L1, PSNR and SSIM (Gaussian window 11,
  sigma 1.5, the Wang et al. 2004 settings, via ``kornia.metrics.ssim``);
- robust cycle PSNR between x and F(q(G(x))), q = Gaussian noise then JPEG (``validate.robust_*``): a
  generator that hides x in a faint signal of G(x) (Chu et al. 2017) reconstructs through G(x), not through q;
- identity drift, mean |x - F(x)|: how much the way-back generator alters a real sample that is
  already in its output domain (what CycleGAN's identity loss holds down);
- realism: how target-like a domain judge finds G(x), ranked among held-out real targets (below);
- when sources carry labels, the label a classifier trained on real target samples predicts for G(x).

Realism is a conformal p-value, not the judge's softmax. On the bundled digits a two-class judge
separates the real collections perfectly (held-out accuracy 1.000, with or without blur), so its
P(target) is 1.000 for anything on the target side of its boundary and says nothing about how
convincing a translation is. Instead each translation's judge margin (target logit minus source
logit) is ranked among the margins of held-out real target samples:
realism = (#{real targets with a lower margin} + 1/2) / (n + 1) (ties count half). Under the
hypothesis "this is a real target sample" it is uniform with mean 0.5, so a translation as
convincing as the median real target scores 0.5 and one less target-like than every real target
scores 0.5 / (n + 1). The judge also sees every image through a fixed Gaussian blur
(``validate.judge_blur_sigma``), in training and scoring alike, so its margin rests on shape and
stroke style more than on sharpness (A is blurry, B sharp on the bundled digits). The raw softmax
P(target) is still reported (``mean_p_target``) to show the saturation this replaces.

Per direction, on held-out samples: means and percentiles, pass rate, label accuracy (and that of
the untranslated sources), and FID and KID between translations and held-out real targets on the
domain judge's penultimate features, plus on InceptionV3 features when a local TorchScript file is
configured. The judges are trained on the real training samples and cached under a key of their
data, settings and this file's code.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from .classifiers import SmallCNN, half_mask, train_classifier
from .config import DIRECTIONS, Config, ConfigError, RunThresholds, SampleThresholds
from .devices import resolve_device
from .generate import read_generated
from .images import decode_png, to_tensor, to_uint8
from .ingest import manifest_digest, manifest_images, read_manifest
from .storage import atomic_dir, atomic_path, write_json_atomic

METRIC_COLUMNS = ("cycle_l1", "cycle_psnr", "cycle_psnr_robust", "cycle_ssim", "identity_l1", "realism", "pred_label",
                  "label_ok")
VALIDATED_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("cycle_l1", pa.float64()),
        ("cycle_psnr", pa.float64()),
        ("cycle_psnr_robust", pa.float64()),
        ("cycle_ssim", pa.float64()),
        ("identity_l1", pa.float64()),
        ("realism", pa.float64()),
        ("pred_label", pa.int64()),
        ("label_ok", pa.bool_()),
        ("passed", pa.bool_()),
        ("fail_reason", pa.string()),
    ]
)
# Audio collections add the cycle measured as a sound: on spectrograms (log-spectral distance, dB)
# and on waveforms (SI-SDR, dB); and what the inversion to a waveform loses (see _audio_figures).
AUDIO_METRIC_COLUMNS = ("cycle_lsd", "cycle_si_sdr", "inversion_lsd")


def validated_schema(audio: bool = False) -> pa.Schema:
    """The per-sample table validate writes (with the audio figures for audio collections)."""
    if not audio:
        return VALIDATED_SCHEMA
    at = VALIDATED_SCHEMA.get_field_index("identity_l1")
    schema = VALIDATED_SCHEMA
    for k, name in enumerate(AUDIO_METRIC_COLUMNS):
        schema = schema.insert(at + k, pa.field(name, pa.float64()))
    return schema


PSNR_CAP = 100.0
SSIM_WINDOW = 11
# Figures summarized per direction with mean and percentiles (held-out rows).
SUMMARIZED = ("cycle_l1", "cycle_psnr", "cycle_psnr_robust", "cycle_ssim", "identity_l1", "realism")
PERCENTILES = (10, 50, 90)


class GateFailed(RuntimeError):
    """A run-level threshold failed; nothing is published. The message names every failure."""


# --------------------------------------------------------------------------------------------- judges
@dataclass
class Judges:
    """The classifiers validation uses: domain (0 = A, 1 = B) and one digit/label model per domain."""

    domain: SmallCNN
    label: dict[str, SmallCNN]


def _judge_key(cfg: Config, man_a: pa.Table, man_b: pa.Table) -> str:
    src = Path(__file__).read_bytes() + (Path(__file__).parent / "classifiers.py").read_bytes()
    v = cfg.validate_
    payload = {
        "A": manifest_digest(man_a, "train"), "B": manifest_digest(man_b, "train"),
        "epochs": v.classifier_epochs, "seed": v.classifier_seed, "blur": v.judge_blur_sigma,
        "code": hashlib.sha256(src).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def calibration_half(held_out: pa.Table) -> pa.Table:
    """The held-out samples validation may use: realism is calibrated and FID/KID measured against these.

    The other ("evaluation") half is kept for the utility step, which tests downstream classifiers on
    real samples that no judge, calibration or bound of the run has seen. A held-out set too small to
    have a calibration half (a handful of samples) is used whole.
    """
    if not held_out.num_rows:
        return held_out
    keep = half_mask(held_out.column("sample_id").to_pylist(), "test", "calibration")
    return held_out.filter(pa.array(keep)) if keep.any() else held_out


def load_or_train_judges(cfg: Config, manifest_a: str | Path, manifest_b: str | Path) -> tuple[Judges, str]:
    """Judges for these training samples, trained once and cached in ``paths.judges``."""
    man = {"A": read_manifest(manifest_a, ("train",)), "B": read_manifest(manifest_b, ("train",))}
    key = _judge_key(cfg, man["A"], man["B"])
    folder = Path(cfg.paths.judges) / key
    c = cfg.data.channels
    blur = cfg.validate_.judge_blur_sigma
    labelled = {
        d: t for d, t in man.items() if t.num_rows and all(v is not None for v in t.column("label").to_pylist())
    }
    n_classes = {d: int(max(t.column("label").to_pylist())) + 1 for d, t in labelled.items()}
    weights = folder / "judges.safetensors"
    if weights.exists():
        info = json.loads((folder / "judges.json").read_text(encoding="utf-8"))
        tensors = load_file(str(weights))
        domain = SmallCNN(c, 2, info.get("blur_sigma", 0.0))
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
        2, epochs, seed, blur,
    )
    # Label judges learn from the "judge" half of the training samples only: the other half trains the
    # semantic classifier of label-aware training (train.semantic), so the two are never the same model
    # on the same samples. Twice the epochs on half the samples keeps the number of steps.
    labels = {}
    for d, t in labelled.items():
        keep = half_mask(t.column("sample_id").to_pylist(), "train", "judge")
        labels[d] = train_classifier(imgs[d][keep], np.asarray(t.column("label").to_pylist())[keep], n_classes[d],
                                     2 * epochs, seed)
    tensors = {f"domain.{k}": v for k, v in domain.state_dict().items()}
    for d, net in labels.items():
        tensors.update({f"label_{d}.{k}": v for k, v in net.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "judges.json",
                      {"label_classes": {d: n_classes[d] for d in labels}, "blur_sigma": blur})
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
    return Judges(domain, labels), key


def _device_of(net: nn.Module) -> torch.device:
    p = next(iter(net.parameters()), None)
    return torch.device("cpu") if p is None else p.device


@torch.inference_mode()
def _classify(net: SmallCNN, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and penultimate features, in batches."""
    logits, feats = [], []
    device = _device_of(net)
    for start in range(0, len(images), 256):
        f = net.features(to_tensor(images[start:start + 256]).to(device))
        logits.append(net.head(f).double().cpu().numpy())
        feats.append(f.double().cpu().numpy())
    if not logits:
        return np.zeros((0, net.head.out_features)), np.zeros((0, net.head.in_features))
    return np.concatenate(logits), np.concatenate(feats)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def margins(logits: np.ndarray, target: int) -> np.ndarray:
    """The judge's margin for the target class: target logit minus the other's (two classes)."""
    return logits[:, target] - logits[:, 1 - target] if len(logits) else np.zeros(0)


def conformal_realism(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mid-rank conformal p-value of "is a reference sample": (#{ref < s} + #{ref = s} / 2 + 1/2) / (n + 1).

    For a sample exchangeable with the reference its expectation is exactly 0.5; it lies strictly
    between 0 and 1 (a bound of 0 or 1 is thus never met by accident). NaN without a reference.
    """
    if len(reference) == 0:
        return np.full(len(scores), np.nan)
    ref = np.sort(reference)
    below = np.searchsorted(ref, scores, side="left")
    ties = np.searchsorted(ref, scores, side="right") - below
    return (below + 0.5 * ties + 0.5) / (len(ref) + 1.0)


def _leave_one_out_realism(reference: np.ndarray) -> float | None:
    """Mean realism of the reference samples themselves, each ranked among the others (0.5 by construction)."""
    n = len(reference)
    if n < 2:
        return None
    ref = np.sort(reference)
    below = np.searchsorted(ref, reference, side="left")
    ties = np.searchsorted(ref, reference, side="right") - below - 1  # minus the sample itself
    return float(np.mean((below + 0.5 * ties + 0.5) / n))


# -------------------------------------------------------------------------------------------- metrics
def cycle_errors(src: np.ndarray, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean absolute error and PSNR (dB, capped at 100) on [0, 1], uint8 (N, H, W, C) in."""
    a = src.astype(np.float64) / 255.0
    b = rec.astype(np.float64) / 255.0
    l1 = np.abs(a - b).mean(axis=(1, 2, 3))
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), PSNR_CAP)
    return l1, np.minimum(psnr, PSNR_CAP)


def ssim(x: np.ndarray, y: np.ndarray, window: int = SSIM_WINDOW) -> np.ndarray:
    """Per-sample SSIM of uint8 (N, H, W, C) images on [0, 1], mean over the valid map and channels.

    ``kornia.metrics.ssim`` with a Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, no epsilon
    and "valid" padding: the settings of Wang et al. 2004 and of scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False, data_range=1)``.
    Images smaller than the window use the largest odd window that fits.
    """
    from kornia.metrics import ssim as kornia_ssim

    if len(x) == 0:
        return np.zeros(0)
    side = min(x.shape[1], x.shape[2])
    win = min(window, side if side % 2 else side - 1)
    out = []
    for start in range(0, len(x), 512):
        a = torch.from_numpy(np.ascontiguousarray(x[start:start + 512])).permute(0, 3, 1, 2).double() / 255.0
        b = torch.from_numpy(np.ascontiguousarray(y[start:start + 512])).permute(0, 3, 1, 2).double() / 255.0
        out.append(kornia_ssim(a, b, win, max_val=1.0, eps=0.0, padding="valid").mean(dim=(1, 2, 3)).numpy())
    return np.concatenate(out)


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


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018)."""
    m, n, d = len(x), len(y), x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, subset_size: int = 1000, subsets: int = 100,
                              seed: int = 0) -> tuple[float, float, int] | None:
    """KID: mean and std of the unbiased MMD^2 over random subsets, and the subset size used.

    The subset size is ``min(subset_size, len(x), len(y))`` so small held-out sets still give a
    figure (as torch-fidelity and clean-fid do, but adapting instead of refusing); when a subset is
    the whole of both sets every subset is the same and one is computed.
    """
    n = min(subset_size, len(x), len(y))
    if n < 2:
        return None
    if n == len(x) == len(y):
        return mmd2_unbiased(x, y), 0.0, n
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(x[rng.choice(len(x), n, replace=False)], y[rng.choice(len(y), n, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals)), n


# ---------------------------------------------------------------------------------- Inception (optional)
def load_inception(path: str | None):
    """The TorchScript InceptionV3 feature extractor at ``path`` (local only), or None when unset.

    The expected file is the one StyleGAN2-ADA, clean-fid and torch-fidelity-style code use for FID:
    NVIDIA's ``inception-2015-12-05.pt``, a TorchScript port of the TF graph, called as
    ``model(x, return_features=True)`` on float (N, 3, H, W) images in [0, 255] and returning
    2048-d pool features (it resizes to 299 itself). Nothing is ever downloaded.
    """
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"validate.inception_weights: {p}: file not found. CycleAug never downloads weights; put a local "
            "TorchScript InceptionV3 (e.g. inception-2015-12-05.pt) there, or set validate.inception_weights: null"
        )
    try:
        # TorchScript archives hold code and tensors, not arbitrary pickled objects.
        return torch.jit.load(str(p), map_location="cpu").eval()
    except RuntimeError as err:
        raise ConfigError(f"validate.inception_weights: {p}: not a TorchScript model ({err})") from None


@torch.inference_mode()
def inception_features(model, images: np.ndarray, batch: int = 64, device: torch.device | str = "cpu") -> np.ndarray:
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch])).permute(0, 3, 1, 2).float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out.append(model(x.to(device), return_features=True).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048))


# ----------------------------------------------------------------------------------------------- gate
def sample_failures(m: dict, t: SampleThresholds) -> list[str]:
    """Each per-sample bound the row fails, as '<figure> <value> <op> <bound>'."""
    out = []
    if m["cycle_psnr"] < t.min_cycle_psnr:
        out.append(f"cycle_psnr {m['cycle_psnr']:.2f} < {t.min_cycle_psnr}")
    if m["cycle_l1"] > t.max_cycle_l1:
        out.append(f"cycle_l1 {m['cycle_l1']:.4f} > {t.max_cycle_l1}")
    if m["cycle_ssim"] < t.min_cycle_ssim:
        out.append(f"cycle_ssim {m['cycle_ssim']:.3f} < {t.min_cycle_ssim}")
    if m.get("identity_l1") is not None and m["identity_l1"] > t.max_identity_l1:
        out.append(f"identity_l1 {m['identity_l1']:.4f} > {t.max_identity_l1}")
    if m["realism"] < t.min_realism:
        out.append(f"realism {m['realism']:.3f} < {t.min_realism}")
    if t.require_label_ok and m.get("label_ok") is False:
        out.append("label_ok false (require_label_ok)")
    if t.max_cycle_lsd is not None and m.get("cycle_lsd") is not None and m["cycle_lsd"] > t.max_cycle_lsd:
        out.append(f"cycle_lsd {m['cycle_lsd']:.2f} > {t.max_cycle_lsd}")
    if t.min_cycle_si_sdr is not None and m.get("cycle_si_sdr") is not None \
            and m["cycle_si_sdr"] < t.min_cycle_si_sdr:
        out.append(f"cycle_si_sdr {m['cycle_si_sdr']:.2f} < {t.min_cycle_si_sdr}")
    if t.min_robust_cycle_psnr is not None:
        robust = m.get("cycle_psnr_robust")
        if robust is None:  # a set bound is never passed unmeasured
            out.append(f"cycle_psnr_robust not measured (validate had no model), bound {t.min_robust_cycle_psnr}")
        elif robust < t.min_robust_cycle_psnr:
            out.append(f"cycle_psnr_robust {robust:.2f} < {t.min_robust_cycle_psnr}")
    return out


def _reason_key(reason: str) -> str:
    return reason.split(" ", 1)[0]


def run_failures(direction: str, fig: dict, t: RunThresholds) -> list[str]:
    """Each failed run-level bound as '<direction>.<figure> = <value> <op> <bound> (<key>)'."""
    checks = [
        ("mean_cycle_psnr", t.min_mean_cycle_psnr, "min_mean_cycle_psnr", "min"),
        ("mean_cycle_ssim", t.min_mean_cycle_ssim, "min_mean_cycle_ssim", "min"),
        ("mean_realism", t.min_mean_realism, "min_mean_realism", "min"),
        ("label_accuracy", t.min_label_accuracy, "min_label_accuracy", "min"),
        ("pass_rate", t.min_pass_rate, "min_pass_rate", "min"),
        ("fid_domain_features", t.max_fid_domain, "max_fid_domain", "max"),
        ("kid_domain_features", t.max_kid_domain, "max_kid_domain", "max"),
        ("fid_inception", t.max_fid_inception, "max_fid_inception", "max"),
        ("kid_inception", t.max_kid_inception, "max_kid_inception", "max"),
        ("mean_cycle_lsd", t.max_mean_cycle_lsd, "max_mean_cycle_lsd", "max"),
        ("mean_cycle_si_sdr", t.min_mean_cycle_si_sdr, "min_mean_cycle_si_sdr", "min_or_off"),
        ("mean_cycle_psnr_robust", t.min_mean_robust_cycle_psnr, "min_mean_robust_cycle_psnr", "min_or_off"),
    ]
    out = []
    for figure, bound, key, kind in checks:
        # Lower bounds at their floor and unset upper bounds are off.
        off = bound is None or (kind == "min" and bound <= (-1.0 if figure == "mean_cycle_ssim" else 0.0))
        if off:
            continue
        kind = "min" if kind == "min_or_off" else kind  # SI-SDR may be negative: only null turns these off
        value = fig.get(figure)
        where = f"(validate.run.{direction}.{key})"
        if value is None:
            if figure == "label_accuracy" and fig.get("labelled", 0) == 0:
                out.append(f"{direction}.label_accuracy: no labelled held-out samples, bound {bound} {where}")
            elif figure == "mean_cycle_psnr_robust":
                out.append(f"{direction}.{figure}: not measured (no model or no held-out samples), "
                           f"bound {bound} {where}")
            else:
                out.append(f"{direction}.{figure}: not measured (no held-out samples or no feature extractor), "
                           f"bound {bound} {where}")
            continue
        if kind == "min" and value < bound:
            out.append(f"{direction}.{figure} = {value:.4g} < {bound} {where}")
        elif kind == "max" and value > bound:
            out.append(f"{direction}.{figure} = {value:.4g} > {bound} {where}")
    return out


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _spread(name: str, values: np.ndarray) -> dict:
    """mean_<name> and p10/p50/p90_<name> of the finite values (None when there are none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    out = {f"mean_{name}": _mean(v)}
    for q in PERCENTILES:
        out[f"p{q}_{name}"] = float(np.percentile(v, q)) if len(v) else None
    return out


def _realism_calibration(folder: Path, real_logits: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The judge margins of held-out real samples that realism is ranked against, per domain.

    Fixed when first measured for a judge and kept beside its weights: samples added to the
    held-out split later do not move the realism of rows already scored, so a re-published row
    keeps its bytes. A new judge (the training data changed) is calibrated anew.
    """
    path = folder / "realism_calibration.json"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        return {d: np.asarray(stored[d], dtype=np.float64) for d in ("A", "B")}
    cal = {d: margins(real_logits[d][0], 0 if d == "A" else 1).astype(np.float64) for d in ("A", "B")}
    if all(len(m) for m in cal.values()):  # only a complete calibration is worth keeping
        write_json_atomic(path, {d: [float(x) for x in m] for d, m in cal.items()})
    return cal


@dataclass(frozen=True)
class ValidateResult:
    out_dir: str
    summary: str
    passed: bool
    failures: list[str]
    figures: dict

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def _identity(gen: nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Mean |x - gen(x)| per sample on [0, 1], on the uint8-rounded output like the stored images."""
    out = []
    device = _device_of(gen)
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        y = to_uint8(gen(to_tensor(x).to(device)))
        out.append(np.abs(x.astype(np.float64) - y.astype(np.float64)).mean(axis=(1, 2, 3)) / 255.0)
    return np.concatenate(out) if out else np.zeros(0)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """One (H, W, C) uint8 image (gray or RGB) through an in-memory JPEG at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format="JPEG", quality=quality)
    arr = np.asarray(Image.open(buf), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def perturb(images: np.ndarray, noise_std: float, jpeg_quality: int | None,
            seed: int | Sequence[int]) -> np.ndarray:
    """q(y): additive Gaussian noise of std ``noise_std`` on [0, 1], rounded, then JPEG at ``jpeg_quality``.

    uint8 (N, H, W, C) in and out, gray or RGB. The noise comes from ``np.random.default_rng(seed)``,
    so a seed always gives the same bytes; ``noise_std`` 0 and ``jpeg_quality`` None each skip a stage.
    """
    out = np.array(images, dtype=np.uint8, copy=True)
    if noise_std > 0:
        noise = np.random.default_rng(seed).normal(0.0, noise_std * 255.0, out.shape)
        out = np.clip(np.rint(out + noise), 0, 255).astype(np.uint8)
    if jpeg_quality is not None and len(out):
        out = np.stack([_jpeg(im, jpeg_quality) for im in out])
    return out


def _sample_seed(seed: int, sample_id: str) -> tuple[int, int]:
    # Per sample, so a row's figure does not depend on which rows are validated with it.
    return seed, int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")


@torch.inference_mode()
def robust_cycle_psnr(back: nn.Module, sources: np.ndarray, translations: np.ndarray, sample_ids: Sequence[str],
                      noise_std: float, jpeg_quality: int | None, seed: int, batch: int = 64) -> np.ndarray:
    """PSNR(x, F(q(G(x)))) per sample (dB, capped like :func:`cycle_errors`).

    ``translations`` are the stored G(x) (uint8); each is perturbed by :func:`perturb` with noise
    drawn from ``seed`` and its sample id, brought back by ``back`` (F) and rounded to uint8 like
    the stored reconstructions.
    """
    out = []
    device = _device_of(back)
    for start in range(0, len(sources), batch):
        ids = sample_ids[start:start + batch]
        y = np.stack([perturb(translations[start + k][None], noise_std, jpeg_quality, _sample_seed(seed, sid))[0]
                      for k, sid in enumerate(ids)])
        rec = to_uint8(back(to_tensor(y).to(device)))
        out.append(cycle_errors(sources[start:start + batch], rec)[1])
    return np.concatenate(out) if out else np.zeros(0)


def _pair(result: tuple[float, float, int] | None) -> tuple[float | None, float | None, int | None]:
    return (None, None, None) if result is None else result


def _audio_figures(gen: pa.Table, src: np.ndarray, out: np.ndarray, rec: np.ndarray,
                   audio) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-sample figures of audio rows, and the translations as heard.

    ``cycle_lsd``: log-spectral distance (dB) between the source's and the cycle's pictures;
    ``cycle_si_sdr``: SI-SDR (dB) of the cycle's waveform against the source clip;
    ``inversion_lsd``: log-spectral distance between the translated picture and the spectrogram of
    the translation's waveform, i.e. what the way back to sound (``data.audio.inversion``) loses.
    The second value: uint8 pictures of the translations' waveforms, to score what a listener gets.
    """
    from .audio import Spectrogram, decode_wav, log_spectral_distance, picture_to_uint8, si_sdr, uint8_to_picture

    if not gen.num_rows:
        return {name: np.zeros(0) for name in AUDIO_METRIC_COLUMNS}, out
    clips = {c: np.stack([decode_wav(b)[0] for b in gen.column(c).to_pylist()])
             for c in ("source_audio", "audio", "reconstruction_audio")}
    heard = Spectrogram(audio).picture(clips["audio"])
    figures = {"cycle_lsd": log_spectral_distance(uint8_to_picture(src), uint8_to_picture(rec), audio),
               "cycle_si_sdr": si_sdr(clips["source_audio"], clips["reconstruction_audio"]),
               "inversion_lsd": log_spectral_distance(uint8_to_picture(out), heard, audio)}
    return figures, picture_to_uint8(heard)


def validate(cfg: Config, manifest_a: str | Path, manifest_b: str | Path, generated_dir: str | Path,
             out_dir: str | Path, model_dir: str | Path | None = None) -> ValidateResult:
    """Score every generated row; write ``<direction>.parquet`` and ``summary.json`` to ``out_dir``.

    ``model_dir`` (the model that made the translations) enables the identity-drift and robust-cycle figures.
    """
    v = cfg.validate_
    audio = cfg.data.audio_settings
    inception = load_inception(v.inception_weights)  # a configuration error before any work
    device = resolve_device(v.device, "validate.device")
    judges, judge_key = load_or_train_judges(cfg, manifest_a, manifest_b)
    for net in (judges.domain, *judges.label.values()):
        net.to(device)
    if inception is not None:
        inception = inception.to(device)
    held_out = {d: calibration_half(read_manifest(m, ("test",))) for d, m in (("A", manifest_a), ("B", manifest_b))}
    real = {d: manifest_images(t) if t.num_rows else None for d, t in held_out.items()}
    real_logits = {d: _classify(judges.domain, x) if x is not None else (np.zeros((0, 2)), np.zeros((0, 128)))
                   for d, x in real.items()}
    # Held-out real samples (never seen in the judge's training) are the reference for realism.
    cal_logits = np.concatenate([real_logits["A"][0], real_logits["B"][0]])
    cal_labels = np.concatenate([np.zeros(len(real_logits["A"][0]), np.int64),
                                 np.ones(len(real_logits["B"][0]), np.int64)])
    judge_acc = float((cal_logits.argmax(1) == cal_labels).mean()) if len(cal_labels) else None
    calibration = _realism_calibration(Path(cfg.paths.judges) / judge_key, real_logits)
    gens = None
    if model_dir is not None:
        from .train import load_generators

        gens, _ = load_generators(model_dir, device)
    real_incep = ({d: inception_features(inception, x, device=device) for d, x in real.items() if x is not None}
                  if inception else {})

    figures: dict[str, dict] = {}
    failures: list[str] = []
    with atomic_dir(out_dir) as tmp:
        for direction in DIRECTIONS:
            target = direction[-1]
            t_idx = 0 if target == "A" else 1
            gen = read_generated(generated_dir, direction,
                                 ["sample_id", "split", "label", "source_image", "image", "reconstruction",
                                  *(["source_audio", "audio", "reconstruction_audio"] if audio is not None else [])])
            n = gen.num_rows
            empty = np.zeros((0, *cfg.data.shape, cfg.data.channels), np.uint8)
            src, out, rec = (
                np.stack([decode_png(b) for b in gen.column(col).to_pylist()]) if n else empty
                for col in ("source_image", "image", "reconstruction")
            )
            l1, psnr = cycle_errors(src, rec)
            ssim_v = ssim(src, rec)
            sound, heard = _audio_figures(gen, src, out, rec, audio) if audio is not None else ({}, None)
            back = "G_BA" if direction == "AtoB" else "G_AB"
            ident = _identity(gens[back], src) if gens is not None and n else None
            sids = gen.column("sample_id").to_pylist()
            robust = (robust_cycle_psnr(gens[back], src, out, sids, v.robust_noise_std, v.robust_jpeg_quality,
                                        v.robust_seed) if gens is not None and n else None)
            logits, feats = _classify(judges.domain, out)
            real_t_feats = real_logits[target][1]
            real_margin = calibration[target]
            realism = conformal_realism(margins(logits, t_idx), real_margin)
            src_logits, src_feats = _classify(judges.domain, src)
            labels = gen.column("label").to_pylist()
            pred: list[int | None] = [None] * n
            pred_src: list[int | None] = [None] * n
            pred_heard: list[int | None] = [None] * n
            if target in judges.label and n:
                pred = [int(x) for x in _classify(judges.label[target], out)[0].argmax(1)]
                pred_src = [int(x) for x in _classify(judges.label[target], src)[0].argmax(1)]
                if heard is not None:  # the word as said by the translation's waveform, not its picture
                    pred_heard = [int(x) for x in _classify(judges.label[target], heard)[0].argmax(1)]
            ok = [None if lb is None or p is None else lb == p for lb, p in zip(labels, pred, strict=True)]

            rows = []
            thresholds = v.sample[direction]
            reasons: Counter[str] = Counter()
            splits = gen.column("split").to_pylist()
            for i, sid in enumerate(sids):
                m = {"cycle_l1": float(l1[i]), "cycle_psnr": float(psnr[i]),
                     "cycle_psnr_robust": None if robust is None else float(robust[i]), "cycle_ssim": float(ssim_v[i]),
                     "identity_l1": None if ident is None else float(ident[i]), "realism": float(realism[i]),
                     **{k: float(v[i]) for k, v in sound.items()}}
                why = sample_failures({**m, "label_ok": ok[i]}, thresholds)
                reasons.update(_reason_key(w) for w in why)
                rows.append({"sample_id": sid, "split": splits[i], **m, "pred_label": pred[i], "label_ok": ok[i],
                             "passed": not why, "fail_reason": "; ".join(why) or None})
            table = pa.Table.from_pylist(rows, schema=validated_schema(audio is not None))
            pq.write_table(table, tmp / f"{direction}.parquet")

            test = np.asarray([s == "test" for s in splits], dtype=bool)
            passed = np.asarray([r["passed"] for r in rows], dtype=bool)
            lab = [i for i in range(n) if test[i] and ok[i] is not None]
            fid = frechet_distance(feats[test], real_t_feats)
            kid, kid_std, kid_n = _pair(kernel_inception_distance(feats[test], real_t_feats, v.kid_subset_size,
                                                                  v.kid_subsets, v.classifier_seed))
            kid_src = _pair(kernel_inception_distance(src_feats[test], real_t_feats, v.kid_subset_size,
                                                      v.kid_subsets, v.classifier_seed))[0]
            fig = {
                "generated": n, "passed": int(passed.sum()), "dropped": int(n - passed.sum()),
                "dropped_by": dict(sorted(reasons.items())),
                "held_out": int(test.sum()), "labelled": len(lab),
                "pass_rate": _mean(passed[test].astype(float)),
            }
            per_sample = {"cycle_l1": l1, "cycle_psnr": psnr,
                          "cycle_psnr_robust": robust if robust is not None else np.zeros(0), "cycle_ssim": ssim_v,
                          "identity_l1": ident if ident is not None else np.zeros(0), "realism": realism, **sound}
            for name in (*SUMMARIZED, *sound):
                vals = per_sample[name]
                fig.update(_spread(name, vals[test] if len(vals) == n else vals))
            fig.update({
                "realism_untranslated": _mean(conformal_realism(margins(src_logits[test], t_idx), real_margin)),
                "realism_real_target": _leave_one_out_realism(real_margin),
                "mean_p_target": _mean(softmax(logits[test])[:, t_idx]) if test.any() else None,
                "label_accuracy": float(np.mean([ok[i] for i in lab])) if lab else None,
                "label_accuracy_untranslated": (
                    float(np.mean([pred_src[i] == labels[i] for i in lab])) if lab else None
                ),
                **({"label_accuracy_heard": float(np.mean([pred_heard[i] == labels[i] for i in lab])) if lab
                    else None} if audio is not None else {}),
                "fid_domain_features": fid,
                "fid_domain_untranslated": frechet_distance(src_feats[test], real_t_feats),
                "kid_domain_features": kid, "kid_domain_std": kid_std, "kid_subset_size": kid_n,
                "kid_domain_untranslated": kid_src,
                "real_target_held_out": len(real_t_feats),
            })
            if inception is not None:
                gen_incep = inception_features(inception, out[test], device=device)
                ref = real_incep.get(target, np.zeros((0, gen_incep.shape[1])))
                fig["fid_inception"] = frechet_distance(gen_incep, ref)
                fig["kid_inception"] = _pair(kernel_inception_distance(gen_incep, ref, v.kid_subset_size,
                                                                       v.kid_subsets, v.classifier_seed))[0]
            figures[direction] = fig
            failures += run_failures(direction, fig, v.run[direction])
        judge = {"key": judge_key, "blur_sigma": v.judge_blur_sigma, "held_out_accuracy": judge_acc,
                 "held_out_samples": len(cal_labels)}
        robust_cycle = {"noise_std": v.robust_noise_std, "jpeg_quality": v.robust_jpeg_quality, "seed": v.robust_seed,
                        "measured": gens is not None}
        summary = {"passed": not failures, "failures": failures, "kind": cfg.data.kind, "directions": figures,
                   "judges": judge_key, "robust_cycle": robust_cycle,
                   "domain_judge": judge, "thresholds": {"sample": {d: v.sample[d].model_dump() for d in DIRECTIONS},
                                                         "run": {d: v.run[d].model_dump() for d in DIRECTIONS}}}
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
