"""Seconds per 1,000 samples and peak RSS of every pipeline step at 1x, 10x and 30x the bundled digits (issue 19).

Makes the bundled digits under a work folder and copies them N times, each copy's images with one pixel
jittered (so every file is new, and every sample id), then per scale runs each step command (``cycleaug
ingest``, ``train``, ``generate``, ``validate``, ``utility``, ``publish``) in its own process, reading that
process's peak RSS (``ru_maxrss``) and its wall seconds. A short training (``--steps``, default 20; utility's
classifiers ``--utility-steps``, default 50) and the
gate off (every sample and run bound null, so rows pass and publish writes them) keep the figures about
streaming rather than model quality. The samples a step's figure is per: ingest, the files of both
collections; train, its steps times the batch (the same at every scale: it shows the cache or stream cost);
generate, validate and publish, the generated rows of both directions; utility, the same rows (its sets are
capped by ``utility.max_*_samples``). ``--dask``: also the whole flow (``cycleaug run``) with generation,
validation and publishing mapped on a 2-worker local Dask cluster, its seconds and the peak RSS of the flow
process and of its largest child (a worker). Prints a table and the goals (peak RSS growth from the first
scale under 300 MB a step, seconds per 1,000 within 1.5x); writes ``benchmarks/results/scale-<date>.json``.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/scale.py --work /tmp/scale --scales 1,10,30 [--dask]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_scale import replicate  # one jittered copy recipe for both benchmarks

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("ingest", "train", "generate", "validate", "utility", "publish")
# Runs the CLI and reports the process's own peak RSS (kB on Linux) and its children's on stderr's last lines.
MEASURED = ("import resource, sys; from flows.cli import main; rc = main(sys.argv[1:]); "
            "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "print('children_maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")


def gate_off(params: dict) -> dict:
    """Every per-sample and run-level bound of validation and utility null (label checks off)."""
    for section in ("validate", "utility"):
        for level in ("sample", "run"):
            for bounds in params.get(section, {}).get(level, {}).values():
                for k in bounds:
                    bounds[k] = False if k.startswith("require_") else None
    return params


def cli(cwd: Path, args: list[str]) -> dict:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"cycleaug {' '.join(args)} failed in {cwd}:\n{done.stderr[-3000:]}")
    # The flow's own log lines (a Prefect server shutting down) can follow the two figures: find them by name.
    kb = {w[0]: int(w[1]) for w in (line.split() for line in done.stderr.splitlines())
          if len(w) == 2 and w[0] in ("maxrss_kb", "children_maxrss_kb") and w[1].isdigit()}
    return {"seconds": seconds, "rss_mb": kb["maxrss_kb"] / 1024, "children_rss_mb": kb["children_maxrss_kb"] / 1024}


def rows_of(run: Path) -> int:
    summary = json.loads((run / "data" / "validated" / "summary.json").read_text())
    return sum(summary["directions"][d]["generated"] for d in ("AtoB", "BtoA"))


def sig3(x: float) -> str:
    return f"{float(f'{x:.3g}'):,g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (collections and every output)")
    p.add_argument("--scales", default="1,10,30", help="comma-separated copies of the digits, e.g. 1,10,30")
    p.add_argument("--steps", type=int, default=20, help="train.steps of the short training")
    p.add_argument("--utility-steps", type=int, default=50, help="utility.steps of each downstream classifier")
    p.add_argument("--dask", action="store_true", help="also the whole flow on a 2-worker local Dask cluster")
    p.add_argument("--dask-only", action="store_true", help="only the whole flow on Dask (no step commands)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the JSON")
    a = p.parse_args()
    scales = [int(s) for s in a.scales.split(",")]
    a.work.mkdir(parents=True, exist_ok=True)
    params = gate_off(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (a.work / "params.yaml").write_text(yaml.safe_dump(params))
    if not (a.work / "data" / "raw").exists():
        cli(a.work, ["default-data"])
    results = []
    for scale in scales:
        for kind in ("dask",) if a.dask_only else ("steps", "dask") if a.dask else ("steps",):
            run = a.work / f"x{scale}-{kind}"
            run.mkdir(exist_ok=True)
            (run / "params.yaml").write_text(yaml.safe_dump(params))
            raw = a.work / f"raw-x{scale}"
            if not raw.exists():
                replicate(a.work / "data" / "raw", raw, scale)
            files = sum(1 for _ in raw.rglob("*.png"))
            sets = ["--set", f"data.domain_a={raw / 'A'}", "--set", f"data.domain_b={raw / 'B'}",
                    "--set", f"train.steps={a.steps}", "--set", f"utility.steps={a.utility_steps}"]
            row: dict = {"scale": scale, "kind": kind, "files": files}
            if kind == "steps":
                for step in STEPS:
                    row[step] = cli(run, [*sets, step])
                    print(scale, step, {k: round(v, 1) for k, v in row[step].items()}, flush=True)
            else:
                row["flow"] = cli(run, [*sets, "--set", "orchestrate.task_runner=dask", "run"])
                print(scale, "flow on dask", {k: round(v, 1) for k, v in row["flow"].items()}, flush=True)
            row["rows"] = rows_of(run)
            results.append(row)

    batch = params["train"]["batch_size"]
    per = {"ingest": "files", "train": "train", "utility": "rows", "generate": "rows", "validate": "rows",
           "publish": "rows", "flow": "rows"}
    print(f"\n| scale | files | rows | {' | '.join(STEPS)} |\n|---|---|---|{'---|' * len(STEPS)}")
    steps = [r for r in results if r["kind"] == "steps"]
    for r in steps:
        cells = []
        for s in STEPS:
            n = {"files": r["files"], "train": a.steps * batch * 2, "rows": r["rows"]}[per[s]]
            r[s]["s_per_1000"] = 1000 * r[s]["seconds"] / n
            cells.append(f"{sig3(r[s]['s_per_1000'])} s / {sig3(r[s]['rss_mb'])} MB")
        print(f"| {r['scale']}x | {r['files']:,} | {r['rows']:,} | {' | '.join(cells)} |")
    for r in (r for r in results if r["kind"] == "dask"):
        r["flow"]["s_per_1000"] = 1000 * r["flow"]["seconds"] / r["rows"]
        print(f"dask flow {r['scale']}x: {sig3(r['flow']['s_per_1000'])} s / 1,000 rows, "
              f"flow {sig3(r['flow']['rss_mb'])} MB, largest child {sig3(r['flow']['children_rss_mb'])} MB")
    if len(steps) > 1:
        first, last = steps[0], steps[-1]
        print(f"\ngoals {first['scale']}x -> {last['scale']}x (peak RSS growth < 300 MB, s / 1,000 within 1.5x):")
        for s in STEPS:
            growth = last[s]["rss_mb"] - first[s]["rss_mb"]
            ratio = last[s]["s_per_1000"] / first[s]["s_per_1000"]
            print(f"  {s}: RSS {growth:+.0f} MB ({'met' if growth < 300 else 'NOT met'}), "
                  f"s / 1,000 x{ratio:.3g} ({'met' if ratio <= 1.5 else 'NOT met'})")
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    out = a.out / f"scale-{stamp:%Y%m%d-%H%M}.json"
    doc = {"date": stamp.isoformat(timespec="seconds"), "machine": f"{platform.node()}: {os.cpu_count()} CPUs, "
           f"{platform.machine()}", "train_steps": a.steps, "utility_steps": a.utility_steps,
           "results": results,
           "benchmark_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
