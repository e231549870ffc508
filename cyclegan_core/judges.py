"""The models validation judges with, trained once per training data and cached: a domain classifier
(is this A or B?) and one label classifier per labelled domain, plus the optional InceptionV3.

The judges learn from the real training samples (the label judges from the "judge" half, see
:mod:`cyclegan_core.classifiers`), never from translations, and are stored in
``paths.judges/<key>``, the key being the training samples' digests and the ``judges`` entry of
:mod:`cyclegan_core.inputs` (their settings and this module's and the classifiers' code): editing a
gate message or a report row does not retrain them. Realism is calibrated against the
"calibration" half of the held-out samples, once per judge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import inputs
from .classifiers import SmallCNN, half_mask, train_classifier
from .config import Config, ConfigError
from .images import to_tensor
from .ingest import iter_manifest_images as ingest_batches
from .ingest import manifest_digest
from .storage import atomic_path, write_json_atomic
from .streamstats import sample_keys, smallest_keys


@dataclass
class Judges:
    """The classifiers validation uses: domain (0 = A, 1 = B) and one digit/label model per domain."""

    domain: SmallCNN
    label: dict[str, SmallCNN]


# Manifest columns small enough to read whole (no image bytes): tens of bytes a row.
INDEX_COLUMNS = ["sample_id", "split", "label"]
DECODE_BATCH = 256  # images decoded at once when streaming a manifest


def manifest_index(path: str | Path, splits: tuple[str, ...] | None = None) -> pa.Table:
    """The manifest's small columns (sample id, split, label) and its metadata, without the image bytes."""
    table = pq.read_table(path, columns=INDEX_COLUMNS)
    if splits is not None:
        table = table.filter(pc.is_in(table.column("split"), pa.array(list(splits), pa.string())))
    return table


def iter_manifest_images(path: str | Path, keep: set[str],
                         batch: int = DECODE_BATCH) -> Iterator[tuple[list[str], list, np.ndarray]]:
    """(sample ids, labels, decoded uint8 images) of the manifest rows whose id is in ``keep``, in
    manifest order, at most ``batch`` images at a time (:func:`cyclegan_core.ingest.iter_manifest_images`)."""
    for table, images in ingest_batches(path, batch_rows=batch, keep=keep):
        yield table.column("sample_id").to_pylist(), table.column("label").to_pylist(), images


def judge_key(cfg: Config, man_a: pa.Table, man_b: pa.Table) -> str:
    """The folder name of the judges for these training samples: their digests, settings and code."""
    return inputs.key_of(cfg, "judges", A=manifest_digest(man_a, "train"), B=manifest_digest(man_b, "train"))[:16]


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


def judge_sample(sample_ids: list[str], max_samples: int, seed: int) -> set[str]:
    """The training samples a judge learns from: all of them, or the ``max_samples`` with the smallest
    seeded hash of their id (a sample stays in as the collection grows unless smaller keys push it out)."""
    if len(sample_ids) <= max_samples:
        return set(sample_ids)
    keep = smallest_keys(sample_keys(seed, sample_ids), max_samples)
    return {s for s, k in zip(sample_ids, keep, strict=True) if k}


def _decode(path: str | Path, keep: set[str], shape: tuple[int, ...],
            batch: int = DECODE_BATCH) -> tuple[list[str], list, np.ndarray]:
    """Ids, labels and images (manifest order) of the rows in ``keep``, decoded a batch at a time into one array."""
    images = np.empty((len(keep), *shape), np.uint8)
    ids: list[str] = []
    labels: list = []
    for sids, lbls, decoded in iter_manifest_images(path, keep, batch):
        images[len(ids):len(ids) + len(decoded)] = decoded
        ids += sids
        labels += lbls
    return ids, labels, images[:len(ids)]


