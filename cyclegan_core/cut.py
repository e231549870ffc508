"""CUT and FastCUT (Park, Efros, Zhang and Zhu, "Contrastive Learning for Unpaired Image-to-Image
Translation", ECCV 2020): one ResNet generator, one PatchGAN, and a patchwise contrastive loss
(PatchNCE) between the generator's encoder features of an input and of its translation, in place of
CycleGAN's second generator and cycle.

- :func:`encoder_features`: the ResNet generator's activations after given modules of its flat
  ``model`` Sequential (the reference's ``netG(x, layers, encode_only=True)``);
- :class:`PatchSampleMLP`: the projection head (the reference's ``netF = mlp_sample``): per layer,
  the same random patch positions for query and key, a 2-layer MLP, L2-normalised; created on the
  first forward from the feature shapes, as in the reference; patches are drawn from a
  ``torch.Generator`` the caller passes (a run resumes exactly), not from the global RNG;
- :class:`PatchNCELoss` (negatives from the same image only), :func:`discriminator_loss`,
  :func:`generator_loss` and :func:`cut_losses`, as the reference's ``compute_D_loss`` /
  ``compute_G_loss``; :class:`CUTModel` holds G, D and F; :class:`CutSettings` holds the paper's
  two presets.

Written from the paper and checked against the reference code (taesungp/contrastive-unpaired-translation
at b3ac297708dfb6f7589d04662277e53c0d579c27, run with ``--no_antialias --no_antialias_up``, where
its generator and discriminator are CycleGAN's): ``benchmarks/cut_reference_check.py`` copies our
weights into it and compares; ``tests/test_cut.py`` pins its figures. The reference's default
anti-aliased down/upsampling (blur-pool) has the same parameters but other activations and other
module indices; it is not built here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig
from .networks import GAN_MODES, GANLoss, ResnetGenerator, define_discriminator, define_generator, init_weights

NCE_LAYERS = (0, 4, 8, 12, 16)
# The reference's CUT options initialise G, D and F with xavier (gain 0.02); CycleGAN uses normal.
REFERENCE_INIT = ("xavier", 0.02)


@dataclass(frozen=True)
class CutSettings:
    """The CUT-specific settings, with the reference's defaults (``CUT_mode CUT``).

    The reference's other CUT defaults are the trainer's: no image pool (pool size 0), batch size 1,
    Adam with ``lr``/``beta1``/``beta2`` for G, D and F alike, the linear schedule over
    ``n_epochs`` + ``n_epochs_decay`` epochs, xavier init (:data:`REFERENCE_INIT`).
    """

    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    nce_idt: bool = True  # NCE also on (Y, G(Y)), averaged with NCE(X, G(X)): CUT's identity term
    flip_equivariance: bool = False  # FastCUT: G sees a horizontally flipped batch half the time
    nce_layers: tuple[int, ...] = NCE_LAYERS  # indices into the ResNet generator's ``model`` Sequential
    nce_t: float = 0.07
    num_patches: int = 256  # per layer and image (fewer where a feature map has fewer positions)
    head_channels: int = 256  # the reference's netF_nc
    gan_mode: str = "lsgan"
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_epochs: int = 200
    n_epochs_decay: int = 200

    def __post_init__(self) -> None:
        layers = self.nce_layers
        if not layers or any(b <= a for a, b in itertools.pairwise(layers)) or layers[0] < 0:
            raise ValueError(f"nce_layers={layers}: need one or more increasing module indices >= 0")
        if self.lambda_nce < 0 or self.lambda_gan < 0:
            raise ValueError(f"lambda_gan={self.lambda_gan}, lambda_nce={self.lambda_nce}: weights must be >= 0")
        if self.nce_t <= 0 or self.num_patches < 1 or self.head_channels < 1:
            raise ValueError("nce_t must be > 0, num_patches and head_channels >= 1")
        if self.gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode {self.gan_mode!r} is not one of {', '.join(GAN_MODES)}")


CUT = CutSettings()
FASTCUT = CutSettings(lambda_nce=10.0, nce_idt=False, flip_equivariance=True, n_epochs=150, n_epochs_decay=50)
PRESETS = {"cut": CUT, "fastcut": FASTCUT}


def encoder_features(generator: ResnetGenerator, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
    """The outputs of the modules ``layers`` (increasing) of ``generator.model``; stops after the last.

    Index 0 is the reflection-padded image, 4 the first strided conv (before its norm), then what
    the network's module order puts there: with the reference's 2 downsamplings and 9 blocks, 8 is the
    second downsampling's norm, 12 and 16 the outputs of residual blocks 3 and 7.

    As in the reference, a returned tensor that the next module changes in place is returned
    changed: layer 8 (a norm followed by ``ReLU(inplace=True)``) comes back rectified.
    """
    modules = generator.model
    if layers and layers[-1] >= len(modules):
        raise ValueError(f"layer {layers[-1]}: the generator has {len(modules)} modules")
    wanted, feats = set(layers), []
    for i, module in enumerate(modules):
        x = module(x)
        if i in wanted:
            feats.append(x)
            if i == layers[-1]:
                break
    return feats


def draw_patch_ids(feats: Sequence[torch.Tensor], num_patches: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Per feature map, ``min(num_patches, H*W)`` distinct positions (CPU long tensors), in draw order."""
    return [torch.randperm(f.shape[2] * f.shape[3], generator=generator)[:num_patches] for f in feats]


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    # The reference's Normalize: x / (||x|| + 1e-7) over the channels. The squared norm is clamped at
    # 1e-30 (no change to any value): for an all-zero vector (a patch of zeros after a ReLU in small
    # networks, through a head whose biases start at 0) the square root's gradient is otherwise
    # infinite and the loss NaN, as it is in the reference.
    return x / (x.pow(2).sum(-1, keepdim=True).clamp_min(1e-30).pow(0.5) + 1e-7)


