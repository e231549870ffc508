import numpy as np
import pytest
import torch

from cyclegan_core.config import config_from_dict
from cyclegan_core.train import CheckpointError, Trainer, load_generators, lr_factor, model_fingerprint
from tests.conftest import tiny_settings


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)


def _cfg(tmp_path, **train):
    raw = tiny_settings(tmp_path, tmp_path / "A", tmp_path / "B")
    raw["train"].update(train)
    return config_from_dict(raw)


def _weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.model.state_dict().items()}


def test_resume_is_exact(tmp_path):
    cfg = _cfg(tmp_path, steps=8, checkpoint_every=4)
    a, b = _images(10, 1), _images(12, 2)
    straight = Trainer(cfg, a, b, tmp_path / "straight")
    straight.fit()

    class Killed(Exception):
        pass

    def kill_at_6(step, total, losses):
        if step == 6:  # two steps past the checkpoint at 4, as a run killed mid-way would be
            raise Killed

    first = Trainer(cfg, a, b, tmp_path / "resumed")
    with pytest.raises(Killed):
        first.fit(kill_at_6)
    second = Trainer(cfg, a, b, tmp_path / "resumed")
    assert second.try_resume() == 4
    second.fit()
    w1, w2 = _weights(straight), _weights(second)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    # The loss log has each step once.
    steps = [int(line.split("\t")[0]) for line in (tmp_path / "resumed" / "losses.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 9))


def test_resume_refuses_other_settings_and_corrupt_files(tmp_path):
    a, b = _images(6, 1), _images(6, 2)
    t = Trainer(_cfg(tmp_path, steps=3), a, b, tmp_path / "run")
    t.fit()
    path = t.save_checkpoint()
    with pytest.raises(CheckpointError, match="another configuration"):
        Trainer(_cfg(tmp_path, steps=3, lr=1e-3), a, b, tmp_path / "run").try_resume()
    # Logging cadence does not change weights: resuming with another one is fine.
    assert Trainer(_cfg(tmp_path, steps=3, log_every=2), a, b, tmp_path / "run").try_resume() == 3
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(_cfg(tmp_path, steps=3), a, b, tmp_path / "run").try_resume()


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
    assert model_fingerprint(_cfg(tmp_path, log_every=5, num_threads=1), "a", "b") == fp


def test_lr_schedule_holds_then_decays():
    cfg = config_from_dict({"train": {"steps": 10, "decay_start": 0.5}})
    factors = [lr_factor(s, cfg.train) for s in range(10)]
    assert factors[:6] == [1.0] * 6 and factors[-1] < factors[6] < 1.0 and factors[-1] > 0


def test_non_finite_loss_stops_with_clear_message(tmp_path):
    t = Trainer(_cfg(tmp_path, steps=2), _images(4, 1), _images(4, 2), tmp_path / "nan")
    x = torch.full((2, 1, 16, 16), float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        t.train_step(x, x)
