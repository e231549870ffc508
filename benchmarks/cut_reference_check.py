"""Our CUT / FastCUT (:mod:`cyclegan_core.cut`) against the reference code, weights copied across.

The reference is taesungp/contrastive-unpaired-translation at :data:`COMMIT` (BSD licence), from a
local git mirror (no network): ``git archive`` into a temporary folder, then imported from there.
Its generator and discriminator are built by its own option parser with ``--no_antialias
--no_antialias_up``, where they are CycleGAN's (its default blur-pool down/upsampling has the same
parameters but other activations). For CUT, FastCUT flipped and FastCUT unflipped, at :data:`SIZE`:
our model is built from :data:`SEEDS`, its weights loaded into the reference's G, D and F (after
F's lazy creation), both fed the same seeded images and the same patch positions, and compared:
parameter counts, encoder features at layers 0,4,8,12,16, PatchNCE on fixed features, and the full
G and D losses (``compute_G_loss`` / ``compute_D_loss`` after one ``forward``). The reference's
figures go to ``tests/data/cut_reference.json``, which ``tests/test_cut.py`` checks ours against
without the reference. Also prints CUT's and CycleGAN's parameter counts at the demo size.

    PYTHONPATH=. python benchmarks/cut_reference_check.py            # compare, write the JSON
    PYTHONPATH=. python benchmarks/cut_reference_check.py --no-write # compare only

Exits 1 when a figure differs by more than :data:`TOLERANCE` (relative, or absolute below 1).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cyclegan_core.config import ModelConfig, load_config
from cyclegan_core.cut import (
    NCE_LAYERS,
    PRESETS,
    CUTModel,
    PatchNCELoss,
    cut_losses,
    draw_patch_ids,
)
from cyclegan_core.models import CycleGAN
from cyclegan_core.storage import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "taesungp/contrastive-unpaired-translation"
COMMIT = "b3ac297708dfb6f7589d04662277e53c0d579c27"
MIRROR = Path("/work/.mirror/taesungp+contrastive-unpaired-translation/repo")
JSON_PATH = ROOT / "tests" / "data" / "cut_reference.json"
SIZE = {"channels": 3, "image": 32, "batch": 2, "ngf": 8, "ndf": 8, "n_blocks": 9}
SEEDS = {"weights": 0, "inputs": 1, "patches": 2, "nce_features": 3}
# case: (the reference's --CUT_mode, whether this step's batch is flipped)
CASES = {"cut": ("CUT", False), "fastcut": ("FastCUT", True), "fastcut_unflipped": ("FastCUT", False)}
REFERENCE_FLAGS = ["--no_antialias", "--no_antialias_up", "--netG", "resnet_9blocks", "--netD", "basic",
                   "--normG", "instance", "--normD", "instance", "--init_type", "xavier", "--init_gain", "1.0"]
PACKAGES = ("models", "options", "util", "data")  # what it imports (the mirror may lack its large images)
# Weights are copied across, so the init only has to make the figures telling: with the reference's
# gain 0.02 the discriminator's outputs are ~0 and its losses the constants 0 and 1.
INIT_GAIN = 1.0
TOLERANCE = 1e-6  # the largest difference allowed between the reference and ours, relative to max(1, |value|)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def check_config(ngf: int = SIZE["ngf"], ndf: int = SIZE["ndf"], n_blocks: int = SIZE["n_blocks"]) -> ModelConfig:
    """Our networks as the reference's flags above build them."""
    return ModelConfig(generator="resnet", discriminator="patchgan", ngf=ngf, ndf=ndf, n_blocks=n_blocks,
                       n_layers_d=3, norm="instance", norm_d=None, upsample="transpose", init_type="xavier",
                       init_gain=INIT_GAIN, use_dropout=False)


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SEEDS["inputs"])
    shape = (SIZE["batch"], SIZE["channels"], SIZE["image"], SIZE["image"])
    return torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1


def our_model(case: str) -> CUTModel:
    """Our model for ``case``, weights from :data:`SEEDS` (the head built on the inputs' features)."""
    torch.manual_seed(SEEDS["weights"])
    model = CUTModel(check_config(), SIZE["channels"], PRESETS[CASES[case][0].lower()])
    model.build_head(inputs()[0])
    return model


