"""TPM, the time-step prediction module (paper Sec. 3.3): t = TPM(z_hat).

Official layout (`TimeMapping`): a conv trunk estimates the rescaling "noise", its spatial mean
and (unbiased) std feed an MLP, and a sigmoid maps the result into [t_min, t_max]
(official: [10, 200]). One continuous time step per input (image or tile).
"""

import torch
from torch import Tensor, nn

from tadm.modules.common import ConvBlock, ResidualBlock


class TimePredictor(nn.Module):
    """MLP on pooled statistics; `fuse_mlp` keeps the official indices (0, 2, 4, 6, 8, 9)."""

    def __init__(self, in_features: int, hidden: int = 512, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
        for _ in range(depth):
            layers += [nn.ReLU(), nn.Linear(hidden, hidden)]
        layers.append(nn.Linear(hidden, 1))
        self.fuse_mlp = nn.Sequential(*layers)

    def forward(self, stats: Tensor) -> Tensor:
        return self.fuse_mlp(stats)


class TPM(nn.Module):
    """z_hat (B, C, h, w) -> t (B,), continuous, in [t_min, t_max].

    Args:
        latent_channels: channels of z_hat.
        width: width of the conv trunk (official 32).
        num_res_blocks: residual blocks of the trunk (official 6).
        hidden: MLP width (official 512).
        t_min, t_max: range of the predicted time step (official 10 and 200).
    """

    def __init__(
        self,
        latent_channels: int = 4,
        width: int = 32,
        num_res_blocks: int = 6,
        hidden: int = 512,
        t_min: float = 10.0,
        t_max: float = 200.0,
    ) -> None:
        super().__init__()
        self.t_min = t_min
        self.t_max = t_max
        trunk: list[nn.Module] = [ConvBlock(latent_channels, width)]
        trunk += [ResidualBlock(width) for _ in range(num_res_blocks)]
        self.noise_esti = nn.Sequential(*trunk)
        self.time_predict = TimePredictor(2 * width, hidden)

    def forward(self, z_hat: Tensor) -> Tensor:
        features = self.noise_esti(z_hat)  # (B, width, h, w)
        stats = torch.cat((features.mean(dim=(2, 3)), features.std(dim=(2, 3))), 1)  # (B, 2w)
        s = torch.sigmoid(self.time_predict(stats)).squeeze(1)  # (B,)
        return s * (self.t_max - self.t_min) + self.t_min
