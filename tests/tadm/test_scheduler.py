"""The hybrid time scheduler (tadm/scheduler.py, Eq. 9-10)."""

import dataclasses

import pytest
import torch
from diffusers import DDPMScheduler

from tadm.config import SchedulerConfig
from tadm.scheduler import HybridScheduler, scaled_linear_alphas_cumprod


def test_alphas_cumprod_equal_diffusers_ddpm_scaled_linear():
    ours = scaled_linear_alphas_cumprod(SchedulerConfig())
    ddpm = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
    )
    assert ours.shape == (1000,)
    assert torch.allclose(ours.float(), ddpm.alphas_cumprod, rtol=1e-6, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_s_fixed_inverts_ddpm_noising_at_t0(prediction_type):
    """Noise z0 to step t0 with a known eps (as diffusers does); S_fixed recovers z0."""
    config = dataclasses.replace(SchedulerConfig(), prediction_type=prediction_type)
    scheduler = HybridScheduler(config, latent_channels=4)
    ddpm = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    torch.manual_seed(0)
    z0 = torch.randn(2, 4, 8, 8)
    eps = torch.randn(2, 4, 8, 8)
    t0 = torch.tensor([config.t0])
    z_t = ddpm.add_noise(z0, eps, t0)
    output = eps if prediction_type == "epsilon" else ddpm.get_velocity(z0, eps, t0)
    assert (z_t - z0).abs().max() > 0.1
    assert torch.allclose(scheduler.fixed(z_t, output), z0, atol=1e-5)
    # Eq. 10 at init: S_learned adds nothing, for any continuous t.
    assert torch.allclose(scheduler(z_t, output, torch.tensor([12.5, 180.0])), z0, atol=1e-5)


def test_s_fixed_matches_diffusers_one_step_x0_estimate():
    config = dataclasses.replace(SchedulerConfig(), prediction_type="v_prediction")
    scheduler = HybridScheduler(config, latent_channels=4)
    ddpm = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", clip_sample=False,
    )  # fmt: skip
    torch.manual_seed(0)
    z_t, v = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    expected = ddpm.step(v, config.t0, z_t).pred_original_sample
    assert torch.allclose(scheduler.fixed(z_t, v), expected, atol=1e-5)


def test_s_learned_is_zero_at_init_and_trainable():
    torch.manual_seed(0)
    scheduler = HybridScheduler(SchedulerConfig(learned_width=16, learned_res_blocks=2), 4)
    z_hat, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([10.0, 55.5, 200.0])
    out = scheduler.learned(z_hat, eps, t)
    assert out.shape == z_hat.shape
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    last = scheduler.learned.zero_conv_out.conv_in.weight
    assert last.grad is not None and last.grad.abs().sum() > 0


def test_s_learned_depends_on_continuous_t_once_trained():
    torch.manual_seed(0)
    learned = HybridScheduler(SchedulerConfig(learned_width=16, learned_res_blocks=2), 4).learned
    with torch.no_grad():
        learned.zero_conv_out.conv_in.weight.normal_(0, 0.1)
    z_hat, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    t = torch.tensor([50.0], requires_grad=True)
    out = learned(z_hat, eps, t)
    assert not torch.allclose(out, learned(z_hat, eps, torch.tensor([50.5])))
    out.sum().backward()
    assert t.grad is not None and t.grad.abs() > 0  # gradients reach the TPM through t
