"""The real generation path end to end, and where its time goes.

Runs ``cyclegan_core.generate.generate`` (read the ingested source PNGs, decode, translate,
reconstruct, encode PNG, write Parquet shards) and ``cyclegan_core.validate.validate`` (score:
cycle errors, realism, labels, Fréchet distance; judges trained beforehand and not timed) on the
bundled digits, both directions, all splits. Prints images/s for each and, from a cProfile run of
``generate``, the seconds spent in each stage.

    PYTHONPATH=. python benchmarks/generate_throughput.py --out /tmp/gen-bench
    PYTHONPATH=. python benchmarks/generate_throughput.py --params params.voices.yaml --train-steps 800

With an audio config (``data.kind: audio``, e.g. ``params.voices.yaml`` and its speech preset) the
rows are clips: generation also inverts every translation and cycle to a waveform (Griffin-Lim or the
source's phase) and writes WAV, and the figures are clips/s.

The model is the configured architecture (``params.yaml`` model section, or ``--set``), exported
untrained unless ``--train-steps`` is given: speed does not depend on the weights, except that PNG
encoding of a trained model's cleaner images is a little faster.

``--baseline`` also times, in alternating rounds on the same device and data, the reference
test script's way (batch 1, eager fp32, every PNG decoded and encoded in the main thread) and prints
our path's ratio to it. The ``generate.*`` and ``runtime.*`` settings (``--set runtime.generate.precision=bf16``
...) choose ours. ``--photos SIZE`` replaces the digits by random SIZE x SIZE RGB crops of scikit-learn's two
sample photos (A: china, B: flower), the issue's 256x256 setting on a GPU:

    PYTHONPATH=. python benchmarks/generate_throughput.py --photos 256 --photos-count 1024 --baseline \
        --no-validate --set model.ngf=64 --set model.n_blocks=9 --set generate.batch_size=64 \
        --set runtime.generate.precision=bf16 --set runtime.generate.channels_last=true \
        --set runtime.generate.compile=true --set generate.png_compress_level=1
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cyclegan_core.config import load_config
from cyclegan_core.generate import generate
from cyclegan_core.images import encode_png
from cyclegan_core.ingest import manifest_images, read_manifest
from cyclegan_core.judges import load_or_train_judges
from cyclegan_core.pipeline import current_fingerprint, manifest_path, step_default_data, step_ingest
from cyclegan_core.train import Trainer
from cyclegan_core.validate import validate

# Stage -> functions whose cumulative time is that stage (qualified as pstats names them).
STAGES = {
    "read manifest + source rows (pyarrow)": [("ingest.py", "read_manifest"), ("generate.py", "read_generated")],
    "decode source PNG": [("images.py", "decode_png")],
    "generator forward (translate + reconstruct)": [("module.py", "_call_impl")],
    "to uint8": [("images.py", "to_uint8")],
    "encode PNG": [("images.py", "encode_png")],
    "spectrogram -> waveform + WAV (audio)": [("generate.py", "invert_audio")],
    "sample ids (sha256)": [("storage.py", "sha256_bytes")],
    "write Parquet shards": [("core.py", "write_table")],
}


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    out = dict.fromkeys(STAGES, 0.0)
    for (file, _line, func), (_cc, _nc, _tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, keys in STAGES.items():
            for kfile, kfunc in keys:
                if func == kfunc and file.endswith(kfile):
                    # Count only outermost calls: skip time already inside another call of the same function.
                    inner = sum(v[3] for (cf, _cl, cfn), v in callers.items() if cfn == func and cf == file)
                    out[stage] += ct - inner
    return out


BASELINE = {"batch_size": 1, "workers": 0, "png_compress_level": 6}  # and eager fp32 (BASELINE_RUNTIME)
BASELINE_RUNTIME = {"precision": "fp32", "channels_last": False, "compile": False}


def write_photo_collections(root: Path, size: int, count: int) -> None:
    """``count`` random ``size`` x ``size`` crops per domain: A from one sample photo, B from the other."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg, flower.jpg (427 x 640)
    rng = np.random.default_rng(0)
    for domain, img in zip("AB", photos, strict=True):
        folder = root / domain
        if folder.exists() and len(list(folder.glob("*.png"))) == count:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for k in range(count):  # split by content hash at ingest (data.test_fraction)
            y, x = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
            png = encode_png(np.ascontiguousarray(img[y:y + size, x:x + size]))
            (folder / f"{domain}{k:05d}.png").write_bytes(png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/cycleaug-gen-bench")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--photos", type=int, default=0, metavar="SIZE",
                    help="RGB crops of this side instead of the bundled digits")
    ap.add_argument("--photos-count", type=int, default=1024, help="crops per domain with --photos")
    ap.add_argument("--baseline", action="store_true",
                    help="also time the reference-style path (batch 1, eager fp32, no worker threads)")
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds of each path, alternating (medians)")
    ap.add_argument("--no-validate", action="store_true", help="skip validate (and training its judges)")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    paths = [f"paths.{k}={out / k}" for k in ("ingest", "models", "judges", "generated", "validated", "published",
                                               "reports")]
    photos = [f"data.image_size={args.photos}", "data.mode=RGB"] if args.photos else []
    cfg = load_config(args.params, [f"data.domain_a={out}/raw/A", f"data.domain_b={out}/raw/B", *paths, *photos,
                                    *args.set, f"train.steps={max(1, args.train_steps)}"])
    if args.photos:
        write_photo_collections(out / "raw", args.photos, args.photos_count)
    else:
        step_default_data(cfg)
    step_ingest(cfg)
    fp = current_fingerprint(cfg)
    model_dir = Path(cfg.paths.models) / fp
    images = {d: manifest_images(read_manifest(manifest_path(cfg, d), ("train",))) for d in ("A", "B")}
    trainer = Trainer(cfg, images["A"], images["B"], model_dir)
    if args.train_steps:
        trainer.fit()
    trainer.export(fp, 0.0)
    del trainer, images
    if not args.no_validate:
        judges_t0 = time.perf_counter()
        load_or_train_judges(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"))
        print(f"judges ready in {time.perf_counter() - judges_t0:.0f} s (not timed below)", flush=True)

    rt = cfg.runtime.step("generate")
    paths_to_time = {"ours": (cfg.generate, rt)}
    if args.baseline:
        paths_to_time["reference-style"] = (cfg.generate.model_copy(update=BASELINE),
                                            rt.model_copy(update=BASELINE_RUNTIME))

    def run_generate(gcfg=cfg.generate, runtime=rt):
        # From scratch every time: rows already generated by this model would be reused, not translated.
        shutil.rmtree(cfg.paths.generated, ignore_errors=True)
        return generate(manifest_path(cfg, "A"), manifest_path(cfg, "B"), model_dir, cfg.paths.generated, gcfg,
                        runtime, audio=cfg.data.audio_settings)

    times: dict[str, list[float]] = {name: [] for name in paths_to_time}
    rows = 0
    for gcfg, runtime in paths_to_time.values():
        run_generate(gcfg, runtime)  # warm-up: first-call allocations, file cache, compilation
    for _ in range(args.rounds):
        for name, (gcfg, runtime) in paths_to_time.items():
            t0 = time.perf_counter()
            result = run_generate(gcfg, runtime)
            times[name].append(time.perf_counter() - t0)
            rows = sum(result.rows.values())
    gen_s = {name: statistics.median(v) for name, v in times.items()}
    run_generate()  # validate and the profile below read our path's rows
    val_s = None
    if not args.no_validate:
        t0 = time.perf_counter()
        validate(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"), cfg.paths.generated, cfg.paths.validated)
        val_s = time.perf_counter() - t0

    stages: dict[str, float] = {}
    total = 0.0
    if not args.no_profile:
        prof = cProfile.Profile()
        prof.enable()
        run_generate(cfg.generate.model_copy(update={"workers": 0}))  # PNG work in this thread, where cProfile sees it
        prof.disable()
        stats = pstats.Stats(prof)
        total = stats.total_tt  # type: ignore[attr-defined]
        stages = stage_seconds(stats)
        stages["other (Python row building, loops)"] = max(0.0, total - sum(stages.values()))

    audio = cfg.data.audio_settings
    h, w = cfg.data.shape
    unit = "clips/s" if audio else "images/s"
    what = (f"{audio.clip_samples / audio.sample_rate:.2f} s clips as {h}x{w} {audio.representation} spectrograms, "
            f"inversion {audio.inversion}" if audio else f"{h}x{w} {cfg.data.mode}")
    g = cfg.generate
    device = torch.cuda.get_device_name() if rt.device != "cpu" and torch.cuda.is_available() else "CPU"
    print(f"{rows} translations ({what}, arch {cfg.model.arch}, ngf {cfg.model.ngf}, {cfg.model.n_blocks} blocks; "
          f"{device}, {torch.get_num_threads()} torch threads; ours: batch {g.batch_size}, {rt.precision}, "
          f"channels_last {rt.channels_last}, compile {rt.compile}, workers {g.workers}, "
          f"PNG level {g.png_compress_level}; "
          f"{args.rounds} round(s), medians)")
    print(f"generate (read, decode, translate, reconstruct, encode, write shards): {rows / gen_s['ours']:8.1f} {unit}")
    if args.baseline:
        ref = gen_s["reference-style"]
        print(f"generate, reference-style (batch 1, eager fp32, one thread):        {rows / ref:8.1f} {unit}")
        print(f"ours / reference-style:                                              {ref / gen_s['ours']:8.2f}x")
    if val_s is not None:
        print(f"validate (score every translation, gate):                            {rows / val_s:8.1f} {unit}")
        print(f"end to end (generate + validate):                                    "
              f"{rows / (gen_s['ours'] + val_s):8.1f} {unit}")
    if stages:
        print(f"where generate's time goes (cProfile run of ours with workers 0, {total:.2f} s under the profiler):")
        for stage, sec in sorted(stages.items(), key=lambda kv: -kv[1]):
            print(f"  {stage:48s} {sec:7.2f} s  {100 * sec / total:5.1f}%")
    print(json.dumps({"rows": rows, "generate_per_s": {k: rows / v for k, v in gen_s.items()},
                      "validate_per_s": rows / val_s if val_s else None, "stages_s": stages,
                      "threads": torch.get_num_threads(), "device": device}))


if __name__ == "__main__":
    main()
