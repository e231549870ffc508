"""The bundled default collections, made from data inside installed packages (no downloads).

- Domain A, handwritten: the 1,797 scanned 8x8 digits of scikit-learn's ``load_digits``.
- Domain B, typed: digits 0-9 rendered from the TrueType faces that ship with matplotlib, in
  several sizes with small rotations and offsets.

Both use the same polarity as the scans (bright ink on a dark ground). They are written as
ordinary PNG folders (``train/``, ``test/``) with a ``labels.csv`` beside them, so ingest reads
them exactly as it reads a user's folders. The label is metadata for validation only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .config import DefaultDataConfig
from .images import encode_png
from .storage import atomic_dir, sha256_bytes

MARKER = ".cycleaug-default.json"
# Text faces whose digit glyphs are ordinary digits. Left out: the *Display* and STIX NonUni/Size
# faces (no digit glyphs) and cmex10/cmsy10/cmmi10 (symbols or old-style figures at those codes).
_FACE_PREFIXES = ("DejaVuSans", "DejaVuSerif", "STIXGeneral", "cmr10", "cmb10", "cmss10", "cmtt10", "cmti10")


def typed_fonts() -> list[Path]:
    """The matplotlib TrueType faces used for typed digits, sorted for reproducibility."""
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = sorted(
        p for p in ttf.glob("*.ttf") if p.name.startswith(_FACE_PREFIXES) and "Display" not in p.name
    )
    if not fonts:
        raise RuntimeError(f"no usable TrueType faces found in {ttf}")
    return fonts


def render_digit(digit: int, font: Path, size: int, rng: np.random.Generator) -> np.ndarray:
    """One typed digit as a (size, size) uint8 array, drawn at 4x and downsampled (antialiased)."""
    big = size * 4
    pt = int(big * rng.uniform(0.55, 0.8))
    face = ImageFont.truetype(str(font), pt)
    canvas = Image.new("L", (big * 2, big * 2), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((big, big), str(digit), fill=255, font=face, anchor="mm")
    canvas = canvas.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BICUBIC)
    box = canvas.getbbox()
    if box is None:
        raise RuntimeError(f"{font.name} rendered digit {digit} without ink")
    glyph = canvas.crop(box)
    # Scale the glyph to fill most of the box, as the scanned digits were normalized to theirs.
    gw, gh = glyph.size
    fit = big * rng.uniform(0.75, 0.95) / max(gw, gh)
    glyph = glyph.resize((max(1, round(gw * fit)), max(1, round(gh * fit))), Image.Resampling.LANCZOS)
    gw, gh = glyph.size
    out = Image.new("L", (big, big), 0)
    dx, dy = (int(v) for v in rng.integers(-big // 16, big // 16 + 1, size=2))
    left = min(max((big - gw) // 2 + dx, 0), big - gw)
    top = min(max((big - gh) // 2 + dy, 0), big - gh)
    out.paste(glyph, (left, top))
    return np.asarray(out.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _split(n: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of held-out items: a seeded shuffle, ``round(n * test_fraction)`` of them."""
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[: max(1, round(n * test_fraction))]] = True
    return test


def _write_collection(root: Path, images: list[np.ndarray], labels: list[int], test: np.ndarray,
                      prefix: str, marker: dict) -> None:
    with atomic_dir(root) as tmp:
        rows = []
        for i, (arr, label) in enumerate(zip(images, labels, strict=True)):
            split = "test" if test[i] else "train"
            rel = f"{split}/{prefix}{i:05d}.png"
            (tmp / split).mkdir(exist_ok=True)
            (tmp / rel).write_bytes(encode_png(arr[:, :, None]))
            rows.append((rel, label))
        with open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows(rows)
        (tmp / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")


def _is_current(root: Path, marker: dict) -> bool:
    """True when ``root`` holds these defaults already; an error if it holds someone else's files."""
    path = root / MARKER
    if root.exists() and any(root.iterdir()) and not path.exists():
        raise FileExistsError(
            f"{root} holds files that are not CycleAug's default data; "
            "leaving them alone (point data.domain_a/domain_b elsewhere to make the defaults)"
        )
    return path.exists() and json.loads(path.read_text(encoding="utf-8")) == marker


def make_default_data(root_a: str | Path, root_b: str | Path, cfg: DefaultDataConfig) -> dict:
    """Materialize both default collections (skipped when already made with the same settings)."""
    from sklearn.datasets import load_digits

    root_a, root_b = Path(root_a), Path(root_b)
    settings = cfg.model_dump(mode="json")
    made = {}

    marker_a = {"collection": "sklearn-digits", **settings}
    if not _is_current(root_a, marker_a):
        digits = load_digits()
        scans = [np.round(img * (255.0 / 16.0)).astype(np.uint8) for img in digits.images]
        test = _split(len(scans), cfg.test_fraction, np.random.default_rng(cfg.seed))
        _write_collection(root_a, scans, [int(t) for t in digits.target], test, "hand_", marker_a)
        made["A"] = len(scans)

    fonts = typed_fonts()
    marker_b = {
        "collection": "matplotlib-typed-digits",
        "fonts": [f.name for f in fonts],
        "fonts_sha256": sha256_bytes(b"".join(f.read_bytes() for f in fonts)),
        **settings,
    }
    if not _is_current(root_b, marker_b):
        rng = np.random.default_rng(cfg.seed + 1)
        images, labels = [], []
        for i in range(cfg.typed_per_digit * 10):
            digit = i % 10
            images.append(render_digit(digit, fonts[(i // 10) % len(fonts)], cfg.typed_size, rng))
            labels.append(digit)
        test = _split(len(images), cfg.test_fraction, rng)
        _write_collection(root_b, images, labels, test, "typed_", marker_b)
        made["B"] = len(images)
    return made
