"""What a finished run made and where it is, for people: built here once from the stored outputs.

``cycleaug run`` and ``cycleaug publish`` print :func:`summary_text`; the flow posts
:func:`run_markdown` (the same lines, with what this run did) and :func:`metrics_rows` (one row a
direction) to Prefect as its report and metrics artifacts. The figures and their order come from
:data:`cyclegan_core.figures.FIGURES`, so a new figure with a ``summary`` shows up in all three.

Reads only small files: the published ``manifest.json``, ``reports/metrics.json`` and
``reports/utility.json``; not in any stored output's key (nothing here decides a stored byte).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import DIRECTIONS, Config
from .figures import FIGURES, Figure, summary_line
from .report import utility_line
from .storage import read_json

LISTEN_DIR = "listen"  # reports/listen/index.html: audio runs only
LISTEN_PAGE = Path(LISTEN_DIR) / "index.html"


def _json(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def columns(kind: str) -> list[Figure]:
    """The figures a report row shows: those with a one-line summary, audio ones for audio runs only."""
    return [f for f in FIGURES if f.summary is not None and (f.modality == "any" or kind == "audio")]


def _rounded(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def metrics_rows(cfg: Config, run: dict | None = None) -> list[dict]:
    """One row a direction: published and dropped rows, what this run translated, and the held-out figures."""
    metrics = _json(Path(cfg.paths.reports) / "metrics.json") or {}
    generate = (run or {}).get("generate", {})
    rows = []
    for d in DIRECTIONS:
        fig = metrics.get(d, {})
        row: dict[str, Any] = {"direction": d,
                               "published": metrics.get("published", {}).get("rows", {}).get(d),
                               "dropped": metrics.get("published", {}).get("dropped", {}).get(d)}
        if run is not None:
            row |= {"translated_now": generate.get("translated", {}).get(d),
                    "reused": generate.get("reused", {}).get(d)}
        for f in columns(cfg.data.kind):
            row[f.summary_key] = _rounded(fig.get(f.summary_key))
            if f.name == "label_accuracy":
                row["label_accuracy_untranslated"] = _rounded(fig.get("label_accuracy_untranslated"))
        rows.append(row)
    return rows


def utility_rows(figures: dict[str, dict]) -> list[dict]:
    """The utility step's table: one row per direction and training set (arm), accuracies on real held-out targets."""
    from .utility import ARMS

    return [{"direction": d, "training set": arm, "accuracy": round(f[arm]["mean"], 3),
             "95% low": round(f[arm]["low"], 3), "95% high": round(f[arm]["high"], 3),
             "samples": f[arm]["train_samples"]}
            for d, f in figures.items() if "skipped" not in f for arm in ARMS]


def summary_lines(cfg: Config) -> list[str]:
    """Where the dataset, figures and pictures are, and each direction's held-out figures in a line."""
    reports = Path(cfg.paths.reports)
    lines = [f"dataset:  {cfg.paths.published}/ (Parquet shards in data/, manifest.json, README.md)",
             f"metrics:  {reports / 'metrics.json'}",
             f"pictures: {', '.join(str(p) for p in sorted(reports.glob('*.png')))}"]
    metrics = _json(reports / "metrics.json")
    if metrics is not None:
        for d in DIRECTIONS:
            lines.append(f"{d}: published {metrics['published']['rows'][d]}, dropped "
                         f"{metrics['published']['dropped'][d]}; held-out {summary_line(metrics[d])}")
    utility = _json(reports / "utility.json")
    if utility is not None:
        lines += [utility_line(d, utility[d]) for d in DIRECTIONS if d in utility]
    listen = reports / LISTEN_PAGE
    if cfg.data.kind == "audio" and listen.exists():
        lines.append(f"listen:   {listen} (source | translation | cycle, best and worst held-out clips)")
    return lines


def summary_text(cfg: Config) -> str:
    return "\n".join(summary_lines(cfg))


def per_direction(counts: dict) -> str:
    return ", ".join(f"{d} {counts.get(d)}" for d in DIRECTIONS)


def seconds_text(timings: dict) -> str:
    return ", ".join(f"{step} {s:.3g} s" for step, s in timings.items()) or "none"


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def run_markdown(cfg: Config, run: dict) -> str:
    """The flow's report: what this run did (model, samples, cached steps), then :func:`summary_lines`
    and the :func:`metrics_rows` table."""
    published = _json(Path(cfg.paths.published) / "manifest.json") or {"rows": {}, "shards": []}
    t, g, cached = run["train"], run["generate"], run.get("cached", {})
    samples = {d: r.get("samples") for d, r in run.get("ingest", {}).items()}
    lines = [
        "# CycleAug run", "",
        f"- model: `{t['fingerprint'][:12]}` ({t['steps']} steps), "
        + ("reused" if t["reused"] else f"trained in {t['seconds']:.1f} s") + f": {t.get('reason', '')}",
        (f"- samples: A {samples.get('A')}, B {samples.get('B')}; " if samples else "- ")
        + f"generate: translated {per_direction(g['translated'])}; reused {per_direction(g['reused'])}"
        + (" (cached)" if cached.get("generate") else ""),
        f"- validate: {'cached, inputs unchanged' if cached.get('validate') else 'ran'}; gate passed",
        f"- publish: {'cached, the published version is unchanged' if cached.get('publish') else 'new version'}"
        f" at `{cfg.paths.published}` ({sum(published['rows'].values())} rows, {len(published['shards'])} shards)",
        f"- step seconds: {seconds_text(run.get('timings', {}))}", "",
        "```", *summary_lines(cfg), "```", "",
    ]
    rows = metrics_rows(cfg, run)
    heads = list(rows[0])
    titles = {f.summary_key: f.title for f in FIGURES} | {"label_accuracy_untranslated": "label accuracy: untranslated"}
    lines += ["| " + " | ".join(titles.get(h, h.replace("_", " ")) for h in heads) + " |",
              "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(_cell(r[h]) for h in heads) + " |" for r in rows]
    listen = Path(cfg.paths.reports) / LISTEN_PAGE
    if cfg.data.kind == "audio" and listen.exists():
        lines += ["", "Listen to the best and worst held-out clips (source | translation | cycle): "
                      f"[{listen.resolve()}]({listen.resolve().as_uri()})"]
    return "\n".join(lines) + "\n"
