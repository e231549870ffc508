"""The CycleGAN model, its training step and loop, checkpoints that resume exactly, and the
fingerprint that decides whether a stored model can be reused.

The training step is in one place (:meth:`Trainer.train_step`): forward both cycles, generator
losses (LSGAN + cycle + identity), one generator step, then both discriminators on pooled fakes.
Checkpoints are safetensors plus JSON: weights, optimizer moments, image pools, the step counter
and RNG states, so a resumed run continues as if never stopped. Nothing is pickled.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import Config, ModelConfig, TrainConfig
from .networks import GANLoss, ImagePool, NLayerDiscriminator, ResnetGenerator, init_weights
from .storage import atomic_path, read_json, sha256_file, write_json_atomic

StepProgress = Callable[[int, int, dict[str, float]], None]
LOSS_NAMES = ("G", "D_A", "D_B", "G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A", "idt_B")
CHECKPOINT_JSON = "checkpoint.json"
MODEL_FILE = "model.safetensors"
MODEL_JSON = "model.json"
LOSSES_FILE = "losses.tsv"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupt, or written under another configuration."""


class CycleGAN(nn.Module):
    """Two generators (A->B, B->A) and two PatchGAN discriminators (judging A, judging B)."""

    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__()
        self.G_AB = ResnetGenerator(channels, channels, cfg.ngf, cfg.norm, n_blocks=cfg.n_blocks)
        self.G_BA = ResnetGenerator(channels, channels, cfg.ngf, cfg.norm, n_blocks=cfg.n_blocks)
        self.D_A = NLayerDiscriminator(channels, cfg.ndf, cfg.n_layers_d, cfg.norm)
        self.D_B = NLayerDiscriminator(channels, cfg.ndf, cfg.n_layers_d, cfg.norm)
        for net in (self.G_AB, self.G_BA, self.D_A, self.D_B):
            init_weights(net, cfg.init_gain)

    def generators(self) -> nn.ModuleDict:
        return nn.ModuleDict({"G_AB": self.G_AB, "G_BA": self.G_BA})


def code_version() -> str:
    """sha256 of the source that defines what training produces (networks and this loop)."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("networks.py", "train.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()


def training_settings(cfg: Config) -> dict:
    """The settings that change trained weights (not logging, checkpoint cadence or threads)."""
    train = cfg.train.model_dump(mode="json")
    return {
        "image": {"size": cfg.data.image_size, "mode": cfg.data.mode},
        "model": cfg.model.model_dump(mode="json"),
        "train": {k: v for k, v in train.items() if k not in TrainConfig.NOT_IN_FINGERPRINT},
    }


def model_fingerprint(cfg: Config, train_digest_a: str, train_digest_b: str) -> str:
    """What a trained model depends on: training samples, training settings, code."""
    payload = {
        "data": {"A": train_digest_a, "B": train_digest_b},
        **training_settings(cfg),
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Full LR for ``decay_start`` of the steps, then linear decay towards 0 (reference 'linear')."""
    hold = int(cfg.steps * cfg.decay_start)
    decay = cfg.steps - hold
    return 1.0 - max(0, step - hold) / float(decay + 1)


