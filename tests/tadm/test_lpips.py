"""LPIPS from a weights file: loads the lpips/torchvision key layout, and measures distance."""

import pytest
import torch
from safetensors.torch import save_file

from tadm.lpips import LPIPS


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    reference = LPIPS()
    state = {f"features.{k}": v for k, v in reference.features.state_dict().items()}
    for i, lin in enumerate(reference.lins):
        state[f"lin{i}.model.1.weight"] = lin.weight.detach().abs()  # LPIPS heads are >= 0
    path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.safetensors"
    save_file(state, str(path))
    return path


def test_distance_is_zero_for_identical_and_grows_with_noise(weights):
    lpips = LPIPS.from_file(weights)
    torch.manual_seed(1)
    a = torch.rand(1, 3, 64, 64) * 2 - 1
    near = (a + 0.05 * torch.randn_like(a)).clamp(-1, 1)
    far = (a + 0.5 * torch.randn_like(a)).clamp(-1, 1)
    assert lpips(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < lpips(a, near).item() < lpips(a, far).item()


def test_weights_are_frozen_and_gradients_reach_the_input(weights):
    lpips = LPIPS.from_file(weights)
    assert not any(p.requires_grad for p in lpips.parameters())
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    lpips(x, torch.rand(1, 3, 32, 32)).backward()
    assert x.grad.abs().sum() > 0


def test_refuses_missing_file_and_incomplete_weights(tmp_path, weights):
    with pytest.raises(ValueError, match="do not exist"):
        LPIPS.from_file(tmp_path / "nope.safetensors")
    incomplete = tmp_path / "features_only.safetensors"
    save_file({f"features.{k}": v for k, v in LPIPS().features.state_dict().items()},
              str(incomplete))  # fmt: skip
    with pytest.raises(ValueError, match="lin0"):
        LPIPS.from_file(incomplete)
