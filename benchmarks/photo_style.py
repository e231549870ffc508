"""Style-only unpaired photo task with content ground truth, and training recipes side by side on it.

    PYTHONPATH=. python benchmarks/photo_style.py [--steps 1500] [--recipe NAME ...] [--out /tmp/photo]

(``--recipe`` defaults to the five recipes of the README's table; ``RECIPES`` below has them all.)

Data: 32x32 RGB crops (random 40-72 px squares, downscaled, random horizontal flips) of the photos
that ship inside installed packages (scikit-learn's china and flower, matplotlib's grace_hopper).
Domain A is plain crops; domain B is :func:`film_style` (a warm, partly desaturating 3x3 colour
matrix, then a gamma, an S-curve and faded blacks/whites: invertible, nothing clips) applied to
*other* crops, drawn at other positions, so the two training sets are unpaired. Test crops come
from the right quarter of each photo and training crops from the rest, so held-out content is
unseen. For every test crop its other-domain truth is kept (``truth.npz``, keyed by file name):
for a test A crop x, truth_B = film_style(x); for a test B crop y = film_style(x'), truth_A = x'.

Each recipe (a list of ``--set``-style overrides on ``params.yaml``, RGB 32x32, seed 0) is run
through the pipeline's own steps (ingest, train, generate of the test split) in a fresh work folder
``<out>/runs/<recipe>``. Per direction, on the held-out crops:

- content SSIM of the translation G(x) against its truth (``cyclegan_core.validate.ssim``, uint8);
- the do-nothing baseline: SSIM of the untranslated x against the same truth;
- PSNR of G(x) and of x against the truth (does the colour move the right way?);
- plain cycle PSNR (x against G_back(G(x)), as the pipeline's gate measures it);
- seconds per training step (training wall seconds / steps, this machine);
- content SSIM on the flatter and the more textured half of the crops, and the generator's brightness
  response (mean output change per unit of a uniform input offset; the true map's is printed beside it).

Prints a table (three significant digits), merges full-precision figures into
``benchmarks/results/photo_style.json`` (one entry per recipe, so recipes can be run separately)
and draws ``benchmarks/results/photo_style.png``: per recipe, rows source | translation | truth
for a few test crops of each direction.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from cyclegan_core.config import load_config
from cyclegan_core.generate import read_generated
from cyclegan_core.images import decode_png, encode_png, to_tensor, to_uint8
from cyclegan_core.ingest import read_manifest
from cyclegan_core.metrics import cycle_errors, ssim
from cyclegan_core.models import load_generators
from cyclegan_core.pipeline import step_generate, step_ingest, step_train

ROOT = Path(__file__).resolve().parent.parent

# Recipes: overrides applied on top of params.yaml and the task's settings (RGB, 32x32, paths).
RECIPES: dict[str, list[str]] = {
    "defaults": [],  # model.upsample=transpose, train.lambda_identity=0.5, ngf/ndf 16
    "resize_conv": ["model.upsample=resize_conv"],
    "identity_2": ["train.lambda_identity=2.0"],
    "resize_conv+identity_2": ["model.upsample=resize_conv", "train.lambda_identity=2.0"],
    "ngf32": ["model.ngf=32", "model.ndf=32"],
    "resize_conv+ngf32": ["model.upsample=resize_conv", "model.ngf=32", "model.ndf=32"],
    "norm_batch": ["model.norm=batch"],
    "norm_none": ["model.norm=none"],
    "resize_conv+norm_none": ["model.upsample=resize_conv", "model.norm=none"],
    "resize_conv+norm_batch": ["model.upsample=resize_conv", "model.norm=batch"],
    "resize_conv+norm_none+identity_2": ["model.upsample=resize_conv", "model.norm=none", "train.lambda_identity=2.0"],
    # One default for digits and photos (benchmarks/README.md): the discriminators keep the instance norm,
    # or the generators keep it and their last conv also sees the input image.
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
    # params.yaml's norm-free generators with the input skip: the last conv sees the input image, so fine texture
    # need not pass the 8x8 bottleneck (the earlier input_skip rows kept the instance norm).
    "norm_none+input_skip": ["model.norm=none", "model.input_skip=true"],
    "norm_none+input_skip+norm_d_batch": ["model.norm=none", "model.input_skip=true", "model.norm_d=batch"],
    "norm_none+input_skip+init_xavier_1": ["model.norm=none", "model.input_skip=true", "model.init_type=xavier",
                                           "model.init_gain=1.0"],
    # The skip's input part starts at the identity: a fresh generator emits its input, not a faint image.
    "norm_none+input_skip_identity": ["model.norm=none", "model.input_skip=true", "model.skip_init=identity"],
}

# The recipes measured in benchmarks/README.md (the default of --recipe).
MEASURED = ["defaults", "resize_conv+identity_2", "norm_none", "resize_conv+norm_none",
            "resize_conv+norm_none+identity_2"]

SIZE = 32
CROP_SIDES = (40, 72)  # inclusive range of the square region side before downscaling to SIZE
TEST_STRIP = 0.25  # right share of each photo that test crops come from (training crops: the rest)

# The style: 55% of a sepia matrix whose rows are scaled to sum to 1.0 / 0.90 / 0.72 (warm white,
# non-negative, row sums <= 1: nothing clips), 45% identity; then a tone curve on every channel.
_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
_SEPIA = _SEPIA / _SEPIA.sum(axis=1, keepdims=True) * np.array([[1.0], [0.90], [0.72]])
STYLE_MIX = 0.55
STYLE_MATRIX = (1 - STYLE_MIX) * np.eye(3) + STYLE_MIX * _SEPIA
GAMMA, CONTRAST, BLACK, WHITE = 1.15, 0.6, 0.05, 0.96


def tone_curve(t: np.ndarray) -> np.ndarray:
    """Strictly increasing on [0, 1]: gamma, a blend of linear and smoothstep (contrast), faded ends."""
    u = np.clip(t, 0.0, 1.0) ** GAMMA
    u = (1 - CONTRAST) * u + CONTRAST * u * u * (3 - 2 * u)
    return BLACK + (WHITE - BLACK) * u


def film_style(x: np.ndarray) -> np.ndarray:
    """The domain-B look of uint8 (..., 3) RGB images, as uint8."""
    v = (x.astype(np.float64) / 255.0) @ STYLE_MATRIX.T
    return np.round(tone_curve(v) * 255.0).clip(0, 255).astype(np.uint8)


def film_unstyle(y: np.ndarray) -> np.ndarray:
    """The inverse of :func:`film_style` (up to uint8 rounding): the tone curve by table, then the matrix."""
    grid = np.linspace(0.0, 1.0, 4097)
    v = np.interp(y.astype(np.float64) / 255.0, tone_curve(grid), grid)
    return np.round(v @ np.linalg.inv(STYLE_MATRIX).T * 255.0).clip(0, 255).astype(np.uint8)


def shipped_photos() -> dict[str, np.ndarray]:
    """The RGB photos installed with scikit-learn and matplotlib (nothing is downloaded)."""
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sk = load_sample_images()
    photos = {Path(f).stem: img for f, img in zip(sk.filenames, sk.images, strict=True)}
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        photos["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    return photos


def random_crops(photos: dict[str, np.ndarray], n: int, split: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` SIZE x SIZE crops: a random photo, side and position (inside the split's part), random h-flip."""
    from PIL import Image

    names = sorted(photos)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        img = photos[names[rng.integers(len(names))]]
        h, w = img.shape[:2]
        side = int(rng.integers(CROP_SIDES[0], CROP_SIDES[1] + 1))
        x_lo, x_hi = (math.ceil(w * (1 - TEST_STRIP)), w - side) if split == "test" \
            else (0, int(w * (1 - TEST_STRIP)) - side)
        x0, y0 = int(rng.integers(x_lo, x_hi + 1)), int(rng.integers(0, h - side + 1))
        crop = Image.fromarray(img[y0:y0 + side, x0:x0 + side]).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        arr = np.asarray(crop)
        out[i] = arr[:, ::-1] if rng.random() < 0.5 else arr
    return out


