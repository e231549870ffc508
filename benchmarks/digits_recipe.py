"""A training recipe on the bundled digits demo: does it still pass the gate and help a classifier?

    PYTHONPATH=. python benchmarks/digits_recipe.py --recipe NAME [NAME ...] [--steps 1500] [--out /tmp/digits]
    PYTHONPATH=. python benchmarks/digits_recipe.py --set model.norm=none --set model.norm_d=instance --name mine

Each recipe (``--set``-style overrides on ``params.yaml``; ``RECIPES`` below has the named ones) runs the
pipeline's own steps in its own folders under ``<out>/runs/<name>``: ingest (the bundled digits are made
once in ``<out>/raw``), train (seed 0, retrained), generate, validate (the gate with ``params.yaml``'s
bounds), utility. Nothing is written inside the repository except the results JSON. Printed and kept
per recipe: gate passed and its failures, held-out label accuracy per direction (validation's judge),
cycle PSNR, FID on the judges' domain features, the pass rate, the utility arms (a)-(f) and gains,
and seconds per training step. One torch thread by default (the shared 2-core VM).

Results merge into ``benchmarks/results/digits_recipe.json`` (one entry per recipe name).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from cyclegan_core import pipeline
from cyclegan_core.config import load_config
from cyclegan_core.utility import ARMS, GAINS

ROOT = Path(__file__).resolve().parent.parent

RECIPES: dict[str, list[str]] = {
    "defaults": [],
    "resize_conv+norm_none": ["model.upsample=resize_conv", "model.norm=none"],
    "resize_conv+norm_none+norm_d_instance": ["model.upsample=resize_conv", "model.norm=none",
                                              "model.norm_d=instance"],
    "resize_conv+norm_none+norm_d_batch": ["model.upsample=resize_conv", "model.norm=none", "model.norm_d=batch"],
    "input_skip": ["model.input_skip=true"],
    "resize_conv+input_skip": ["model.upsample=resize_conv", "model.input_skip=true"],
    "resize_conv+norm_batch+norm_d_instance": ["model.upsample=resize_conv", "model.norm=batch",
                                               "model.norm_d=instance"],
    # Issue 17: discriminators that do not win so easily (params.yaml's recipe otherwise: norm none,
    # resize_conv): spectrally normalized convolutions instead of the instance norm, and/or a lower D learning rate.
    "norm_d_spectral": ["model.norm_d=spectral"],
    "norm_d_spectral+lr_d_half": ["model.norm_d=spectral", "train.lr_d=0.0001"],
    "norm_d_spectral+lr_d_double": ["model.norm_d=spectral", "train.lr_d=0.0004"],
    "lr_d_quarter": ["train.lr_d=0.00005"],
    "norm_d_batch+lr_d_quarter": ["model.norm_d=batch", "train.lr_d=0.00005"],
    # The identity loss asks G_BA to leave A's colours alone, and B's graded colours lie inside A's range.
    "identity_0": ["train.lambda_identity=0.0"],
    "identity_0.1": ["train.lambda_identity=0.1"],
    "norm_d_spectral+identity_0": ["model.norm_d=spectral", "train.lambda_identity=0.0"],
    "norm_d_batch+identity_0": ["model.norm_d=batch", "train.lambda_identity=0.0"],
    # N(0, 0.02) weights shrink the signal at every layer of a generator without norm (its output starts
    # flat): initialisations that keep the signal's scale.
    "init_kaiming": ["model.init_type=kaiming"],
    "init_xavier_1": ["model.init_type=xavier", "model.init_gain=1.0"],
    "init_xavier_0.7": ["model.init_type=xavier", "model.init_gain=0.7"],
    "norm_d_spectral+init_xavier_1": ["model.norm_d=spectral", "model.init_type=xavier", "model.init_gain=1.0"],
}
FIGURES = ("label_accuracy", "label_accuracy_untranslated", "mean_cycle_psnr", "mean_cycle_ssim", "mean_realism",
           "fid_domain_features", "kid_domain_features", "pass_rate")


def run(name: str, overrides: list[str], out: Path, steps: int, threads: int, seeds: int, params: str) -> dict:
    work = out / "runs" / name.replace("+", "_")
    if work.exists():
        shutil.rmtree(work)
    base = [f"data.domain_a={out / 'raw' / 'A'}", f"data.domain_b={out / 'raw' / 'B'}",
            f"train.steps={steps}", f"runtime.num_threads={threads}", "train.seed=0", f"utility.seeds={seeds}",
            *(f"paths.{k}={work / k}" for k in ("ingest", "models", "judges", "generated", "validated", "published",
                                                 "reports"))]
    cfg = load_config(params, [*base, *overrides])
    pipeline.step_default_data(cfg)
    pipeline.step_ingest(cfg)
    t0 = time.perf_counter()
    trained = pipeline.step_train(cfg, retrain=True)
    t1 = time.perf_counter()
    pipeline.step_generate(cfg)
    validated = pipeline.step_validate(cfg)
    t2 = time.perf_counter()
    utility = pipeline.step_utility(cfg)
    return {
        "overrides": overrides, "steps": trained.steps, "train_seconds": trained.seconds,
        "seconds_per_step": trained.seconds / max(trained.steps, 1), "train_wall_seconds": t1 - t0,
        "generate_validate_seconds": t2 - t1, "utility_seconds": utility.seconds,
        "model_fingerprint": trained.fingerprint, "model": cfg.model.model_dump(mode="json"),
        "gate_passed": validated.passed, "gate_failures": validated.failures,
        "validation": {d: {k: validated.figures[d].get(k) for k in FIGURES} for d in ("AtoB", "BtoA")},
        "utility_passed": utility.passed, "utility_failures": utility.failures, "utility": utility.figures,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _g(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _iv(f: dict | None) -> str:
    return "n/a" if not f else f"{f['mean']:+.3f} [{f['low']:+.3f}, {f['high']:+.3f}]"


def summary_line(name: str, r: dict) -> str:
    """recipe | gate | label acc. A->B / B->A | cycle PSNR | FID | utility gain | transfer gain | s/step."""
    v, u = r["validation"], r["utility"]
    gate = "passed" if r["gate_passed"] else "FAILED: " + "; ".join(r["gate_failures"])
    return (f"| {name} | {gate} | {_g(v['AtoB']['label_accuracy'])} / {_g(v['BtoA']['label_accuracy'])} | "
            f"{_g(v['AtoB']['mean_cycle_psnr'])} / {_g(v['BtoA']['mean_cycle_psnr'])} | "
            f"{_g(v['AtoB']['fid_domain_features'])} / {_g(v['BtoA']['fid_domain_features'])} | "
            f"{_iv(u['AtoB'].get('utility_gain'))} / {_iv(u['BtoA'].get('utility_gain'))} | "
            f"{_iv(u['AtoB'].get('transfer_gain'))} / {_iv(u['BtoA'].get('transfer_gain'))} | "
            f"{r['seconds_per_step']:.3g} |")


def table(results: dict) -> str:
    lines = ["| recipe | gate | label acc. A->B / B->A | cycle PSNR A->B / B->A | FID (domain) A->B / B->A | "
             "utility gain (b)-(a) A->B / B->A | transfer gain (c)-(d) A->B / B->A | s/step |",
             "|---|---|---|---|---|---|---|---:|"]
    lines += [summary_line(n, r) for n, r in results.items()]
    return "\n".join(lines)


def detail(name: str, r: dict) -> str:
    lines = [f"{name}: overrides {r['overrides']}, {r['steps']} steps, gate "
             f"{'passed' if r['gate_passed'] else 'failed ' + str(r['gate_failures'])}, utility "
             f"{'passed' if r['utility_passed'] else 'failed ' + str(r['utility_failures'])}"]
    for d in ("AtoB", "BtoA"):
        lines.append(f"  {d}: " + ", ".join(f"{k} {_g(r['validation'][d][k])}" for k in FIGURES))
        arms = r["utility"][d]
        lines.append(f"  {d} utility: " + ", ".join(
            f"{a} {arms[a]['mean']:.3f}" for a in ARMS if isinstance(arms.get(a), dict)))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", nargs="*", default=[], choices=list(RECIPES))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="an ad-hoc recipe's override")
    p.add_argument("--name", default="custom", help="name of the --set recipe")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", type=int, default=3, help="utility seeds per arm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("/tmp/cycleaug-digits-recipe"))
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "digits_recipe.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    todo = {n: RECIPES[n] for n in args.recipe}
    if args.overrides:
        todo[args.name] = args.overrides
    if not todo:
        p.error("name a --recipe or give --set overrides")
    doc = json.loads(args.results.read_text()) if args.results.exists() else {}
    runs = doc.setdefault("runs", {})
    for name, overrides in todo.items():
        runs[name] = run(name, overrides, args.out, args.steps, args.threads, args.seeds, args.params)
        print(detail(name, runs[name]), flush=True)
        print(summary_line(name, runs[name]), flush=True)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        doc |= {"gains": {k: list(v) for k, v in GAINS.items()}, "threads": args.threads}
        args.results.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    print(table({n: runs[n] for n in todo}))


if __name__ == "__main__":
    main()
