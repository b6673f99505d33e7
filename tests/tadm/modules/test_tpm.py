"""TPM (tadm/modules/tpm.py): one continuous time step in [t_min, t_max], trained end to end."""

import pytest
import torch

from tadm import TADM
from tadm.modules.tpm import TPM


@pytest.mark.parametrize("magnitude", [0.01, 1.0, 100.0])
def test_time_step_lies_in_range_for_random_inputs(magnitude):
    torch.manual_seed(0)
    tpm = TPM(latent_channels=4, width=8, num_res_blocks=2, hidden=32, t_min=10, t_max=200)
    with torch.no_grad():
        for p in tpm.time_predict.parameters():  # spread the logits so sigmoid saturates
            p.mul_(magnitude**0.5)
        t = tpm(torch.randn(6, 4, 12, 20) * magnitude)  # (B, C, h, w)
    assert t.shape == (6,)
    assert t.dtype == torch.float32
    assert bool(((t >= 10) & (t <= 200)).all())


def test_one_time_step_per_input_independent_of_the_batch():
    torch.manual_seed(0)
    tpm = TPM(4, 8, 1, 16).eval()
    z_hat = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        together = tpm(z_hat)
        alone = torch.cat([tpm(z_hat[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert together.unique().numel() == 3


def test_official_range_and_layout():
    tpm = TPM()  # official widths
    assert (tpm.t_min, tpm.t_max) == (10.0, 200.0)
    keys = tpm.state_dict().keys()
    assert "noise_esti.6.conv2.weight" in keys
    assert [k for k in keys if k.startswith("time_predict.fuse_mlp") and k.endswith("weight")] == [
        f"time_predict.fuse_mlp.{i}.weight" for i in (0, 2, 4, 6, 8, 9)
    ]


def test_gradients_flow_from_the_loss_to_the_tpm_through_forward():
    """The TPM has no target of its own: it learns through t -> UNet and S_learned (Eq. 10)."""
    torch.manual_seed(0)
    model = TADM.from_preset("tiny", 16).train()
    with torch.no_grad():  # let S_learned depend on t, as it does once trained
        model.scheduler.learned.zero_conv_out.conv_in.weight.normal_(0, 0.05)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    out = model(x, enhance=True)
    assert out.t.shape == (1,) and out.t.requires_grad
    assert 10 <= out.t.item() <= 200
    (out.x_hat - x).abs().mean().backward()
    grads = [p.grad for p in model.tpm.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
