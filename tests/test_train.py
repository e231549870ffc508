import itertools
import json

import numpy as np
import pytest
import torch

from cyclegan_core.config import ConfigError, config_from_dict
from cyclegan_core.models import CheckpointError, load_generators, model_fingerprint
from cyclegan_core.networks import ResnetGenerator
from cyclegan_core.runtime import RuntimeConfig
from cyclegan_core.train import Trainer, lr_factor
from tests.conftest import tiny_settings


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)


def _cfg(tmp_path, model=None, **settings):
    """The tiny config with ``settings`` applied: runtime keys (device, precision, log_every...) to the runtime
    section, the others to train."""
    raw = tiny_settings(tmp_path, tmp_path / "A", tmp_path / "B")
    # One thread: these nets are tiny, and on a shared 2-core machine two threads spin-wait.
    runtime = {k: v for k, v in settings.items() if k in RuntimeConfig.model_fields}
    raw["runtime"].update({"num_threads": 1, **runtime})
    raw["train"].update({k: v for k, v in settings.items() if k not in runtime})
    raw["model"].update(model or {})
    return config_from_dict(raw)


def _weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.model.state_dict().items()}


def _same_state(t1: Trainer, t2: Trainer) -> None:
    w1, w2 = _weights(t1), _weights(t2)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    for name in t1.opts:
        s1, s2 = t1.opts[name].state_dict(), t2.opts[name].state_dict()
        assert s1["param_groups"] == s2["param_groups"]  # the LR-schedule position included
        for idx in s1["state"]:
            assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][idx][k]))
                       for k, v in s1["state"][idx].items())
    for d in t1.pools:
        assert torch.equal(t1.pools[d].state_tensor(), t2.pools[d].state_tensor())
    assert torch.equal(t1.rng.get_state(), t2.rng.get_state())
    if t1.cut is not None:  # CUT's patch positions and FastCUT's flips
        assert torch.equal(t1.cut.rng.get_state(), t2.cut.rng.get_state())


class Killed(Exception):
    pass


@pytest.mark.parametrize("model,train", [
    ({}, {}),
    ({"arch": "translator"}, {"lr_policy": "cosine"}),
    ({"norm": "batch", "init_type": "orthogonal", "upsample": "resize_conv"},
     {"lr_policy": "step", "lr_step_size": 3, "gan_mode": "wgangp", "precision": "bf16"}),
    ({}, {"sampling": "epoch", "augment": "crop_flip"}),
    ({"arch": "cut"}, {}),
    ({"arch": "fastcut", "norm": "none", "upsample": "resize_conv"}, {"precision": "bf16"}),
    ({"norm": "none", "norm_d": "spectral"}, {"lr_d": 1e-4}),
], ids=["cyclegan", "translator-cosine", "batchnorm-step-wgangp-bf16", "epoch-sampling-crop-flip", "cut",
        "fastcut-bf16", "spectral-d-lr-d"])
