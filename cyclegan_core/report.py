"""Pictures and text for people: sample grids, loss curves (per step and per epoch), the Markdown
validation report and the dataset card."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .figures import BY_NAME
from .images import decode_png
from .labelnames import name_of
from .storage import atomic_path, parquet_batches
from .validate import read_validated, validated_files

GRID_COLUMNS = ["sample_id", "split", "cycle_l1", "cycle_psnr", "cycle_ssim", "pred_label", "label_ok"]


def generated_rows(generated_dir: str | Path, direction: str, ids: set[str], columns: list[str]) -> list[dict]:
    """The generated rows of ``direction`` whose sample id is in ``ids``, in file order, with ``columns``:
    the parts are read in record batches and only those rows are kept, so a picture of a few rows reads a
    few rows' images whatever the collection's size."""
    out: list[dict] = []
    if not ids:
        return out
    wanted = pa.array(sorted(ids), pa.string())
    for f in sorted((Path(generated_dir) / direction).glob("part-*.parquet")):
        for batch in parquet_batches(f, ["sample_id", *columns], 256):
            mask = pc.is_in(batch.column("sample_id"), value_set=wanted)
            if pc.any(mask).as_py():
                out += batch.filter(mask).to_pylist()
    return out


def sample_grid(generated_dir: str | Path, validated_dir: str | Path, direction: str, out_png: str | Path,
                rows: int = 8, spectrogram: bool = False, label_names: list[str] | None = None) -> Path | None:
    """input | translation | reconstruction for the best and worst held-out rows by cycle L1.

    ``label_names``: class names by id (:mod:`cyclegan_core.labelnames`), shown instead of the ids.

    ``spectrogram``: the pictures are spectrograms (low frequencies drawn at the bottom, in colour).
    The rows are chosen on the validated output's scalar columns; only their images are read.
    """
    val = read_validated(validated_dir, direction, GRID_COLUMNS).to_pylist()  # only the columns that choose
    if not val:
        return None
    pool = [v for v in val if v["split"] == "test"] or val
    pool.sort(key=lambda v: v["cycle_l1"])
    k = min(rows, (len(pool) + 1) // 2)
    panels = [("best", pool[:k]), ("worst", pool[::-1][:k])]
    chosen = {v["sample_id"] for _, items in panels for v in items}
    by_id = {r["sample_id"]: r for r in generated_rows(generated_dir, direction, chosen,
                                                       ["label", "source_image", "image", "reconstruction"])}
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
                ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="viridis" if spectrogram else "gray",
                          vmin=0, vmax=255, interpolation="nearest", origin="lower" if spectrogram else "upper",
                          aspect="auto" if spectrogram else "equal")
            label = f"{v['cycle_psnr']:.1f} dB, SSIM {v['cycle_ssim']:.2f}"
            if v["pred_label"] is not None:
                label += (f", label {name_of(g['label'], label_names)}->{name_of(v['pred_label'], label_names)}"
                          + ("" if v["label_ok"] else " (x)"))
            axes[r][col0 + 1].set_title(label, fontsize=6, pad=2)
        heads = (f"{title}: input {src}", f"translation {src}->{dst}", f"reconstruction {dst}->{src}")
        for c, head in enumerate(heads):
            axes[0][col0 + c].text(0.5, 1.35, head, transform=axes[0][col0 + c].transAxes, ha="center",
                                   fontsize=6, weight="bold")
    labelled = any(v["pred_label"] is not None for _, items in panels for v in items)
    fig.suptitle(f"{direction}: input | translation | reconstruction; the best and worst held-out rows by cycle L1\n"
                 "captions: cycle PSNR and SSIM (input against reconstruction)"
                 + ("\nlabel: the source's -> the one a judge reads in the translation, (x) where they differ"
                    if labelled else ""), fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.93 if labelled else 0.95))
    return _save(fig, out_png)


def loss_curves(losses_tsv: str | Path, out_png: str | Path) -> Path | None:
    """Generator, discriminator and cycle losses against the step."""
    with open(losses_tsv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return None
    step = np.array([int(r["step"]) for r in rows])
    groups = [("adversarial", ("G_AB", "G_BA", "D_A", "D_B")), ("cycle", ("cycle_A", "cycle_B")),
              ("identity", ("idt_A", "idt_B"))]
    if "T_AB" in rows[0]:  # the single-translator variant logs its own losses
        groups = [("adversarial (encodings)", ("T_AB", "T_BA", "D_A", "D_B")),
                  ("autoencoder", ("recon_A", "recon_B")), ("deviation", ("dev_A", "dev_B"))]
    elif "NCE_AB" in rows[0]:  # CUT / FastCUT: two one-sided models, contrastive losses instead of a cycle
        groups = [("adversarial", ("G_AB", "G_BA", "D_A", "D_B")), ("PatchNCE", ("NCE_AB", "NCE_BA")),
                  ("PatchNCE on the target (CUT)", ("NCE_Y_AB", "NCE_Y_BA"))]
    if "T_AB" not in rows[0] and any(float(r.get("sem_AB") or 0) or float(r.get("sem_BA") or 0) for r in rows):
        groups.append(("semantic (label-aware)", ("sem_AB", "sem_BA")))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 3))
    for ax, (title, names) in zip(axes, groups, strict=True):
        for n in names:
            ax.plot(step, [float(r[n]) for r in rows], label=n, linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel("loss (weighted, as optimized)", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, out_png)


def epoch_curves(losses_tsv: str | Path, out_tsv: str | Path, samples_per_epoch: int, batch_size: int) -> Path | None:
    """Per-epoch means of the per-step losses the trainer logs, as a TSV for DVC plots.

    An epoch is one pass over ``samples_per_epoch`` samples (the larger training collection) at
    ``batch_size``: ``ceil(samples_per_epoch / batch_size)`` steps. Each row averages the logged
    steps of its epoch; a last, partial epoch is kept and its ``fraction`` says how much of it ran.
    """
    with open(losses_tsv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return None
    per_epoch = max(1, math.ceil(samples_per_epoch / batch_size))
    names = [k for k in rows[0] if k not in ("step", "lr")]
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault((int(r["step"]) - 1) // per_epoch + 1, []).append(r)
    out = Path(out_tsv)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["epoch", "step", "fraction", "lr", *names])
        for epoch, items in sorted(groups.items()):
            last = int(items[-1]["step"])
            frac = min(1.0, (last - (epoch - 1) * per_epoch) / per_epoch)
            means = [float(np.mean([float(r[n]) for r in items])) for n in names]
            w.writerow([epoch, last, f"{frac:.4g}", items[-1]["lr"], *(f"{m:.6f}" for m in means)])
    return out


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


def _figure_row(name: str) -> tuple[str, str | tuple[str, str], str]:
    f = BY_NAME[name]
    if not f.per_sample:
        return f.title, f.name, f.fmt
    return f"{f.title}, mean (p{f.tail})", (f"mean_{f.name}", f"p{f.tail}_{f.name}"), f.fmt


# (label, key, format) rows of the report's figure table; a key missing from the figures is skipped.
# Declared figures (cyclegan_core.figures) take their title, format and tail from there.
_REPORT_ROWS = (
    ("translations (all splits)", "generated", "d"),
    ("passed per-sample bounds", "passed", "d"),
    ("dropped", "dropped", "d"),
    ("held-out translations", "held_out", "d"),
    *(_figure_row(n) for n in ("pass_rate", "cycle_l1", "cycle_psnr", "cycle_psnr_robust", "cycle_ssim",
                               "identity_l1", "realism")),
    ("realism: untranslated sources", "realism_untranslated", ".3f"),
    ("realism: held-out real targets", "realism_real_target", ".3f"),
    ("judge P(target): translations", "mean_p_target", ".3f"),
    _figure_row("label_accuracy"),
    ("label accuracy: untranslated", "label_accuracy_untranslated", ".3f"),
    ("label accuracy: translations as heard (their waveforms)", "label_accuracy_heard", ".3f"),
    *(_figure_row(n) for n in ("cycle_lsd", "cycle_si_sdr", "inversion_lsd", "fid_domain_features")),
    ("FID, domain features: untranslated", "fid_domain_untranslated", ".3f"),
    _figure_row("kid_domain_features"),
    ("KID, domain features: untranslated", "kid_domain_untranslated", ".4f"),
    ("KID subset size", "kid_subset_size", "d"),
    *(_figure_row(n) for n in ("fid_inception", "kid_inception")),
)


def _cell(fig: dict, key, spec: str) -> str | None:
    keys = key if isinstance(key, tuple) else (key,)
    if keys[0] not in fig:
        return None
    vals = [fig.get(k) for k in keys]
    text = ["n/a" if v is None else format(v, spec) for v in vals]
    return text[0] + (f" ({text[1]})" if len(text) > 1 else "")


def markdown_report(summary: dict, pictures: tuple[str, ...] = ("grid_AtoB.png", "grid_BtoA.png")) -> str:
    """The validation report a person reads (``reports/report.md``, also posted as a Prefect artifact).

    It states the gate's outcome first, each failed threshold with its value and bound, then the
    figures per direction on held-out samples, what the per-sample bounds dropped, and the bounds.
    """
    dirs = summary["directions"]
    names = list(dirs)
    lines = ["# CycleAug validation report", ""]
    if summary["passed"]:
        lines += ["**Gate: passed.** Every run-level threshold holds; passing rows are published.", ""]
    else:
        lines += ["**Gate: FAILED.** Nothing is published and the previous version stays as it was. Failed:", ""]
        lines += [f"- `{f}`" for f in summary["failures"]] + [""]
    if summary.get("not_applied"):
        lines += ["Bounds set but not applied to this run:", ""]
        lines += [f"- `{f}`" for f in summary["not_applied"]] + [""]
    lines += ["## Figures per direction (held-out samples)", "", "| figure | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for label, key, spec in _REPORT_ROWS:
        cells = [_cell(dirs[d], key, spec) for d in names]
        if all(c is None for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(c or "n/a" for c in cells) + " |")
    lines.append("")
    for d in names:
        by = dirs[d].get("dropped_by") or {}
        if by:
            lines.append(f"- {d}: rows dropped by bound (a row may fail several): "
                         + ", ".join(f"{k} {v}" for k, v in by.items()))
    robust = summary.get("robust_cycle")
    if robust:
        jpeg = "no JPEG" if robust["jpeg_quality"] is None else f"JPEG quality {robust['jpeg_quality']}"
        lines.append(f"- The robust cycle brings G(x) back through Gaussian noise of std {robust['noise_std']:.4g} "
                     f"(on [0, 1]) then {jpeg}, seed {robust['seed']}: a generator hiding x in a faint signal of "
                     "G(x) reconstructs only without it" + ("." if robust.get("measured", True) else
                                                            "; not measured (validate had no model)."))
    judge = summary.get("domain_judge")
    if judge:
        acc = judge.get("held_out_accuracy")
        lines += [
            "", "## How realism is measured", "",
            "Realism ranks each translation's domain-judge margin (target logit minus source logit) among the "
            "margins of held-out real target samples: (real targets scoring lower + 1/2) / (n + 1), a mid-rank "
            "conformal p-value of 'is a real target sample'. Real targets average 0.5; a translation less "
            "target-like than every real target gets 0.5 / (n + 1). The judge's own softmax P(target) is saturated "
            "on clearly different domains (row 'judge P(target)'), which is why it is not the realism figure. The "
            "judge sees "
            f"every image through a Gaussian blur of sigma {judge['blur_sigma']} px so that sharpness alone does "
            f"not decide; its accuracy on {judge['held_out_samples']} held-out real samples: "
            f"{'n/a' if acc is None else format(acc, '.3f')}. FID and KID use the same judge's 128-d penultimate "
            "features: compare them between rows of this table (translations against untranslated), not with "
            "Inception FID figures elsewhere.",
        ]
    th = summary.get("thresholds")
    if th:
        lines += ["", "## Bounds (params.yaml, `validate`)", ""]
        for level in ("sample", "run"):
            for d in names:
                bounds = ", ".join(f"{k} {v}" for k, v in th[level][d].items())
                lines.append(f"- {level} {d}: {bounds}")
    lines += ["", "## Pictures", ""]
    if summary.get("kind") == "audio":
        lines += ["Spectrograms (low frequencies at the bottom). Listen to the best and worst held-out clips, "
                  "source | translation | cycle: [listen/index.html](listen/index.html)", ""]
    lines += [f"![{p}]({p})" for p in pictures]
    lines.append("")
    return "\n".join(lines)


def listening_rows(generated_dir: str | Path, validated_dir: str | Path, direction: str, rows: int = 6,
                   label_names: list[str] | None = None) -> list[dict]:
    """The best and worst held-out audio rows by cycle L1, as :func:`cyclegan_core.audio.listening_page` rows
    (labels as class names where ``label_names`` gives them)."""
    from .audio import uint8_to_picture

    files = validated_files(validated_dir, direction)
    names = set(pq.read_schema(files[0]).names) if files else set()
    val = read_validated(validated_dir, direction, [c for c in ("sample_id", "split", "cycle_l1", "pred_label",
                                                              "cycle_si_sdr", "cycle_lsd", "inversion_lsd", "realism")
                                                  if c in names]).to_pylist()
    if not val:
        return []
    pool = sorted([v for v in val if v["split"] == "test"] or val, key=lambda v: v["cycle_l1"])
    k = min(rows // 2 or 1, (len(pool) + 1) // 2)
    chosen = {v["sample_id"]: v for v in pool[:k] + pool[::-1][:k]}
    gen = generated_rows(generated_dir, direction, set(chosen), ["label", "source_image", "image", "reconstruction",
                                                                 "source_audio", "audio", "reconstruction_audio"])
    out = []
    for g in gen:
        v = chosen[g["sample_id"]]
        pics = {kind: uint8_to_picture(decode_png(g[col])[None])[0]
                for kind, col in (("source", "source_image"), ("translation", "image"), ("cycle", "reconstruction"))}
        out.append({
            "direction": direction, "sample_id": g["sample_id"], "label": name_of(g["label"], label_names),
            "pred_label": name_of(v["pred_label"], label_names),
            "source_wav": g["source_audio"], "translation_wav": g["audio"], "cycle_wav": g["reconstruction_audio"],
            **{f"{kind}_picture": p for kind, p in pics.items()},
            "metrics": {k: v[k] for k in ("cycle_si_sdr", "cycle_lsd", "inversion_lsd", "realism")
                        if v.get(k) is not None},
        })
    order = list(chosen)
    return sorted(out, key=lambda r: order.index(r["sample_id"]))


# ------------------------------------------------------------------------------------------- utility
def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def utility_chart(utility: dict, out_png: str | Path) -> Path | None:
    """Bar chart of every arm's accuracy on real held-out targets with its 95% interval, one panel a direction."""
    from .utility import ARM_TITLES, ARMS

    dirs = [d for d in ("AtoB", "BtoA") if d in utility and "skipped" not in utility[d]]
    if not dirs:
        return None
    fig, axes = plt.subplots(1, len(dirs), figsize=(6.2 * len(dirs), 4.2), squeeze=False)
    colors = ["#9e9e9e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#454545"]
    for ax, d in zip(axes[0], dirs, strict=True):
        f = utility[d]
        means = [f[a]["mean"] for a in ARMS]
        err = [[f[a]["mean"] - f[a]["low"] for a in ARMS], [f[a]["high"] - f[a]["mean"] for a in ARMS]]
        y = np.arange(len(ARMS))[::-1]
        ax.barh(y, means, xerr=err, color=colors, capsize=3)
        ax.set_yticks(y, [ARM_TITLES[a] for a in ARMS], fontsize=8)
        for yy, m in zip(y, means, strict=True):
            ax.text(0.02, yy, f"{m:.3f}", va="center", fontsize=8, color="white", fontweight="bold")
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"accuracy on {f['evaluated_on']} real held-out {d[-1]} samples (95% interval)")
        g, t = f["utility_gain"], f["transfer_gain"]
        ax.set_title(f"{d}: (b)-(a) {g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]\n"
                     f"(c)-(d) {t['mean']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]", fontsize=9)
    fig.suptitle("Downstream utility: a classifier trained on each set, tested on real samples", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_png)