class PatchSampleMLP(nn.Module):
    """Samples the same patch positions from each layer's features and projects them to the unit sphere.

    One ``Linear(C_l, nc) - ReLU - Linear(nc, nc)`` per layer, built on the first forward from the
    channels ``C_l`` the features have (or by :meth:`create`), initialised by :func:`init_weights`
    (the global RNG, as the reference). Until then the module has no parameters.
    """

    def __init__(self, head_channels: int = 256, init_type: str = "normal", init_gain: float = 0.02):
        super().__init__()
        self.head_channels = head_channels
        self.init_type, self.init_gain = init_type, init_gain
        self.mlps = nn.ModuleList()

    @property
    def built(self) -> bool:
        return len(self.mlps) > 0

    def create(self, channels: Sequence[int]) -> None:
        if self.built:
            raise RuntimeError("the projection head is built already")
        nc = self.head_channels
        for c in channels:
            self.mlps.append(nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)))
        init_weights(self, self.init_type, self.init_gain)

    def forward(self, feats: Sequence[torch.Tensor], num_patches: int, patch_ids: Sequence[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(B, P, nc)`` unit vectors per layer and the positions taken (drawn from ``generator`` if not given)."""
        if patch_ids is None:
            if generator is None:
                raise ValueError("give patch_ids or a generator to draw them from")
            patch_ids = draw_patch_ids(feats, num_patches, generator)
        if not self.built:
            self.create([f.shape[1] for f in feats])
        if len(feats) != len(self.mlps) or len(patch_ids) != len(feats):
            raise ValueError(f"{len(feats)} feature maps, {len(patch_ids)} patch sets, {len(self.mlps)} MLPs")
        out = []
        for feat, ids, mlp in zip(feats, patch_ids, self.mlps, strict=True):
            flat = feat.permute(0, 2, 3, 1).flatten(1, 2)  # (B, H*W, C), positions in row-major order
            out.append(_l2_normalize(mlp(flat[:, ids.to(feat.device)])))
        return out, list(patch_ids)


class PatchNCELoss(nn.Module):
    """InfoNCE per query patch: its key at the same position against the other positions of the same image.

    ``query`` and ``key`` are ``(B, P, C)`` unit vectors (keys get no gradient). Logits are the
    cosine similarities over ``temperature``; a patch's similarity to itself among the negatives
    is set to -10 (the reference's mask). Returns the ``B*P`` cross-entropies.
    """

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        self.temperature = temperature

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        key = key.detach()
        b, p, _ = query.shape
        positive = (query * key).sum(-1, keepdim=True)  # (B, P, 1)
        negative = torch.bmm(query, key.transpose(1, 2))  # (B, P, P)
        eye = torch.eye(p, device=query.device, dtype=torch.bool)[None]
        negative = negative.masked_fill(eye, -10.0)
        logits = torch.cat([positive, negative], 2).reshape(b * p, p + 1) / self.temperature
        target = torch.zeros(b * p, dtype=torch.long, device=query.device)
        return nn.functional.cross_entropy(logits.float(), target, reduction="none")


class CUTModel(nn.Module):
    """The generator ``G`` (A->B), the discriminator ``D`` (judging B) and the projection head ``F``.

    Networks as ``cfg`` says (the generator must be the ResNet: the NCE layers index its modules),
    initialised with ``cfg.init_type`` / ``cfg.init_gain``; the head is built on first use, or by
    :meth:`build_head` (before its optimizer, a checkpoint load or a DDP wrap).
    """

    def __init__(self, cfg: ModelConfig, channels: int, settings: CutSettings = CUT):
        super().__init__()
        if cfg.generator != "resnet":
            raise ValueError(f"CUT needs the ResNet generator (its NCE layers are module indices), "
                             f"not {cfg.generator!r}")
        self.settings = settings
        self.G = define_generator("resnet", channels, channels, cfg.ngf, cfg.norm, n_blocks=cfg.n_blocks,
                                  use_dropout=cfg.use_dropout, upsample=cfg.upsample, input_skip=cfg.input_skip)
        self.D = define_discriminator(cfg.discriminator, channels, cfg.ndf, cfg.discriminator_norm, cfg.n_layers_d)
        if settings.nce_layers[-1] >= len(self.G.model):
            raise ValueError(f"nce_layers {settings.nce_layers}: the ResNet generator with n_blocks={cfg.n_blocks} "
                             f"has {len(self.G.model)} modules")
        self.F = PatchSampleMLP(settings.head_channels, cfg.init_type, cfg.init_gain)
        for net in (self.G, self.D):
            init_weights(net, cfg.init_type, cfg.init_gain)
        self.gan_loss = GANLoss(settings.gan_mode)
        self.nce = PatchNCELoss(settings.nce_t)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert isinstance(self.G, ResnetGenerator)
        return encoder_features(self.G, x, self.settings.nce_layers)

    @torch.no_grad()
    def build_head(self, example: torch.Tensor) -> None:
        """Build ``F`` from the features of ``example`` (one image is enough), if not built yet."""
        if not self.F.built:
            self.F.create([f.shape[1] for f in self.encode(example[:1])])

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor, flip: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``G(A)`` and, with ``nce_idt``, ``G(B)`` in one batch; both of the flipped images when ``flip``."""
        real = torch.cat([real_a, real_b]) if self.settings.nce_idt else real_a
        if flip:
            real = torch.flip(real, [3])
        fake = self.G(real)
        n = real_a.shape[0]
        return fake[:n], (fake[n:] if self.settings.nce_idt else None)


def draw_flip(settings: CutSettings, generator: torch.Generator) -> bool:
    """FastCUT's coin: flip this step's batch with probability 1/2 (no draw when flip-equivariance is off)."""
    return settings.flip_equivariance and bool(torch.rand((), generator=generator) < 0.5)


def nce_loss(model: CUTModel, src: torch.Tensor, tgt: torch.Tensor, flipped: bool,
             generator: torch.Generator) -> torch.Tensor:
    """``lambda_NCE`` x the mean over layers of PatchNCE(features of ``tgt`` = G(src) as queries, of ``src`` as keys).

    When G saw the flipped ``src`` the query features are flipped back, so the loss asks for
    flip-equivariance. The keys' patch positions are drawn from ``generator``, the queries' are the same.
    """
    s = model.settings
    feat_q = model.encode(tgt)
    if flipped:
        feat_q = [torch.flip(f, [3]) for f in feat_q]
    keys, ids = model.F(model.encode(src), s.num_patches, generator=generator)
    queries, _ = model.F(feat_q, s.num_patches, ids)
    per_layer = [model.nce(q, k).mean() for q, k in zip(queries, keys, strict=True)]
    return s.lambda_nce * torch.stack(per_layer).mean()


def discriminator_loss(model: CUTModel, fake_b: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """``D``: (GAN(D(G(A)), fake) + GAN(D(B), real)) / 2, no image pool and no gradient to G."""
    fake = model.gan_loss(model.D(fake_b.detach()), False)
    real = model.gan_loss(model.D(real_b), True)
    return {"D": (fake + real) * 0.5, "D_fake": fake, "D_real": real}


def generator_loss(model: CUTModel, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor,
                   idt_b: torch.Tensor | None, flipped: bool, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``G``: lambda_GAN GAN(D(G(A)), real) + NCE(A, G(A)), the NCE averaged with NCE(B, G(B)) for CUT.

    ``G_GAN``, ``NCE`` and ``NCE_Y`` are reported as the reference names them (NCE terms include lambda_NCE).
    """
    s = model.settings
    zero = fake_b.new_zeros(())
    gan = model.gan_loss(model.D(fake_b), True) * s.lambda_gan if s.lambda_gan > 0 else zero
    out = {"G_GAN": gan}
    if s.lambda_nce > 0:
        out["NCE"] = nce_loss(model, real_a, fake_b, flipped, generator)
        if s.nce_idt:
            assert idt_b is not None
            out["NCE_Y"] = nce_loss(model, real_b, idt_b, flipped, generator)
            out["G"] = gan + (out["NCE"] + out["NCE_Y"]) * 0.5
        else:
            out["G"] = gan + out["NCE"]
    else:
        out["G"] = gan
    return out


def cut_losses(model: CUTModel, real_a: torch.Tensor, real_b: torch.Tensor, generator: torch.Generator,
               flip: bool | None = None) -> dict[str, torch.Tensor]:
    """One forward and both losses against the same ``D`` (the reference's first, data-dependent pass).

    ``flip`` None draws FastCUT's coin from ``generator`` (:func:`draw_flip`); then the patches of
    NCE(A, G(A)), then those of NCE(B, G(B)). A training step instead takes ``D``'s loss, steps ``D``,
    then takes ``G``'s loss against the stepped ``D``, as the reference's ``optimize_parameters``.
    """
    flipped = draw_flip(model.settings, generator) if flip is None else flip
    fake_b, idt_b = model.translate(real_a, real_b, flipped)
    return {**discriminator_loss(model, fake_b, real_b),
            **generator_loss(model, real_a, real_b, fake_b, idt_b, flipped, generator)}


class CUTPair(nn.Module):
    """The two one-sided models of a run: ``AB`` (A->B, its D judging B) and ``BA`` (B->A, judging A).

    The pipeline translates both ways and its cycle figures need a way back, so an ``arch: cut`` run
    trains both; they share nothing. ``generators()`` / ``exported()`` are ``G_AB`` and ``G_BA``,
    as a CycleGAN's (an exported CUT model loads into a CycleGAN's generator keys).
    """

    def __init__(self, cfg: ModelConfig, channels: int, settings: CutSettings = CUT):
        super().__init__()
        self.settings = settings
        self.AB = CUTModel(cfg, channels, settings)
        self.BA = CUTModel(cfg, channels, settings)

    def models(self) -> dict[str, CUTModel]:
        return {"AB": self.AB, "BA": self.BA}

    def generators(self) -> nn.ModuleDict:
        return nn.ModuleDict({"G_AB": self.AB.G, "G_BA": self.BA.G})

    def exported(self) -> nn.ModuleDict:
        """What an exported model keeps: the two generators (not the heads or discriminators)."""
        return self.generators()
