"""Shared fixtures: tiny real collections (scanned and typed digits) and a tiny configuration."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import settings

from cyclegan_core.config import Config, config_from_dict
from cyclegan_core.default_data import render_digit, typed_fonts
from cyclegan_core.images import encode_png

# CI runs the same property-test examples every time (a failure there reproduces); local runs
# explore new ones, and a falsifying example found there goes into an @example.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def write_collection(root: Path, images: list[np.ndarray], labels: list[int], n_test: int, prefix: str) -> Path:
    rows = []
    for i, (arr, label) in enumerate(zip(images, labels, strict=True)):
        split = "test" if i < n_test else "train"
        rel = f"{split}/{prefix}{i:03d}.png"
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(encode_png(arr[:, :, None] if arr.ndim == 2 else arr))
        rows.append((rel, label))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return root


def tiny_collections(root: Path, n: int = 24, n_test: int = 6) -> tuple[Path, Path]:
    """``n`` real scanned digits (A) and ``n`` rendered typed digits (B), labelled, with a test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = [np.round(img * 255 / 16).astype(np.uint8) for img in digits.images[:n]]
    a = write_collection(root / "A", scans, [int(t) for t in digits.target[:n]], n_test, "hand_")
    rng = np.random.default_rng(0)
    fonts = typed_fonts()
    typed = [render_digit(i % 10, fonts[i % len(fonts)], 16, rng) for i in range(n)]
    b = write_collection(root / "B", typed, [i % 10 for i in range(n)], n_test, "typed_")
    return a, b


def tiny_settings(root: Path, domain_a: Path, domain_b: Path, **sections) -> dict:
    """A configuration that trains in about a second: 16x16, ngf 4, one residual block."""
    raw = {
        "data": {"domain_a": str(domain_a), "domain_b": str(domain_b), "image_size": 16},
        "model": {"ngf": 4, "ndf": 4, "n_blocks": 1, "n_layers_d": 2},
        "train": {"steps": 6, "batch_size": 2, "pool_size": 4},
        "runtime": {"checkpoint_every": 3, "log_every": 1},
        "generate": {"batch_size": 8, "shards": 2},
        "validate": {"classifier_epochs": 1},
        "utility": {"steps": 3, "seeds": 2, "batch_size": 8, "labels_per_class": 1},
        "paths": {k: str(root / k) for k in ("ingest", "models", "judges", "generated", "validated", "published",
                                             "reports")},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.fixture
def collections(tmp_path: Path) -> tuple[Path, Path]:
    return tiny_collections(tmp_path / "raw")


@pytest.fixture
def tiny_cfg(tmp_path: Path, collections: tuple[Path, Path]) -> Config:
    return config_from_dict(tiny_settings(tmp_path / "work", *collections))


@pytest.fixture
def params_file(tmp_path: Path, collections: tuple[Path, Path]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_settings(tmp_path / "work", *collections)))
    return path


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """Prefect's test server for the flows of one test module, with its own PREFECT_HOME."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

