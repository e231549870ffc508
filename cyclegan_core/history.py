"""Quality over time: one row per direction per publish in ``reports/history.tsv``, and a picture.

Each publish appends (run id, time, model, published and dropped rows, the held-out figures that have
a one-line summary in :data:`cyclegan_core.figures.FIGURES`, the utility gain). The file is a DVC
plot (``dvc plots show``) kept across runs (``persist: true``); :func:`history_chart` draws each figure
across the runs, one line per direction, in ``reports/history.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .config import DIRECTIONS
from .figures import FIGURES
from .storage import write_bytes_atomic

HISTORY_FILE = "history.tsv"
HISTORY_PNG = "history.png"
FIXED = ("run", "run_id", "published_at", "direction", "model", "rows", "dropped")
FIGURE_KEYS = tuple(f.summary_key for f in FIGURES if f.summary is not None and f.modality == "any")
COLUMNS = (*FIXED, *FIGURE_KEYS, "label_accuracy_untranslated", "utility_gain")


def read_history(path: str | Path) -> list[dict[str, str]]:
    p = Path(path)
    if not p.exists():
        return []
    with open(p, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def append_history(path: str | Path, *, run_id: str | None, published_at: str, model: str, rows: dict[str, int],
                   dropped: dict[str, int], figures: dict[str, dict], utility: dict | None = None) -> int:
    """Add this publish's rows (one per direction); returns the run's number (1 for the first)."""
    old = read_history(path)
    run = 1 + max((int(r["run"]) for r in old), default=0)
    new = []
    for d in DIRECTIONS:
        fig = figures.get(d, {})
        gain = ((utility or {}).get(d) or {}).get("utility_gain")
        new.append({"run": run, "run_id": run_id or "", "published_at": published_at, "direction": d,
                    "model": model[:12], "rows": rows.get(d, 0), "dropped": dropped.get(d, 0),
                    **{k: fig.get(k) for k in (*FIGURE_KEYS, "label_accuracy_untranslated")},
                    "utility_gain": gain.get("mean") if isinstance(gain, dict) else gain})
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in [*old, *new]:
        writer.writerow([_cell(r.get(c)) if not isinstance(r.get(c), str) else r[c] for c in COLUMNS])
    write_bytes_atomic(path, out.getvalue().encode("utf-8"))
    return run


def history_chart(path: str | Path, out_png: str | Path) -> Path | None:
    """Each figure across the runs (x: run number), a line per direction; None before the first run."""
    rows = read_history(path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import _save

    shown = [k for k in (*FIGURE_KEYS, "utility_gain") if any(r.get(k) for r in rows)]
    fig, axes = plt.subplots(len(shown), 1, figsize=(7, 1.9 * len(shown) + 0.6), sharex=True, squeeze=False)
    titles = {f.summary_key: f.title for f in FIGURES} | {"utility_gain": "utility gain (b)-(a), accuracy"}
    for ax, key in zip(axes[:, 0], shown, strict=True):
        for d in DIRECTIONS:
            pts = [(int(r["run"]), float(r[key])) for r in rows if r["direction"] == d and r.get(key)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=d)
        ax.set_title(titles.get(key, key), fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.suptitle("Held-out figures of each published version")
    runs = sorted({int(r["run"]) for r in rows})
    axes[-1, 0].set_xticks(runs)
    axes[-1, 0].set_xlabel("publish (run number)")
    return _save(fig, out_png)
