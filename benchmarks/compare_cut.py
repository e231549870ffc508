"""CycleGAN, CUT and FastCUT (``model.arch``) on the demo's networks: seconds per step side by side,
peak memory, and, with ``--budget``, the held-out figures each reaches in the same wall-clock time.

    # CPU, the demo's sizes (32x32 gray, ngf/ndf 16, ResNet-6, batch 8): speed and memory only
    PYTHONPATH=. python benchmarks/compare_cut.py --threads 1
    # ... and quality on the bundled digits at the same training budget (seconds per arch)
    PYTHONPATH=. python benchmarks/compare_cut.py --threads 1 --budget 240 --out /tmp/cmp-cut
    # GPU, the paper's setting: 256x256 RGB, ngf/ndf 64, ResNet-9, batch 1 (the reference's CUT batch)
    PYTHONPATH=. python benchmarks/compare_cut.py --device cuda --batch 1 --set data.image_size=256 \\
        data.mode=RGB model.ngf=64 model.ndf=64 model.n_blocks=9 --steps 20 --rounds 5

Speed: every run's Trainer is built in one process on the same random images, sizes and batch, and
the runs' steps are timed in alternating windows (``--rounds`` x ``--steps``, after ``--warmup``), so
a shared machine's drifting load biases none. Rows: CycleGAN's step (both generators, both
discriminators); a CUT / FastCUT run's step (its two one-sided models, A->B then B->A, what
``model.arch: cut`` trains); and one one-sided model's step (A->B alone: what the paper times
against CycleGAN). Memory: each run again in a child process of its own, a few steps: peak RSS
(``VmHWM``) and its rise over the RSS before the first step; on a GPU ``max_memory_allocated``.

Quality (``--budget``): each arch trains on the bundled digits' train split for the same wall seconds
(in alternating ``--slice``-second turns; steps counted; the LR held unless ``--budget-steps``), then
the held-out digits are translated both ways and scored with the pipeline's judges
(:mod:`cyclegan_core.judges`): label accuracy of G(x) by the target domain's label judge,
mean cycle PSNR of x vs G_BA(G_AB(x)) (for CUT: the B->A model brings A->B's output back), FID and
KID on the domain judge's penultimate features against the held-out real targets, and realism (the
conformal rank of the domain judge's margin among the held-out real targets' margins; 0.5 = like
a real target). Writes ``results.json`` under ``--out``, prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cyclegan_core.config import Config, load_config
from cyclegan_core.images import to_tensor, to_uint8
from cyclegan_core.train import Trainer

ARCHS = ("cyclegan", "cut", "fastcut")
ROWS = {"cyclegan": ("cyclegan", False), "cut run (A->B + B->A)": ("cut", False),
        "fastcut run (A->B + B->A)": ("fastcut", False), "cut, one model (A->B)": ("cut", True),
        "fastcut, one model (A->B)": ("fastcut", True)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(args, arch: str, workdir: Path, **train) -> Config:
    sets = [f"model.arch={arch}", f"train.batch_size={args.batch}", f"runtime.device={args.device}",
            f"runtime.precision={args.precision}", "runtime.log_every=1000000", "runtime.checkpoint_every=1000000",
            f"runtime.num_threads={args.threads}", *(f"paths.{k}={workdir / k}" for k in ("ingest", "models")),
            *[f"train.{k}={v}" for k, v in train.items()], *args.set]
    return load_config(args.params, sets)


def _trainer(args, arch: str, workdir: Path) -> Trainer:
    cfg = _config(args, arch, workdir, steps=10**9)
    rng = np.random.default_rng(0)
    side, c = cfg.data.image_size, cfg.data.channels
    imgs = [rng.integers(0, 256, (args.images, side, side, c), dtype=np.uint8) for _ in "AB"]
    return Trainer(cfg, imgs[0], imgs[1], workdir / arch)


def _stepper(t: Trainer, one_model: bool):
    if not one_model:
        return lambda: t._step(t._batch("A"), t._batch("B"))

    def one() -> None:  # A->B alone, with the run's LR and scaler bookkeeping
        assert t.cut is not None
        t.cut.model_step("AB", t.model.AB, t._batch("A"), t._batch("B"))
        t.scaler.update()
    return one


def time_steps(args, workdir: Path) -> dict[str, float]:
    trainers = {arch: _trainer(args, arch, workdir) for arch in ARCHS}
    steps = {name: _stepper(trainers[arch], one) for name, (arch, one) in ROWS.items()}
    device = trainers["cyclegan"].device
    for t in trainers.values():
        t.model.train()
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    seconds = dict.fromkeys(steps, 0.0)
    for _ in range(args.rounds):
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            _sync(device)
            seconds[name] += time.perf_counter() - t0
    return {name: s / (args.rounds * args.steps) for name, s in seconds.items()}


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child_memory(args, row: str) -> dict:
    arch, one = ROWS[row]
    with tempfile.TemporaryDirectory() as tmp:
        t = _trainer(args, arch, Path(tmp))
        step = _stepper(t, one)
        before = _rss_kb("VmRSS")
        if t.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(t.device)
        for _ in range(args.memory_steps):
            step()
        out = {"peak_rss_mb": _rss_kb("VmHWM") / 1024, "rss_before_steps_mb": before / 1024}
        if t.device.type == "cuda":
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(t.device) / 2**20
        model, exported = (t.model.AB, t.model.AB.G) if one else (t.model, t.model.exported())
        out["parameters"] = sum(p.numel() for p in model.parameters())
        out["exported_parameters"] = sum(p.numel() for p in exported.parameters())
    return out


def memory(args) -> dict[str, dict]:
    out = {}
    for row in ROWS:
        cmd = [sys.executable, __file__, "--child", row, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[row] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@torch.inference_mode()
def score(gens, judges, held: dict, batch: int = 256) -> dict:
    from cyclegan_core.judges import classify
    from cyclegan_core.metrics import conformal_realism, cycle_errors, frechet_distance, kernel_inception_distance
    from cyclegan_core.metrics import margins as judge_margins

    out = {}
    for direction, (src, tgt, fwd, bwd) in {"AtoB": ("A", "B", "G_AB", "G_BA"),
                                            "BtoA": ("B", "A", "G_BA", "G_AB")}.items():
        images, labels = held[src]
        fakes, recs = [], []
        for s in range(0, len(images), batch):
            f = to_uint8(gens[fwd](to_tensor(images[s:s + batch])))
            fakes.append(f)
            recs.append(to_uint8(gens[bwd](to_tensor(f))))
        fake, rec = np.concatenate(fakes), np.concatenate(recs)
        t_idx = 0 if tgt == "A" else 1
        logits, feats = classify(judges.domain, fake)
        real_logits, real_feats = classify(judges.domain, held[tgt][0])
        kid = kernel_inception_distance(feats, real_feats)
        pred = classify(judges.label[tgt], fake)[0].argmax(1)
        out[direction] = {
            "label_accuracy": float((pred == labels).mean()),
            "cycle_psnr": float(cycle_errors(images, rec)[1].mean()),
            "fid_domain_features": frechet_distance(feats, real_feats),
            "kid_domain_features": kid[0] if kid else None,
            "realism": float(conformal_realism(judge_margins(logits, t_idx), judge_margins(real_logits, t_idx)).mean()),
        }
    return out


def quality(args, out: Path) -> dict:
    from cyclegan_core.ingest import manifest_images, read_manifest
    from cyclegan_core.judges import load_or_train_judges
    from cyclegan_core.pipeline import manifest_path, step_default_data, step_ingest

    base = [f"data.domain_a={out}/raw/A", f"data.domain_b={out}/raw/B",
            *(f"paths.{k}={out / k}" for k in ("judges", "generated", "validated", "published", "reports"))]
    args.set = [*base, *args.set]
    cfg = _config(args, "cyclegan", out)
    step_default_data(cfg)
    step_ingest(cfg)
    train = {d: manifest_images(read_manifest(manifest_path(cfg, d), ("train",))) for d in ("A", "B")}
    held = {}
    for d in ("A", "B"):
        t = read_manifest(manifest_path(cfg, d), ("test",))
        held[d] = (manifest_images(t), np.asarray(t.column("label").to_pylist()))
    judges, _ = load_or_train_judges(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"))
    trainers = {}
    for arch in ARCHS:
        # --budget-steps: the LR schedule's length per arch (held, then decayed); default: held throughout.
        rcfg = _config(args, arch, out, steps=args.budget_steps.get(arch, 10**6))
        trainers[arch] = Trainer(rcfg, train["A"], train["B"], out / "runs" / arch)
        trainers[arch].model.train()
    # Alternating slices of --slice seconds until each has trained --budget seconds: a drifting load
    # on a shared machine then costs every arch alike.
    spent = dict.fromkeys(ARCHS, 0.0)
    while any(spent[a] < args.budget for a in ARCHS):
        for arch, t in trainers.items():
            t0 = time.perf_counter()
            while (time.perf_counter() - t0 < args.slice and spent[arch] + time.perf_counter() - t0 < args.budget
                   and t.step < t.tcfg.steps):
                t._step(t._batch("A"), t._batch("B"))
            spent[arch] += time.perf_counter() - t0
            if t.step >= t.tcfg.steps:
                spent[arch] = max(spent[arch], args.budget)
    results = {}
    for arch, t in trainers.items():
        t.model.eval()
        results[arch] = {"steps": t.step, "seconds": spent[arch], **score(t.model.generators(), judges, held)}
        print(arch, json.dumps(results[arch]), flush=True)
    return results


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", nargs="*", default=[], help="further overrides (sizes), as cycleaug --set")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=64, help="random images per domain for the speed rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="steps per timing window")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--memory-steps", type=int, default=3)
    ap.add_argument("--budget", type=float, default=0.0, help="wall seconds of training per arch for quality; 0: skip")
    ap.add_argument("--slice", type=float, default=20.0, help="seconds per arch per turn of the budget")
    ap.add_argument("--budget-steps", type=json.loads, default={},
                    help='JSON {arch: steps}: the LR schedule length per arch (default: never decays)')
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="/tmp/cycleaug-compare-cut")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(args, args.child)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        results["seconds_per_step"] = time_steps(args, Path(tmp))
    results["memory"] = memory(args)
    if args.budget > 0:
        results["quality"] = quality(args, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    base = results["seconds_per_step"]["cyclegan"]
    print("| run | parameters (train / exported) | s/step | vs CycleGAN | peak RSS MB (rise over setup) |")
    print("|---|---:|---:|---:|---:|")
    for row, sec in results["seconds_per_step"].items():
        m = results["memory"][row]
        mem = f"{m['peak_rss_mb']:.0f} ({m['peak_rss_mb'] - m['rss_before_steps_mb']:.0f})"
        if "cuda_max_allocated_mb" in m:
            mem += f"; CUDA {m['cuda_max_allocated_mb']:.0f}"
        params = f"{m['parameters']:,} / {m['exported_parameters']:,}"
        print(f"| {row} | {params} | {_fmt(sec)} | {sec / base:.2f} | {mem} |")
    for arch, q in results.get("quality", {}).items():
        for d in ("AtoB", "BtoA"):
            f = q[d]
            print(f"| {arch} | {d} | {q['steps']} steps | label {_fmt(f['label_accuracy'])} | cycle PSNR "
                  f"{_fmt(f['cycle_psnr'])} | FID {_fmt(f['fid_domain_features'])} | KID "
                  f"{_fmt(f['kid_domain_features'])} | realism {_fmt(f['realism'])} |")


if __name__ == "__main__":
    main()
