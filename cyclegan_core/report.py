"""Pictures and text for people: sample grids, loss curves, the dataset card."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .generate import read_generated
from .images import decode_png
from .storage import atomic_path
from .validate import read_validated


def sample_grid(generated_dir: str | Path, validated_dir: str | Path, direction: str, out_png: str | Path,
                rows: int = 8) -> Path | None:
    """input | translation | reconstruction for the best and worst held-out rows by cycle L1."""
    gen = read_generated(generated_dir, direction, ["sample_id", "split", "label", "source_image", "image",
                                                    "reconstruction"])
    val = read_validated(validated_dir, direction).to_pylist()
    if not val:
        return None
    by_id = {r["sample_id"]: r for r in gen.to_pylist()}
    pool = [v for v in val if v["split"] == "test"] or val
    pool.sort(key=lambda v: v["cycle_l1"])
    k = min(rows, (len(pool) + 1) // 2)
    panels = [("best", pool[:k]), ("worst", pool[::-1][:k])]
    src, dst = direction[0], direction[-1]
    fig, axes = plt.subplots(k, 6, figsize=(7.2, 1.25 * k + 0.6), squeeze=False)
    for col0, (title, items) in zip((0, 3), panels, strict=True):
        for r in range(k):
            for c in range(3):
                axes[r][col0 + c].axis("off")
            if r >= len(items):
                continue
            v = items[r]
            g = by_id[v["sample_id"]]
            for c, key in enumerate(("source_image", "image", "reconstruction")):
                img = decode_png(g[key])
                ax = axes[r][col0 + c]
                ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255,
                          interpolation="nearest")
            label = f"{v['cycle_psnr']:.1f} dB"
            if v["pred_label"] is not None:
                label += f", label {g['label']}->{v['pred_label']}" + ("" if v["label_ok"] else " (x)")
            axes[r][col0 + 1].set_title(label, fontsize=6, pad=2)
        heads = (f"{title}: {src}", f"{src}->{dst}", f"{dst}->{src}")
        for c, head in enumerate(heads):
            axes[0][col0 + c].text(0.5, 1.35, head, transform=axes[0][col0 + c].transAxes, ha="center",
                                   fontsize=7, weight="bold")
    fig.suptitle(f"{direction}: input | translation | reconstruction (held-out, by cycle L1)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, out_png)


def loss_curves(losses_tsv: str | Path, out_png: str | Path) -> Path | None:
    """Generator, discriminator and cycle losses against the step."""
    with open(losses_tsv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return None
    step = np.array([int(r["step"]) for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    groups = (("adversarial", ("G_AB", "G_BA", "D_A", "D_B")), ("cycle", ("cycle_A", "cycle_B")),
              ("identity", ("idt_A", "idt_B")))
    if "T_AB" in rows[0]:  # the single-translator variant logs its own losses
        groups = (("adversarial (encodings)", ("T_AB", "T_BA", "D_A", "D_B")),
                  ("autoencoder", ("recon_A", "recon_B")), ("deviation", ("dev_A", "dev_B")))
    for ax, (title, names) in zip(axes, groups, strict=True):
        for n in names:
            ax.plot(step, [float(r[n]) for r in rows], label=n, linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, out_png)


def _save(fig, out_png: str | Path) -> Path:
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def dataset_card(*, rows: dict, dropped: dict, figures: dict, provenance: dict, source_a: str, source_b: str,
                 size: int, mode: str, shards: int) -> str:
    """A README with YAML front matter describing the features, splits, counts, model and figures."""
    total = sum(rows.values())
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: AtoB",
        "    path: data/AtoB-*.parquet",
        "  - split: BtoA",
        "    path: data/BtoA-*.parquet",
        "dataset_info:",
        "  features:",
        "  - name: image",
        "    dtype: image",
        "  - name: source_image",
        "    dtype: image",
        "  - name: reconstruction",
        "    dtype: image",
        "  - name: label",
        "    dtype: int64",
        "  splits:",
        *(f"  - name: {d}\n    num_examples: {n}" for d, n in rows.items()),
        "tags:",
        "- cycleaug",
        "- cyclegan",
        "- augmentation",
        "---",
        "",
        "# CycleAug augmented dataset",
        "",
        f"Cycle-consistent translations between collection A (`{source_a}`) and collection B "
        f"(`{source_b}`), {size}x{size} `{mode}` images, {total} rows in {shards} Parquet shards. "
        "Only translations that passed the per-sample gate are included; the run passed every run-level "
        "threshold.",
        "",
        "Each row holds the translation (`image`), its source (`source_image`) and the cycle reconstruction "
        "(`reconstruction`) as PNG bytes, the source's label and split, the label a classifier of the target "
        "domain predicts for the translation, per-sample metrics and provenance.",
        "",
        "| direction | published | dropped | mean cycle PSNR (dB) | mean realism | label accuracy "
        "| label accuracy untranslated | FID (domain features) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d, n in rows.items():
        f = figures.get(d, {})
        lines.append(
            f"| {d} | {n} | {dropped.get(d, 0)} | {_fmt(f.get('mean_cycle_psnr'))} | {_fmt(f.get('mean_realism'))} "
            f"| {_fmt(f.get('label_accuracy'))} | {_fmt(f.get('label_accuracy_untranslated'))} "
            f"| {_fmt(f.get('fid_domain_features'))} |"
        )
    lines += ["", "Figures are measured on held-out samples.", "", "## Provenance", ""]
    lines += [f"- {k}: `{v}`" for k, v in provenance.items()]
    lines += [
        "", "## Reading it", "",
        "```python",
        "import pandas as pd",
        "df = pd.read_parquet(\"data/augmented/data\")",
        "import datasets",
        "ds = datasets.load_dataset(\"parquet\", data_dir=\"data/augmented/data\")",
        "```",
        "",
    ]
    return "\n".join(lines)
