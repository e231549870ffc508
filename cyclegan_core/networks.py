"""CycleGAN building blocks, following junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``.

ResnetGenerator, ResnetBlock, NLayerDiscriminator (PatchGAN), GANLoss, ImagePool and weight
initialisation, with the reference's layer order, bias rules and defaults, so parameter counts and
behaviour match it. The image pool draws from an explicit ``torch.Generator`` so that a training
run can be checkpointed and resumed exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


def get_norm_layer(norm: str) -> NormFactory:
    """``instance`` (no affine, no running stats), ``batch`` or ``none``, as in the reference."""
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "none":
        return lambda _channels: nn.Identity()
    raise ValueError(f"normalization layer {norm!r} is not one of instance, batch, none")


def _uses_bias(norm: str) -> bool:
    # InstanceNorm without affine has no shift, so the conv before it keeps its bias; the
    # reference keys this on InstanceNorm alone (no bias with batch norm and with none either).
    return norm == "instance"


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), with reflection padding."""

    def __init__(self, dim: int, norm_layer: NormFactory, use_bias: bool, use_dropout: bool = False):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim), nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2ngf), d(4ngf), n_blocks x R(4ngf), u(2ngf), u(ngf), c7s1-out, tanh."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, norm: str = "instance",
                 use_dropout: bool = False, n_blocks: int = 9):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm), _uses_bias(norm)
        model: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_layer(ngf), nn.ReLU(True),
        ]
        n_down = 2
        for i in range(n_down):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2), nn.ReLU(True),
            ]
        mult = 2**n_down
        model += [ResnetBlock(ngf * mult, norm_layer, use_bias, use_dropout) for _ in range(n_blocks)]
        for i in range(n_down):
            mult = 2 ** (n_down - i)
            model += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                   bias=use_bias),
                norm_layer(ngf * mult // 2), nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: n_layers strided 4x4 convs, then two stride-1 convs to a map of real/fake scores.

    With the defaults (n_layers=3) each output judges a 70x70 receptive field.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm), _uses_bias(norm)
        kw, padw = 4, 1
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=padw, bias=use_bias),
                norm_layer(ndf * mult), nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [
            nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=use_bias),
            norm_layer(ndf * mult), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The reference's ``normal`` init: conv/linear weights N(0, gain), norm weights N(1, gain)."""

    def init(m: nn.Module) -> None:
        name = type(m).__name__
        if hasattr(m, "weight") and ("Conv" in name or "Linear" in name):
            nn.init.normal_(m.weight, 0.0, gain)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif "BatchNorm2d" in name:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    return net.apply(init)


class GANLoss(nn.Module):
    """LSGAN (MSE against 1/0 targets, the CycleGAN default) or vanilla (BCE with logits)."""

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode == "lsgan":
            self.loss: nn.Module = nn.MSELoss()
        elif mode == "vanilla":
            self.loss = nn.BCEWithLogitsLoss()
        else:
            raise ValueError(f"GAN loss {mode!r} is not one of lsgan, vanilla")

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return self.loss(prediction, target)


class ImagePool:
    """A history of generated images; the discriminator sees a mix of old and new fakes.

    Same policy as the reference (until full, store and return; then with probability 1/2
    return a stored image and store the new one in its place), drawn from ``generator``.
    """

    def __init__(self, pool_size: int, generator: torch.Generator):
        self.pool_size = pool_size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                idx = int(torch.randint(0, self.pool_size, (), generator=self.generator).item())
                out.append(self.images[idx].clone())
                self.images[idx] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_tensor(self) -> torch.Tensor:
        """The stored images as one tensor (empty when the pool is empty), for checkpoints."""
        return torch.cat(self.images, 0) if self.images else torch.empty(0)

    def load_state_tensor(self, t: torch.Tensor) -> None:
        self.images = [img.unsqueeze(0).clone() for img in t] if t.numel() else []
