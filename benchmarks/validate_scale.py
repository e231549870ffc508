"""Peak RSS and seconds of `cycleaug validate` on the bundled digits replicated 1x and Nx (issue 19).

Makes the bundled digits under a work folder, copies them N times with a one-pixel jitter per copy (so
every file is new), then per scale runs ingest, a short training (``train.steps``, default 20) and
generate, and times ``cycleaug validate`` alone in a fresh process (fresh judges and validated folder),
reading that process's own peak RSS (``ru_maxrss``). Prints a table and the RSS growth; the goal is a
growth under 100 MB from 1x to Nx. Takes about 2 minutes at 1x and 6 at 5x on 2 cores.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/validate_scale.py --work /tmp/validate-scale --scales 1 5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# Runs the CLI and reports the process's own peak RSS (kB on Linux) on stderr's last line.
MEASURED = ("import resource, sys; from flows.cli import main; rc = main(sys.argv[1:]); "
            "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")


def replicate(src: Path, dst: Path, copies: int) -> int:
    """``copies`` of both collections (labels.csv included), copy k > 0 with one pixel changed per image."""
    rng = np.random.default_rng(0)
    files = 0
    for d in ("A", "B"):
        with open(src / d / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        out = []
        for k in range(copies):
            for r in rows:
                rel = Path(r["path"])
                new = rel.parent / f"c{k}_{rel.name}"
                im = np.asarray(Image.open(src / d / rel)).copy()
                if k:
                    i, j = rng.integers(0, im.shape[0]), rng.integers(0, im.shape[1])
                    im[i, j] = (int(im[i, j].flat[0]) + 1) % 256
                (dst / d / new.parent).mkdir(parents=True, exist_ok=True)
                Image.fromarray(im).save(dst / d / new)
                out.append({"path": str(new), "label": r["label"]})
                files += 1
        with open(dst / d / "labels.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["path", "label"])
            w.writeheader()
            w.writerows(out)
    return files


def cli(cwd: Path, args: list[str], measured: bool = False) -> tuple[float, int | None]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-c", MEASURED, *args] if measured else [sys.executable, "-m", "flows.cli", *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):  # validate without --strict exits 0; a failed gate is not an error here
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    rss = next((int(line.split()[1]) for line in reversed(done.stderr.splitlines())
                if line.startswith("maxrss_kb")), None)
    return seconds, rss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (collections and every output)")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 5])
    p.add_argument("--steps", type=int, default=20, help="train.steps of the short training")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    (a.work / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    cli(a.work, ["default-data"])
    table = []
    for scale in a.scales:
        run = a.work / f"x{scale}"
        run.mkdir(exist_ok=True)
        (run / "params.yaml").write_text((ROOT / "params.yaml").read_text())
        if not (run / "raw").exists():
            files = replicate(a.work / "data" / "raw", run / "raw", scale)
        else:
            files = sum(1 for _ in (run / "raw").rglob("*.png"))
        sets = ["--set", f"data.domain_a={run / 'raw' / 'A'}", "--set", f"data.domain_b={run / 'raw' / 'B'}",
                "--set", f"train.steps={a.steps}"]
        for step in ("ingest", "train", "generate"):
            cli(run, [*sets, step])
        for folder in ("data/judges", "data/validated"):
            subprocess.run(["rm", "-rf", str(run / folder)], check=True)
        seconds, rss = cli(run, [*sets, "validate"], measured=True)
        rows = sum(json.loads((run / "data" / "validated" / "summary.json").read_text())["directions"][d]["generated"]
                   for d in ("AtoB", "BtoA"))
        table.append({"scale": scale, "files": files, "rows": rows, "seconds": round(seconds, 1),
                      "s_per_1000": round(1000 * seconds / rows, 2), "peak_rss_mb": round((rss or 0) / 1024)})
        print(table[-1], flush=True)
    print("\n| scale | files | validated rows | s | s / 1,000 rows | peak RSS MB |\n|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['scale']}x | {r['files']:,} | {r['rows']:,} | {r['seconds']} | {r['s_per_1000']} "
              f"| {r['peak_rss_mb']:,} |")
    if len(table) > 1:
        print(f"\nRSS growth {table[0]['scale']}x -> {table[-1]['scale']}x: "
              f"{table[-1]['peak_rss_mb'] - table[0]['peak_rss_mb']:+d} MB (goal: under 100 MB)")


if __name__ == "__main__":
    main()
