"""Small building blocks shared by DFRM, TPM and the learned scheduler.

The layouts (module names, LeakyReLU slope 0.1) follow the official TADM release so that its
state dicts load unchanged (tests/data/official/README.md lists what is checked against them).
"""

from torch import Tensor, nn

LEAKY_SLOPE = 0.1


class ConvBlock(nn.Module):
    """conv3x3 + LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv_in(x))


class ResBlock(nn.Module):
    """x + conv(lrelu(conv(x))), with the convs in a Sequential named `res_block` (DFRM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res_block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_block(x)


class ResidualBlock(nn.Module):
    """x + conv2(relu(conv1(x))), with convs named `conv1`/`conv2` (TPM, learned scheduler).

    The official `ResidualBlock` uses ReLU here, unlike its ConvBlock (the official test vectors
    of TPM and the learned scheduler, tests/data/official/, depend on it).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Downsample(nn.Module):
    """PixelUnshuffle(2) then a 1x1 conv 4C -> 2C (DFRM pixel-guidance branch)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.downsample = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(4 * channels, 2 * channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x)
