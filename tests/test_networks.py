import pytest
import torch

from cyclegan_core.networks import (
    GANLoss,
    ImagePool,
    NLayerDiscriminator,
    ResnetGenerator,
    define_discriminator,
    define_generator,
    gradient_penalty,
    init_weights,
)


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_reference_parameter_counts():
    # What the reference prints (RGB, ngf = ndf = 64): resnet_9blocks 11.378 M and resnet_6blocks
    # 7.838 M with CycleGAN's instance norm; unet_256 54.414 M and unet_128 41.829 M with pix2pix's
    # batch norm; basic PatchGAN 2.765 M (instance); the pixel discriminator 8705 weights.
    assert _count(define_generator("resnet", 3, 3, 64, "instance", n_blocks=9)) == 11_378_179
    assert _count(define_generator("resnet", 3, 3, 64, "instance", n_blocks=6)) == 7_837_699
    assert _count(define_generator("unet_256", 3, 3, 64, "batch")) == 54_413_955
    assert _count(define_generator("unet_128", 3, 3, 64, "batch")) == 41_828_995
    assert _count(define_discriminator("patchgan", 3, 64, "instance", 3)) == 2_764_737
    assert _count(NLayerDiscriminator(3, 64, 3, "instance")) == 2_764_737
    assert _count(define_discriminator("pixel", 3, 64, "instance")) == 8_705
    # The anti-checkerboard upsampling keeps the sizes.
    assert _count(define_generator("resnet", 3, 3, 64, "instance", n_blocks=9, upsample="resize_conv")) == 11_378_179
    assert _count(define_generator("unet_256", 3, 3, 64, "batch", upsample="resize_conv")) == 54_413_955


@pytest.mark.parametrize("kind,size,norm,upsample", [
    *[("resnet", 16, n, u) for n in ("instance", "batch", "none") for u in ("transpose", "resize_conv")],
    ("unet_128", 128, "batch", "transpose"), ("unet_128", 128, "instance", "resize_conv"),
])
def test_generators_keep_shape_and_range(kind, size, norm, upsample):
    g = define_generator(kind, 1, 1, 2, norm, n_blocks=1, upsample=upsample, use_dropout=True)
    x = torch.randn(2, 1, size, size)
    y = g(x)
    assert y.shape == x.shape and float(y.detach().abs().max()) <= 1.0


def test_discriminator_shapes():
    assert NLayerDiscriminator(1, 4, 3)(torch.randn(2, 1, 32, 32)).shape == (2, 1, 2, 2)
    assert define_discriminator("pixel", 1, 4, "batch")(torch.randn(2, 1, 9, 7)).shape == (2, 1, 9, 7)


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_inits(init_type):
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(1, 1, 4, "batch", n_blocks=1), init_type, 0.02)
    conv = net.model[1]
    assert conv.bias is None  # batch norm: no conv bias, as in the reference
    std = float(conv.weight.detach().std())
    expected = {"normal": 0.02, "kaiming": (2 / (1 * 49)) ** 0.5}.get(init_type)
    if expected:
        assert abs(std - expected) / expected < 0.3
    bn = net.model[2]
    assert float(bn.bias.detach().abs().max()) == 0.0 and abs(float(bn.weight.detach().mean()) - 1.0) < 0.05
    with pytest.raises(ValueError, match="not one of"):
        init_weights(net, "uniform")


def test_gan_losses():
    ones = torch.ones(2, 1, 2, 2)
    assert float(GANLoss("lsgan")(ones, True)) == 0.0 and float(GANLoss("lsgan")(ones, False)) == 1.0
    assert abs(float(GANLoss("vanilla")(torch.full((2, 1), 20.0), True))) < 1e-6
    assert float(GANLoss("wgangp")(ones * 3, True)) == -3.0 and float(GANLoss("wgangp")(ones * 3, False)) == 3.0
    with pytest.raises(ValueError, match="lsgan, vanilla, wgangp"):
        GANLoss("hinge")
    # A linear critic f(x) = sum(w * x) has gradient w everywhere: penalty = (|w| - 1)^2 * weight.
    net = torch.nn.Conv2d(1, 1, 2, bias=False)
    torch.nn.init.constant_(net.weight, 0.5)  # |w| = 1 over the 2x2 kernel: no penalty
    x = torch.randn(3, 1, 2, 2)
    gp = gradient_penalty(net, x, torch.randn(3, 1, 2, 2), torch.Generator().manual_seed(0))
    assert float(gp) < 1e-8
    torch.nn.init.constant_(net.weight, 1.0)  # |w| = 2: penalty 10 * 1
    assert abs(float(gradient_penalty(net, x, x, torch.Generator())) - 10.0) < 1e-4


def test_image_pool_fills_then_mixes_and_round_trips():
    gen = torch.Generator().manual_seed(0)
    pool = ImagePool(4, gen)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as given
    out = pool.query(torch.full((16, 1, 1, 1), 9.0))
    assert (out != 9.0).any() and (out == 9.0).any()  # some old, some new
    clone = ImagePool(4, torch.Generator())
    clone.load_state_tensor(pool.state_tensor())
    assert torch.equal(clone.state_tensor(), pool.state_tensor())
    assert torch.equal(ImagePool(0, gen).query(first), first)