def test_resume_is_exact(tmp_path, model, train):
    cfg = _cfg(tmp_path, model, steps=8, checkpoint_every=4, **train)
    a, b = _images(10, 1), _images(12, 2)
    straight = Trainer(cfg, a, b, tmp_path / "straight")
    straight.fit()

    def kill_at_6(step, total, losses):
        if step == 6:  # two steps past the checkpoint at 4, as a run killed mid-way would be
            raise Killed

    first = Trainer(cfg, a, b, tmp_path / "resumed")
    with pytest.raises(Killed):
        first.fit(kill_at_6)
    second = Trainer(cfg, a, b, tmp_path / "resumed")
    assert second.try_resume() == 4
    second.fit()
    _same_state(straight, second)
    # The loss log has each step once.
    steps = [int(line.split("\t")[0]) for line in (tmp_path / "resumed" / "losses.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 9))


def test_resume_refuses_other_settings_and_corrupt_files(tmp_path):
    a, b = _images(6, 1), _images(6, 2)
    t = Trainer(_cfg(tmp_path, steps=3), a, b, tmp_path / "run")
    t.fit()
    path = t.save_checkpoint()
    with pytest.raises(CheckpointError, match=r"another configuration \(train.lr: 0.0002 -> 0.001\)"):
        Trainer(_cfg(tmp_path, steps=3, lr=1e-3), a, b, tmp_path / "run").try_resume()
    with pytest.raises(CheckpointError, match="model.arch: 'cyclegan' -> 'translator'"):
        Trainer(_cfg(tmp_path, {"arch": "translator"}, steps=3), a, b, tmp_path / "run").try_resume()
    # Logging cadence and speed switches do not change weights: resuming with others is fine.
    assert Trainer(_cfg(tmp_path, steps=3, log_every=2, channels_last=True, adam_impl="for_loop", precision="bf16"),
                   a, b, tmp_path / "run").try_resume() == 3
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="no usable checkpoint: .*corrupt"):
        Trainer(_cfg(tmp_path, steps=3), a, b, tmp_path / "run").try_resume()


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
    cfg = _cfg(tmp_path, steps=6, checkpoint_every=2)
    a, b = _images(8, 1), _images(8, 2)
    straight = Trainer(cfg, a, b, tmp_path / "straight")
    straight.fit()

    def kill_at_5(step, total, losses):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        Trainer(cfg, a, b, tmp_path / "run").fit(kill_at_5)
    run = tmp_path / "run"
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["step"] == 4 and meta["previous"]["step"] == 2
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-00000002.safetensors", "ckpt-00000004.safetensors"]
    newest = run / meta["file"]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated, as by a full disk
    resumed = Trainer(cfg, a, b, run)
    assert resumed.try_resume() == 2
    assert "ckpt-00000004.safetensors: corrupt" in resumed.resumed_note
    resumed.fit()
    _same_state(straight, resumed)  # restarting from the older checkpoint is still exact


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, steps=8, checkpoint_every=2, log_every=5)
    a, b = _images(6, 1), _images(6, 2)
    t = Trainer(cfg, a, b, tmp_path / "nan")

    def poison_at_3(step, total, losses):
        if step == 3:
            with torch.no_grad():
                next(t.model.G_AB.parameters()).fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"diverged by step 4: non-finite loss .*last good checkpoint"):
        t.fit(poison_at_3)
    meta = json.loads((tmp_path / "nan" / "checkpoint.json").read_text())
    assert meta["step"] == 2  # the step-4 checkpoint was not written with NaN weights
    again = Trainer(cfg, a, b, tmp_path / "nan")
    assert again.try_resume() == 2
    assert all(torch.isfinite(v).all() for v in again.model.state_dict().values())
    # A direct call to train_step checks at once.
    x = torch.full((2, 1, 16, 16), float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        Trainer(cfg, a, b, tmp_path / "nan2").train_step(x, x)


@pytest.mark.parametrize("switches,same_numbers", [
    ({"channels_last": True, "adam_impl": "fused"}, True),
    ({"adam_impl": "for_loop", "pin_memory": False}, True),
    # Dynamo tracing takes ~20 s on 2 cores; aot_eager skips inductor's C++ build but runs the
    # same graph capture and AOT autograd as the GPU path.
    pytest.param({"compile": True, "compile_backend": "aot_eager"}, True, marks=pytest.mark.slow),
    ({"precision": "bf16", "batch_size": 3}, False),
    ({"precision": "fp16"}, False),
], ids=["channels_last-fused", "for_loop", "compile", "bf16-batch3", "fp16-scaler"])
def test_speed_switches_train_on_cpu(tmp_path, switches, same_numbers):
    a, b = _images(6, 1), _images(6, 2)
    runs = {}
    for name, extra in (("base", {}), ("fast", switches)):
        t = Trainer(_cfg(tmp_path, steps=2, **extra), a, b, tmp_path / name)
        seen: list[dict] = []
        t.fit(lambda step, total, losses, seen=seen: seen.append(dict(losses)))
        runs[name] = (t, seen)
    (base, base_losses), (fast, fast_losses) = runs["base"], runs["fast"]
    assert all(np.isfinite(v) for step in fast_losses for v in step.values())
    first_b, first_f = base_losses[0], fast_losses[0]
    if same_numbers:
        # Layout, optimizer kernels and compilation change the rounding at most: the first step
        # (same weights, same batch) gives the same losses, and after two Adam steps (each moves
        # a weight by at most about lr) the weights agree within that bound.
        assert all(first_f[k] == pytest.approx(first_b[k], rel=1e-4, abs=1e-6) for k in first_b)
        wb, wf = _weights(base), _weights(fast)
        assert max(float((wb[k].float() - wf[k].float()).abs().max()) for k in wb) <= 4 * 2e-4
    else:
        assert first_f != first_b
    if switches.get("precision") == "fp16":
        assert fast.scaler.is_enabled() and fast.scaler.get_scale() > 0


@pytest.mark.parametrize("directions", ["both", "AtoB"])
def test_translator_variant_exports_both_directions(tmp_path, directions):
    cfg = _cfg(tmp_path, {"arch": "translator", "translator_directions": directions}, steps=2)
    t = Trainer(cfg, _images(4, 1), _images(4, 2), tmp_path / "m")
    t.fit()
    assert list(t._last_values) == ["T", "D_A", "D_B", "T_AB", "T_BA", "recon_A", "recon_B", "dev_A", "dev_B"]
    t.export("f" * 64, 1.0)
    gens, meta = load_generators(tmp_path / "m")
    assert meta["arch"] == "translator"
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    m = t.model.eval()
    with torch.no_grad():
        # encoder -> translator -> decoder is exactly one ResNet generator of the same sizes.
        g = gens["G_AB"]
        assert sum(p.numel() for p in g.parameters()) == sum(p.numel() for p in ResnetGenerator(1, 1, 4, n_blocks=1)
                                                             .parameters())
        assert torch.equal(g(x), m.ae.decoder(m.T_AB(m.ae.encoder(x))))
        expected_ba = m.ae.decoder((m.T_BA if directions == "both" else torch.nn.Identity())(m.ae.encoder(x)))
        assert torch.equal(gens["G_BA"](x), expected_ba)


def test_export_and_load_generators(tmp_path):
    t = Trainer(_cfg(tmp_path, steps=2), _images(4, 1), _images(4, 2), tmp_path / "m")
    t.fit()
    t.export("f" * 64, 1.0)
    gens, meta = load_generators(tmp_path / "m")
    assert meta["fingerprint"] == "f" * 64 and meta["steps"] == 2
    x = torch.zeros(1, 1, 16, 16)
    assert torch.equal(gens["G_AB"](x), t.model.G_AB.eval()(x))


def test_fingerprint_tracks_what_changes_weights(tmp_path):
    base = _cfg(tmp_path)
    fp = model_fingerprint(base, "a", "b")
    assert model_fingerprint(base, "a", "b") == fp
    assert model_fingerprint(base, "a", "c") != fp
    assert model_fingerprint(_cfg(tmp_path, lr=1e-3), "a", "b") != fp
    assert model_fingerprint(_cfg(tmp_path, {"arch": "translator"}), "a", "b") != fp
    # The runtime block (precision too: it changes the rounding, not the objective) is out of it.
    assert model_fingerprint(_cfg(tmp_path, precision="bf16"), "a", "b") == fp
    assert model_fingerprint(_cfg(tmp_path, log_every=5, num_threads=1, channels_last=True, compile=True,
                                  device="cpu"), "a", "b") == fp


def _reference_factors(policy: str, n_epochs: int, n_epochs_decay: int, step_size: int = 1) -> list[float]:
    """The reference's ``get_scheduler`` (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py at 2a7afba)
    rebuilt from torch's schedulers, stepped once per epoch as its train.py does (epoch_count 1)."""
    from torch.optim import lr_scheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    if policy == "linear":
        sched = lr_scheduler.LambdaLR(opt, lambda e: 1.0 - max(0, e + 1 - n_epochs) / float(n_epochs_decay + 1))
    elif policy == "step":
        sched = lr_scheduler.StepLR(opt, step_size=step_size, gamma=0.1)
    else:
        sched = lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs, eta_min=0)
    out = []
    for _ in range(n_epochs + n_epochs_decay):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("policy", ["linear", "step", "cosine"])
