"""The single-translator variant of CycleGAN ("Improving Cycle-GAN", Intel AI DevCloud, 2018).

One encoder and one decoder, shared by both domains and trained as an autoencoder (reconstruction
loss); a translator that maps encodings of A to encodings of B; a discriminator that judges
encodings, not decoded images; and a deviation loss ``|T(E(b)) - E(b)|`` that keeps the translator
close to identity on encodings of B. This replaces the second generator and the cycle loss.

The encoder, translator and decoder are the three parts of the reference ResNet generator (c7s1 +
two downsamplings; the residual blocks; two upsamplings + c7s1), so ``E -> T -> Dec`` has exactly
the shape and size of one CycleGAN generator. The encoding discriminator is the back part of a
PatchGAN: it starts from the encoding (4*ngf channels at a quarter of the side) with two strided
layers fewer, the two halvings the encoder already did ("Conv-2" in the article's figure 9).

B->A. The article builds only A->B and says so ("elimination of a second translator"). The
pipeline translates both ways, so two choices are offered (``model.translator_directions``):

- ``both`` (default): a second translator and encoding discriminator for B->A, with its own
  deviation loss on encodings of A. Encoder and decoder stay shared, there is still no cycle loss
  and no image discriminator; the cost is one more translator pass per image pair.
- ``AtoB``: exactly the article's model. B->A is then ``Dec(E(b))``, the autoencoder's
  reconstruction: it does NOT translate, and validation's B->A figures say so (label accuracy
  close to the untranslated baseline, low realism).

Either way the exported model exposes ``G_AB`` and ``G_BA`` as image-to-image modules, so
generation and validation use it exactly like a CycleGAN.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .networks import (
    PixelDiscriminator,
    _uses_bias,
    get_norm_layer,
    init_weights,
    resnet_blocks,
    resnet_decoder,
    resnet_encoder,
    spectral_convs,
)

LOSS_NAMES = ("T", "D_A", "D_B", "T_AB", "T_BA", "recon_A", "recon_B", "dev_A", "dev_B")


class AutoEncoder(nn.Module):
    """The shared encoder and decoder; ``forward`` returns the encoding and the reconstruction."""

    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__()
        self.encoder = resnet_encoder(channels, cfg.ngf, cfg.norm)
        self.decoder = resnet_decoder(channels, cfg.ngf, cfg.norm, cfg.upsample)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h, self.decoder(h)


class TranslatedGenerator(nn.Module):
    """``decoder(translator(encoder(x)))``: an image-to-image generator made of shared parts.

    With no translator it is the plain autoencoder (used for B->A in ``AtoB`` mode).
    """

    def __init__(self, encoder: nn.Module, translator: nn.Module | None, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.translator = translator if translator is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.translator(self.encoder(x)))


class EncodingDiscriminator(nn.Module):
    """The back part of an ``n_layers_d`` PatchGAN, taking a 4*ngf-channel encoding as input.

    An image PatchGAN halves twice before reaching a quarter of the side, as the encoder does, so
    this keeps its remaining ``n_layers_d - 2`` strided convs, then the two stride-1 convs. For the
    default ``n_layers_d = 3`` that is conv(s2) -> conv(s1) -> conv(s1) to a map of scores.
    """

    def __init__(self, input_nc: int, ndf: int, n_layers: int, norm: str):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm), _uses_bias(norm)
        seq: list[nn.Module] = []
        ch = input_nc
        for n in range(2, n_layers):
            out = ndf * min(2**n, 8)
            seq += [nn.Conv2d(ch, out, 4, stride=2, padding=1, bias=use_bias), norm_layer(out), nn.LeakyReLU(0.2, True)]
            ch = out
        out = ndf * min(2**n_layers, 8)
        seq += [nn.Conv2d(ch, out, 4, stride=1, padding=1, bias=use_bias), norm_layer(out), nn.LeakyReLU(0.2, True),
                nn.Conv2d(out, 1, 4, stride=1, padding=1)]
        self.model = spectral_convs(nn.Sequential(*seq), norm)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.model(h)


def encoding_discriminator(cfg: ModelConfig) -> nn.Module:
    """A discriminator whose input is an encoding (4*ngf channels) rather than an image."""
    if cfg.discriminator == "pixel":
        return PixelDiscriminator(cfg.ngf * 4, cfg.ndf, cfg.discriminator_norm)
    return EncodingDiscriminator(cfg.ngf * 4, cfg.ndf, cfg.n_layers_d, cfg.discriminator_norm)


class SingleTranslator(nn.Module):
    """Shared autoencoder, translator(s) on encodings, discriminator(s) on encodings."""

    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__()
        self.both = cfg.translator_directions == "both"
        self.ae = AutoEncoder(cfg, channels)
        self.T_AB = resnet_blocks(cfg.ngf, cfg.norm, cfg.n_blocks, cfg.use_dropout)
        self.D_B = encoding_discriminator(cfg)  # judges encodings of B (real) vs T_AB(E(a)) (fake)
        self.T_BA = resnet_blocks(cfg.ngf, cfg.norm, cfg.n_blocks, cfg.use_dropout) if self.both else None
        self.D_A = encoding_discriminator(cfg) if self.both else None
        for net in self.children():
            init_weights(net, cfg.init_type, cfg.init_gain)

    def translators(self) -> list[nn.Module]:
        return [self.T_AB] + ([self.T_BA] if self.T_BA is not None else [])

    def discriminators(self) -> list[nn.Module]:
        return [self.D_B] + ([self.D_A] if self.D_A is not None else [])

    def exported(self) -> nn.ModuleDict:
        """What an exported model keeps: encoder, decoder and translator(s), each once."""
        parts = {"encoder": self.ae.encoder, "decoder": self.ae.decoder, "T_AB": self.T_AB}
        if self.T_BA is not None:
            parts["T_BA"] = self.T_BA
        return nn.ModuleDict(parts)

    def generators(self) -> nn.ModuleDict:
        return nn.ModuleDict({
            "G_AB": TranslatedGenerator(self.ae.encoder, self.T_AB, self.ae.decoder),
            "G_BA": TranslatedGenerator(self.ae.encoder, self.T_BA, self.ae.decoder),
        })