def _set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class Trainer:
    """Trains a :class:`CycleGAN` on two uint8 image arrays (N, H, W, C), with checkpoints."""

    def __init__(self, cfg: Config, images_a: np.ndarray, images_b: np.ndarray, workdir: str | Path):
        if len(images_a) == 0 or len(images_b) == 0:
            raise ValueError("training needs at least one image in each domain")
        self.cfg, self.tcfg = cfg, cfg.train
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.images_a = torch.from_numpy(np.ascontiguousarray(images_a)).permute(0, 3, 1, 2).contiguous()
        self.images_b = torch.from_numpy(np.ascontiguousarray(images_b)).permute(0, 3, 1, 2).contiguous()
        torch.manual_seed(self.tcfg.seed)
        self.model = CycleGAN(cfg.model, cfg.data.channels)
        self.rng = torch.Generator().manual_seed(self.tcfg.seed)
        betas = (self.tcfg.beta1, 0.999)
        g_params = list(self.model.G_AB.parameters()) + list(self.model.G_BA.parameters())
        d_params = list(self.model.D_A.parameters()) + list(self.model.D_B.parameters())
        self.opt_G = torch.optim.Adam(g_params, lr=self.tcfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(d_params, lr=self.tcfg.lr, betas=betas)
        self.pool_A = ImagePool(self.tcfg.pool_size, self.rng)
        self.pool_B = ImagePool(self.tcfg.pool_size, self.rng)
        self.gan_loss, self.l1 = GANLoss("lsgan"), nn.L1Loss()
        self.step = 0

    # --- the training step -------------------------------------------------------------------
    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        idx = torch.randint(0, len(images), (self.tcfg.batch_size,), generator=self.rng)
        return images[idx].float().div_(127.5).sub_(1.0)

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, float]:
        t, m = self.tcfg, self.model
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = t.lr * lr_factor(self.step, t)

        fake_B = m.G_AB(real_A)
        rec_A = m.G_BA(fake_B)
        fake_A = m.G_BA(real_B)
        rec_B = m.G_AB(fake_A)

        # Generators: fool both discriminators, close both cycles, stay identity on the target.
        _set_requires_grad([m.D_A, m.D_B], False)
        self.opt_G.zero_grad(set_to_none=True)
        zero = real_A.new_zeros(())
        if t.lambda_identity > 0:
            idt_A = self.l1(m.G_AB(real_B), real_B) * t.lambda_b * t.lambda_identity
            idt_B = self.l1(m.G_BA(real_A), real_A) * t.lambda_a * t.lambda_identity
        else:
            idt_A = idt_B = zero
        g_ab = self.gan_loss(m.D_B(fake_B), True)
        g_ba = self.gan_loss(m.D_A(fake_A), True)
        cycle_A = self.l1(rec_A, real_A) * t.lambda_a
        cycle_B = self.l1(rec_B, real_B) * t.lambda_b
        loss_G = g_ab + g_ba + cycle_A + cycle_B + idt_A + idt_B
        loss_G.backward()
        self.opt_G.step()

        # Discriminators: real vs. a pool of past fakes, each loss halved as in the reference.
        _set_requires_grad([m.D_A, m.D_B], True)
        self.opt_D.zero_grad(set_to_none=True)
        pooled_B = self.pool_B.query(fake_B)
        loss_D_B = 0.5 * (self.gan_loss(m.D_B(real_B), True) + self.gan_loss(m.D_B(pooled_B), False))
        loss_D_B.backward()
        pooled_A = self.pool_A.query(fake_A)
        loss_D_A = 0.5 * (self.gan_loss(m.D_A(real_A), True) + self.gan_loss(m.D_A(pooled_A), False))
        loss_D_A.backward()
        self.opt_D.step()

        self.step += 1
        losses = (loss_G, loss_D_A, loss_D_B, g_ab, g_ba, cycle_A, cycle_B, idt_A, idt_B)
        values = {name: float(v.detach()) for name, v in zip(LOSS_NAMES, losses, strict=True)}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"training diverged at step {self.step}: non-finite loss {', '.join(bad)}; "
                f"the last good checkpoint in {self.workdir} is kept"
            )
        return values

    # --- the loop ------------------------------------------------------------------------------
    def fit(self, progress: StepProgress | None = None) -> float:
        """Train up to ``train.steps`` from wherever the trainer stands; returns seconds spent."""
        t0 = time.perf_counter()
        if self.tcfg.num_threads:
            torch.set_num_threads(self.tcfg.num_threads)
        self.model.train()
        log_path = self.workdir / LOSSES_FILE
        new_log = not log_path.exists()
        with open(log_path, "a", newline="", encoding="utf-8") as log:
            writer = csv.writer(log, delimiter="\t")
            if new_log:
                writer.writerow(["step", "lr", *LOSS_NAMES])
            while self.step < self.tcfg.steps:
                values = self.train_step(self._batch(self.images_a), self._batch(self.images_b))
                if self.step % self.tcfg.log_every == 0 or self.step == self.tcfg.steps:
                    lr = self.opt_G.param_groups[0]["lr"]
                    writer.writerow([self.step, f"{lr:.6g}", *(f"{values[n]:.6f}" for n in LOSS_NAMES)])
                if self.step % self.tcfg.checkpoint_every == 0 and self.step < self.tcfg.steps:
                    log.flush()
                    self.save_checkpoint()
                if progress:
                    progress(self.step, self.tcfg.steps, values)
        return time.perf_counter() - t0

    # --- checkpoints ---------------------------------------------------------------------------
    def _state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {
            f"model.{k}": v.detach().clone() for k, v in self.model.state_dict().items()
        }
        groups = {}
        for name, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
            sd = opt.state_dict()
            for idx, st in sd["state"].items():
                for key, val in st.items():
                    tensors[f"{name}.{idx}.{key}"] = torch.as_tensor(val).clone()
            groups[name] = sd["param_groups"]
        tensors["pool_A"] = self.pool_A.state_tensor()
        tensors["pool_B"] = self.pool_B.state_tensor()
        tensors["rng.train"] = self.rng.get_state()
        return tensors, groups

    def save_checkpoint(self) -> Path:
        """Write ``ckpt-<step>.safetensors`` and point ``checkpoint.json`` at it (atomically)."""
        tensors, groups = self._state_tensors()
        name = f"ckpt-{self.step:08d}.safetensors"
        path = self.workdir / name
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
        write_json_atomic(self.workdir / CHECKPOINT_JSON, {
            "step": self.step, "file": name, "sha256": sha256_file(path),
            "settings": training_settings(self.cfg), "param_groups": groups,
        })
        for old in self.workdir.glob("ckpt-*.safetensors"):
            if old.name != name:
                old.unlink()
        return path

    def try_resume(self) -> int | None:
        """Load the checkpoint in the work folder, if any; returns the step resumed from."""
        meta_path = self.workdir / CHECKPOINT_JSON
        if not meta_path.exists():
            return None
        meta = read_json(meta_path)
        if meta["settings"] != training_settings(self.cfg):
            raise CheckpointError(
                f"{meta_path}: written under another configuration; refusing to resume "
                "(delete the folder to start over)"
            )
        path = self.workdir / meta["file"]
        if not path.exists() or sha256_file(path) != meta["sha256"]:
            raise CheckpointError(f"{path}: missing or corrupt (sha256 does not match {meta_path})")
        tensors = load_file(str(path))
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for name, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, val in tensors.items():
                if key.startswith(name + "."):
                    _, idx, field = key.split(".", 2)
                    state.setdefault(int(idx), {})[field] = val
            opt.load_state_dict({"state": state, "param_groups": meta["param_groups"][name]})
        self.pool_A.load_state_tensor(tensors["pool_A"])
        self.pool_B.load_state_tensor(tensors["pool_B"])
        self.rng.set_state(tensors["rng.train"])
        self.step = int(meta["step"])
        _truncate_log(self.workdir / LOSSES_FILE, self.step)
        return self.step

    def export(self, fingerprint: str, seconds: float) -> Path:
        """Write the generators to ``model.safetensors`` and describe them in ``model.json``."""
        gens = {k: v.detach().clone() for k, v in self.model.generators().state_dict().items()}
        path = self.workdir / MODEL_FILE
        with atomic_path(path) as tmp:
            save_file(gens, str(tmp), metadata={"fingerprint": fingerprint, "format": "cycleaug-generators-1"})
        write_json_atomic(self.workdir / MODEL_JSON, {
            "fingerprint": fingerprint, "sha256": sha256_file(path), "steps": self.step,
            "train_seconds": round(seconds, 2), "code_version": code_version(),
            "channels": self.cfg.data.channels, "image_size": self.cfg.data.image_size,
            "model": self.cfg.model.model_dump(mode="json"), "config": self.cfg.to_dict(),
        })
        return path


