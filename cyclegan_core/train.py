"""The training steps and loop, and checkpoints that resume exactly (the models themselves, their
export and their fingerprint are in :mod:`cyclegan_core.models`).

The training steps are in one place each: :meth:`Trainer._step_cyclegan` (forward both cycles,
generator losses GAN + cycle + identity, one generator step, then both discriminators on pooled
fakes) and :meth:`Trainer._step_translator` (the single-translator variant of
:mod:`cyclegan_core.translator`: autoencoder step, translator step, encoding-discriminator step);
CUT / FastCUT's step is :mod:`cyclegan_core.train_cut`'s, with this Trainer's optimizers and checkpoints.

Checkpoints are safetensors plus JSON, nothing pickled: weights, optimizer moments, the LR-schedule
position (a function of the step, and the param groups; for ``plateau`` the schedulers' state and the
running loss sum of the epoch under way), the grad-scaler state, image pools, CUT's patch generator, the step
counter (which is
also the position in ``train.sampling: epoch``'s permutations) and RNG states (every rank's under
torchrun; they also draw ``train.augment``'s crops and flips), so a resumed run continues as if never
stopped. The previous checkpoint is kept until the new one is written and verified by its sha256;
a corrupt or truncated newest checkpoint is reported and training resumes from the one before.

The ``runtime`` section (device, precision, channels_last, compile, adam_impl, pin_memory, the cache and
loader, log and checkpoint intervals: :mod:`cyclegan_core.runtime`) and torchrun change how fast a step
runs, not what it learns (at most the rounding), so a run resumes under other values; on a GPU the loop
keeps loss values on the device and syncs only every ``runtime.log_every`` steps.

Over 500 lines on purpose: the steps, the loop and the checkpoints share the Trainer's state (the
networks, optimizers, pools, RNG and DDP wrappers), and a checkpoint that resumes exactly must save
and restore exactly that state; the models themselves live in :mod:`cyclegan_core.models`.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from . import ddp, train_cut
from .classifiers import SmallCNN, batch_rows, train_classifier
from .config import Config, TrainConfig
from .cut import CUTPair
from .devices import autocast, resolve_device
from .loader import ArrayImages, ImageSource, StepSampler, batch_indices, crop_and_flip, decoded_bytes, stream_batches
from .models import CheckpointError, CycleGAN, build_model, code_version, export_model, training_settings
from .networks import GANLoss, ImagePool, gradient_penalty
from .storage import atomic_path, read_json, sha256_bytes, sha256_file, write_json_atomic
from .translator import LOSS_NAMES as TRANSLATOR_LOSS_NAMES
from .translator import SingleTranslator

log = logging.getLogger(__name__)

StepProgress = Callable[[int, int, dict[str, float]], None]
LOSS_NAMES = ("G", "D_A", "D_B", "G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A", "idt_B", "sem_AB", "sem_BA")
SEMANTIC_FILE = "semantic.safetensors"  # the frozen classifiers of label-aware training, beside the checkpoints
CHECKPOINT_JSON = "checkpoint.json"
LOSSES_FILE = "losses.tsv"
# Datasets up to this size live on the GPU whole: a batch is then one gather, no host copy.
ON_DEVICE_BYTES = 1 << 30


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """LR multiplier at ``step`` (0-based): the reference's schedulers with one step for one of its epochs.

    With ``hold = steps * decay_start`` (the reference's ``n_epochs``) and ``decay = steps - hold``
    (``n_epochs_decay``), as ``get_scheduler`` in junyanz/pytorch-CycleGAN-and-pix2pix steps them:
    linear: full LR for ``hold`` steps, then ``1 - (step + 1 - hold) / (decay + 1)``, ending at
    ``1 / (decay + 1)``; step: x0.1 every ``lr_step_size`` steps; cosine: ``CosineAnnealingLR(T_max=hold)``,
    which reaches 0 at ``hold`` and rises again over the decay steps (the reference's behaviour);
    half_cosine (not the reference's): half a cosine from 1 to 0 over all steps. plateau depends on the
    losses, not the step alone: the Trainer's ReduceLROnPlateau schedulers set it (1.0 here).
    """
    if cfg.lr_policy == "plateau":
        return 1.0
    hold = int(cfg.steps * cfg.decay_start)
    if cfg.lr_policy == "step":
        size = cfg.lr_step_size or max(1, cfg.steps // 3)
        return 0.1 ** (step // size)
    if cfg.lr_policy == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(1, hold)))
    if cfg.lr_policy == "half_cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
    decay = cfg.steps - hold
    return 1.0 - max(0, step + 1 - hold) / float(decay + 1)


def plateau_scheduler(opt: torch.optim.Optimizer) -> ReduceLROnPlateau:
    """The reference's ``plateau`` (``get_scheduler`` in models/networks.py)."""
    return ReduceLROnPlateau(opt, mode="min", factor=0.2, threshold=0.01, patience=5)


def _json_floats(obj):
    """Infinities as strings (``best`` of a fresh ReduceLROnPlateau), so the checkpoint JSON stays standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_floats(v) for k, v in obj.items()}
    return [_json_floats(v) for v in obj] if isinstance(obj, list) else obj


def _from_json_floats(obj):
    if obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _from_json_floats(v) for k, v in obj.items()}
    return [_from_json_floats(v) for v in obj] if isinstance(obj, list) else obj


def _set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def _adam(params: list[nn.Parameter], t: TrainConfig, impl: str, device: torch.device,
          lr: float | None = None) -> torch.optim.Adam:
    if impl == "auto":
        impl = "fused" if device.type == "cuda" else "for_loop"  # torch's own CPU default, fastest here
    kwargs = {"fused": impl == "fused", "foreach": impl == "foreach"} if impl != "for_loop" else {"foreach": False}
    return torch.optim.Adam(params, lr=t.lr if lr is None else lr, betas=(t.beta1, 0.999), **kwargs)


def semantic_directions(cfg: Config, labels: dict[str, np.ndarray | None]) -> list[str]:
    """The directions label-aware training applies to: sources and targets labelled, one label space."""
    if cfg.train.semantic == "off" or cfg.train.lambda_semantic == 0 or cfg.model.arch == "translator":
        return []
    la, lb = labels.get("A"), labels.get("B")
    if la is None or lb is None or not len(la) or not len(lb) or min(la.min(), lb.min()) < 0:
        return []
    return ["AtoB", "BtoA"] if la.max() == lb.max() else []


class Trainer:
    """Trains a CycleGAN or the single-translator variant on two sets of uint8 images (N, H, W, C): arrays,
    or the train splits of manifests (:class:`~cyclegan_core.loader.ManifestImages`, decoded on demand).

    Step s draws the batch :func:`~cyclegan_core.loader.step_indices` gives for (train.seed, rank,
    domain, s). When both sets' decoded pixels fit ``runtime.cache_mb`` they are held in memory (or on
    the GPU) and batches are gathered there; otherwise a DataLoader decodes the same batches from the
    manifests (``runtime.loader_workers`` processes ahead).

    With ``labels`` (per domain, one int per image) and ``train.semantic: auto`` it adds the
    semantic-consistency loss: for x in X with label y, a frozen classifier of Y must label G_XY(x) y.
    That classifier learns from the images of Y that ``classifier_mask`` selects (the "classifier"
    half; validation's label judge learns from the other half), before the first step.
    """

    def __init__(self, cfg: Config, images_a: np.ndarray | ImageSource, images_b: np.ndarray | ImageSource,
                 workdir: str | Path,
                 labels: dict[str, np.ndarray | None] | None = None,
                 classifier_mask: dict[str, np.ndarray] | None = None):
        if len(images_a) == 0 or len(images_b) == 0:
            raise ValueError("training needs at least one image in each domain")
        self.cfg, self.tcfg = cfg, cfg.train
        self.speed, self.rt = cfg.runtime, cfg.runtime.step("train")  # how it runs: speed switches
        t = self.tcfg
        self.workdir = Path(workdir)
        self.device = resolve_device(self.rt.device, "runtime.device")
        self.dist = ddp.init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if self.dist.is_main:
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.sources: dict[str, ImageSource] = {
            d: ArrayImages(x) if isinstance(x, np.ndarray) else x for d, x in (("A", images_a), ("B", images_b))}
        # The decoded training set in memory when it fits the budget (arrays given are in memory already).
        self.cached = sum(decoded_bytes(s) for s in self.sources.values()) <= self.speed.cache_mb * 2**20
        # Arrays given are staged whole; manifests are decoded into the cache on first use (:meth:`_fill`), so
        # start-up does not grow with the collection and a short run decodes only the samples it draws.
        self.images: dict[str, torch.Tensor] = {}
        self._decoded: dict[str, torch.Tensor] = {}
        if self.cached:
            for d, s in self.sources.items():
                if isinstance(s, ArrayImages):
                    self.images[d] = self._stage(s.images)
                else:
                    # (N, H, W, C) permuted as _stage lays out decoded arrays: the same strides, so the same
                    # kernels (a 1-channel cache is also channels_last to torch) and the same weights.
                    blank = torch.zeros((len(s), *s.sample_shape), dtype=torch.uint8)
                    self.images[d] = self._placed(blank.permute(0, 3, 1, 2).contiguous())
                    self._decoded[d] = torch.zeros(len(s), dtype=torch.bool)
        self._streams: dict[str, Iterator[torch.Tensor]] = {}
        labels = labels or {}
        self.semantic_directions = semantic_directions(cfg, labels)
        self.labels = {d: torch.as_tensor(labels[d], dtype=torch.long).to(self.device)
                       for d in ("A", "B") if self.semantic_directions}
        self._idx: dict[str, torch.Tensor] = {}
        self._staging: dict[str, list[tuple[torch.Tensor, torch.cuda.Event | None]]] = {}

        torch.manual_seed(t.seed)  # the same initial weights on every rank
        self.arch = cfg.model.arch
        cut = train_cut.cut_settings(cfg) if self.arch in ("cut", "fastcut") else None
        self.model = build_model(cfg.model, cfg.data.channels, cut).to(self.device)
        if self.rt.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Batches, pools and penalty weights: a CPU generator, distinct per rank, in the checkpoint.
        self.rng = torch.Generator().manual_seed(t.seed + 1_000_003 * self.dist.rank)
        m = self.model
        if isinstance(m, CUTPair):  # G, D and F each have their optimizer; the networks run bare (train_cut)
            self.loss_names = train_cut.LOSS_NAMES
            train_cut.build_heads(m, cfg.data.channels, cfg.data.image_size, self.device)
            groups, trained = train_cut.param_groups(m), {}
        elif isinstance(m, SingleTranslator):
            self.loss_names = TRANSLATOR_LOSS_NAMES
            groups = {
                "AE": list(m.ae.parameters()),
                "T": [p for net in m.translators() for p in net.parameters()],
                "D": [p for net in m.discriminators() for p in net.parameters()],
            }
            trained = {"ae": m.ae, "T_AB": m.T_AB, "D_B": m.D_B}
            if m.both:
                trained |= {"T_BA": m.T_BA, "D_A": m.D_A}
        else:
            self.loss_names = LOSS_NAMES
            groups = {
                "G": list(m.G_AB.parameters()) + list(m.G_BA.parameters()),
                "D": list(m.D_A.parameters()) + list(m.D_B.parameters()),
            }
            trained = {"G_AB": m.G_AB, "G_BA": m.G_BA, "D_A": m.D_A, "D_B": m.D_B}
        self.opts = {name: _adam(params, t, self.speed.adam_impl, self.device, self._base_lr(name))
                     for name, params in groups.items()}
        self.pools = {d: ImagePool(t.pool_size, self.rng) for d in ("A", "B")}
        self.gan_loss, self.l1 = GANLoss(t.gan_mode), nn.L1Loss()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.rt.precision == "fp16")
        # plateau: one ReduceLROnPlateau per optimizer (as the reference), stepped every plateau_epoch steps with
        # that epoch's mean generator loss (summed on the device: one sync per epoch).
        self.plateau = {name: plateau_scheduler(opt) for name, opt in self.opts.items()} \
            if t.lr_policy == "plateau" else {}
        per_step = t.batch_size * self.dist.world_size
        self.plateau_epoch = t.lr_step_size or -(-max(len(s) for s in self.sources.values()) // per_step)
        self._plateau_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        # Training forwards go through DDP (gradients averaged) and torch.compile when asked; a
        # frozen discriminator in the generator step is called bare (no DDP hooks to satisfy).
        self._train_fn: dict[str, Callable] = {}
        self._frozen_fn: dict[str, Callable] = {}
        for name, net in trained.items():
            fn = ddp.wrap(net, self.device) if self.dist.enabled else net
            self._train_fn[name] = self._compile(fn)
            if name.startswith("D_"):
                self._frozen_fn[name] = self._compile(net)
        self.semantic = self._semantic_classifiers(labels, classifier_mask or {})
        self.cut = train_cut.CutSteps(
            m, self.opts, self.scaler, self._autocast, t.seed, self.dist.rank, self.dist.enabled,
            {"mode": self.rt.compile_mode, "backend": self.rt.compile_backend} if self.rt.compile else None,
            self._semantic_loss if self.semantic else None,
        ) if isinstance(m, CUTPair) else None
        self.step = 0
        self.resumed_note: str | None = None
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._last_values: dict[str, float] = {}

    # --- setup helpers -------------------------------------------------------------------------
    def _semantic_classifiers(self, labels: dict, masks: dict[str, np.ndarray]) -> dict[str, SmallCNN]:
        """The frozen classifier of each target domain (keyed by direction), trained once per model folder
        on its "classifier" half, at most ``train.semantic_max_samples`` of them (a seeded subset), and never
        more than its at most ``train.semantic_max_steps`` batches can draw: its time and memory are bounded
        whatever the collection's size."""
        if not self.semantic_directions:
            return {}
        t = self.tcfg
        classes = int(max(labels["A"].max(), labels["B"].max())) + 1
        channels = self.cfg.data.channels
        path = self.workdir / SEMANTIC_FILE
        nets = {d: SmallCNN(channels, classes, blur_sigma=1.0) for d in ("A", "B")}
        # No more samples decoded than the capped batches can draw (at 128x128 a batch holds 16 pictures).
        cap = min(t.semantic_max_samples, t.semantic_max_steps * batch_rows(*self.cfg.data.shape))
        if path.exists():
            tensors = load_file(str(path))
            for d, net in nets.items():
                net.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith(f"{d}.")})
        else:
            for k, d in enumerate(("A", "B")):
                src = self.sources[d]
                keep = np.flatnonzero(masks.get(d, np.ones(len(src), dtype=bool)))
                if len(keep) > cap:
                    pick = np.random.default_rng(t.seed + 7919 * (k + 1)).choice(len(keep), cap, replace=False)
                    keep = keep[np.sort(pick)]
                if self.cached:
                    self._fill(d, torch.as_tensor(keep))
                    sel = torch.as_tensor(keep, device=self.images[d].device)
                    images = self.images[d][sel].permute(0, 2, 3, 1).cpu().numpy()
                else:
                    images = src.take(keep)
                # Blurred input and pixel noise: the loss then rewards shapes, not faint high-frequency codes.
                nets[d] = train_classifier(images, labels[d][keep], classes, t.semantic_epochs,
                                           t.seed + 7919 * (k + 1), blur_sigma=1.0, noise_std=t.semantic_noise,
                                           max_steps=t.semantic_max_steps)
                del images
            if self.dist.is_main:
                tensors = {f"{d}.{k}": v.contiguous() for d, net in nets.items() for k, v in net.state_dict().items()}
                with atomic_path(path) as tmp:
                    tmp.write_bytes(save(tensors))
        out = {}
        for direction in self.semantic_directions:
            net = nets[direction[-1]].to(self.device).eval()
            for p in net.parameters():
                p.requires_grad_(False)
            out[direction] = net
        return out

    def _semantic_loss(self, direction: str, fake: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target classifier on G(x) (plus noise) against x's label."""
        net = self.semantic.get(direction)
        source = direction[0]
        if net is None or source not in self._idx:
            return fake.new_zeros(())
        y = self.labels[source][self._idx[source].to(self.device)]
        x = fake.float()
        if self.tcfg.semantic_noise > 0:
            x = x + self.tcfg.semantic_noise * torch.randn(x.shape, generator=self.rng).to(x.device)
        return nn.functional.cross_entropy(net(x), y) * self.tcfg.lambda_semantic

    def _fill(self, domain: str, idx: torch.Tensor) -> None:
        """Decode into the cache the samples of ``idx`` it does not hold yet (manifest sources only)."""
        decoded = self._decoded.get(domain)
        if decoded is None:
            return
        idx = idx.cpu()
        missing = torch.unique(idx[~decoded[idx]])
        if len(missing):
            cache = self.images[domain]
            fresh = torch.from_numpy(self.sources[domain].take(missing.numpy())).permute(0, 3, 1, 2)
            cache[missing.to(cache.device)] = fresh.to(cache.device)
            decoded[missing] = True

    def _stage(self, images: np.ndarray) -> torch.Tensor:
        return self._placed(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous())

    def _placed(self, x: torch.Tensor) -> torch.Tensor:
        """The cache tensor (N, C, H, W) where batches are gathered: on the GPU up to ON_DEVICE_BYTES, else
        pinned host memory when ``runtime.pin_memory`` (on CUDA), else host memory as it is."""
        if self.device.type == "cuda":
            if x.numel() <= ON_DEVICE_BYTES:
                return x.to(self.device)
            if self.speed.pin_memory:
                return x.pin_memory()
        return x

    def _compile(self, fn: nn.Module) -> Callable:
        if not self.rt.compile:
            return fn
        return torch.compile(fn, mode=self.rt.compile_mode, backend=self.rt.compile_backend)

    def _base_lr(self, opt_name: str) -> float:
        """The learning rate of one optimizer before its schedule: ``train.lr_d`` for the discriminators'
        (arch cyclegan and translator) where it is set, else ``train.lr``."""
        return self.tcfg.lr_d if opt_name == "D" and self.tcfg.lr_d is not None else self.tcfg.lr

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.rt.precision)

    def _backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def _gan(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        return self.gan_loss(pred.float(), real)

    def _d_loss(self, domain: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """0.5 * (D(real) as real + D(pooled fake) as fake), + the gradient penalty for WGAN-GP."""
        net = self._train_fn[f"D_{domain}"]
        pooled = self.pools[domain].query(fake)
        with self._autocast():
            loss = 0.5 * (self._gan(net(real), True) + self._gan(net(pooled), False))
            if self.tcfg.gan_mode == "wgangp" and self.tcfg.lambda_gp > 0:  # 0: the reference's (no penalty)
                raw = getattr(self.model, f"D_{domain}")
                loss = loss + gradient_penalty(raw, real, pooled, self.rng, weight=self.tcfg.lambda_gp)
        return loss

    # --- the training steps --------------------------------------------------------------------
    def _batch(self, domain: str) -> torch.Tensor:
        """Step ``self.step``'s batch of ``domain`` in [-1, 1]: gathered from the cache, or the next streamed one.

        The cache draws its indices from the trainer's generator, interleaved with the image pools' draws
        (as before streaming existed: the demo's batches, and its figures, are unchanged); the stream
        draws step ``s``'s indices from (seed, rank, domain, s) alone, so workers can decode ahead. Both
        are uniform with replacement, but they are different sequences: a cached and a streamed run of
        the same config train on different batches.
        """
        t = self.tcfg
        if not self.cached:
            self._idx[domain] = batch_indices(t.sampling, len(self.sources[domain]), t.batch_size, t.seed,
                                              self.dist.rank, self.dist.world_size, domain, self.step)
            x = next(self._streams[domain]).to(self.device, non_blocking=True)
            return self._augmented(self._scaled(x))
        images = self.images[domain]
        if t.sampling == "epoch":  # the same batches as streamed: a function of the step
            idx = batch_indices(t.sampling, len(images), t.batch_size, t.seed, self.dist.rank, self.dist.world_size,
                                domain, self.step)
        else:
            idx = torch.randint(0, len(images), (t.batch_size,), generator=self.rng)
        self._idx[domain] = idx
        self._fill(domain, idx)
        if images.device == self.device:
            x = images[idx.to(self.device)]
        elif images.is_pinned():
            x = self._pinned_copy(domain, images, idx)
        else:
            x = images[idx].to(self.device)
        return self._augmented(self._scaled(x))

    def _augmented(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tcfg
        if t.augment == "none":
            return x
        x = crop_and_flip(x, t.augment, t.load_ratio, self.rng)
        return x.contiguous(memory_format=torch.channels_last) if self.rt.channels_last else x

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(127.5).sub_(1.0)
        if self.rt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _pinned_copy(self, domain: str, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Gather into one of two pinned buffers and copy asynchronously (buffer reuse waits on its copy)."""
        bufs = self._staging.setdefault(domain, [])
        if len(bufs) < 2:
            bufs.append((torch.empty((len(idx), *images.shape[1:]), dtype=images.dtype).pin_memory(), None))
        buf, event = bufs.pop(0)
        if event is not None:
            event.synchronize()
        torch.index_select(images, 0, idx, out=buf)
        x = buf.to(self.device, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        bufs.append((buf, done))
        return x

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, float]:
        """One optimisation step on the given batches; the losses, checked to be finite.

        The batches carry no labels, so the semantic loss (which needs them) is zero here.
        """
        self._idx = {}
        losses = self._step(real_A.to(self.device), real_B.to(self.device))
        self._finite &= torch.isfinite(losses).all()
        return self._check(losses)

    def _step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> torch.Tensor:
        if not self.plateau:
            factor = lr_factor(self.step, self.tcfg)
            for name, opt in self.opts.items():
                for group in opt.param_groups:
                    group["lr"] = self._base_lr(name) * factor
        if self.cut is not None:
            losses = self.cut.step(real_A, real_B)
        elif self.arch == "translator":
            losses = self._step_translator(real_A, real_B)
        else:
            losses = self._step_cyclegan(real_A, real_B)
        self.scaler.update()
        self.step += 1
        stacked = torch.stack([v.detach().float() for v in losses])
        if self.plateau:
            self._plateau_step(stacked[0])
        return stacked

    def _plateau_step(self, loss_g: torch.Tensor) -> None:
        """Add this step's generator loss; at the end of an epoch step every scheduler with its mean
        (the mean over all ranks under torchrun, so their LRs agree)."""
        self._plateau_sum += loss_g.double()
        if self.step % self.plateau_epoch:
            return
        total = self._plateau_sum
        if self.dist.enabled:
            total = torch.stack(ddp.all_gather(total, self.device)).mean()
        metric = float(total) / self.plateau_epoch
        for sched in self.plateau.values():
            sched.step(metric)
        self._plateau_sum.zero_()

    def _step_cyclegan(self, real_A: torch.Tensor, real_B: torch.Tensor) -> list[torch.Tensor]:
        t, m, fn = self.tcfg, self.model, self._train_fn
        assert isinstance(m, CycleGAN)
        with self._autocast():
            fake_B = fn["G_AB"](real_A)
            rec_A = fn["G_BA"](fake_B)
            fake_A = fn["G_BA"](real_B)
            rec_B = fn["G_AB"](fake_A)

        # Generators: fool both discriminators, close both cycles, stay identity on the target.
        _set_requires_grad([m.D_A, m.D_B], False)
        self.opts["G"].zero_grad(set_to_none=True)
        with self._autocast():
            zero = real_A.new_zeros(())
            if t.lambda_identity > 0:
                idt_A = self.l1(fn["G_AB"](real_B).float(), real_B) * t.lambda_b * t.lambda_identity
                idt_B = self.l1(fn["G_BA"](real_A).float(), real_A) * t.lambda_a * t.lambda_identity
            else:
                idt_A = idt_B = zero
            g_ab = self._gan(self._frozen_fn["D_B"](fake_B), True)
            g_ba = self._gan(self._frozen_fn["D_A"](fake_A), True)
            cycle_A = self.l1(rec_A.float(), real_A) * t.lambda_a
            cycle_B = self.l1(rec_B.float(), real_B) * t.lambda_b
            # Label-aware training only (train.semantic): G(x) must keep x's label for a frozen classifier.
            sem_AB = self._semantic_loss("AtoB", fake_B)
            sem_BA = self._semantic_loss("BtoA", fake_A)
            loss_G = g_ab + g_ba + cycle_A + cycle_B + idt_A + idt_B + sem_AB + sem_BA
        self._backward(loss_G)
        self.scaler.step(self.opts["G"])

        # Discriminators: real vs. a pool of past fakes, each loss halved as in the reference.
        _set_requires_grad([m.D_A, m.D_B], True)
        self.opts["D"].zero_grad(set_to_none=True)
        loss_D_B = self._d_loss("B", real_B, fake_B.detach())
        self._backward(loss_D_B)
        loss_D_A = self._d_loss("A", real_A, fake_A.detach())
        self._backward(loss_D_A)
        self.scaler.step(self.opts["D"])
        return [loss_G, loss_D_A, loss_D_B, g_ab, g_ba, cycle_A, cycle_B, idt_A, idt_B, sem_AB, sem_BA]

    def _step_translator(self, real_A: torch.Tensor, real_B: torch.Tensor) -> list[torch.Tensor]:
        t, m, fn = self.tcfg, self.model, self._train_fn
        assert isinstance(m, SingleTranslator)
        # 1. Shared encoder/decoder as an autoencoder on both domains.
        self.opts["AE"].zero_grad(set_to_none=True)
        with self._autocast():
            h_a, rec_a = fn["ae"](real_A)
            h_b, rec_b = fn["ae"](real_B)
            recon_A = self.l1(rec_a.float(), real_A) * t.lambda_recon
            recon_B = self.l1(rec_b.float(), real_B) * t.lambda_recon
        self._backward(recon_A + recon_B)
        self.scaler.step(self.opts["AE"])

        # 2. Translator(s) on the (fixed) encodings: fool the encoding discriminator, and stay
        #    identity on encodings of the target domain (the deviation loss).
        h_a, h_b = h_a.detach(), h_b.detach()
        _set_requires_grad(m.discriminators(), False)
        self.opts["T"].zero_grad(set_to_none=True)
        zero = real_A.new_zeros(())
        with self._autocast():
            fake_hb = fn["T_AB"](h_a)
            t_ab = self._gan(self._frozen_fn["D_B"](fake_hb), True)
            dev_B = self.l1(fn["T_AB"](h_b).float(), h_b.float()) * t.lambda_deviation
            t_ba = dev_A = zero
            if m.both:
                fake_ha = fn["T_BA"](h_b)
                t_ba = self._gan(self._frozen_fn["D_A"](fake_ha), True)
                dev_A = self.l1(fn["T_BA"](h_a).float(), h_a.float()) * t.lambda_deviation
            loss_T = t_ab + t_ba + dev_A + dev_B
        self._backward(loss_T)
        self.scaler.step(self.opts["T"])

        # 3. Encoding discriminator(s): real encodings vs. a pool of translated ones.
        _set_requires_grad(m.discriminators(), True)
        self.opts["D"].zero_grad(set_to_none=True)
        loss_D_B = self._d_loss("B", h_b, fake_hb.detach())
        self._backward(loss_D_B)
        loss_D_A = zero
        if m.both:
            loss_D_A = self._d_loss("A", h_a, fake_ha.detach())
            self._backward(loss_D_A)
        self.scaler.step(self.opts["D"])
        return [loss_T, loss_D_A, loss_D_B, t_ab, t_ba, recon_A, recon_B, dev_A, dev_B]

    def _check(self, losses: torch.Tensor) -> dict[str, float]:
        """Sync the losses to the host; raise if any loss since the last check was not finite."""
        values = dict(zip(self.loss_names, losses.tolist(), strict=True))
        if not bool(self._finite):
            bad = [k for k, v in values.items() if not np.isfinite(v)]
            raise FloatingPointError(
                f"training diverged by step {self.step}: non-finite loss "
                f"{', '.join(bad) or '(in an earlier step since the last check)'}; "
                f"the last good checkpoint in {self.workdir} is kept (lower train.lr, or use fp32)"
            )
        self._last_values = values
        return values

    # --- the loop ------------------------------------------------------------------------------
    def run(self, progress: StepProgress | None = None) -> float:
        """:meth:`fit`, then under torchrun check that the replicas agree and leave the process group
        (every rank, also on failure); returns seconds spent. Rank 0 alone exports afterwards."""
        try:
            seconds = self.fit(progress)
            if self.dist.enabled:
                ddp.check_in_sync(self.model, self.device)
            return seconds
        finally:
            if self.dist.enabled:
                ddp.barrier_and_finish()

    def fit(self, progress: StepProgress | None = None) -> float:
        """Train up to ``train.steps`` from wherever the trainer stands; returns seconds spent."""
        t0 = time.perf_counter()
        t = self.tcfg
        if self.speed.num_threads:
            torch.set_num_threads(self.speed.num_threads)
        self.model.train()
        main = self.dist.is_main
        log_path = self.workdir / LOSSES_FILE
        # At step 0 nothing was checkpointed: rows left by a run killed before its first checkpoint (or a
        # file it created but never flushed its header to) are not part of this run.
        new_log = not log_path.exists() or self.step == 0
        mode = "w" if new_log else "a"
        with open(log_path, mode, newline="", encoding="utf-8") if main else contextlib.nullcontext() as log_file:
            writer = csv.writer(log_file, delimiter="\t") if log_file else None
            if writer and new_log:
                writer.writerow(["step", "lr", *self.loss_names])
            if not self.cached:  # from this step on: a resumed run streams what an unbroken one does
                pin, workers = self.device.type == "cuda" and self.speed.pin_memory, self.speed.loader_workers
                self._streams = {d: stream_batches(src, StepSampler(len(src), t.batch_size, t.seed, self.dist.rank, d,
                                                                    self.step, t.steps, t.sampling,
                                                                    self.dist.world_size), workers, pin)
                                 for d, src in self.sources.items()}
            try:
                self._loop(writer, log_file, progress)
            finally:
                self._streams = {}
        return time.perf_counter() - t0

    def _loop(self, writer, log_file, progress: StepProgress | None) -> None:
        """Steps until ``train.steps``: log every ``runtime.log_every``, checkpoint every
        ``runtime.checkpoint_every``."""
        t, speed = self.tcfg, self.speed
        while self.step < t.steps:
            losses = self._step(self._batch("A"), self._batch("B"))
            self._finite &= torch.isfinite(losses).all()  # stays on the device: no sync
            logged = self.step % speed.log_every == 0 or self.step == t.steps
            checkpoint = self.step % speed.checkpoint_every == 0 and self.step < t.steps
            if logged or checkpoint:
                values = self._check(losses)
                if logged and writer:
                    lr = next(iter(self.opts.values())).param_groups[0]["lr"]
                    writer.writerow([self.step, f"{lr:.6g}", *(f"{values[n]:.6f}" for n in self.loss_names)])
            if checkpoint:
                if log_file:
                    log_file.flush()
                self.save_checkpoint()
            if progress:
                progress(self.step, t.steps, self._last_values)

    # --- checkpoints ---------------------------------------------------------------------------
    def _state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {
            f"model.{k}": v.detach().contiguous().cpu().clone() for k, v in self.model.state_dict().items()
        }
        groups = {}
        for name, opt in self.opts.items():
            sd = opt.state_dict()
            for idx, st in sd["state"].items():
                for key, val in st.items():
                    tensors[f"opt.{name}.{idx}.{key}"] = torch.as_tensor(val).detach().contiguous().cpu().clone()
            groups[name] = sd["param_groups"]
        # Per-rank state (pools, RNG): every rank's copy, gathered to rank 0.
        local = {f"pool.{d}": p.state_tensor() for d, p in self.pools.items()}
        local["rng"] = self.rng.get_state()
        if self.cut is not None:
            local["patch_rng"] = self.cut.rng.get_state()
        if self.plateau:
            local["plateau_sum"] = self._plateau_sum.detach().cpu().clone()
        for key, val in local.items():
            copies = ddp.all_gather(val, self.device) if self.dist.enabled else [val]
            for r, c in enumerate(copies):
                tensors[f"rank{r}.{key}"] = c.contiguous().clone()
        return tensors, groups

    def save_checkpoint(self) -> Path:
        """Write ``ckpt-<step>.safetensors``, verify it, then point ``checkpoint.json`` at it.

        The previous checkpoint stays until the new one is verified, and one step behind after,
        so a file damaged later (disk, copy, a kill mid-write elsewhere) still leaves one to use.
        """
        tensors, groups = self._state_tensors()
        name = f"ckpt-{self.step:08d}.safetensors"
        path = self.workdir / name
        if not self.dist.is_main:
            return path
        blob = save(tensors)
        digest = sha256_bytes(blob)
        with atomic_path(path) as tmp:
            tmp.write_bytes(blob)
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: reads back with another sha256 than was written; disk problem?")
        meta_path = self.workdir / CHECKPOINT_JSON
        previous = None
        if meta_path.exists():
            with contextlib.suppress(Exception):
                old = read_json(meta_path)
                if old["file"] != name and (self.workdir / old["file"]).exists():
                    previous = {k: old[k] for k in ("step", "file", "sha256", "param_groups", "scaler", "plateau")
                                if k in old}
        write_json_atomic(meta_path, {
            "step": self.step, "file": name, "sha256": digest, "world_size": self.dist.world_size,
            "settings": training_settings(self.cfg), "param_groups": groups,
            "scaler": self.scaler.state_dict(), "previous": previous,
            "plateau": {name: _json_floats(sched.state_dict()) for name, sched in self.plateau.items()},
        })
        keep = {name} | ({previous["file"]} if previous else set())
        for stale in self.workdir.glob("ckpt-*.safetensors"):
            if stale.name not in keep:
                stale.unlink()
        return path

    def try_resume(self) -> int | None:
        """Load the newest good checkpoint in the work folder, if any; returns the step resumed from.

        A checkpoint whose file is missing or whose sha256 does not match is reported (logged and
        kept in ``resumed_note``) and the previous one is used; if none is good, CheckpointError.
        """
        meta_path = self.workdir / CHECKPOINT_JSON
        if not meta_path.exists():
            return None
        try:
            meta = read_json(meta_path)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{meta_path}: unreadable ({err}); delete the folder to start over") from None
        if meta["settings"] != training_settings(self.cfg):
            changed = _diff(meta["settings"], training_settings(self.cfg))
            raise CheckpointError(
                f"{meta_path}: written under another configuration ({changed}); refusing to resume "
                "(delete the folder to start over)"
            )
        if meta.get("world_size", 1) != self.dist.world_size:
            raise CheckpointError(
                f"{meta_path}: written by {meta.get('world_size', 1)} processes, resuming with "
                f"{self.dist.world_size}; an exact resume needs the same number"
            )
        problems = []
        for cand in (meta, meta.get("previous")):
            if not cand:
                continue
            path = self.workdir / cand["file"]
            if not path.exists():
                problems.append(f"{path}: missing")
                continue
            if sha256_file(path) != cand["sha256"]:
                problems.append(f"{path}: corrupt (sha256 does not match {meta_path})")
                continue
            self._load(load_file(str(path)), cand)
            if problems:
                self.resumed_note = "; ".join(problems) + f"; resumed from the previous checkpoint, step {self.step}"
                log.warning(self.resumed_note)
            return self.step
        raise CheckpointError("no usable checkpoint: " + "; ".join(problems) + " (delete the folder to start over)")

    def _load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for name, opt in self.opts.items():
            state: dict[int, dict[str, torch.Tensor]] = {}
            prefix = f"opt.{name}."
            for key, val in tensors.items():
                if key.startswith(prefix):
                    idx, field = key[len(prefix):].split(".", 1)
                    state.setdefault(int(idx), {})[field] = val
            # JSON has no tuples: betas come back as lists; give them their type back.
            groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"][name]]
            opt.load_state_dict({"state": state, "param_groups": groups})
            # Moments in the parameter's memory format (channels_last), as a fresh run has them.
            for p, st in opt.state.items():
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        st[key] = torch.empty_like(p).copy_(st[key])
        r = self.dist.rank
        for d, pool in self.pools.items():
            pool.load_state_tensor(tensors[f"rank{r}.pool.{d}"], self.device)
        self.rng.set_state(tensors[f"rank{r}.rng"])
        if self.cut is not None:
            self.cut.rng.set_state(tensors[f"rank{r}.patch_rng"])
        if self.plateau:
            for name, sched in self.plateau.items():
                sched.load_state_dict(_from_json_floats(meta["plateau"][name]))
            self._plateau_sum = tensors[f"rank{r}.plateau_sum"].to(self.device)
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.step = int(meta["step"])
        if self.dist.is_main:
            _truncate_log(self.workdir / LOSSES_FILE, self.step)

    def export(self, fingerprint: str, seconds: float) -> Path:
        """Write the generator weights to ``model.safetensors`` and describe them in ``model.json``."""
        return export_model(self.model, self.workdir, {
            "fingerprint": fingerprint, "steps": self.step,
            "train_seconds": round(seconds, 2), "code_version": code_version(),
            "channels": self.cfg.data.channels, "image_size": self.cfg.data.image_size,
            "kind": self.cfg.data.kind, "shape": list(self.cfg.data.shape),
            "arch": self.arch, "model": self.cfg.model.model_dump(mode="json"), "config": self.cfg.to_dict(),
        })


def _diff(old: dict, new: dict, prefix: str = "") -> str:
    """``train.lr: 0.0002 -> 0.001, ...`` for the keys that differ."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _diff(a, b, f"{prefix}{key}.")
            if sub:
                out.append(sub)
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return ", ".join(out)


def _truncate_log(path: Path, step: int) -> None:
    """Drop loss rows logged after the checkpoint, so a resumed log has no duplicates."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [ln for i, ln in enumerate(lines) if i == 0 or int(ln.split("\t", 1)[0]) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept), encoding="utf-8")


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
