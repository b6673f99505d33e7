"""S_learned, the learned part of the hybrid time scheduler (paper Sec. 3.3, Eq. 10, Fig. 4).

Official layout (`Refiner`): a sinusoidal embedding of the continuous time step t, a conv trunk on
cat(z_hat, eps) with the embedding added after every residual block, and a zero-initialized
ConvBlock at the end, so training starts from the fixed scheduler alone.
"""

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from tadm.modules.common import ConvBlock, ResidualBlock


class LearnedScheduler(nn.Module):
    """(z_hat, eps, t) -> correction to add to the fixed scheduler's z0 estimate.

    Args:
        latent_channels: channels of z_hat and eps.
        width: trunk width, also the time-embedding size (official 64).
        num_res_blocks: residual blocks (official 6).
    """

    def __init__(self, latent_channels: int = 4, width: int = 64, num_res_blocks: int = 6):
        super().__init__()
        self.time_proj = Timesteps(width, flip_sin_to_cos=False, downscale_freq_shift=1)
        self.time_embedding = TimestepEmbedding(width, width)
        blocks: list[nn.Module] = [ConvBlock(2 * latent_channels, width)]
        blocks += [ResidualBlock(width) for _ in range(num_res_blocks)]
        self.resnet_blocks = nn.ModuleList(blocks)
        self.zero_conv_out = ConvBlock(width, latent_channels)
        nn.init.zeros_(self.zero_conv_out.conv_in.weight)
        nn.init.zeros_(self.zero_conv_out.conv_in.bias)

    def forward(self, z_hat: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        t_emb = self.time_embedding(self.time_proj(t).to(z_hat.dtype))  # (B, width)
        t_emb = t_emb[:, :, None, None]
        h = self.resnet_blocks[0](torch.cat((z_hat, eps), 1))  # (B, width, h, w)
        for block in self.resnet_blocks[1:]:
            h = block(h) + t_emb
        return self.zero_conv_out(h)  # (B, C, h, w)
