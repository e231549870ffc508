"""Plain CycleGAN against label-aware training (semantic consistency) on the bundled digits, side by side:
the same data, seeds, steps, judges and utility settings; only ``train.semantic`` differs.

    PYTHONPATH=. python benchmarks/label_aware.py --steps 1500 --threads 2 --out /tmp/label_aware

Each recipe runs the pipeline's own steps (ingest once, then train, generate, validate, utility) in its
own folders under ``--out``, with the validation judges shared (so both are scored by the same
models). Reported per direction: held-out label accuracy by validation's judge (trained on the
other half of the training samples than the semantic classifier), cycle PSNR (plain and through a
perturbation), SSIM, realism, FID on judge features, the pass rate, the utility arms and gains, and
seconds per training step. Prints a Markdown table (three significant figures) and writes
``benchmarks/results/label_aware.json`` (full precision).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cyclegan_core import pipeline
from cyclegan_core.config import load_config
from cyclegan_core.utility import ARMS

RECIPES = {
    "plain (reference objective)": ["train.semantic=off"],
    "label-aware (semantic consistency)": ["train.semantic=auto"],
}
FIGURES = ("label_accuracy", "label_accuracy_untranslated", "mean_cycle_psnr", "mean_cycle_psnr_robust",
           "mean_cycle_ssim", "mean_realism", "fid_domain_features", "pass_rate")


def run(name: str, overrides: list[str], out: Path, steps: int, seeds: int) -> dict:
    folder = out / name.split()[0]
    base = [f"train.steps={steps}", f"utility.seeds={seeds}", f"paths.ingest={out / 'ingest'}",
            f"paths.judges={out / 'judges'}", *(f"paths.{k}={folder / k}" for k in
                                                ("models", "generated", "validated", "published", "reports"))]
    cfg = load_config("params.yaml", [*base, *overrides])
    pipeline.step_default_data(cfg)
    pipeline.step_ingest(cfg)
    t0 = time.perf_counter()
    trained = pipeline.step_train(cfg, retrain=True)
    train_s = time.perf_counter() - t0
    pipeline.step_generate(cfg)
    validated = pipeline.step_validate(cfg)
    utility = pipeline.step_utility(cfg)
    return {
        "overrides": overrides, "steps": trained.steps, "train_seconds": train_s,
        "seconds_per_step": train_s / max(trained.steps, 1),
        "validation": {d: {k: validated.figures[d].get(k) for k in FIGURES} for d in ("AtoB", "BtoA")},
        "utility": utility.figures, "utility_seconds": utility.seconds,
    }


def _g(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def table(results: dict) -> str:
    names = list(results)
    lines = ["| figure | " + " | ".join(f"{n}: {d}" for n in names for d in ("AtoB", "BtoA")) + " |",
             "|---|" + "---|" * (2 * len(names))]
    for k in FIGURES:
        lines.append(f"| {k} | " + " | ".join(_g(results[n]["validation"][d][k]) for n in names
                                              for d in ("AtoB", "BtoA")) + " |")
    for arm in (*ARMS, "utility_gain", "transfer_gain", "gate_gain"):
        cells = []
        for n in names:
            for d in ("AtoB", "BtoA"):
                f = results[n]["utility"][d].get(arm)
                cells.append("n/a" if f is None else f"{f['mean']:.3g} [{f['low']:.3g}, {f['high']:.3g}]")
        lines.append(f"| utility {arm} | " + " | ".join(cells) + " |")
    lines.append("| seconds per training step | " + " | ".join(
        f"{results[n]['seconds_per_step']:.3g}" for n in names for _ in ("AtoB", "BtoA")) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", type=int, default=3, help="utility seeds per arm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("/tmp/cycleaug-label-aware"))
    p.add_argument("--results", type=Path, default=Path("benchmarks/results/label_aware.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name, overrides in RECIPES.items():
        results[name] = run(name, overrides, args.out, args.steps, args.seeds)
        print(f"{name}: {results[name]['train_seconds']:.0f} s training", flush=True)
    print(table(results))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"steps": args.steps, "threads": args.threads, "results": results},
                                       indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