@pytest.mark.parametrize("steps,decay_start", [(10, 0.5), (1500, 0.5), (40, 0.25)])
def test_lr_schedules_match_the_reference(policy, steps, decay_start):
    cfg = config_from_dict({"train": {"steps": steps, "decay_start": decay_start, "lr_policy": policy,
                                      "lr_step_size": 4}})
    hold = int(steps * decay_start)
    ours = [lr_factor(s, cfg.train) for s in range(steps)]
    assert ours == pytest.approx(_reference_factors(policy, hold, steps - hold, step_size=4), abs=1e-12)
    if policy == "linear":  # full LR for exactly `hold` steps, the last factor 1 / (n + 1)
        assert ours[hold - 1] == 1.0 > ours[hold] and ours[-1] == pytest.approx(1 / (steps - hold + 1))


def test_half_cosine_is_ours_and_named_so():
    cfg = config_from_dict({"train": {"steps": 10, "lr_policy": "half_cosine"}})
    cos = [lr_factor(s, cfg.train) for s in range(10)]
    assert cos[0] == 1.0 and cos[5] == pytest.approx(0.5) and all(x > y for x, y in itertools.pairwise(cos))


@pytest.mark.parametrize("override,message", [
    ({"model": {"generator": "unet_256"}}, "model.generator=unet_256 halves the image 8 times, so the size must be "
                                           "a multiple of 256"),
    ({"model": {"arch": "translator", "generator": "unet_128"}}, "generator must be 'resnet'"),
    ({"model": {"n_layers_d": 4}}, "too deep for data.image_size=32"),
    ({"model": {"arch": "translator", "n_layers_d": 5}}, r"image_size / 4 \(the encodings\)"),
    ({"model": {"init_type": "uniform"}}, r"model.init_type: .*got 'uniform'"),
    ({"train": {"gan_mode": "hinge"}}, r"train.gan_mode: .*got 'hinge'"),
    ({"runtime": {"precision": "fp16"}, "train": {"gan_mode": "wgangp"}}, "use bf16 or fp32"),
    ({"runtime": {"train": {"precision": "fp16"}}, "train": {"gan_mode": "wgangp"}}, "use bf16 or fp32"),
    ({"train": {"fused_adam": True}}, "train.fused_adam: unknown key"),
    ({"train": {"augment": "rotate"}}, r"train.augment: .*got 'rotate'"),
    ({"train": {"sampling": "serial"}}, r"train.sampling: .*got 'serial'"),
])
def test_model_and_train_settings_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(override)
    config_from_dict({"model": {"generator": "unet_256", "norm": "batch"}, "data": {"image_size": 256}})


