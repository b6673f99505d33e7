"""DFRM, the decoupled feature rescaling module (paper Sec. 3.2, Fig. 2, Eq. 3-8).

Two chains: (x, z) -> z_lr -> z_hat through the CNNs G_e and G_d, and z_lr <-> y through the
invertible network F. The submodule names and index layout are the official release's, so its
state dicts load unchanged (tests/data/official/official_state_dict_keys.json).
"""

import math

import torch
from torch import Tensor, nn

from tadm.modules.common import ConvBlock, Downsample, ResBlock
from tadm.modules.inn import InvertibleNetwork


def quantize(y: Tensor, training: bool) -> Tensor:
    """Q: map y in [-1, 1] onto the 8-bit grid (paper Sec. 3.2.1).

    Inference rounds. Training adds uniform noise of one quantization step, so gradients pass
    unchanged (the relaxation of the official release).
    """
    y = y.clamp(-1.0, 1.0)
    levels = (y + 1.0) * 127.5  # [0, 255]
    levels = levels + (torch.rand_like(levels) - 0.5) if training else torch.round(levels)
    return levels / 127.5 - 1.0


def to_uint8(y_q: Tensor) -> Tensor:
    """Quantized y in [-1, 1] -> uint8 pixels."""
    return torch.round((y_q.clamp(-1.0, 1.0) + 1.0) * 127.5).to(torch.uint8)


def from_uint8(lr: Tensor) -> Tensor:
    """uint8 pixels -> y in [-1, 1] on the 8-bit grid."""
    return lr.float() / 127.5 - 1.0


class DFRM(nn.Module):
    """G_e (pixel-guidance + latent branches, fusion), F (invertible), G_d.

    Args:
        scale: downscaling factor N of the LR image relative to the HR image (16 or 32).
        latent_channels: channels of the VAE latent z.
        vae_factor: spatial factor between x and z (8 for SD VAEs).
        pixel_width: width of the pixel-guidance branch output (official 16).
        latent_width: width of the latent branch and of G_d (official 128).
        num_res_blocks: residual blocks in the latent branch, the fusion and G_d (official 8).
        inn_blocks: coupling blocks in F (official 12).
        inn_growth: growth rate of F's dense blocks (official 32).
        decoder_keep_width: G_d's convs after each pixel shuffle go back to latent_width
            channels (official False: each shuffle quarters the width for good).
    """

    def __init__(
        self,
        scale: int,
        latent_channels: int = 4,
        vae_factor: int = 8,
        pixel_width: int = 16,
        latent_width: int = 128,
        num_res_blocks: int = 8,
        inn_blocks: int = 12,
        inn_growth: int = 32,
        decoder_keep_width: bool = False,
    ) -> None:
        super().__init__()
        if scale % vae_factor or scale <= vae_factor or scale & (scale - 1):
            raise ValueError(f"scale must be a power-of-two multiple of {vae_factor}, got {scale}")
        pixel_steps = int(math.log2(scale))
        latent_steps = int(math.log2(scale // vae_factor))

        # G_e, pixel-guidance branch: x (B, 3, H, W) -> (B, pixel_width, H/N, W/N)
        down: list[nn.Module] = [ConvBlock(3, pixel_width)]
        channels = pixel_width
        for _ in range(pixel_steps):
            down += [Downsample(channels), ResBlock(2 * channels)]
            channels *= 2
        down.append(ConvBlock(channels, pixel_width))
        self.down_module = nn.Sequential(*down)

        # G_e, latent branch: z (B, C, H/8, W/8) -> (B, latent_width, H/N, W/N)
        latent: list[nn.Module] = [ConvBlock(latent_channels, latent_width)]
        latent += [ResBlock(latent_width) for _ in range(num_res_blocks)]
        for _ in range(latent_steps):
            latent += [nn.PixelUnshuffle(2), ConvBlock(4 * latent_width, latent_width)]
        self.latent_module = nn.Sequential(*latent)

        # G_e, fusion: (B, pixel_width + latent_width, H/N, W/N) -> z_lr (B, 3, H/N, W/N)
        fused = pixel_width + latent_width
        fusing: list[nn.Module] = [ResBlock(fused) for _ in range(num_res_blocks)]
        fusing.append(ConvBlock(fused, 3))
        self.fusing_module = nn.Sequential(*fusing)

        # F: z_lr <-> y
        self.inv_module = InvertibleNetwork(inn_blocks, 3, inn_growth)

        # G_d: z_lr (B, 3, H/N, W/N) -> z_hat (B, C, H/8, W/8)
        final: list[nn.Module] = [ConvBlock(3, latent_width)]
        final += [ResBlock(latent_width) for _ in range(num_res_blocks)]
        channels = latent_width
        for step in range(latent_steps):
            channels //= 4
            if step == latent_steps - 1:
                out = latent_channels
            else:
                out = latent_width if decoder_keep_width else channels
            final += [nn.PixelShuffle(2), ConvBlock(channels, out)]
            channels = out
        self.final_module = nn.Sequential(*final)

    def g_e(self, x: Tensor, z: Tensor) -> Tensor:
        """Eq. 3: z_lr = G_e(x, z). x (B, 3, H, W) in [-1, 1], z (B, C, H/8, W/8)."""
        pixel = self.down_module(x)  # (B, pixel_width, H/N, W/N)
        latent = self.latent_module(z)  # (B, latent_width, H/N, W/N)
        return self.fusing_module(torch.cat((pixel, latent), 1))  # (B, 3, H/N, W/N)

    def g_d(self, z_lr: Tensor) -> Tensor:
        """Eq. 5: z_hat = G_d(z_lr), (B, 3, H/N, W/N) -> (B, C, H/8, W/8)."""
        return self.final_module(z_lr)

    def downscale(self, x: Tensor, z: Tensor) -> Tensor:
        """y = F(G_e(x, z)) before quantization, in [-1, 1] nominally. (B, 3, H/N, W/N)"""
        return self.inv_module(self.g_e(x, z))

    def upscale(self, y: Tensor) -> Tensor:
        """z_hat = G_d(F^-1(y)) (Eq. 4-5). y (B, 3, H/N, W/N) -> (B, C, H/8, W/8)"""
        return self.g_d(self.inv_module.inverse(y))
