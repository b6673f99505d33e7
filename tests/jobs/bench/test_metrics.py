"""Bench metrics: MS-SSIM and GMSD behave as their papers define them; LPIPS from a file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo
from safetensors.torch import save_file

from jobs.bench.metrics import Scorer, gmsd, ms_ssim
from tadm.lpips import LPIPS


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_ms_ssim_is_one_for_identical_and_falls_with_noise():
    img = photo(200, 181)  # odd side: the padded pooling path
    assert ms_ssim(img, img) == pytest.approx(1.0)
    scores = [ms_ssim(noisy(img, s), img) for s in (2, 10, 40)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0


def test_ms_ssim_needs_176_px():
    img = photo(300, 175)
    assert ms_ssim(img, img) is None


def test_gmsd_is_zero_for_identical_and_grows_with_noise():
    img = photo(120, 90)
    assert gmsd(img, img) == 0.0
    scores = [gmsd(noisy(img, s), img) for s in (2, 10, 40)]
    assert 0 < scores[0] < scores[1] < scores[2] < 1


def test_scorer_reports_lpips_only_with_weights(tmp_path):
    img = photo(64, 48)
    plain = Scorer()
    assert "lpips" not in plain.names and "lpips" in plain.unavailable
    assert "dists" in plain.unavailable
    assert set(plain(noisy(img, 5), img)) == {"psnr", "ssim", "ms_ssim", "gmsd"}
    torch.manual_seed(0)
    reference = LPIPS()
    state = {f"features.{k}": v for k, v in reference.features.state_dict().items()}
    for i, lin in enumerate(reference.lins):
        state[f"lin{i}.model.1.weight"] = lin.weight.detach().abs()
    save_file(state, str(tmp_path / "lpips.safetensors"))
    scorer = Scorer(tmp_path / "lpips.safetensors")
    assert "lpips" in scorer.names and "lpips" not in scorer.unavailable
    assert scorer(img, img)["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert scorer(noisy(img, 30), img)["lpips"] > 0