def test_vanilla_gan_and_pixel_discriminator_train(tmp_path):
    t = Trainer(_cfg(tmp_path, {"discriminator": "pixel", "init_type": "kaiming"}, steps=2, gan_mode="vanilla"),
                _images(4, 1), _images(4, 2), tmp_path / "v")
    t.fit()
    assert all(np.isfinite(v) for v in t._last_values.values())


def test_wgangp_without_penalty_is_the_reference_and_with_it_differs(tmp_path):
    """The reference's CycleGAN with gan_mode wgangp: D loss 0.5 * (-mean D(real) + mean D(fake)), no penalty
    (its cal_gradient_penalty is never called). lambda_gp: 0 is exactly that; the default adds the penalty."""
    a, b = _images(6, 0), _images(6, 1)
    real = torch.rand(2, 1, 16, 16) * 2 - 1
    fake = torch.rand(2, 1, 16, 16) * 2 - 1
    losses = {}
    for gp in (0.0, 10.0):
        t = Trainer(_cfg(tmp_path, gan_mode="wgangp", lambda_gp=gp, pool_size=0), a, b, tmp_path / f"gp{gp}")
        d = t.model.D_A
        expected = 0.5 * (-d(real).mean() + d(fake).mean())
        losses[gp] = (t._d_loss("A", real, fake).item(), expected.item())
    assert losses[0.0][0] == losses[0.0][1]
    assert losses[10.0][0] > losses[10.0][1]  # the penalty is positive