def _truncate_log(path: Path, step: int) -> None:
    """Drop loss rows logged after the checkpoint, so a resumed log has no duplicates."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [ln for i, ln in enumerate(lines) if i == 0 or int(ln.split("\t", 1)[0]) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept), encoding="utf-8")


def load_generators(model_dir: str | Path, device: str = "cpu") -> tuple[nn.ModuleDict, dict]:
    """The two generators of an exported model, in eval mode, and its ``model.json``."""
    model_dir = Path(model_dir)
    meta = read_json(model_dir / MODEL_JSON)
    path = model_dir / MODEL_FILE
    if sha256_file(path) != meta["sha256"]:
        raise CheckpointError(f"{path}: corrupt (sha256 does not match {model_dir / MODEL_JSON})")
    mcfg = ModelConfig.model_validate(meta["model"])
    c = meta["channels"]
    gens = nn.ModuleDict({
        "G_AB": ResnetGenerator(c, c, mcfg.ngf, mcfg.norm, n_blocks=mcfg.n_blocks),
        "G_BA": ResnetGenerator(c, c, mcfg.ngf, mcfg.norm, n_blocks=mcfg.n_blocks),
    })
    gens.load_state_dict(load_file(str(path), device=device))
    return gens.to(device).eval(), meta


@dataclass(frozen=True)
class TrainResult:
    fingerprint: str
    model_dir: str
    model_sha256: str
    reused: bool
    steps: int
    seconds: float
    resumed_from: int | None

    def to_dict(self) -> dict:
        return asdict(self)
