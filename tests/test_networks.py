import torch

from cyclegan_core.networks import GANLoss, ImagePool, NLayerDiscriminator, ResnetGenerator


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_reference_parameter_counts():
    # The reference prints 11.378 M for resnet_9blocks and 2.765 M for the basic PatchGAN (RGB, 64 filters).
    assert _count(ResnetGenerator(3, 3, 64, "instance", n_blocks=9)) == 11_378_179
    assert _count(NLayerDiscriminator(3, 64, 3, "instance")) == 2_764_737


def test_shapes():
    g = ResnetGenerator(1, 1, 4, n_blocks=1)
    x = torch.randn(2, 1, 16, 16)
    y = g(x)
    assert y.shape == x.shape and float(y.abs().max()) <= 1.0
    assert NLayerDiscriminator(1, 4, 3)(torch.randn(2, 1, 32, 32)).shape == (2, 1, 2, 2)
    assert float(GANLoss()(torch.ones(2, 1, 2, 2), True)) == 0.0


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
