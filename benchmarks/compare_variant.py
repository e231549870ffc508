"""CycleGAN against the single-translator variant on the bundled digits: time per epoch, and
epochs to reach the same held-out validation figures (cycle PSNR and label accuracy, scored by
the judges of :mod:`cyclegan_core.validate`, exactly as the pipeline scores them).

    PYTHONPATH=. python benchmarks/compare_variant.py --epochs 8 --threads 1 --out /tmp/cmp

An epoch is max(|A train|, |B train|) images per domain, as in the reference. Every run uses the
same data, seed, batch, LR schedule (over the same number of steps) and network sizes
(``params.yaml``'s model section); only ``model.arch`` / ``translator_directions`` differ. Time
per epoch counts training steps only (evaluation excluded). Prints a Markdown table and writes
``results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from cyclegan_core.config import load_config
from cyclegan_core.images import to_tensor, to_uint8
from cyclegan_core.ingest import manifest_images, read_manifest
from cyclegan_core.judges import classify, load_or_train_judges
from cyclegan_core.metrics import cycle_errors
from cyclegan_core.pipeline import manifest_path, step_default_data, step_ingest
from cyclegan_core.train import Trainer

RUNS = {
    "cyclegan": ["model.arch=cyclegan"],
    "translator (both)": ["model.arch=translator", "model.translator_directions=both"],
    "translator (AtoB, article)": ["model.arch=translator", "model.translator_directions=AtoB"],
}


@torch.inference_mode()
def evaluate(gens, judges, held: dict, batch: int = 256) -> dict:
    """Held-out mean cycle PSNR and label accuracy per direction, on uint8 images as published."""
    out = {}
    for direction, (src_dom, tgt_dom, fwd, bwd) in {"AtoB": ("A", "B", "G_AB", "G_BA"),
                                                     "BtoA": ("B", "A", "G_BA", "G_AB")}.items():
        images, labels = held[src_dom]
        fakes, recs = [], []
        for s in range(0, len(images), batch):
            x = to_tensor(images[s:s + batch])
            f = gens[fwd](x)
            fakes.append(to_uint8(f))
            recs.append(to_uint8(gens[bwd](to_tensor(to_uint8(f)))))
        fake, rec = np.concatenate(fakes), np.concatenate(recs)
        _, psnr = cycle_errors(images, rec)
        pred = classify(judges.label[tgt_dom], fake)[0].argmax(1)
        out[direction] = {"cycle_psnr": round(float(psnr.mean()), 2),
                          "label_accuracy": round(float((pred == labels).mean()), 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=8.0)
    ap.add_argument("--evals-per-epoch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/cycleaug-compare")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--results", default="results.json", help="file name under --out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    paths = [f"paths.{k}={out / k}" for k in ("ingest", "models", "judges", "generated", "validated", "published",
                                               "reports")]
    base = [f"data.domain_a={out}/raw/A", f"data.domain_b={out}/raw/B", *paths, f"runtime.num_threads={args.threads}"]
    cfg = load_config(args.params, base)
    step_default_data(cfg)
    step_ingest(cfg)
    train = {d: manifest_images(read_manifest(manifest_path(cfg, d), ("train",))) for d in ("A", "B")}
    held = {}
    for d in ("A", "B"):
        t = read_manifest(manifest_path(cfg, d), ("test",))
        held[d] = (manifest_images(t), np.asarray(t.column("label").to_pylist()))
    t0 = time.perf_counter()
    judges, _ = load_or_train_judges(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"))
    print(f"judges ready in {time.perf_counter() - t0:.0f} s", flush=True)

    steps_per_epoch = math.ceil(max(len(train["A"]), len(train["B"])) / cfg.train.batch_size)
    total = round(args.epochs * steps_per_epoch)
    every = max(1, steps_per_epoch // args.evals_per_epoch)
    results: dict = {"steps_per_epoch": steps_per_epoch, "batch_size": cfg.train.batch_size,
                     "threads": args.threads, "model": cfg.model.model_dump(mode="json"), "runs": {}}
    for name in args.runs:
        rcfg = load_config(args.params, [*base, *RUNS[name], f"train.steps={total}"])
        trainer = Trainer(rcfg, train["A"], train["B"], out / "runs" / name.split()[0] / name.replace(" ", "_"))
        params = sum(p.numel() for p in trainer.model.parameters())
        curve, train_s = [], 0.0
        trainer.model.train()
        while trainer.step < total:
            s0 = time.perf_counter()
            for _ in range(min(every, total - trainer.step)):
                trainer._step(trainer._batch("A"), trainer._batch("B"))
            train_s += time.perf_counter() - s0
            trainer.model.eval()
            fig = evaluate(trainer.model.generators(), judges, held)
            trainer.model.train()
            curve.append({"epoch": round(trainer.step / steps_per_epoch, 2), "train_seconds": round(train_s, 1), **fig})
            print(name, json.dumps(curve[-1]), flush=True)
        epochs = total / steps_per_epoch
        results["runs"][name] = {"parameters": params, "seconds_per_epoch": round(train_s / epochs, 1), "curve": curve}
        (out / args.results).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: {"params": v["parameters"], "s/epoch": v["seconds_per_epoch"]}
                      for k, v in results["runs"].items()}, indent=1))


if __name__ == "__main__":
    main()
