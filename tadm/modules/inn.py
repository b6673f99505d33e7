"""The invertible network F of DFRM (paper Sec. 3.2.1, Eq. 4): z_lr <-> y.

IRN-style affine coupling blocks on 3 channels, split 1 / 2 (official layout):
    y1 = x1 + F(x2);  s = clamp * (2 * sigmoid(H(y1)) - 1);  y2 = x2 * exp(s) + G(y1)
Each block is exactly invertible, so F^-1(F(z_lr)) == z_lr up to float rounding.
"""

import torch
from torch import Tensor, nn

DENSE_SLOPE = 0.2  # IRN's DenseBlock uses LeakyReLU(0.2), unlike the 0.1 of the conv blocks


class DenseBlock(nn.Module):
    """Five 3x3 convs with dense connections; the last conv is zero-initialized."""

    def __init__(self, in_channels: int, out_channels: int, growth: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, growth, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels + growth, growth, 3, padding=1)
        self.conv3 = nn.Conv2d(in_channels + 2 * growth, growth, 3, padding=1)
        self.conv4 = nn.Conv2d(in_channels + 3 * growth, growth, 3, padding=1)
        self.conv5 = nn.Conv2d(in_channels + 4 * growth, out_channels, 3, padding=1)
        self.act = nn.LeakyReLU(DENSE_SLOPE)
        nn.init.zeros_(self.conv5.weight)
        nn.init.zeros_(self.conv5.bias)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.act(self.conv1(x))
        x2 = self.act(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.act(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.act(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1))


class CouplingBlock(nn.Module):
    """One affine coupling block; `F`, `G`, `H` are the official sub-network names."""

    def __init__(self, channels: int = 3, split: int = 1, growth: int = 32, clamp: float = 1.0):
        super().__init__()
        self.split = split
        self.clamp = clamp
        rest = channels - split
        self.F = DenseBlock(rest, split, growth)
        self.G = DenseBlock(split, rest, growth)
        self.H = DenseBlock(split, rest, growth)

    def _scale(self, y1: Tensor) -> Tensor:
        return self.clamp * (torch.sigmoid(self.H(y1)) * 2 - 1)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.F(x2)
        y2 = x2 * torch.exp(self._scale(y1)) + self.G(y1)
        return torch.cat((y1, y2), 1)

    def inverse(self, y: Tensor) -> Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        x2 = (y2 - self.G(y1)) * torch.exp(-self._scale(y1))
        x1 = y1 - self.F(x2)
        return torch.cat((x1, x2), 1)


class InvertibleNetwork(nn.ModuleList):
    """F: a stack of coupling blocks. `forward` maps z_lr -> y, `inverse` maps y -> z_lr."""

    def __init__(self, num_blocks: int = 12, channels: int = 3, growth: int = 32) -> None:
        super().__init__(CouplingBlock(channels, 1, growth) for _ in range(num_blocks))

    def forward(self, z_lr: Tensor) -> Tensor:  # (B, 3, H/N, W/N)
        for block in self:
            z_lr = block(z_lr)
        return z_lr

    def inverse(self, y: Tensor) -> Tensor:  # (B, 3, H/N, W/N)
        for block in reversed(self):
            y = block.inverse(y)
        return y
