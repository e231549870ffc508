"""Does a modality run's output help? Train on it, test on real: the utility figures of a passing run.

Where the generated items carry labels (the word a clip says, the number of objects a scene holds),
a small classifier (:func:`~cyclegan_core.classifiers.train_classifier`, the same ``SmallCNN``) is
trained in four arms and tested on the held-out real items (no arm and no judge learns from them):

- ``real_few``: ``per_class`` real items per class, drawn from the ``training`` role (the third no
  gate judge learned from);
- ``real_few+generated``: those and every published generated item;
- ``generated``: the published generated items alone (can one learn the real task from them?);
- ``real_all``: every real item of the ``training`` role (the ceiling at this size).

Each arm is trained with ``seeds`` seeds (the few-shot draw, initialisation and batch order) and its
held-out accuracy is reported as mean and spread. These are measurements, not bounds. Memory: the
published items' pictures (a 64 x 64 spectrogram or scene, 4 or 12 KB each) are held at once; for a
very large run switch the figures off (``modality.utility_per_class: null``).
"""

from __future__ import annotations

import numpy as np

from ..classifiers import train_classifier
from ..judges import classify

ARMS = ("real_few", "real_few+generated", "generated", "real_all")


def accuracy(net, pictures: np.ndarray, labels: np.ndarray) -> float:
    logits, _ = classify(net, pictures)
    return float((logits.argmax(axis=1) == labels).mean())


def measure(real: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray],
            generated: tuple[np.ndarray, np.ndarray], classes: int, per_class: int = 3, seeds: int = 2,
            epochs: int = 30) -> dict:
    """Held-out accuracy per arm (see the module docstring); ``real``/``held``/``generated`` are
    (uint8 pictures (N, H, W, C), int labels)."""
    out: dict = {"per_class": per_class, "seeds": seeds, "epochs": epochs, "test_items": len(held[1]),
                 "generated_items": len(generated[1]), "chance": 1.0 / classes}
    scores: dict[str, list[float]] = {a: [] for a in ARMS}
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 7])
        few = np.concatenate([rng.permutation(np.flatnonzero(real[1] == c))[:per_class] for c in range(classes)])
        arms = {"real_few": (real[0][few], real[1][few]),
                "real_few+generated": (np.concatenate([real[0][few], generated[0]]),
                                       np.concatenate([real[1][few], generated[1]])),
                "generated": generated, "real_all": real}
        for arm, (x, y) in arms.items():
            if len(y) == 0 or len(np.unique(y)) < 2:
                continue
            scores[arm].append(accuracy(train_classifier(x, y, classes, epochs, seed), *held))
    for arm, values in scores.items():
        out[arm] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "runs": values} if values else None
    return out