def utility_line(direction: str, fig: dict) -> str:
    """One line for people: the arms' accuracies and the two gains with their intervals, in points."""
    if "skipped" in fig:
        return f"utility {direction}: skipped: {fig['skipped']}"
    from .utility import ARMS

    arms = ", ".join(f"{k} {100 * fig[k]['mean']:.1f}%" for k in ARMS)
    g, t = fig["utility_gain"], fig["transfer_gain"]
    return (f"utility {direction} (real held-out {direction[-1]}, n={fig['evaluated_on']}): {arms}; (b)-(a) "
            f"{100 * g['mean']:+.1f} [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}] points, (c)-(d) "
            f"{100 * t['mean']:+.1f} [{100 * t['low']:+.1f}, {100 * t['high']:+.1f}]")


def utility_markdown(utility: dict) -> str:
    """The utility section of ``report.md`` and of the dataset card."""
    from .utility import ARM_TITLES, ARMS

    lines = ["## Downstream utility (train on it, test on real)", ""]
    s = utility.get("settings", {})
    dirs = [d for d in ("AtoB", "BtoA") if d in utility]
    for d in dirs:
        if "skipped" in utility[d]:
            lines.append(f"- {d}: not measured: {utility[d]['skipped']}")
    measured = [d for d in dirs if "skipped" not in utility[d]]
    if not measured:
        return "\n".join([*lines, ""])
    lines += [
        f"The same classifier (`{s.get('model')}`, {s.get('steps')} steps) is trained on each set and tested on "
        "real held-out target samples that no model, judge or bound of this run saw; accuracy in %, mean over "
        f"{s.get('seeds')} seeds with a 95% interval. (a) uses {s.get('labels_per_class')} real labels per class.", "",
        "| training set | " + " | ".join(f"{d}: accuracy % [95%] | samples" for d in measured) + " |",
        "|---|" + "---|---|" * len(measured)]
    for a in ARMS:
        cells = [f"{_pct(utility[d][a]['mean'])} [{_pct(utility[d][a]['low'])}, {_pct(utility[d][a]['high'])}] | "
                 f"{utility[d][a]['train_samples']}" for d in measured]
        lines.append(f"| {ARM_TITLES[a]} | " + " | ".join(cells) + " |")
    lines.append("")
    for d in measured:
        f = utility[d]
        for name, what in (("utility_gain", "adding the published translations to (a), (b)-(a)"),
                           ("transfer_gain", "translating instead of using raw sources, (c)-(d)"),
                           ("gate_gain", "the gate (published instead of all translations), (b)-(e)")):
            g = f[name]
            lines.append(f"- {d}: {what}: {100 * g['mean']:+.1f} points [{100 * g['low']:+.1f}, "
                         f"{100 * g['high']:+.1f}]")
        worst = min((v, k) for k, v in enumerate(f["utility_gain"]["per_class"]) if v is not None)
        lines.append(f"- {d}: per-class (b)-(a), points: "
                     + ", ".join(f"{k}: {100 * v:+.1f}" for k, v in enumerate(f["utility_gain"]["per_class"])
                                 if v is not None) + f" (least helped: class {worst[1]})")
    if utility.get("failures"):
        lines += ["", "Failed utility bounds (nothing is published):", ""]
        lines += [f"- `{x}`" for x in utility["failures"]]
    lines += ["", "![utility.png](utility.png)", ""]
    return "\n".join(lines)