def load_or_train_judges(cfg: Config, manifest_a: str | Path, manifest_b: str | Path) -> tuple[Judges, str]:
    """Judges for these training samples, trained once and cached in ``paths.judges``.

    They learn from at most ``validate.judge_max_samples`` training samples per domain, read and
    decoded a batch at a time; only the manifests' small columns are read to find the key.
    """
    paths = {"A": manifest_a, "B": manifest_b}
    man = {d: manifest_index(p, ("train",)) for d, p in paths.items()}
    key = judge_key(cfg, man["A"], man["B"])
    folder = Path(cfg.paths.judges) / key
    c = cfg.data.channels
    blur = cfg.validate_.judge_blur_sigma
    weights = folder / "judges.safetensors"
    if weights.exists():
        return load_judges(folder, c), key

    epochs, seed = cfg.validate_.classifier_epochs, cfg.validate_.classifier_seed
    shape = (*cfg.data.shape, c)
    imgs, lbls = {}, {}
    for d, t in man.items():
        keep = judge_sample(t.column("sample_id").to_pylist(), cfg.validate_.judge_max_samples, seed)
        ids, labels, imgs[d] = _decode(paths[d], keep, shape, cfg.generate.batch_size)
        lbls[d] = {"ids": ids, "labels": labels}
    labelled = {d: v for d, v in lbls.items() if v["labels"] and all(x is not None for x in v["labels"])}
    n_classes = {d: int(max(v["labels"])) + 1 for d, v in labelled.items()}
    domain = train_classifier(
        np.concatenate([imgs["A"], imgs["B"]]),
        np.concatenate([np.zeros(len(imgs["A"]), np.int64), np.ones(len(imgs["B"]), np.int64)]),
        2, epochs, seed, blur,
    )
    # Label judges learn from the "judge" half of the training samples only: the other half trains the
    # semantic classifier of label-aware training (train.semantic), so the two are never the same model
    # on the same samples. Twice the epochs on half the samples keeps the number of steps.
    labels = {}
    for d, v in labelled.items():
        keep = half_mask(v["ids"], "train", "judge")
        labels[d] = train_classifier(imgs[d][keep], np.asarray(v["labels"])[keep], n_classes[d], 2 * epochs, seed)
    tensors = {f"domain.{k}": v for k, v in domain.state_dict().items()}
    for d, net in labels.items():
        tensors.update({f"label_{d}.{k}": v for k, v in net.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "judges.json",
                      {"label_classes": {d: n_classes[d] for d in labels}, "blur_sigma": blur})
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
    return Judges(domain, labels), key


def load_judges(folder: Path, channels: int) -> Judges:
    """The judges stored in ``folder`` by :func:`load_or_train_judges`."""
    info = json.loads((folder / "judges.json").read_text(encoding="utf-8"))
    tensors = load_file(str(folder / "judges.safetensors"))
    domain = SmallCNN(channels, 2, info.get("blur_sigma", 0.0))
    domain.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("domain.")})
    labels = {}
    for d, classes in info["label_classes"].items():
        net = SmallCNN(channels, classes)
        net.load_state_dict({k[len(d) + 7:]: v for k, v in tensors.items() if k.startswith(f"label_{d}.")})
        labels[d] = net.eval()
    return Judges(domain.eval(), labels)


def device_of(net: nn.Module) -> torch.device:
    p = next(iter(net.parameters()), None)
    return torch.device("cpu") if p is None else p.device


@torch.inference_mode()
def classify(net: SmallCNN, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and penultimate features, in batches."""
    logits, feats = [], []
    device = device_of(net)
    for start in range(0, len(images), 256):
        f = net.features(to_tensor(images[start:start + 256]).to(device))
        logits.append(net.head(f).double().cpu().numpy())
        feats.append(f.double().cpu().numpy())
    if not logits:
        return np.zeros((0, net.head.out_features)), np.zeros((0, net.head.in_features))
    return np.concatenate(logits), np.concatenate(feats)


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


def realism_calibration(folder: Path, real_margins: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The judge margins of held-out real samples that realism is ranked against, per domain.

    Fixed when first measured for a judge and kept beside its weights: samples added to the
    held-out split later do not move the realism of rows already scored, so a re-published row
    keeps its bytes. A new judge (the training data changed) is calibrated anew. ``real_margins``:
    the margins (own domain's logit minus the other's) of the current held-out calibration samples.
    """
    path = folder / "realism_calibration.json"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        return {d: np.asarray(stored[d], dtype=np.float64) for d in ("A", "B")}
    cal = {d: np.asarray(real_margins[d], dtype=np.float64) for d in ("A", "B")}
    if all(len(m) for m in cal.values()):  # only a complete calibration is worth keeping
        write_json_atomic(path, {d: [float(x) for x in m] for d, m in cal.items()})
    return cal
