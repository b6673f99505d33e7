import torch

from tadm.losses import bicubic_down, perceptual_loss, pixel_loss, psnr, ssim


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    torch.manual_seed(0)
    a = torch.rand(1, 3, 32, 32)
    assert abs(ssim(a, a).item() - 1) < 1e-5
    assert ssim(a, (a + 0.2 * torch.randn_like(a)).clamp(0, 1)).item() < 0.9


def test_perceptual_loss_is_zero_at_target_and_differentiable():
    x = torch.rand(2, 3, 24, 24) * 2 - 1
    assert perceptual_loss(x, x).item() < 1e-5
    x_hat = torch.zeros_like(x, requires_grad=True)
    perceptual_loss(x_hat, x).backward()
    assert x_hat.grad.abs().sum() > 0


def test_bicubic_down_shape_and_constant():
    x = torch.full((1, 3, 64, 48), 0.25)
    y = bicubic_down(x, 16)
    assert y.shape == (1, 3, 4, 3)
    assert torch.allclose(y, torch.full_like(y, 0.25), atol=1e-6)


def test_psnr_of_known_error():
    a = torch.zeros(1, 3, 4, 4)
    assert abs(psnr(a + 0.1, a) - 20.0) < 1e-4


def test_pixel_loss_skips_the_perceptual_term_at_weight_zero():
    x, x_hat = torch.zeros(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.5)

    def refuse(a, b):
        raise AssertionError("the perceptual term was computed at weight 0")

    loss, logs = pixel_loss(x_hat, x, 0.0, refuse)
    assert loss.item() == 0.5 and logs == {"l1": 0.5}
    loss, logs = pixel_loss(x_hat, x, 2.0, lambda a, b: torch.tensor(0.25))
    assert loss.item() == 1.0 and logs == {"l1": 0.5, "perceptual": 0.25}
