"""CycleGAN building blocks, following junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``.

Generators (ResNet with any number of blocks, U-Net 128/256), discriminators (n-layer PatchGAN,
pixel), norms, weight initialisations, GAN losses (LSGAN, vanilla, WGAN-GP) and the image pool,
with the reference's layer order, bias rules and defaults, so parameter counts and behaviour match
it. Two additions the reference lacks: a resize-then-convolve upsampling option (no checkerboard
artifacts, Odena et al. 2016) and the split of a ResNet generator into encoder, translator and
decoder that the single-translator model (:mod:`cyclegan_core.translator`) is built from; and an
optional input skip of the ResNet generator (the image concatenated to the features its last conv
sees, so colour and levels that the instance norms remove can reach the output). The image
pool draws from an explicit ``torch.Generator`` so that a run can be checkpointed and resumed exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

NormFactory = Callable[[int], nn.Module]
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
SKIP_INITS = ("random", "identity")
GAN_MODES = ("lsgan", "vanilla", "wgangp")


def get_norm_layer(norm: str) -> NormFactory:
    """``instance`` (no affine, no running stats), ``batch`` or ``none``, as in the reference.

    ``spectral`` (discriminators only, not in the reference) has no norm layer, as ``none``: the
    discriminator's convolutions are spectrally normalized instead (:func:`spectral_convs`)."""
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm in ("none", "spectral"):
        return lambda _channels: nn.Identity()
    raise ValueError(f"normalization layer {norm!r} is not one of instance, batch, none, spectral")


def spectral_convs(net: nn.Module, norm: str) -> nn.Module:
    """With ``norm == "spectral"``, every convolution of ``net`` divides its weight by its largest singular
    value (Miyato et al. 2018; one power iteration per training forward): the discriminator stays
    1-Lipschitz per layer without normalizing away each image's colour and levels, as an instance norm
    does. The parameters are the same as with ``none`` (the weight lives on as ``original``); other norms:
    ``net`` unchanged."""
    if norm == "spectral":
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.utils.parametrizations.spectral_norm(m)
    return net


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


def _upsample(in_ch: int, out_ch: int, use_bias: bool, mode: str) -> list[nn.Module]:
    """x2 upsampling: the reference's transposed conv, or nearest resize then a 3x3 conv.

    The resize-conv has exactly as many parameters as the transposed conv it replaces (same
    kernel size and channels), so switching it keeps model sizes comparable.
    """
    if mode == "transpose":
        return [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=use_bias)]
    if mode == "resize_conv":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                nn.Conv2d(in_ch, out_ch, 3, bias=use_bias)]
    raise ValueError(f"upsampling {mode!r} is not one of transpose, resize_conv")


def resnet_encoder(input_nc: int, ngf: int, norm: str) -> nn.Sequential:
    """c7s1-ngf, d(2ngf), d(4ngf): the image to a 4ngf-channel map at a quarter of the size."""
    norm_layer, use_bias = get_norm_layer(norm), _uses_bias(norm)
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_layer(ngf), nn.ReLU(True),
    ]
    for i in range(2):
        mult = 2**i
        layers += [
            nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
            norm_layer(ngf * mult * 2), nn.ReLU(True),
        ]
    return nn.Sequential(*layers)


def resnet_blocks(ngf: int, norm: str, n_blocks: int, use_dropout: bool = False) -> nn.Sequential:
    """n_blocks x R(4ngf): the part of the generator that works on encodings."""
    norm_layer, use_bias = get_norm_layer(norm), _uses_bias(norm)
    return nn.Sequential(*[ResnetBlock(ngf * 4, norm_layer, use_bias, use_dropout) for _ in range(n_blocks)])


