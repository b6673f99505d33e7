"""The hybrid time scheduler (paper Sec. 3.3, Eq. 9-10, Fig. 4).

z0_hat = S_fixed(z_hat, eps, t0) + S_learned(z_hat, eps, t)

S_fixed is the DDPM x0 estimate of the base model's noise schedule at the fixed step t0; it
respects the base model's prediction type. S_learned (modules/refiner.py) is differentiable in the
continuous t, so gradients reach the TPM.
"""

import torch
from torch import Tensor, nn

from tadm.config import SchedulerConfig
from tadm.modules.refiner import LearnedScheduler


def scaled_linear_alphas_cumprod(config: SchedulerConfig) -> Tensor:
    """alpha_bar_t of diffusers' `scaled_linear` schedule, (num_train_timesteps,), float64."""
    betas = (
        torch.linspace(
            config.beta_start**0.5,
            config.beta_end**0.5,
            config.num_train_timesteps,
            dtype=torch.float64,
        )
        ** 2
    )
    return torch.cumprod(1.0 - betas, dim=0)


class HybridScheduler(nn.Module):
    def __init__(self, config: SchedulerConfig, latent_channels: int) -> None:
        super().__init__()
        self.prediction_type = config.prediction_type
        self.t0 = config.t0
        alpha_bar = scaled_linear_alphas_cumprod(config)[config.t0]
        self.register_buffer("sqrt_alpha_bar", alpha_bar.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_one_minus", (1 - alpha_bar).sqrt().float(), persistent=False)
        self.learned = LearnedScheduler(
            latent_channels, config.learned_width, config.learned_res_blocks
        )

    def fixed(self, z_hat: Tensor, model_output: Tensor) -> Tensor:
        """Eq. 9 at t0: the DDPM x0 estimate from the UNet output."""
        a, b = self.sqrt_alpha_bar, self.sqrt_one_minus
        if self.prediction_type == "epsilon":
            return (z_hat - b * model_output) / a
        return a * z_hat - b * model_output  # v_prediction

    def forward(self, z_hat: Tensor, model_output: Tensor, t: Tensor) -> Tensor:
        """Eq. 10. z_hat, model_output (B, C, h, w); t (B,) continuous -> z0_hat (B, C, h, w)."""
        return self.fixed(z_hat, model_output) + self.learned(z_hat, model_output, t)