def nce_features() -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed unit-length queries and keys, (batch, 64 patches, 256 channels)."""
    g = torch.Generator().manual_seed(SEEDS["nce_features"])
    q, k = (torch.randn(SIZE["batch"], 64, 256, generator=g) for _ in range(2))
    k = q + 3.0 * k  # keys nearer their queries than the negatives are: a loss between 0 and log(65)
    return q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)


def feature_stats(feats: list[torch.Tensor]) -> dict[str, dict]:
    return {str(layer): {"shape": list(f.shape), "sum": float(f.double().sum()),
                         "sum_sq": float(f.double().pow(2).sum())} for layer, f in zip(NCE_LAYERS, feats, strict=True)}


@torch.no_grad()
def our_figures() -> dict[str, Any]:
    """What ours computes for every figure the JSON holds (the test compares these with it)."""
    real_a, real_b = inputs()
    model = our_model("cut")
    out: dict[str, Any] = {
        "counts": {"check": {"G": count(model.G), "D": count(model.D), "F": count(model.F)}},
        "features": feature_stats(model.encode(real_a)),
        "nce_fixed": float(PatchNCELoss(0.07)(*nce_features()).mean()),
        "cases": {},
    }
    for name, (_, flip) in CASES.items():
        model = our_model(name)
        losses = cut_losses(model, real_a, real_b, torch.Generator().manual_seed(SEEDS["patches"]), flip=flip)
        out["cases"][name] = {"flip": flip, "losses": {k: float(v) for k, v in sorted(losses.items())}}
    torch.manual_seed(SEEDS["weights"])
    full = CUTModel(check_config(64, 64, 9), 3)
    full.build_head(torch.zeros(1, 3, 32, 32))
    out["counts"]["reference_default"] = {"G": count(full.G), "D": count(full.D), "F": count(full.F)}
    return out


def demo_counts() -> dict[str, int]:
    """CUT against CycleGAN at the demo's networks (params.yaml: ngf 16, 6 blocks, gray 32x32)."""
    cfg = load_config(ROOT / "params.yaml")
    channels = 3 if cfg.data.mode == "RGB" else 1
    cyc = CycleGAN(cfg.model, channels)
    cut = CUTModel(cfg.model, channels)
    cut.build_head(torch.zeros(1, channels, cfg.data.image_size, cfg.data.image_size))
    return {"cyclegan_generators": count(cyc.G_AB) + count(cyc.G_BA), "cyclegan_discriminators":
            count(cyc.D_A) + count(cyc.D_B), "cyclegan_total": count(cyc), "cut_G": count(cut.G),
            "cut_D": count(cut.D), "cut_F": count(cut.F), "cut_total": count(cut)}


# ---- the reference ---------------------------------------------------------------------------------

