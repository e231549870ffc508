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
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import torch

from cyclegan_core.config import load_config
from cyclegan_core.generate import generate
from cyclegan_core.ingest import manifest_images, read_manifest
from cyclegan_core.pipeline import current_fingerprint, manifest_path, step_default_data, step_ingest
from cyclegan_core.train import Trainer
from cyclegan_core.validate import load_or_train_judges, validate

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/cycleaug-gen-bench")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    paths = [f"paths.{k}={out / k}" for k in ("ingest", "models", "judges", "generated", "validated", "published",
                                               "reports")]
    cfg = load_config(args.params, [f"data.domain_a={out}/raw/A", f"data.domain_b={out}/raw/B", *paths, *args.set,
                                    f"train.steps={max(1, args.train_steps)}"])
    step_default_data(cfg)
    step_ingest(cfg)
    fp = current_fingerprint(cfg)
    model_dir = Path(cfg.paths.models) / fp
    images = {d: manifest_images(read_manifest(manifest_path(cfg, d), ("train",))) for d in ("A", "B")}
    trainer = Trainer(cfg, images["A"], images["B"], model_dir)
    if args.train_steps:
        trainer.fit()
    trainer.export(fp, 0.0)
    judges_t0 = time.perf_counter()
    load_or_train_judges(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"))
    print(f"judges ready in {time.perf_counter() - judges_t0:.0f} s (not timed below)", flush=True)

    def run_generate():
        return generate(manifest_path(cfg, "A"), manifest_path(cfg, "B"), model_dir, cfg.paths.generated, cfg.generate,
                        audio=cfg.data.audio_settings)

    run_generate()  # warm-up: first-call allocations, file cache
    t0 = time.perf_counter()
    result = run_generate()
    gen_s = time.perf_counter() - t0
    rows = sum(result.rows.values())
    t0 = time.perf_counter()
    validate(cfg, manifest_path(cfg, "A"), manifest_path(cfg, "B"), cfg.paths.generated, cfg.paths.validated)
    val_s = time.perf_counter() - t0

    prof = cProfile.Profile()
    prof.enable()
    run_generate()
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
    print(f"{rows} translations ({what}, arch {cfg.model.arch}, batch {cfg.generate.batch_size}, "
          f"{torch.get_num_threads()} threads)")
    print(f"generate (read, decode, translate, reconstruct, encode, write shards): {rows / gen_s:8.1f} {unit}")
    print(f"validate (score every translation, gate):                            {rows / val_s:8.1f} {unit}")
    print(f"end to end (generate + validate):                                    "
          f"{rows / (gen_s + val_s):8.1f} {unit}")
    print(f"where generate's time goes (cProfile run, {total:.2f} s under the profiler):")
    for stage, sec in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:48s} {sec:7.2f} s  {100 * sec / total:5.1f}%")
    print(json.dumps({"rows": rows, "generate_images_per_s": rows / gen_s, "validate_images_per_s": rows / val_s,
                      "stages_s": stages, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
