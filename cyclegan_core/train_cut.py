"""The training step of ``model.arch: cut`` / ``fastcut`` (:mod:`cyclegan_core.cut`), for the Trainer.

A run trains two one-sided models (:class:`~cyclegan_core.cut.CUTPair`): A->B, whose discriminator
judges B, and B->A, judging A; each step trains A->B on (A, B) and then B->A on (B, A). Per model,
as the reference's ``CUTModel.optimize_parameters`` (taesungp/contrastive-unpaired-translation at
b3ac297): one forward of ``G`` (on A and B together for CUT's identity NCE; on the horizontally
flipped batch half the time for FastCUT), the discriminator's loss and step, then the generator's
loss against the stepped discriminator and one step of ``G`` and of the projection head ``F``.

The reference's optimizer settings: Adam for G, D and F alike with ``train.lr`` (0.0002),
``(train.beta1, 0.999)`` = (0.5, 0.999), the LR schedule ``train.lr_policy`` (the reference's CUT uses
linear); no image pool (its ``pool_size 0``). Label-aware training (``train.semantic: auto`` with labelled
collections, not the reference's) adds the Trainer's semantic-consistency loss on G(x), unflipped, to
G's loss: ``train.semantic: off`` gives the reference's objective. The head is built from the
features' shapes before the first step (the reference builds it on the first forward and creates
its optimizer then: the same thing, done before the optimizers, the checkpoint load and the
gradient averaging need it). Patch positions and FastCUT's flips come from :attr:`CutSteps.rng`, a
CPU generator per rank that the checkpoint holds, so a resumed run draws what an unbroken one does.

Speed switches: ``compile`` compiles G and D in place (their state-dict keys unchanged); under
torchrun every gradient is averaged over the ranks after each backward (the networks are called
several times per backward, in and outside their forward, which DDP's wrapper does not allow).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.distributed as dist
from torch import nn

from .config import Config
from .cut import PRESETS, CUTModel, CUTPair, CutSettings, discriminator_loss, draw_flip, generator_loss

LOSS_NAMES = ("G", "D_A", "D_B", "G_AB", "G_BA", "NCE_AB", "NCE_BA", "NCE_Y_AB", "NCE_Y_BA", "sem_AB", "sem_BA")
DIRECTIONS = {"AB": "AtoB", "BA": "BtoA"}
# Per model: its optimizers' names in the Trainer (D_B judges B: the A->B model's).
OPTIMIZERS = {"AB": ("G_AB", "D_B", "F_AB"), "BA": ("G_BA", "D_A", "F_BA")}
PATCH_SEED = 2_000_029  # the patch generator's seed offset from train.seed (per rank: + 1_000_003 * rank)


def cut_settings(cfg: Config) -> CutSettings:
    """The paper's preset for ``model.arch``, with the run's GAN loss (the reference's is lsgan)."""
    return replace(PRESETS[cfg.model.arch], gan_mode=cfg.train.gan_mode, lr=cfg.train.lr, beta1=cfg.train.beta1)


def build_heads(pair: CUTPair, channels: int, size: int, device: torch.device) -> None:
    """Build both projection heads from the features of a blank image (their shapes are all that counts)."""
    example = torch.zeros(1, channels, size, size, device=device)
    for model in pair.models().values():
        model.build_head(example)
    pair.to(device)


def param_groups(pair: CUTPair) -> dict[str, list[nn.Parameter]]:
    """One optimizer per network, as the reference (optimizer_G, optimizer_D, optimizer_F per model)."""
    groups = {}
    for key, model in pair.models().items():
        g, d, f = OPTIMIZERS[key]
        groups |= {g: list(model.G.parameters()), d: list(model.D.parameters()), f: list(model.F.parameters())}
    return groups


def _set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


def average_gradients(params: list[nn.Parameter]) -> None:
    """Under torchrun: every parameter's gradient, the mean over the ranks (one all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class CutSteps:
    """The step of both one-sided models, with the Trainer's optimizers, grad scaler and autocast."""

    def __init__(self, pair: CUTPair, opts: dict[str, torch.optim.Optimizer], scaler: torch.amp.GradScaler,
                 autocast: Callable[[], contextlib.AbstractContextManager], seed: int, rank: int = 0,
                 distributed: bool = False, compile_kwargs: dict | None = None,
                 semantic: Callable[[str, torch.Tensor], torch.Tensor] | None = None):
        self.pair, self.opts, self.scaler, self.autocast = pair, opts, scaler, autocast
        self.semantic = semantic  # (direction, G(x)) -> the weighted label-aware loss (zero where not applied)
        self.distributed = distributed
        self.rng = torch.Generator().manual_seed(seed + PATCH_SEED + 1_000_003 * rank)
        if compile_kwargs is not None:
            for model in pair.models().values():
                model.G.compile(**compile_kwargs)
                model.D.compile(**compile_kwargs)

    def _backward(self, loss: torch.Tensor, net: nn.Module | list[nn.Module]) -> None:
        self.scaler.scale(loss).backward()
        if self.distributed:
            nets = net if isinstance(net, list) else [net]
            average_gradients([p for n in nets for p in n.parameters()])

    def model_step(self, key: str, model: CUTModel, real_a: torch.Tensor, real_b: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """One reference iteration of ``model``: ``real_a`` its sources, ``real_b`` its targets."""
        g_opt, d_opt, f_opt = (self.opts[n] for n in OPTIMIZERS[key])
        flipped = draw_flip(model.settings, self.rng)
        with self.autocast():
            fake_b, idt_b = model.translate(real_a, real_b, flipped)
        # D first, on G's detached output, ...
        _set_requires_grad(model.D, True)
        d_opt.zero_grad(set_to_none=True)
        with self.autocast():
            d = discriminator_loss(model, fake_b.float(), real_b)
        self._backward(d["D"], model.D)
        self.scaler.step(d_opt)
        # ... then G and F against the stepped D.
        _set_requires_grad(model.D, False)
        g_opt.zero_grad(set_to_none=True)
        f_opt.zero_grad(set_to_none=True)
        with self.autocast():
            g = generator_loss(model, real_a, real_b, fake_b.float(),
                               None if idt_b is None else idt_b.float(), flipped, self.rng)
            g["sem"] = fake_b.new_zeros(()).float()
            if self.semantic is not None:  # the classifier reads G(x) as x was given: unflipped
                g["sem"] = self.semantic(DIRECTIONS[key], torch.flip(fake_b, [3]) if flipped else fake_b)
                g["G"] = g["G"] + g["sem"]
        self._backward(g["G"], [model.G, model.F])
        self.scaler.step(g_opt)
        self.scaler.step(f_opt)
        _set_requires_grad(model.D, True)
        return {**d, **g}

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> list[torch.Tensor]:
        """A->B on (A, B), then B->A on (B, A); the losses in :data:`LOSS_NAMES` order."""
        ab = self.model_step("AB", self.pair.AB, real_a, real_b)
        ba = self.model_step("BA", self.pair.BA, real_b, real_a)
        zero = real_a.new_zeros(())
        return [ab["G"] + ba["G"], ba["D"], ab["D"], ab["G_GAN"], ba["G_GAN"],
                ab.get("NCE", zero), ba.get("NCE", zero), ab.get("NCE_Y", zero), ba.get("NCE_Y", zero),
                ab["sem"], ba["sem"]]