def _manifest(path, images: np.ndarray, group_rows: int = 3) -> None:
    """A manifest of these images (every third one held out) in row groups of ``group_rows``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cyclegan_core.images import encode_png
    from cyclegan_core.ingest import MANIFEST_SCHEMA

    n = len(images) * 3 // 2
    splits = ["test" if i % 3 == 2 else "train" for i in range(n)]
    train = iter(images)
    held = _images(n, 99)
    rows = [{"sample_id": f"{i:064x}", "domain": "A", "relpath": f"{i}.png", "uri": f"{i}.png", "split": sp,
             "image": encode_png(next(train) if sp == "train" else held[i])} for i, sp in enumerate(splits)]
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), path, row_group_size=group_rows)


def test_streamed_images_decode_the_train_split_row_by_row(tmp_path):
    from cyclegan_core.ingest import iter_manifest_images, manifest_images, read_manifest
    from cyclegan_core.loader import ManifestImages

    a = _images(20, 1)
    _manifest(tmp_path / "a.parquet", a)
    src = ManifestImages(tmp_path / "a.parquet", lru_bytes=1)
    assert len(src) == 20 and src.sample_shape == (16, 16, 1)
    assert np.array_equal(src.take(np.arange(20)), a)
    pick = [17, 0, 5, 5, 19, 2]
    assert np.array_equal(src.take(pick), a[pick])
    assert torch.equal(src.__getitems__(pick), torch.from_numpy(a[pick]).permute(0, 3, 1, 2))
    assert len(src._cache) == 1  # the LRU of row groups stays within its budget (here: one group)
    batches = list(iter_manifest_images(tmp_path / "a.parquet", ("train",), batch_rows=4))
    assert max(len(x) for _, x in batches) <= 4
    assert np.array_equal(np.concatenate([x for _, x in batches]), a)
    assert np.array_equal(manifest_images(read_manifest(tmp_path / "a.parquet", ("train",))), a)


def test_a_steps_batch_depends_only_on_seed_rank_domain_and_step():
    from cyclegan_core.loader import StepSampler, step_indices

    full = list(StepSampler(50, 4, 0, 0, "A", 0, 10))
    assert list(StepSampler(50, 4, 0, 0, "A", 6, 10)) == full[6:]  # a resumed run draws what an unbroken one does
    assert full[3] == step_indices(50, 4, 0, 0, "A", 3).tolist()
    others = [list(StepSampler(50, 4, *k, 0, 10)) for k in ((1, 0, "A"), (0, 1, "A"), (0, 0, "B"))]
    assert all(o != full for o in others)
    assert all(0 <= i < 50 for batch in full for i in batch)


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_streamed_training_is_the_same_with_workers_and_resumes_exactly(tmp_path, workers):
    """The DataLoader over the manifests (cache_mb 0) gives identical weights in this process and with
    workers, label-aware training's classifiers (on a capped sample) included, and a streamed run killed
    mid-way resumes exactly. (The cache draws another batch sequence: see Trainer._batch.)"""
    from cyclegan_core.loader import ManifestImages

    a, b = _images(12, 1), _images(10, 2)
    _manifest(tmp_path / "a.parquet", a)
    _manifest(tmp_path / "b.parquet", b)
    labels = {"A": np.arange(12) % 3, "B": np.arange(10) % 3}
    masks = {"A": np.arange(12) % 2 == 0, "B": np.arange(10) % 2 == 1}
    common = {"steps": 6, "checkpoint_every": 3, "semantic_epochs": 1, "semantic_max_samples": 4, "cache_mb": 0}

    def trainer(name, **extra):
        cfg = _cfg(tmp_path, **(common | extra))
        src = [ManifestImages(tmp_path / f"{d}.parquet") for d in "ab"]
        return Trainer(cfg, *src, tmp_path / name, labels=labels, classifier_mask=masks)

    in_process = trainer("in-process")
    assert not in_process.cached and not in_process.images and in_process.semantic_directions
    in_process.fit()
    streamed = trainer("streamed", loader_workers=workers)
    streamed.fit()
    _same_state(in_process, streamed)
    assert trainer("cached", cache_mb=1024).cached

    def kill_at_4(step, *_):
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        trainer("resumed", loader_workers=workers).fit(kill_at_4)
    resumed = trainer("resumed", loader_workers=workers)
    assert resumed.try_resume() == 3
    resumed.fit()
    _same_state(in_process, resumed)


# --- plateau, augmentation, epoch sampling (issue 21, section 3) ---------------------------------------


def _plateau_run(tmp_path, name, **extra):
    # A tiny LR: the loss barely moves, so the plateau scheduler has plateaus to find within 20 steps.
    settings = {"steps": 20, "lr_policy": "plateau", "lr_step_size": 2, "lr": 1e-6, "log_every": 1}
    cfg = _cfg(tmp_path, **(settings | extra))
    return Trainer(cfg, _images(10, 1), _images(12, 2), tmp_path / name)


def test_plateau_steps_torchs_reduce_on_plateau_with_each_epochs_mean_generator_loss(tmp_path):
    t = _plateau_run(tmp_path, "run")
    seen = []  # (G loss of the step, LR of every optimizer after it)
    t.fit(lambda step, total, v: seen.append((v["G"], [o.param_groups[0]["lr"] for o in t.opts.values()])))
    ref_opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-6)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="min", factor=0.2, threshold=0.01, patience=5)
    expected = []
    for k in range(len(seen)):
        if (k + 1) % 2 == 0:
            ref.step((seen[k - 1][0] + seen[k][0]) / 2)
        expected.append(ref_opt.param_groups[0]["lr"])
    assert [lrs for _, lrs in seen] == [[e, e] for e in expected]
    assert min(expected) < 1e-6  # it did reduce (x0.2), so the comparison covers a drop
    # lr_step_size 0: one epoch is a pass over the larger domain, ceil(12 / batch_size 4) steps.
    assert _plateau_run(tmp_path, "default", lr_step_size=0, batch_size=4).plateau_epoch == 3


def test_plateau_resumes_exactly_mid_epoch(tmp_path):
    straight = _plateau_run(tmp_path, "straight", checkpoint_every=7)  # 7: inside the 4th epoch of 2 steps
    straight.fit()
    assert straight.opts["G"].param_groups[0]["lr"] < 1e-6

    def kill_at_9(step, *_):
        if step == 9:
            raise Killed

    with pytest.raises(Killed):
        _plateau_run(tmp_path, "resumed", checkpoint_every=7).fit(kill_at_9)
    meta = json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())
    assert meta["plateau"]["G"]["mode_worse"] == "inf"  # standard JSON, no Infinity
    resumed = _plateau_run(tmp_path, "resumed", checkpoint_every=7)
    assert resumed.try_resume() == 7
    resumed.fit()
    _same_state(straight, resumed)
    assert all(straight.plateau[n].state_dict() == resumed.plateau[n].state_dict() for n in straight.plateau)


def test_crop_is_the_reference_resize_and_crop_computed_on_tensors():
    from PIL import Image

    from cyclegan_core.loader import crop_and_flip

    rng = np.random.default_rng(0)
    # Smooth photo-like content (upscaled noise), uint8 as the reference reads it.
    small = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    imgs = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BICUBIC)) for im in small])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    out = crop_and_flip(x, "crop", 286 / 256, torch.Generator().manual_seed(5))
    assert out.shape == x.shape
    # The same draws, computed directly: resize to round(32 * 286 / 256) = 36, crop at (top, left).
    gen = torch.Generator().manual_seed(5)
    top, left = torch.randint(0, 5, (4,), generator=gen), torch.randint(0, 5, (4,), generator=gen)
    big = torch.nn.functional.interpolate(x, size=(36, 36), mode="bicubic", align_corners=False)
    direct = torch.stack([big[i, :, top[i]:top[i] + 32, left[i]:left[i] + 32] for i in range(4)])
    assert torch.equal(out, direct)
    # Against the reference's PIL BICUBIC on uint8 (a = -0.5 there, -0.75 in torch, and rounding): close.
    for i in range(4):
        ref = np.asarray(Image.fromarray(imgs[i]).resize((36, 36), Image.BICUBIC), dtype=np.float64)
        ref = ref[top[i]:top[i] + 32, left[i]:left[i] + 32]
        ours = (out[i].permute(1, 2, 0).double().numpy() + 1) * 127.5
        assert np.abs(ours - ref).mean() < 2.5  # grey levels of 255
    assert len({(int(a), int(b)) for a, b in zip(top, left, strict=True)}) > 1  # offsets vary per sample


def test_flip_has_probability_one_half_and_augmentation_follows_the_seed():
    from cyclegan_core.loader import crop_and_flip

    x = torch.zeros(20000, 1, 2, 2)
    x[:, :, :, 0] = 1.0  # left column 1: a flipped sample has it on the right
    out = crop_and_flip(x, "flip", 1.0, torch.Generator().manual_seed(0))
    flipped = out[:, 0, 0, 1] == 1.0
    assert torch.equal(out[flipped], x[flipped].flip(-1)) and torch.equal(out[~flipped], x[~flipped])
    assert abs(flipped.float().mean().item() - 0.5) < 0.015  # 4 sigma at n = 20000
    y = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    draw = [crop_and_flip(y, "crop_flip", 1.25, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    assert torch.equal(crop_and_flip(y, "none", 1.25, torch.Generator()), y)


def test_epoch_sampling_takes_every_sample_once_per_pass():
    from cyclegan_core.loader import StepSampler, epoch_indices

    for world in (1, 2):
        # 10 samples, batches of 3: batches straddle passes; ranks together take each sample once per pass.
        steps = [epoch_indices(10, 3, 0, r, world, "A", s) for s in range(10) for r in range(world)]
        flat = torch.cat(steps)
        passes = flat[:len(flat) // 10 * 10].view(-1, 10)
        assert all(sorted(p.tolist()) == list(range(10)) for p in passes)
        assert len({tuple(p.tolist()) for p in passes}) == len(passes)  # reshuffled each pass
    full = list(StepSampler(10, 3, 0, 0, "A", 0, 12, "epoch"))
    assert list(StepSampler(10, 3, 0, 0, "A", 5, 12, "epoch")) == full[5:]  # resumed mid-pass: the same batches
    assert full != list(StepSampler(10, 3, 0, 0, "B", 0, 12, "epoch"))


def test_epoch_sampling_is_the_same_cached_and_streamed_and_resumes_exactly(tmp_path):
    """Under sampling: epoch a step's batch is a function of the step, so the cache and the DataLoader train
    on the same batches (also with augmentation, drawn from the trainer's RNG), and a streamed run killed
    mid-pass resumes exactly."""
    from cyclegan_core.loader import ManifestImages

    a, b = _images(7, 1), _images(5, 2)
    _manifest(tmp_path / "a.parquet", a)
    _manifest(tmp_path / "b.parquet", b)
    common = {"steps": 6, "checkpoint_every": 3, "batch_size": 2, "sampling": "epoch", "augment": "crop_flip",
              "semantic": "off"}

    def trainer(name, **extra):
        src = [ManifestImages(tmp_path / f"{d}.parquet") for d in "ab"]
        return Trainer(_cfg(tmp_path, **(common | extra)), *src, tmp_path / name)

    cached = trainer("cached")
    seen = {"A": [], "B": []}
    original = cached._batch

    def recording(domain):
        x = original(domain)
        seen[domain] += cached._idx[domain].tolist()
        return x

    cached._batch = recording
    cached.fit()
    assert cached.cached and sorted(seen["A"][:7]) == list(range(7)) and sorted(seen["B"][:5]) == list(range(5))
    streamed = trainer("streamed", cache_mb=0)
    assert not streamed.cached
    streamed.fit()
    _same_state(cached, streamed)

    def kill_at_4(step, *_):
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        trainer("resumed", cache_mb=0).fit(kill_at_4)
    resumed = trainer("resumed", cache_mb=0)
    assert resumed.try_resume() == 3
    resumed.fit()
    _same_state(cached, resumed)
    plain = trainer("plain", augment="none")
    plain.fit()
    assert not torch.equal(next(iter(plain.model.state_dict().values())),
                           next(iter(cached.model.state_dict().values())))


def test_the_cache_fills_on_first_use_and_trains_as_arrays_in_memory(tmp_path):
    """A manifest-backed cache decodes a sample when a batch (or a semantic classifier) first draws it, so
    training's start-up does not decode the whole collection (issue 19); the weights equal those of the
    same images given as arrays, which are staged whole, label-aware classifiers included."""
    from cyclegan_core.loader import ManifestImages

    a, b = _images(40, 1), _images(30, 2)
    _manifest(tmp_path / "a.parquet", a)
    _manifest(tmp_path / "b.parquet", b)
    labels = {"A": np.arange(40) % 3, "B": np.arange(30) % 3}
    masks = {"A": np.arange(40) % 2 == 0, "B": np.arange(30) % 2 == 1}
    cfg = _cfg(tmp_path, steps=3, batch_size=2, semantic_epochs=1, semantic_max_samples=4)
    lazy = Trainer(cfg, *(ManifestImages(tmp_path / f"{d}.parquet") for d in "ab"), tmp_path / "lazy",
                   labels=labels, classifier_mask=masks)
    assert lazy.cached and int(lazy._decoded["A"].sum()) == 4  # only the semantic classifier's 4 samples
    lazy.fit()
    assert 4 < int(lazy._decoded["A"].sum()) <= 4 + 3 * 2  # ... and the 3 batches of 2 drawn since
    decoded = lazy._decoded["A"].nonzero().flatten()
    assert torch.equal(lazy.images["A"][decoded], torch.from_numpy(a[decoded.numpy()]).permute(0, 3, 1, 2))
    eager = Trainer(cfg, a, b, tmp_path / "eager", labels=labels, classifier_mask=masks)
    eager.fit()
    _same_state(lazy, eager)


def test_lr_d_sets_the_discriminators_rate_on_the_same_schedule(tmp_path):
    a, b = _images(6, 1), _images(6, 2)
    same = Trainer(_cfg(tmp_path, steps=4, decay_start=0.5), a, b, tmp_path / "same")
    two = Trainer(_cfg(tmp_path, steps=4, decay_start=0.5, lr_d=5e-5), a, b, tmp_path / "two")
    for t in (same, two):
        t.fit()
    lr = lambda t, name: t.opts[name].param_groups[0]["lr"]  # noqa: E731
    assert lr(same, "D") == lr(same, "G") == lr(two, "G") > 0
    assert lr(two, "D") == pytest.approx(lr(two, "G") * 5e-5 / 2e-4)


def test_a_semantic_classifier_decodes_no_more_samples_than_its_capped_batches_draw(tmp_path, monkeypatch):
    """``train.semantic_max_steps`` batches of :func:`batch_rows` pictures bound the samples decoded for a
    semantic classifier as well as its steps (issue 19: at 128x128 a batch holds 16 pictures, so 120 batches
    need 1,920 of the 5,000 samples ``semantic_max_samples`` allows, 94 MB rather than 245 MB of RGB)."""
    import cyclegan_core.train as train_module
    from cyclegan_core.loader import ManifestImages

    a, b = _images(40, 1), _images(30, 2)
    _manifest(tmp_path / "a.parquet", a)
    _manifest(tmp_path / "b.parquet", b)
    labels = {"A": np.arange(40) % 3, "B": np.arange(30) % 3}
    seen: list[int] = []
    real = train_module.train_classifier
    monkeypatch.setattr(train_module, "batch_rows", lambda h, w: 2)  # as if the pictures were large
    monkeypatch.setattr(train_module, "train_classifier",
                        lambda images, *args, **kw: seen.append(len(images)) or real(images, *args, **kw))
    cfg = _cfg(tmp_path, steps=1, batch_size=2, semantic_epochs=1, semantic_max_samples=20, semantic_max_steps=3)
    t = Trainer(cfg, *(ManifestImages(tmp_path / f"{d}.parquet") for d in "ab"), tmp_path / "m", labels=labels)
    assert seen == [6, 6]  # 3 batches of 2, not the 20 semantic_max_samples allows
    assert int(t._decoded["A"].sum()) == int(t._decoded["B"].sum()) == 6
