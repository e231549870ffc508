"""CUT / FastCUT (cyclegan_core.cut): agreement with the reference code, whose figures
benchmarks/cut_reference_check.py pinned in tests/data/cut_reference.json (weights copied from ours,
the same inputs and patch positions), and the pieces' own properties."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from cyclegan_core.config import ModelConfig
from cyclegan_core.cut import (
    CUT,
    FASTCUT,
    NCE_LAYERS,
    CUTModel,
    CutSettings,
    PatchNCELoss,
    PatchSampleMLP,
    cut_losses,
    discriminator_loss,
    encoder_features,
)
from cyclegan_core.networks import ResnetGenerator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("cut_reference_check", ROOT / "benchmarks" / "cut_reference_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((ROOT / "tests" / "data" / "cut_reference.json").read_text())


@pytest.fixture(scope="module")
def ours(check) -> dict:
    torch.set_num_threads(1)
    return check.our_figures()


def test_the_pinned_figures_are_for_this_check(reference, check):
    assert reference["reference"] == {"repository": "taesungp/contrastive-unpaired-translation",
                                      "commit": check.COMMIT, "flags": check.REFERENCE_FLAGS}
    assert reference["size"] == check.SIZE and reference["seeds"] == check.SEEDS
    assert tuple(reference["nce_layers"]) == NCE_LAYERS == (0, 4, 8, 12, 16)
    assert set(reference["cases"]) == set(check.CASES)


def test_parameter_counts_are_the_references(reference, ours):
    assert ours["counts"]["check"] == reference["counts"]["check"]
    # The reference's own size (ngf/ndf 64, RGB, resnet_9blocks), with or without its blur-pool layers.
    assert ours["counts"]["reference_default"] == reference["counts"]["reference_default"] == \
        reference["counts"]["reference_default_antialiased"] == {"G": 11_378_179, "D": 2_764_737, "F": 560_384}
    # F: per layer Linear(C, 256) + Linear(256, 256), the layers having 3, 128, 256, 256, 256 channels.
    assert sum(c * 256 + 256 + 256 * 256 + 256 for c in (3, 128, 256, 256, 256)) == 560_384


def test_encoder_features_are_the_references(reference, ours):
    assert set(ours["features"]) == set(reference["features"])
    for layer, want in reference["features"].items():
        got = ours["features"][layer]
        assert got["shape"] == want["shape"], layer
        for k in ("sum", "sum_sq"):
            assert math.isclose(got[k], want[k], rel_tol=1e-5, abs_tol=1e-4), (layer, k, got[k], want[k])


def test_nce_and_the_g_and_d_losses_are_the_references(reference, ours):
    assert math.isclose(ours["nce_fixed"], reference["nce_fixed"], rel_tol=1e-5, abs_tol=1e-5)
    for name, want in reference["cases"].items():
        got = ours["cases"][name]
        assert got["flip"] == want["flip"]
        assert set(got["losses"]) == set(want["losses"]), name
        for k, v in want["losses"].items():
            assert math.isclose(got["losses"][k], v, rel_tol=1e-5, abs_tol=1e-5), (name, k, got["losses"][k], v)
    # The figures tell the cases apart (a check that flips nothing, or weighs NCE wrongly, fails).
    losses = {n: c["losses"] for n, c in reference["cases"].items()}
    assert abs(losses["fastcut"]["NCE"] - losses["fastcut_unflipped"]["NCE"]) > 0.1
    cut = losses["cut"]
    assert cut["G"] == pytest.approx(cut["G_GAN"] + (cut["NCE"] + cut["NCE_Y"]) / 2, abs=2e-6)


def test_patchnce_closed_form_and_keys_get_no_gradient():
    # Orthonormal patches, key = query: each row's positive logit is 1/T, its P-1 negatives 0, its own
    # position among the negatives masked to -10/T.
    t, p = 0.5, 4  # a temperature where float32 still resolves the loss
    q = torch.eye(8)[:p].expand(2, p, 8).clone().requires_grad_(True)
    k = q.detach().clone().requires_grad_(True)
    loss = PatchNCELoss(t)(q, k)
    want = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (p - 1) + math.exp(-10 / t)))
    assert loss.shape == (2 * p,) and torch.allclose(loss, torch.full((2 * p,), want), rtol=1e-5)
    loss.sum().backward()
    assert k.grad is None and q.grad is not None


def test_patchnce_negatives_come_from_the_same_image_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 16, 8, generator=g), torch.randn(2, 16, 8, generator=g)
    crit = PatchNCELoss(0.07)
    before = crit(q, k)
    k2 = k.clone()
    k2[1] = q[0]  # image 1's keys change (to image 0's queries): image 0's rows must not move
    after = crit(q, k2)
    assert torch.equal(before[:16], after[:16]) and not torch.allclose(before[16:], after[16:])


def test_encoder_features_are_the_sequential_prefix_and_stop_at_the_last_layer():
    torch.manual_seed(0)
    for skip in (False, True):
        g = ResnetGenerator(1, 1, 4, "instance", n_blocks=9, input_skip=skip)
        x = torch.randn(2, 1, 16, 16)
        with torch.no_grad():
            feats = encoder_features(g, x, NCE_LAYERS)
            for layer, f in zip(NCE_LAYERS, feats, strict=True):
                if layer == 8:  # the in-place ReLU after this norm rewrites it, in the reference too
                    assert torch.equal(f, g.model[:10](x)) and not torch.equal(f, g.model[:9](x))
                else:
                    assert torch.equal(f, g.model[: layer + 1](x))
    assert [f.shape[1] for f in feats] == [1, 8, 16, 16, 16]
    with pytest.raises(ValueError, match="modules"):
        encoder_features(ResnetGenerator(1, 1, 4, n_blocks=1), x, (0, 40))


def test_the_head_is_built_lazily_samples_the_same_patches_and_draws_from_the_given_generator():
    feats = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 20, 20)]
    head = PatchSampleMLP(16, "xavier", 1.0)  # outputs far above the normalisation's 1e-7
    assert not head.built and sum(p.numel() for p in head.parameters()) == 0
    keys, ids = head(feats, 32, generator=torch.Generator().manual_seed(1))
    assert head.built and sum(p.numel() for p in head.parameters()) == (3 + 5) * 16 + 2 * (16 + 16 * 16 + 16)
    assert [k.shape for k in keys] == [(2, 32, 16), (2, 32, 16)]  # 36 positions of 6x6 hold 32
    assert all(torch.allclose(k.norm(dim=-1), torch.ones(2, 32)) for k in keys)
    assert all(len(set(i.tolist())) == len(i) for i in ids)
    capped, _ = head(feats, 64, generator=torch.Generator().manual_seed(1))
    assert capped[0].shape == (2, 36, 16)  # a 6x6 map has 36 positions
    # Queries at the given positions: features equal to the keys' give the keys.
    queries, same = head(feats, 32, ids)
    assert all(torch.equal(a, b) for a, b in zip(queries, keys, strict=True)) and same == ids
    # The draw is the generator's: the same seed, the same positions; the global RNG is untouched.
    state = torch.get_rng_state()
    _, again = head(feats, 32, generator=torch.Generator().manual_seed(1))
    _, other = head(feats, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(ids, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(ids, other, strict=True))
    with pytest.raises(ValueError, match="patch_ids or a generator"):
        head(feats, 32)
    with pytest.raises(ValueError, match="feature maps"):
        head(feats[:1], 32, ids[:1])


def test_presets_are_the_papers():
    assert (CUT.lambda_nce, CUT.nce_idt, CUT.flip_equivariance) == (1.0, True, False)
    assert (FASTCUT.lambda_nce, FASTCUT.nce_idt, FASTCUT.flip_equivariance) == (10.0, False, True)
    for s in (CUT, FASTCUT):
        assert (s.nce_t, s.num_patches, s.head_channels, s.lambda_gan) == (0.07, 256, 256, 1.0)
        assert s.nce_layers == NCE_LAYERS
        assert (s.lr, s.beta1, s.beta2, s.gan_mode) == (2e-4, 0.5, 0.999, "lsgan")
    assert (CUT.n_epochs, CUT.n_epochs_decay, FASTCUT.n_epochs, FASTCUT.n_epochs_decay) == (200, 200, 150, 50)
    for bad in ({"nce_layers": (4, 0)}, {"nce_layers": ()}, {"lambda_nce": -1.0}, {"nce_t": 0.0},
                {"gan_mode": "hinge"}):
        with pytest.raises(ValueError):
            CutSettings(**bad)
    with pytest.raises(ValueError, match="ResNet"):
        CUTModel(ModelConfig(generator="unet_128"), 1)


def _tiny(settings: CutSettings) -> tuple[CUTModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = CUTModel(ModelConfig(ngf=4, ndf=4, n_blocks=9, norm="instance"), 1, settings)
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(2, 1, 32, 32, generator=g) * 2 - 1, torch.rand(2, 1, 32, 32, generator=g) * 2 - 1
    model.build_head(a)
    return model, a, b


def test_losses_draw_only_from_the_given_generator_and_the_flip_is_g_of_the_flipped_batch():
    model, a, b = _tiny(FASTCUT)
    state = torch.get_rng_state()
    with torch.no_grad():
        runs = [cut_losses(model, a, b, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0]) and set(runs[0]) == {
        "D", "D_fake", "D_real", "G", "G_GAN", "NCE"}
    assert not torch.equal(runs[0]["NCE"], runs[2]["NCE"])
    with torch.no_grad():
        fake, idt = model.translate(a, b, flip=True)
        assert idt is None and torch.equal(fake, model.G(torch.flip(a, [3])))
    cut, a, b = _tiny(CUT)
    with torch.no_grad():
        fake, idt = cut.translate(a, b)
        assert idt is not None and torch.allclose(idt, cut.G(b), atol=1e-6)


def test_the_discriminator_loss_sends_no_gradient_to_the_generator_and_the_generator_loss_reaches_g_and_f():
    model, a, b = _tiny(CUT)
    fake, _ = model.translate(a, b)
    discriminator_loss(model, fake, b)["D"].backward()
    assert all(p.grad is None for p in model.G.parameters())
    assert all(p.grad is not None for p in model.D.parameters())
    model.zero_grad(set_to_none=True)
    cut_losses(model, a, b, torch.Generator().manual_seed(0))["G"].backward()
    assert all(p.grad is not None for p in (*model.G.parameters(), *model.F.parameters()))