def make_data(folder: Path, n_train: int, n_test: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Write ``folder/{A,B}/{train,test}/*.png`` and ``folder/truth.npz``; return the test truths by file name."""
    photos = shipped_photos()
    rng = np.random.default_rng(seed)
    truths: dict[str, dict[str, np.ndarray]] = {"A": {}, "B": {}}
    for split, n in (("train", n_train), ("test", n_test)):
        plain_a = random_crops(photos, n, split, rng)
        plain_b = random_crops(photos, n, split, rng)  # other positions: unpaired with A
        styled_b = film_style(plain_b)
        for dom, imgs, truth in (("A", plain_a, film_style(plain_a)), ("B", styled_b, plain_b)):
            d = folder / dom / split
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(imgs):
                name = f"{dom.lower()}_{split}_{i:05d}.png"
                (d / name).write_bytes(encode_png(img))
                if split == "test":
                    truths[dom][name] = truth[i]
    np.savez_compressed(folder / "truth.npz", **{f"{d}/{k}": v for d in truths for k, v in truths[d].items()})
    return truths


def read_truths(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    with np.load(folder / "truth.npz") as z:
        out: dict[str, dict[str, np.ndarray]] = {"A": {}, "B": {}}
        for key in z.files:
            dom, name = key.split("/", 1)
            out[dom][name] = z[key]
    return out


def run_recipe(name: str, overrides: list[str], data: Path, work: Path, steps: int, threads: int,
               params: str) -> tuple[dict, Path]:
    """Ingest, train and generate (test split) in a fresh ``work`` folder; return timings and the config."""
    if work.exists():
        shutil.rmtree(work)
    paths = [f"paths.{k}={work / k}" for k in ("ingest", "models", "judges", "generated", "validated", "published",
                                                "reports")]
    base = [f"data.domain_a={data / 'A'}", f"data.domain_b={data / 'B'}", "data.mode=RGB", f"data.image_size={SIZE}",
            *paths, f"train.steps={steps}", f"runtime.num_threads={threads}", "train.seed=0", "generate.splits=[test]"]
    cfg = load_config(params, [*base, *overrides])
    t0 = time.perf_counter()
    step_ingest(cfg)
    t1 = time.perf_counter()
    trained = step_train(cfg, retrain=True)
    t2 = time.perf_counter()
    step_generate(cfg)
    t3 = time.perf_counter()
    info = {"overrides": overrides, "steps": trained.steps, "train_seconds": trained.seconds,
            "seconds_per_step": trained.seconds / max(trained.steps, 1), "ingest_seconds": t1 - t0,
            "train_wall_seconds": t2 - t1, "generate_seconds": t3 - t2, "model_fingerprint": trained.fingerprint,
            "model": cfg.model.model_dump(mode="json"),
            "train": {k: v for k, v in cfg.train.model_dump(mode="json").items()
                      if k in ("steps", "batch_size", "lr", "lambda_a", "lambda_b", "lambda_identity", "gan_mode",
                               "seed")} | {"num_threads": cfg.runtime.num_threads}}
    print(f"{name}: trained {trained.steps} steps in {trained.seconds:.0f} s", flush=True)
    return info, Path(cfg.paths.generated)


def texture(images: np.ndarray) -> np.ndarray:
    """Per image: the spatial standard deviation of each channel, averaged over channels (0 = flat)."""
    return images.astype(np.float64).std(axis=(1, 2)).mean(axis=-1)


@torch.inference_mode()
def brightness_response(model_dir: Path, direction: str, src: np.ndarray) -> tuple[float, float]:
    """Mean output change per unit of a uniform input offset: G(0.9x + 0.1) against G(0.9x - 0.1), in [-1, 1]
    units, for the trained generator and for the true style map of this direction. A generator whose first
    layers are a convolution and an instance norm cannot see a constant offset: it answers 0."""
    gens, _ = load_generators(model_dir)
    gen = gens["G_AB" if direction == "AtoB" else "G_BA"]
    x = to_tensor(src)
    hi, lo = 0.9 * x + 0.1, 0.9 * x - 0.1
    model = float((gen(hi) - gen(lo)).mean()) / 0.2
    true_map = film_style if direction == "AtoB" else film_unstyle
    truth = [to_tensor(true_map(to_uint8(t))).double() for t in (hi, lo)]
    return model, float((truth[0] - truth[1]).mean()) / 0.2


def measure(cfg_generated: Path, ingest: Path, truths: dict[str, dict[str, np.ndarray]],
            model_dir: Path | None = None) -> tuple[dict, dict]:
    """Per-direction figures on the held-out crops, and the arrays for the picture grid."""
    figures, arrays = {}, {}
    for direction, dom in (("AtoB", "A"), ("BtoA", "B")):
        man = read_manifest(ingest / dom / "manifest.parquet", ("test",))
        relpath = dict(zip(man.column("sample_id").to_pylist(), man.column("relpath").to_pylist(), strict=True))
        gen = read_generated(cfg_generated, direction,
                             ["sample_id", "source_id", "split", "image", "source_image", "reconstruction"])
        rows = [r for r in gen.to_pylist() if r["split"] == "test"]
        # A generated row's sample_id is the hash of the *translation*; source_id is the manifest's sample_id.
        names = [Path(relpath[r["source_id"]]).name for r in rows]
        order = np.argsort(names)
        names = [names[i] for i in order]
        src = np.stack([decode_png(rows[i]["source_image"]) for i in order])
        fake = np.stack([decode_png(rows[i]["image"]) for i in order])
        rec = np.stack([decode_png(rows[i]["reconstruction"]) for i in order])
        truth = np.stack([truths[dom][n] for n in names])
        if len(names) != len(truths[dom]):
            raise RuntimeError(f"{direction}: {len(names)} translated test crops, {len(truths[dom])} truths")
        s_fake, s_none = ssim(fake, truth), ssim(src, truth)
        spread = np.argsort(texture(truth))
        flat, busy = spread[:len(spread) // 2], spread[len(spread) // 2:]
        _, p_fake = cycle_errors(truth, fake)
        _, p_none = cycle_errors(truth, src)
        _, p_cycle = cycle_errors(src, rec)
        figures[direction] = {
            "n": len(names),
            "content_ssim": float(s_fake.mean()), "baseline_ssim": float(s_none.mean()),
            "content_ssim_median": float(np.median(s_fake)), "content_ssim_p10": float(np.percentile(s_fake, 10)),
            # Flat crops (sky, dark backgrounds) against textured ones: halves by the truth's texture().
            "content_ssim_flat_half": float(s_fake[flat].mean()), "baseline_ssim_flat_half": float(s_none[flat].mean()),
            "content_ssim_textured_half": float(s_fake[busy].mean()),
            "baseline_ssim_textured_half": float(s_none[busy].mean()),
            "content_psnr": float(p_fake.mean()), "baseline_psnr": float(p_none.mean()),
            "cycle_psnr": float(p_cycle.mean()),
        }
        if model_dir is not None:
            r_model, r_true = brightness_response(model_dir, direction, src)
            figures[direction] |= {"brightness_response": r_model, "brightness_response_true_map": r_true}
        arrays[direction] = (src, fake, truth)
    return figures, arrays


def sig3(x: float) -> str:
    return f"{x:#.3g}".rstrip(".")


def table(runs: dict) -> str:
    head = ("| recipe | steps | A->B content SSIM (do-nothing) | B->A content SSIM (do-nothing) | "
            "A->B / B->A PSNR to truth (do-nothing) | A->B / B->A cycle PSNR | s/step |")
    lines = [head, "|---|---:|---|---|---|---|---:|"]
    for name, r in runs.items():
        a, b = r["directions"]["AtoB"], r["directions"]["BtoA"]
        lines.append(
            f"| {name} | {r['steps']} | {sig3(a['content_ssim'])} ({sig3(a['baseline_ssim'])}) | "
            f"{sig3(b['content_ssim'])} ({sig3(b['baseline_ssim'])}) | "
            f"{sig3(a['content_psnr'])} / {sig3(b['content_psnr'])} "
            f"({sig3(a['baseline_psnr'])} / {sig3(b['baseline_psnr'])}) | "
            f"{sig3(a['cycle_psnr'])} / {sig3(b['cycle_psnr'])} | {sig3(r['seconds_per_step'])} |")
    return "\n".join(lines)


def halves_table(runs: dict) -> str:
    """Content SSIM (do-nothing) on the flatter and the more textured half of the held-out crops."""
    lines = ["| recipe | A->B flat half | A->B textured half | B->A flat half | B->A textured half | "
             "A->B / B->A brightness response (true map) |", "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        a, b = r["directions"]["AtoB"], r["directions"]["BtoA"]
        cells = [f"{sig3(d[f'content_ssim_{h}_half'])} ({sig3(d[f'baseline_ssim_{h}_half'])})"
                 for d in (a, b) for h in ("flat", "textured")]
        if "brightness_response" in a:
            cells.append(f"{a['brightness_response']:.2f} / {b['brightness_response']:.2f} "
                         f"({a['brightness_response_true_map']:.2f} / {b['brightness_response_true_map']:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def picture_grid(arrays: dict[str, dict], path: Path, per_direction: int = 6, scale: int = 3) -> None:
    """Per recipe: rows source | translation | truth; A->B crops on the left, B->A on the right."""
    from PIL import Image, ImageDraw

    cell, gap, label_w, head_h = SIZE * scale, 4, 150, 18
    block_h = head_h + 3 * (cell + gap)
    width = label_w + 2 * per_direction * (cell + gap) + 3 * gap * 4
    canvas = Image.new("RGB", (width, block_h * len(arrays) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for b, (name, dirs) in enumerate(arrays.items()):
        top = b * block_h
        draw.multiline_text((4, top + 3), name.replace("+", "+\n"), fill="black")
        for r, what in enumerate(("source", "translation", "truth")):
            draw.text((4, top + head_h + r * (cell + gap) + cell // 2 - 6), what, fill="black")
        for k, direction in enumerate(("AtoB", "BtoA")):
            src, fake, truth = dirs[direction]
            # Crops with structure (the more textured half of the sources), evenly spaced.
            busy = np.argsort(texture(src))[len(src) // 2:]
            pick = busy[np.linspace(0, len(busy) - 1, per_direction).round().astype(int)]
            left = label_w + k * (per_direction * (cell + gap) + 12 * gap)
            draw.text((left, top + 3), direction.replace("to", " -> "), fill="black")
            for c, i in enumerate(pick):
                for r, img in enumerate((src[i], fake[i], truth[i])):
                    tile = Image.fromarray(img).resize((cell, cell), Image.Resampling.NEAREST)
                    canvas.paste(tile, (left + c * (cell + gap), top + head_h + r * (cell + gap)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--recipe", nargs="+", default=MEASURED, choices=list(RECIPES))
    ap.add_argument("--out", default=None, help="data and work folders (default: a temporary folder, removed)")
    ap.add_argument("--train", type=int, default=1000, help="training crops per domain")
    ap.add_argument("--test", type=int, default=200, help="held-out crops per domain")
    ap.add_argument("--seed", type=int, default=0, help="seed of the crops")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (on the shared 2-core VM, 2 threads ran 10x slower than 1 under load)")
    ap.add_argument("--measure-only", action="store_true",
                    help="score the translations already in --out/runs/<recipe> again, without training")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "photo_style.json"))
    ap.add_argument("--grid", default=str(ROOT / "benchmarks" / "results" / "photo_style.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="photo-style-")
    out = Path(args.out or tmp.name)
    data = out / "data"
    key = {"train": args.train, "test": args.test, "seed": args.seed, "size": SIZE}
    stamp = data / "made.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == key):
        if data.exists():
            shutil.rmtree(data)
        make_data(data, args.train, args.test, args.seed)
        stamp.write_text(json.dumps(key))
    truths = read_truths(data)

    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if results.get("data") != key:
        results = {}  # figures on other data are not comparable
    results["data"] = key
    results["style"] = {"matrix": STYLE_MATRIX.tolist(), "gamma": GAMMA, "contrast": CONTRAST, "black": BLACK,
                        "white": WHITE}
    runs = results.setdefault("runs", {})
    arrays: dict[str, dict] = {}
    try:
        for name in args.recipe:
            work = out / "runs" / name.replace("+", "_")
            if args.measure_only:
                info = {k: v for k, v in runs[name].items() if k not in ("directions", "measured")}
                generated = work / "generated"
            else:
                info, generated = run_recipe(name, RECIPES[name], data, work, args.steps, args.threads, args.params)
            model_dir = work / "models" / info["model_fingerprint"]
            figures, arrays[name] = measure(generated, work / "ingest", truths, model_dir)
            runs[name] = {**info, "directions": figures,
                          "measured": runs[name]["measured"] if args.measure_only
                          else datetime.now(UTC).isoformat(timespec="seconds")}
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=2))
            print(table({name: runs[name]}).splitlines()[-1], flush=True)
        print(table({n: runs[n] for n in args.recipe}))
        print(halves_table({n: runs[n] for n in args.recipe}))
        # The picture shows every recipe of the results whose translations are still in --out.
        for name in runs:
            work = out / "runs" / name.replace("+", "_")
            if name not in arrays and (work / "generated").exists():
                arrays[name] = measure(work / "generated", work / "ingest", truths)[1]
        picture_grid({n: arrays[n] for n in RECIPES if n in arrays}, Path(args.grid))
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"wrote {results_path} and {args.grid}")


if __name__ == "__main__":
    main()