@contextlib.contextmanager
def reference_code(mirror: Path) -> Iterator[types.SimpleNamespace]:
    """The reference's ``options`` and ``models`` packages, imported from a temporary checkout of ``mirror``.

    Only ``torchvision`` is stubbed when missing: the reference imports it at module level for its
    datasets and image saving, none of which runs here.
    """
    head = subprocess.run(["git", "-C", str(mirror), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    if head != COMMIT:
        raise SystemExit(f"{mirror} is at {head}, this check is for {COMMIT}")
    names = ("models", "data", "util", "options", "torchvision")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in names}
    with tempfile.TemporaryDirectory(prefix="cut-reference-") as tmp:
        archive = subprocess.run(["git", "-C", str(mirror), "archive", COMMIT, *PACKAGES], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        for k in saved:
            del sys.modules[k]
        try:
            import torchvision  # noqa: F401
        except ImportError:
            stub = types.ModuleType("torchvision")
            stub.transforms = types.ModuleType("torchvision.transforms")  # type: ignore[attr-defined]
            sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stub, stub.transforms  # type: ignore[attr-defined]
        sys.path.insert(0, tmp)
        try:
            import models
            from options.train_options import TrainOptions

            yield types.SimpleNamespace(models=models, TrainOptions=TrainOptions, checkpoints=tmp)
        finally:
            sys.path.remove(tmp)
            for k in [k for k in sys.modules if k.split(".")[0] in names]:
                del sys.modules[k]
            sys.modules.update(saved)


def reference_model(ref: types.SimpleNamespace, mode: str, ngf: int, ndf: int, flags: list[str]) -> Any:
    """The reference's CUTModel for ``--CUT_mode mode``, on the CPU, from its own option parser."""
    argv = ["--CUT_mode", mode, "--gpu_ids", "-1", "--checkpoints_dir", ref.checkpoints, "--name", "check",
            "--ngf", str(ngf), "--ndf", str(ndf), "--input_nc", str(SIZE["channels"]), "--output_nc",
            str(SIZE["channels"]), "--batch_size", str(SIZE["batch"]), *flags]
    old = sys.argv
    sys.argv = ["train.py", *argv]  # its model option setter reads sys.argv, not the cmd_line it is given
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            opt = ref.TrainOptions(cmd_line=" ".join(argv)).parse()
            return ref.models.create_model(opt)
    finally:
        sys.argv = old


class GivenPatches:
    """Stands in for the reference's ``netF``: where it would draw patch positions, it takes the next given set."""

    def __init__(self, net_f: Any, patch_sets: list[list[torch.Tensor]]):
        self.net_f, self.patch_sets = net_f, list(patch_sets)

    def __call__(self, feats: list[torch.Tensor], num_patches: int, patch_ids: Any = None) -> Any:
        if patch_ids is None:
            patch_ids = [ids.numpy() for ids in self.patch_sets.pop(0)]
        else:
            patch_ids = [ids.cpu().numpy() for ids in patch_ids]
        return self.net_f(feats, num_patches, patch_ids)


def copy_into_reference(ours: CUTModel, ref_model: Any) -> None:
    ref_model.netG.load_state_dict(ours.G.state_dict())
    ref_model.netD.load_state_dict(ours.D.state_dict())
    head = {k.replace("mlps.", "mlp_", 1): v for k, v in ours.F.state_dict().items()}
    ref_model.netF.load_state_dict(head)


def reference_figures(mirror: Path) -> tuple[dict[str, Any], list[str]]:
    """The reference's figures for every case, and the differences from ours over :data:`TOLERANCE`."""
    real_a, real_b = inputs()
    data = {"A": real_a, "B": real_b, "A_paths": ["a"], "B_paths": ["b"]}
    ours = our_figures()
    problems: list[str] = []
    out: dict[str, Any] = {"counts": {}, "cases": {}}
    with reference_code(mirror) as ref, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (mode, flip) in CASES.items():
            model = our_model(name)
            theirs = reference_model(ref, mode, SIZE["ngf"], SIZE["ndf"], REFERENCE_FLAGS)
            theirs.data_dependent_initialize(data)  # builds its netF from the feature shapes
            copy_into_reference(model, theirs)
            if name == "cut":
                out["counts"]["check"] = {"G": count(theirs.netG), "D": count(theirs.netD), "F": count(theirs.netF)}
                with torch.no_grad():
                    feats = theirs.netG(real_a, list(NCE_LAYERS), encode_only=True)
                    mine = model.encode(real_a)
                    diff = max(float((a - b).abs().max()) for a, b in zip(feats, mine, strict=True))
                    print(f"encoder features, layers {NCE_LAYERS}: max |ref - ours| = {diff:.2e}")
                    if not close(diff, 0.0):
                        problems.append(f"features differ by {diff}")
                    out["features"] = feature_stats(feats)
                    q, k = nce_features()
                    crit = ref.models.patchnce.PatchNCELoss(theirs.opt)
                    out["nce_fixed"] = float(crit(q.flatten(0, 1), k.flatten(0, 1)).mean())
            # The patch positions ours draws, in its order: NCE(A, G(A)), then NCE(B, G(B)) for CUT.
            g = torch.Generator().manual_seed(SEEDS["patches"])
            with torch.no_grad():
                shapes = model.encode(real_a)
            sets = [draw_patch_ids(shapes, model.settings.num_patches, g)
                    for _ in range(2 if model.settings.nce_idt else 1)]
            theirs.netF = GivenPatches(theirs.netF, sets)
            theirs.set_input(data)
            seed = next(s for s in range(100) if (np.random.RandomState(s).random_sample() < 0.5) == flip)
            np.random.seed(seed)  # its forward's coin (FastCUT) then says ``flip``
            theirs.forward()
            assert not theirs.opt.flip_equivariance or theirs.flipped_for_equivariance == flip
            with torch.no_grad():
                theirs.compute_D_loss()
                theirs.compute_G_loss()
            losses = {"D": theirs.loss_D, "D_fake": theirs.loss_D_fake, "D_real": theirs.loss_D_real,
                      "G": theirs.loss_G, "G_GAN": theirs.loss_G_GAN, "NCE": theirs.loss_NCE}
            if theirs.opt.nce_idt:
                losses["NCE_Y"] = theirs.loss_NCE_Y
            out["cases"][name] = {"flip": flip, "losses": {k: float(v) for k, v in sorted(losses.items())}}
        # The reference's own default networks (ngf/ndf 64, RGB, resnet_9blocks), with and without blur-pool.
        for key, flags in (("reference_default", ["--no_antialias", "--no_antialias_up"]),
                           ("reference_default_antialiased", [])):
            theirs = reference_model(ref, "CUT", 64, 64, flags)
            x = torch.zeros(1, 3, 32, 32)
            with torch.no_grad():
                theirs.netF(theirs.netG(x, list(NCE_LAYERS), encode_only=True), 256, None)
            out["counts"][key] = {"G": count(theirs.netG), "D": count(theirs.netD), "F": count(theirs.netF)}
    for key, counts in out["counts"].items():
        mine = ours["counts"].get(key, ours["counts"]["reference_default"])
        print(f"parameters {key}: reference {counts}, ours {mine}")
        if counts != mine:
            problems.append(f"counts {key}: reference {counts}, ours {mine}")
    d = abs(out["nce_fixed"] - ours["nce_fixed"])
    print(f"PatchNCE on fixed features: reference {out['nce_fixed']:.6f}, |ref - ours| = {d:.2e}")
    if not close(out["nce_fixed"], ours["nce_fixed"]):
        problems.append(f"nce_fixed differs by {d}")
    for name, case in out["cases"].items():
        mine = ours["cases"][name]["losses"]
        if set(mine) != set(case["losses"]):
            problems.append(f"{name}: loss names {sorted(mine)} vs the reference's {sorted(case['losses'])}")
            continue
        diffs = {k: abs(v - mine[k]) for k, v in case["losses"].items()}
        print(f"{name}: " + ", ".join(f"{k} {v:.6f} (|d| {diffs[k]:.1e})" for k, v in case["losses"].items()))
        problems += [f"{name}.{k} differs by {v}" for k, v in diffs.items() if not close(case["losses"][k], mine[k])]
    return out, problems


def rounded(figures: dict[str, Any]) -> dict[str, Any]:
    """Losses to 1e-6; feature sums to 7 significant digits."""
    out = json.loads(json.dumps(figures))
    out["nce_fixed"] = round(out["nce_fixed"], 6)
    for case in out["cases"].values():
        case["losses"] = {k: round(v, 6) for k, v in case["losses"].items()}
    for f in out["features"].values():
        f["sum"], f["sum_sq"] = float(f"{f['sum']:.7g}"), float(f"{f['sum_sq']:.7g}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", type=Path, default=MIRROR, help="a git mirror of the reference")
    ap.add_argument("--no-write", action="store_true", help=f"compare only, do not write {JSON_PATH.name}")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("demo-size parameters (params.yaml model section):", json.dumps(demo_counts()))
    if not args.mirror.exists():
        print(f"no reference mirror at {args.mirror}: nothing to compare")
        return 0
    figures, problems = reference_figures(args.mirror)
    if not args.no_write:
        payload = {"reference": {"repository": REPOSITORY, "commit": COMMIT, "flags": REFERENCE_FLAGS},
                   "size": SIZE, "seeds": SEEDS, "nce_layers": list(NCE_LAYERS), **rounded(figures)}
        JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(JSON_PATH, payload)
        print(f"wrote {JSON_PATH.relative_to(ROOT)}")
    for p in problems:
        print("MISMATCH:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