def resnet_decoder(output_nc: int, ngf: int, norm: str, upsample: str = "transpose") -> nn.Sequential:
    """u(2ngf), u(ngf), c7s1-out, tanh: an encoding back to an image."""
    norm_layer, use_bias = get_norm_layer(norm), _uses_bias(norm)
    layers: list[nn.Module] = []
    for i in range(2):
        mult = 2 ** (2 - i)
        layers += [*_upsample(ngf * mult, ngf * mult // 2, use_bias, upsample), norm_layer(ngf * mult // 2),
                   nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
    return nn.Sequential(*layers)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2ngf), d(4ngf), n_blocks x R(4ngf), u(2ngf), u(ngf), c7s1-out, tanh.

    One flat ``model`` Sequential, in the reference's order, so its state-dict keys match it.

    ``input_skip`` (not in the reference): the last c7s1 conv, kept apart as ``out``, sees the
    input image concatenated to the ngf decoder features (ngf + input_nc channels in, so
    ``input_nc * output_nc * 49`` more weights). The instance norm after the first conv removes every
    channel's mean and spread, so without it the generator cannot see an image's colour or levels;
    with it the output is tanh(a linear map of the input's neighbourhood + the features' part).
    ``skip_init="identity"``: :func:`init_weights` then starts that linear map at the identity
    (:meth:`identity_skip_`); ``"random"``: initialised as every other weight.
    """

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, norm: str = "instance",
                 use_dropout: bool = False, n_blocks: int = 9, upsample: str = "transpose",
                 input_skip: bool = False, skip_init: str = "random"):
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks={n_blocks} must be >= 0")
        if skip_init not in SKIP_INITS:
            raise ValueError(f"skip_init {skip_init!r} is not one of {', '.join(SKIP_INITS)}")
        if skip_init == "identity" and (not input_skip or input_nc != output_nc):
            raise ValueError("skip_init 'identity' needs input_skip and as many output channels as input ones")
        decoder = list(resnet_decoder(output_nc, ngf, norm, upsample))
        self.input_skip, self.skip_init, self.ngf = input_skip, skip_init, ngf
        if input_skip:
            decoder = decoder[:-3]  # the c7s1-out conv and tanh move to ``out`` and see the input too
            self.out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf + input_nc, output_nc, 7), nn.Tanh())
        self.model = nn.Sequential(
            *resnet_encoder(input_nc, ngf, norm),
            *resnet_blocks(ngf, norm, n_blocks, use_dropout),
            *decoder,
        )

    @torch.no_grad()
    def identity_skip_(self) -> None:
        """The input part of the skip conv as the identity (each output channel's centre tap on its own input
        channel 1, the other input taps 0; the features' part and the bias as initialised), so a fresh
        generator emits tanh(x + its features' small part): its input, not a flat image."""
        w = self.out[1].weight
        w[:, self.ngf:].zero_()
        for c in range(w.shape[0]):
            w[c, self.ngf + c, w.shape[2] // 2, w.shape[3] // 2] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_skip:
            return self.out(torch.cat([self.model(x), x], 1))
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """x -> [x, up(submodule(down(x)))]: one level of the U-Net, concatenating its skip."""

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "batch", use_dropout: bool = False, upsample: str = "transpose"):
        super().__init__()
        self.outermost = outermost
        norm_layer, use_bias = get_norm_layer(norm), _uses_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        downrelu, uprelu = nn.LeakyReLU(0.2, True), nn.ReLU(True)

        def upconv(cin: int, bias: bool) -> list[nn.Module]:
            if upsample == "transpose":
                return [nn.ConvTranspose2d(cin, outer_nc, 4, stride=2, padding=1, bias=bias)]
            if upsample == "resize_conv":
                # 4x4 kernel like the transposed conv (same parameter count); asymmetric padding
                # keeps the size exact after the x2 resize (zeros: the innermost map can be 2x2).
                return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ZeroPad2d((1, 2, 1, 2)),
                        nn.Conv2d(cin, outer_nc, 4, bias=bias)]
            raise ValueError(f"upsampling {upsample!r} is not one of transpose, resize_conv")

        if outermost:
            assert submodule is not None
            model = [downconv, submodule, uprelu, *upconv(inner_nc * 2, True), nn.Tanh()]
        elif innermost:
            model = [downrelu, downconv, uprelu, *upconv(inner_nc, use_bias), norm_layer(outer_nc)]
        else:
            assert submodule is not None
            model = [downrelu, downconv, norm_layer(inner_nc), submodule, uprelu, *upconv(inner_nc * 2, use_bias),
                     norm_layer(outer_nc)]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` halvings (7 for 128x128 images, 8 for 256x256), as in pix2pix."""

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int = 64, norm: str = "batch",
                 use_dropout: bool = False, upsample: str = "transpose"):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs={num_downs}: the U-Net needs at least 5 levels")
        kw = {"norm": norm, "upsample": upsample}
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, **kw)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout, **kw)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, **kw)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, **kw)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, **kw)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             **kw)

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
        self.model = spectral_convs(nn.Sequential(*seq), norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN ("pixelGAN"): judges each pixel's colour alone."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "instance"):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm), _uses_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=use_bias), norm_layer(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, bias=use_bias),
        )
        spectral_convs(self.net, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def define_generator(kind: str, input_nc: int, output_nc: int, ngf: int, norm: str, *, n_blocks: int = 9,
                     use_dropout: bool = False, upsample: str = "transpose", input_skip: bool = False,
                     skip_init: str = "random") -> nn.Module:
    """``resnet`` (``n_blocks`` residual blocks: 6 and 9 are the reference's), ``unet_128``, ``unet_256``.

    ``input_skip`` and ``skip_init`` (ResNet only; off is the reference): see :class:`ResnetGenerator`."""
    if kind == "resnet":
        return ResnetGenerator(input_nc, output_nc, ngf, norm, use_dropout, n_blocks, upsample, input_skip,
                               skip_init)
    if input_skip:
        raise ValueError(f"input_skip is a ResNet generator option, not one of {kind!r}")
    if kind in ("unet_128", "unet_256"):
        return UnetGenerator(input_nc, output_nc, 7 if kind == "unet_128" else 8, ngf, norm, use_dropout, upsample)
    raise ValueError(f"generator {kind!r} is not one of resnet, unet_128, unet_256")


def define_discriminator(kind: str, input_nc: int, ndf: int, norm: str, n_layers: int = 3) -> nn.Module:
    """``patchgan`` (``n_layers`` strided convs; 3 is the reference's 70x70 ``basic``) or ``pixel``."""
    if kind == "patchgan":
        return NLayerDiscriminator(input_nc, ndf, n_layers, norm)
    if kind == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm)
    raise ValueError(f"discriminator {kind!r} is not one of patchgan, pixel")


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """The reference's initialisations of conv/linear weights (biases 0); batch-norm weights N(1, gain).

    ``kaiming`` ignores ``gain`` (fan-in, a=0) exactly as the reference does.
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f"initialization {init_type!r} is not one of {', '.join(INIT_TYPES)}")

    def init(m: nn.Module) -> None:
        name = type(m).__name__
        spectral = parametrize.is_parametrized(m, "weight")
        if spectral:  # norm spectral: initialise the plain weight, then normalize it again from scratch
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        if hasattr(m, "weight") and ("Conv" in name or "Linear" in name):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
            if spectral:
                nn.utils.parametrizations.spectral_norm(m)
        elif "BatchNorm2d" in name:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init)
    for m in net.modules():
        if isinstance(m, ResnetGenerator) and m.input_skip and m.skip_init == "identity":
            m.identity_skip_()
    return net


class GANLoss(nn.Module):
    """LSGAN (MSE against 1/0, the CycleGAN default), vanilla (BCE with logits) or WGAN-GP (+-mean).

    The WGAN-GP gradient penalty is :func:`gradient_penalty`, added to the discriminator loss.
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"GAN loss {mode!r} is not one of {', '.join(GAN_MODES)}")
        self.mode = mode
        self.loss: nn.Module | None = {"lsgan": nn.MSELoss(), "vanilla": nn.BCEWithLogitsLoss()}.get(mode)

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        if self.mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        assert self.loss is not None
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return self.loss(prediction.float(), target.float())


def gradient_penalty(net: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator,
                     constant: float = 1.0, weight: float = 10.0) -> torch.Tensor:
    """WGAN-GP penalty on random interpolates of real and fake (the reference's ``mixed`` type).

    ``generator`` draws the interpolation weights, so the penalty is part of the resumable state.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device, real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = net(mixed)
    (grad,) = torch.autograd.grad(out, mixed, grad_outputs=torch.ones_like(out), create_graph=True)
    grad = grad.reshape(grad.shape[0], -1)
    return ((grad.float() + 1e-16).norm(2, dim=1) - constant).pow(2).mean() * weight


class ImagePool:
    """A history of generated images; the discriminator sees a mix of old and new fakes.

    Same policy as the reference (until full, store and return; then with probability 1/2
    return a stored image and store the new one in its place), drawn from ``generator``.
    ``generator`` is a CPU generator, so on a GPU the draws need no device sync.
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
        return torch.cat(self.images, 0).cpu() if self.images else torch.empty(0)

    def load_state_tensor(self, t: torch.Tensor, device: torch.device | str = "cpu") -> None:
        self.images = [img.unsqueeze(0).to(device).clone() for img in t] if t.numel() else []
