"""The invertible network F of DFRM (tadm/modules/inn.py): exact invertibility."""

import torch

from tadm.modules.inn import CouplingBlock, DenseBlock, InvertibleNetwork


def randomize_last_convs(inn: InvertibleNetwork, std: float = 0.05) -> None:
    """Give the zero-initialized last convs weights, or F would be the identity."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in inn.named_parameters():
            if ".conv5." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def test_inverts_to_1e10_in_float64():
    torch.manual_seed(0)
    inn = InvertibleNetwork(num_blocks=6, channels=3, growth=8).double()
    randomize_last_convs(inn)
    z_lr = torch.randn(2, 3, 9, 13, dtype=torch.float64)  # (B, 3, H/N, W/N), odd sizes
    y = inn(z_lr)
    assert (y - z_lr).abs().max() > 0.1  # F is far from the identity
    assert y.abs().max() < 100  # and well conditioned
    assert (inn.inverse(y) - z_lr).abs().max() < 1e-10
    assert (inn(inn.inverse(y)) - y).abs().max() < 1e-10


def test_official_width_inverts_to_1e10_in_float64():
    torch.manual_seed(0)
    inn = InvertibleNetwork().double()  # 12 blocks, growth 32: the official layout
    randomize_last_convs(inn)
    z_lr = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    y = inn(z_lr)
    assert (y - z_lr).abs().max() > 0.1
    assert (inn.inverse(y) - z_lr).abs().max() < 1e-10


def test_each_block_is_an_affine_coupling():
    """y1 = x1 + F(x2); y2 = x2 * exp(s) + G(y1) with s = clamp * (2 sigmoid(H(y1)) - 1)."""
    torch.manual_seed(0)
    block = CouplingBlock(channels=3, split=1, growth=8).double()
    with torch.no_grad():
        for sub in (block.F, block.G, block.H):
            sub.conv5.weight.normal_(0, 0.2)
    x = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    y = block(x)
    y1 = x[:, :1] + block.F(x[:, 1:])
    s = 1.0 * (2 * torch.sigmoid(block.H(y1)) - 1)
    assert torch.allclose(y[:, :1], y1)
    assert torch.allclose(y[:, 1:], x[:, 1:] * torch.exp(s) + block.G(y1))
    assert s.abs().max() <= 1.0  # clamp 1 bounds the log-scale
    assert (block.inverse(y) - x).abs().max() < 1e-12


def test_zero_initialized_last_conv_makes_f_the_identity_at_init():
    torch.manual_seed(0)
    dense = DenseBlock(2, 1, growth=8)
    assert torch.count_nonzero(dense.conv5.weight) == 0
    assert torch.count_nonzero(dense.conv5.bias) == 0
    inn = InvertibleNetwork(num_blocks=3, growth=8)
    x = torch.randn(1, 3, 4, 4)
    assert torch.equal(inn(x), x)
    assert torch.equal(inn.inverse(x), x)


def test_gradients_reach_every_block():
    torch.manual_seed(0)
    inn = InvertibleNetwork(num_blocks=2, growth=8)
    randomize_last_convs(inn)
    inn(torch.randn(1, 3, 6, 6)).square().mean().backward()
    for name, p in inn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
