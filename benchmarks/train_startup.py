"""Training's seconds at two scales, measured in alternation (issue 19: training within 1.5x from 1x to 30x).

``scale.py`` measures each scale's steps one after the other, minutes apart; on a shared machine the load
changes between them, and training's 20 steps (a fixed amount of work at every scale) then show the load, not
the step. This re-runs ``cycleaug train`` (a fresh model folder each time, so it trains) in ``scale.py``'s
run folders, alternating the scales for ``--rounds`` rounds (1x, 30x, 1x, 30x, ...), and prints every time,
each scale's median and the ratio of the medians, with peak RSS. Run ``scale.py`` first (its ``x<N>-steps``
folders hold the ingested collections); it uses the same ``--steps``.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/train_startup.py --work /tmp/scale --scales 1,30 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import ROOT, cli, gate_off, sig3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="scale.py's work folder")
    p.add_argument("--scales", default="1,30", help="comma-separated scales (run folders x<N>-steps)")
    p.add_argument("--rounds", type=int, default=3, help="times each scale is trained, alternating")
    p.add_argument("--steps", type=int, default=20, help="train.steps (as scale.py's)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the JSON")
    a = p.parse_args()
    scales = [int(s) for s in a.scales.split(",")]
    runs = {s: a.work / f"x{s}-steps" for s in scales}
    for run in runs.values():
        if not (run / "data" / "ingest").exists():
            raise SystemExit(f"{run} has no ingested collection: run scale.py --work {a.work} --scales {a.scales}")
    params = gate_off(yaml.safe_load((ROOT / "params.yaml").read_text()))  # as scale.py writes it
    times: dict[int, list[dict]] = {s: [] for s in scales}
    for r in range(a.rounds):
        for s, run in runs.items():
            (run / "params.yaml").write_text(yaml.safe_dump(params))
            shutil.rmtree(run / "data" / "models", ignore_errors=True)
            raw = a.work / f"raw-x{s}"
            row = cli(run, ["--set", f"data.domain_a={raw / 'A'}", "--set", f"data.domain_b={raw / 'B'}",
                            "--set", f"train.steps={a.steps}", "train"])
            times[s].append(row)
            print(f"round {r + 1}, {s}x: {sig3(row['seconds'])} s, peak RSS {sig3(row['rss_mb'])} MB", flush=True)
    med = {s: statistics.median(t["seconds"] for t in rows) for s, rows in times.items()}
    rss = {s: max(t["rss_mb"] for t in rows) for s, rows in times.items()}
    first, last = scales[0], scales[-1]
    ratio = med[last] / med[first]
    print(f"\nmedian seconds: {', '.join(f'{s}x {sig3(v)} s' for s, v in med.items())}; "
          f"{last}x / {first}x = {ratio:.3g} ({'met' if ratio <= 1.5 else 'NOT met'}: within 1.5x); "
          f"peak RSS {', '.join(f'{s}x {sig3(v)} MB' for s, v in rss.items())} "
          f"({rss[last] - rss[first]:+.0f} MB)")
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    out = a.out / f"train-startup-{stamp:%Y%m%d-%H%M}.json"
    doc = {"date": stamp.isoformat(timespec="seconds"), "machine": f"{platform.node()}: {os.cpu_count()} CPUs",
           "train_steps": a.steps, "runs": {str(s): t for s, t in times.items()},
           "median_seconds": {str(s): v for s, v in med.items()}, "ratio": ratio}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
