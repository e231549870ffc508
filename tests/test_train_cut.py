"""CUT / FastCUT in the trainer (cyclegan_core.train_cut) and downstream: the config, the step's
order (the reference's: D, then G and F against the stepped D), learning, export and the pipeline
with two one-sided models (exact resume is in test_train.test_resume_is_exact)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cyclegan_core import pipeline
from cyclegan_core.config import ConfigError, config_from_dict
from cyclegan_core.cut import CUTPair
from cyclegan_core.images import decode_png, to_tensor, to_uint8
from cyclegan_core.ingest import read_manifest
from cyclegan_core.models import load_generators
from cyclegan_core.publish import verify
from cyclegan_core.runtime import RuntimeConfig
from cyclegan_core.train import Trainer
from cyclegan_core.train_cut import LOSS_NAMES, OPTIMIZERS
from tests.conftest import tiny_settings


def _cfg(tmp_path, model=None, **train):
    raw = tiny_settings(tmp_path, tmp_path / "A", tmp_path / "B")
    runtime = {k: v for k, v in train.items() if k in RuntimeConfig.model_fields}
    raw["runtime"].update({"num_threads": 1, **runtime})
    raw["train"].update({k: v for k, v in train.items() if k not in runtime})
    raw["model"].update(model or {})
    return config_from_dict(raw)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)


@pytest.mark.parametrize("model,train,message", [
    ({"arch": "cut", "generator": "unet_128"}, {}, "must be 'resnet'"),
    ({"arch": "fastcut", "input_skip": True}, {}, "input_skip"),
    ({"arch": "cut"}, {"gan_mode": "wgangp"}, "no gradient"),
    ({"arch": "gan"}, {}, "arch"),
])
def test_the_config_refuses_what_cut_cannot_train(tmp_path, model, train, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, model, **train)


def test_a_cut_run_has_two_one_sided_models_and_an_optimizer_per_network(tmp_path):
    for arch, nce_idt, flip, lambda_nce in (("cut", True, False, 1.0), ("fastcut", False, True, 10.0)):
        t = Trainer(_cfg(tmp_path, {"arch": arch}, gan_mode="vanilla"), _images(4, 1), _images(4, 2), tmp_path / arch)
        assert isinstance(t.model, CUTPair) and t.loss_names == LOSS_NAMES
        s = t.model.settings
        assert (s.nce_idt, s.flip_equivariance, s.lambda_nce, s.gan_mode) == (nce_idt, flip, lambda_nce, "vanilla")
        assert set(t.opts) == {n for names in OPTIMIZERS.values() for n in names}
        for key, model in t.model.models().items():
            g, d, f = OPTIMIZERS[key]
            assert model.F.built  # built before its optimizer, as the reference's data-dependent init
            for name, net in ((g, model.G), (d, model.D), (f, model.F)):
                opt = t.opts[name]
                assert [p for grp in opt.param_groups for p in grp["params"]] == list(net.parameters())
                assert opt.param_groups[0]["lr"] == 2e-4 and opt.param_groups[0]["betas"] == (0.5, 0.999)


def test_the_step_steps_d_first_and_scores_g_against_the_stepped_d(tmp_path):
    t = Trainer(_cfg(tmp_path, {"arch": "cut"}), _images(4, 1), _images(4, 2), tmp_path / "run")
    a = torch.rand(2, 1, 16, 16) * 2 - 1
    b = torch.rand(2, 1, 16, 16) * 2 - 1
    before = copy.deepcopy(t.model.AB)
    out = t.cut.model_step("AB", t.model.AB, a, b)
    after = t.model.AB
    with torch.no_grad():
        fake = before.G(a)  # CUT: no flip; G saw (A, B) in one batch, instance norm per image
        d_old, d_new = before.D(fake), after.D(fake)
        want = after.gan_loss(d_new, True)
    assert torch.allclose(out["G_GAN"].detach(), want, atol=1e-6)
    assert not torch.allclose(before.gan_loss(d_old, True), want, atol=1e-6)  # D did change
    for net in ("G", "D", "F"):
        moved = [not torch.equal(p, q) for p, q in zip(getattr(before, net).parameters(),
                                                       getattr(after, net).parameters(), strict=True)]
        assert any(moved), net


def test_training_lowers_the_nce_loss(tmp_path):
    """On 4 fixed images per side, PatchNCE (G and F learning to keep patches apart) falls."""
    seen: list[dict[str, float]] = []
    cfg = _cfg(tmp_path, {"arch": "cut"}, steps=40, log_every=1, checkpoint_every=1000, lr=1e-3)
    t = Trainer(cfg, _images(4, 1), _images(4, 2), tmp_path / "run")
    t.fit(lambda step, total, losses: seen.append(dict(losses)))
    for name in ("NCE_AB", "NCE_BA", "NCE_Y_AB"):
        first = np.mean([v[name] for v in seen[:5]])
        last = np.mean([v[name] for v in seen[-5:]])
        assert last < 0.8 * first, (name, first, last)


def test_cut_through_the_pipeline_translates_back_with_the_b_to_a_model(tmp_path, collections):
    cfg = config_from_dict(tiny_settings(tmp_path / "work", *collections, model={"arch": "cut"}))
    pipeline.step_ingest(cfg)
    trained = pipeline.step_train(cfg)
    gens, meta = load_generators(trained.model_dir)
    assert meta["arch"] == "cut" and set(gens) == {"G_AB", "G_BA"}
    weights = json.loads((Path(trained.model_dir) / "model.json").read_text())
    assert weights["steps"] == cfg.train.steps

    generated = pipeline.step_generate(cfg)
    assert generated.rows == {"AtoB": 24, "BtoA": 24}
    sources = read_manifest(pipeline.manifest_path(cfg, "A"))
    by_id = dict(zip(sources.column("sample_id").to_pylist(), sources.column("image").to_pylist(), strict=True))
    part = next((Path(cfg.paths.generated) / "AtoB").glob("part-*.parquet"))
    rows = pq.read_table(part, columns=["source_id", "image", "reconstruction"]).to_pylist()
    x = to_tensor([decode_png(by_id[r["source_id"]]) for r in rows])
    with torch.inference_mode():
        fake = gens["G_AB"](x)
        rec = gens["G_BA"](fake)  # the way back: the B->A model, trained in the same run
    assert np.array_equal(np.stack([decode_png(r["image"]) for r in rows]), to_uint8(fake))
    assert np.array_equal(np.stack([decode_png(r["reconstruction"]) for r in rows]), to_uint8(rec))

    validated = pipeline.step_validate(cfg)
    fig = validated.figures["AtoB"]
    assert fig["held_out"] == 6 and fig["mean_cycle_psnr"] > 0 and fig["fid_domain_features"] is not None
    assert validated.passed  # the tiny config's gate: as for a CycleGAN (test_pipeline)
    published = pipeline.step_publish(cfg, flow_run_id="cut")
    assert published.rows == {"AtoB": 24, "BtoA": 24} and verify(cfg.paths.published) == []
    assert "- model_arch: `cut`" in (Path(cfg.paths.published) / "README.md").read_text()
    assert json.loads((Path(cfg.paths.reports) / "metrics.json").read_text())["model"]["arch"] == "cut"
    assert (Path(cfg.paths.reports) / "losses.png").exists()
    header = (Path(cfg.paths.reports) / "losses.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["step", "lr", *LOSS_NAMES]


@pytest.mark.parametrize("arch", ["cut", "fastcut"])
def test_label_aware_training_adds_the_semantic_loss_to_each_model(tmp_path, arch):
    labels = {"A": np.arange(8) % 2, "B": np.arange(8) % 2}
    a, b = _images(8, 1), _images(8, 2)
    on = Trainer(_cfg(tmp_path, {"arch": arch}, semantic_epochs=1, steps=3), a, b, tmp_path / "on", labels=labels)
    assert on.semantic_directions == ["AtoB", "BtoA"] and set(on.semantic) == {"AtoB", "BtoA"}
    seen: list[dict[str, float]] = []
    on.fit(lambda step, total, losses: seen.append(dict(losses)))
    assert all(v["sem_AB"] > 0 and v["sem_BA"] > 0 for v in seen)
    for v in seen:  # G is both models' GAN + NCE (CUT: averaged with NCE_Y; FastCUT has none) + semantic
        nce = v["NCE_AB"] + v["NCE_BA"]
        if arch == "cut":
            nce = (nce + v["NCE_Y_AB"] + v["NCE_Y_BA"]) * 0.5
        assert v["G"] == pytest.approx(v["G_AB"] + v["G_BA"] + nce + v["sem_AB"] + v["sem_BA"], rel=1e-5)

    off = Trainer(_cfg(tmp_path, {"arch": arch}, semantic="off", steps=3), a, b, tmp_path / "off", labels=labels)
    assert off.semantic_directions == [] and off.cut.semantic is None
    off.fit()
    rows = (tmp_path / "off" / "losses.tsv").read_text().splitlines()
    names = rows[0].split("\t")
    assert all(float(r.split("\t")[names.index("sem_AB")]) == 0 for r in rows[1:])


def test_compile_and_channels_last_change_speed_not_weights(tmp_path):
    """runtime.compile compiles G and D in place (aot_eager here: cheap on a CPU); the keys and weights stay."""
    a, b = _images(4, 1), _images(4, 2)
    weights = []
    for name, switches in (("eager", {}), ("compiled", {"compile": True, "compile_backend": "aot_eager"}),
                           ("channels-last", {"channels_last": True})):
        t = Trainer(_cfg(tmp_path, {"arch": "fastcut"}, steps=3, **switches), a, b, tmp_path / name)
        t.fit()
        weights.append({k: v.clone().contiguous() for k, v in t.model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys() == weights[2].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # NHWC convolutions round differently; Adam's first steps (about lr x sign(g)) turn that into up to a few
    # lr (2e-4) of weight, as for a CycleGAN (7e-4 both after these 3 steps).
    assert all(torch.allclose(weights[0][k], weights[2][k], atol=2e-3) for k in weights[0])
