"""Training and inference throughput, side by side in one process: a reference-style step against
our fast path, on the same networks and losses.

- reference-style: eager, float32, batch 1, contiguous (NCHW) tensors, for-loop Adam: what the
  reference ``train.py`` runs by default (data loading excluded for both).
- fast path: ``--batch`` images per domain, ``--precision`` autocast, channels_last, fused (CUDA) or
  foreach (CPU) Adam, optionally ``torch.compile``, data already on the device.

The two are timed in alternating windows (``--rounds`` x ``--steps``) so that a machine whose load
drifts (a shared CPU) biases neither. Also: generator-only inference images/s (G_AB forward),
eager fp32 batch 1 against the fast settings; and, with ``--variant``, the single-translator
variant's fast-path step next to CycleGAN's.

    # CPU, small (what benchmarks/README.md records for the 2-core machine)
    PYTHONPATH=. python benchmarks/train_throughput.py --size 32 --ngf 16 --ndf 16 --blocks 6 --channels 1 \\
        --batch 8 --precision fp32 --variant
    # GPU, the issue's setting: 256x256 RGB, ResNet-9, PatchGAN, default losses
    PYTHONPATH=. python benchmarks/train_throughput.py --size 256 --ngf 64 --ndf 64 --blocks 9 --channels 3 \\
        --batch 64 --precision bf16 --compile
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from cyclegan_core.config import config_from_dict
from cyclegan_core.runtime import RuntimeConfig
from cyclegan_core.train import Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_trainer(args, workdir: str, **train) -> Trainer:
    """A trainer of random images; ``train`` holds train keys and runtime keys (precision, adam_impl...)."""
    raw = {
        "data": {"image_size": args.size, "mode": "RGB" if args.channels == 3 else "L"},
        "model": {"ngf": args.ngf, "ndf": args.ndf, "n_blocks": args.blocks, "n_layers_d": 3,
                  "arch": train.pop("arch", "cyclegan"),
                  "translator_directions": train.pop("directions", "both")},
        "train": {"steps": 10**9, **{k: v for k, v in train.items() if k not in RuntimeConfig.model_fields}},
        "runtime": {"device": args.device, "log_every": 10**6, "checkpoint_every": 10**6,
                    **{k: v for k, v in train.items() if k in RuntimeConfig.model_fields}},
    }
    cfg = config_from_dict(raw)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (args.images, args.size, args.size, args.channels), dtype=np.uint8) for _ in "AB"]
    return Trainer(cfg, imgs[0], imgs[1], workdir)


def fast_settings(args) -> dict:
    return {"batch_size": args.batch, "precision": args.precision, "channels_last": args.channels_last == "on",
            "adam_impl": "auto", "compile": args.compile}


def time_training(trainers: dict[str, Trainer], args) -> dict[str, float]:
    """images/s (per domain: one image of A and one of B is one image) for each, alternating windows."""
    device = next(iter(trainers.values())).device
    for t in trainers.values():  # warm-up: allocator, compilation, autotuning
        for _ in range(args.warmup):
            t._step(t._batch("A"), t._batch("B"))
    seconds = dict.fromkeys(trainers, 0.0)
    images = dict.fromkeys(trainers, 0)
    for _ in range(args.rounds):
        for name, t in trainers.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                t._step(t._batch("A"), t._batch("B"))
            _sync(device)
            seconds[name] += time.perf_counter() - t0
            images[name] += args.steps * t.tcfg.batch_size
    return {name: images[name] / seconds[name] for name in trainers}


@torch.inference_mode()
def time_inference(ref: Trainer, fast: Trainer, args) -> dict[str, float]:
    """G_AB forward images/s: eager fp32 batch 1 against the fast path's batch, dtype and layout."""
    device = ref.device
    g_ref = ref.model.G_AB.eval()
    g_fast = fast.model.G_AB.eval()
    if args.compile:
        g_fast = torch.compile(g_fast, mode="max-autotune-no-cudagraphs" if device.type == "cuda" else "default")
    batch = args.infer_batch or args.batch
    x1 = torch.rand(1, args.channels, args.size, args.size, device=device) * 2 - 1
    xb = torch.rand(batch, args.channels, args.size, args.size, device=device) * 2 - 1
    if args.channels_last == "on":
        xb = xb.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)

    def fast_fwd():
        if dtype is None:
            return g_fast(xb)
        with torch.autocast(device.type, dtype=dtype):
            return g_fast(xb)

    runs = {"reference-style": (lambda: g_ref(x1), 1), "fast": (fast_fwd, batch)}
    for fn, _ in runs.values():
        for _ in range(args.warmup):
            fn()
    secs = dict.fromkeys(runs, 0.0)
    n = dict.fromkeys(runs, 0)
    for _ in range(args.rounds):
        for name, (fn, size) in runs.items():
            reps = max(1, args.steps * 4 // size) if name == "reference-style" else max(1, args.steps)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(device)
            secs[name] += time.perf_counter() - t0
            n[name] += reps * size
    return {name: n[name] / secs[name] for name in runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=1, choices=(1, 3))
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--ndf", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--infer-batch", type=int, default=0, help="inference batch (default: --batch)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                    help="auto: on for CUDA (tensor cores want NHWC), off on CPU")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--images", type=int, default=256, help="random training images per domain")
    ap.add_argument("--steps", type=int, default=5, help="steps per timing window")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--variant", action="store_true", help="also time the single-translator variant's fast step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.channels_last == "auto":
        cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        args.channels_last = "on" if cuda else "off"

    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            "reference-style (eager fp32, batch 1)": make_trainer(args, f"{tmp}/ref", batch_size=1, precision="fp32",
                                                                  adam_impl="for_loop"),
            "fast path": make_trainer(args, f"{tmp}/fast", **fast_settings(args)),
        }
        if args.variant:
            trainers["variant both, fast path"] = make_trainer(args, f"{tmp}/vb", arch="translator",
                                                               **fast_settings(args))
            trainers["variant AtoB, fast path"] = make_trainer(args, f"{tmp}/va", arch="translator",
                                                               directions="AtoB", **fast_settings(args))
        device = trainers["fast path"].device
        cpu = f"CPU, {torch.get_num_threads()} threads"
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
        print(f"device: {name}; {args.size}x{args.size}x{args.channels}, ngf {args.ngf}, ndf {args.ndf}, "
              f"{args.blocks} blocks; fast path: batch {args.batch}, {args.precision}, "
              f"channels_last {args.channels_last}, {'compiled' if args.compile else 'eager'}", flush=True)
        train = time_training(trainers, args)
        ref = train["reference-style (eager fp32, batch 1)"]
        for k, v in train.items():
            print(f"train  {k:40s} {v:9.1f} images/s   x{v / ref:.2f}", flush=True)
        infer = time_inference(trainers["reference-style (eager fp32, batch 1)"], trainers["fast path"], args)
        for k, v in infer.items():
            print(f"G_AB   {k:40s} {v:9.1f} images/s   x{v / infer['reference-style']:.2f}", flush=True)
        print(json.dumps({"device": name, "args": vars(args), "train_images_per_s": train,
                          "inference_images_per_s": infer}))


if __name__ == "__main__":
    main()