def test_input_skip_is_off_by_default_and_adds_only_the_skip_weights():
    ref = define_generator("resnet", 3, 3, 8, "instance", n_blocks=2)
    skip = define_generator("resnet", 3, 3, 8, "instance", n_blocks=2, input_skip=True)
    assert not ref.input_skip and not hasattr(ref, "out")
    assert _count(skip) - _count(ref) == 3 * 3 * 7 * 7  # the last conv's extra input channels
    x = torch.randn(2, 3, 16, 16)
    y = skip(x)
    assert y.shape == x.shape and float(y.detach().abs().max()) <= 1.0
    # Instance norm makes the reference blind to a per-channel offset; the skip sees it.
    torch.manual_seed(0)
    init_weights(ref, "normal", 0.02)
    init_weights(skip, "normal", 0.02)
    offset = torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert float((ref(x + offset) - ref(x)).abs().max()) < 1e-4
        assert float((skip(x + offset) - skip(x)).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="ResNet"):
        define_generator("unet_128", 3, 3, 8, "batch", input_skip=True)


def test_an_identity_skip_makes_a_fresh_generator_emit_its_input():
    """``skip_init: identity``: the skip conv's input part starts at the identity, so a freshly initialised
    norm-free generator (whose features start near zero with N(0, 0.02) weights) outputs about tanh(x), not
    a faint image that a discriminator separates at once; ``random`` keeps the weights as before."""
    from cyclegan_core.config import ModelConfig

    torch.manual_seed(0)
    flat = init_weights(define_generator("resnet", 3, 3, 8, "none", n_blocks=2, input_skip=True), "normal", 0.02)
    torch.manual_seed(0)
    ident = init_weights(define_generator("resnet", 3, 3, 8, "none", n_blocks=2, input_skip=True,
                                          skip_init="identity"), "normal", 0.02)
    w_flat, w_ident = flat.out[1].weight, ident.out[1].weight
    assert torch.equal(w_flat[:, :8], w_ident[:, :8])  # the features' part as initialised
    assert float(w_ident[:, 8:].abs().sum()) == 3.0 and all(float(w_ident[c, 8 + c, 3, 3]) == 1.0 for c in range(3))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert float((ident(x) - torch.tanh(x)).abs().max()) < 0.05
        assert float((flat(x) - torch.tanh(x)).abs().mean()) > 0.2  # random: a faint filtered copy at best
    with pytest.raises(ValueError, match="input_skip"):
        ModelConfig(skip_init="identity")
    with pytest.raises(ValueError, match="identity"):
        define_generator("resnet", 3, 1, 8, "none", input_skip=True, skip_init="identity")


def test_discriminator_norm_follows_norm_unless_set():
    from cyclegan_core.config import ModelConfig
    from cyclegan_core.train import CycleGAN

    same = CycleGAN(ModelConfig(norm="none"), 1)
    split = CycleGAN(ModelConfig(norm="none", norm_d="instance"), 1)
    norms = lambda net: {type(m).__name__ for m in net.modules()} & {"InstanceNorm2d", "BatchNorm2d"}  # noqa: E731
    assert norms(same.D_A) == set() and norms(split.D_A) == {"InstanceNorm2d"}
    assert norms(split.G_AB) == set() and _count(split.G_AB) == _count(same.G_AB)
    with pytest.raises(ValueError, match="input_skip"):
        ModelConfig(arch="translator", input_skip=True)


def test_spectral_discriminators_keep_the_weights_and_normalize_every_conv():
    from cyclegan_core.config import ModelConfig
    from cyclegan_core.train import CycleGAN

    torch.manual_seed(0)
    plain = CycleGAN(ModelConfig(norm="none", norm_d="none"), 3)
    spectral = CycleGAN(ModelConfig(norm="none", norm_d="spectral"), 3)
    # The same parameters as without norm (the weight lives on as ``original``), no norm layers, and the
    # generators untouched; the reference's discriminator is unchanged.
    assert _count(spectral.D_A) == _count(plain.D_A) and _count(spectral.G_AB) == _count(plain.G_AB)
    assert {type(m).__name__ for m in spectral.D_A.modules()} & {"InstanceNorm2d", "BatchNorm2d"} == set()
    assert _count(define_discriminator("patchgan", 3, 64, "instance", 3)) == 2_764_737
    convs = [m for m in spectral.D_B.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    # init_weights initialises the plain weights (N(0, 0.02)), then each conv's weight is divided by its
    # largest singular value (power iteration restarted after the init: ~1 from the first forward).
    assert all(abs(float(c.parametrizations.weight.original.std()) - 0.02) < 0.004 for c in convs)
    spectral.D_B(torch.randn(2, 3, 32, 32))
    sigmas = [float(torch.linalg.matrix_norm(c.weight.detach().flatten(1), 2)) for c in convs]
    assert all(abs(s - 1) < 0.05 for s in sigmas), sigmas
    # The pixel discriminator too; the generators' norm cannot be spectral.
    pixel = define_discriminator("pixel", 3, 8, "spectral")
    assert sum(isinstance(m, torch.nn.Conv2d) and hasattr(m, "parametrizations") for m in pixel.modules()) == 3
    with pytest.raises(ValueError, match="norm"):
        ModelConfig(norm="spectral")
