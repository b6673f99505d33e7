"""The three training stages of the paper (Sec. 3.2.2, 3.3, 4.1.2), without any Ray.

- `vae`: (tiny preset only) trains the VAE as the base autoencoder that SD 2.1 brings for sd21.
- `dfrm`: stage 1, DFRM alone with Eq. 8.
- `enhance`: stage 2, LoRA (or the full UNet and VAE decoder when the rank is 0), TPM and the
  learned scheduler with Eq. 11; the official release also trains the UNet's conv_in fully.
- `joint`: stage 3, everything of stages 1 and 2 at a lower learning rate, Eq. 8 + Eq. 11; a
  model without a base VAE (tiny) also fine-tunes its VAE encoder here.
"""

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tadm.losses import (
    Perceptual,
    enhancement_loss,
    perceptual_loss,
    pixel_loss,
    rescaling_loss,
)
from tadm.model import TADM
from tadm.train_config import STAGES


@dataclass(frozen=True)
class StageConfig:
    stage: str  # one of STAGES
    lr: float = 1e-4  # peak learning rate (official 1e-4; joint uses lr * joint_lr_factor)
    joint_lr_factor: float = 0.1  # stage 3 runs at this fraction of lr
    lambda_gui: float = 1.0  # weight of L_gui in Eq. 8
    lambda_perc: float = 0.5  # weight of the perceptual term in Eq. 11

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")


def _enhance_modules(model: TADM) -> list[nn.Module]:
    return [model.tpm, model.scheduler.learned]


def trainable_parameters(model: TADM, stage: str) -> list[nn.Parameter]:
    """Set requires_grad for `stage` and return the parameters it trains."""
    model.requires_grad_(False)
    config = model.config
    modules: list[nn.Module] = []
    if stage == "vae":
        if config.base_model is not None:
            raise ValueError("stage 'vae' trains a VAE from scratch; this model has a base VAE")
        modules.append(model.vae)
    if stage in ("dfrm", "joint"):
        modules.append(model.dfrm)
    for module in modules:
        module.requires_grad_(True)
    if stage in ("enhance", "joint"):
        for module in _enhance_modules(model):
            module.requires_grad_(True)
        _train_base(model.unet, config.unet_lora_rank, full_names=("conv_in.",))
        _train_base(model.vae.decoder, config.vae_lora_rank, full_names=())
    if stage == "joint" and config.base_model is None and config.vae_lora_rank == 0:
        model.vae.requires_grad_(True)  # a model without a base VAE (tiny) trains fully
    return [p for p in model.parameters() if p.requires_grad]


def _train_base(module: nn.Module, lora_rank: int, full_names: tuple[str, ...]) -> None:
    """LoRA weights when there are adapters, else the whole module; plus `full_names`."""
    for name, param in module.named_parameters():
        if lora_rank == 0 or "lora_" in name or name.startswith(full_names):
            param.requires_grad_(True)


def stage_loss(
    model: nn.Module,
    x: Tensor,
    stage: str,
    cfg: StageConfig,
    scale: int,
    perceptual: Perceptual = perceptual_loss,
) -> tuple[Tensor, dict]:
    """The loss of `stage` on a batch x (B, 3, H, W) in [-1, 1]. `model` may be DDP-wrapped."""
    inner: TADM = getattr(model, "module", model)
    if stage == "vae":
        x_hat = inner.decode_latent(inner.encode_latent(x))
        return pixel_loss(x_hat, x, cfg.lambda_perc, perceptual)
    out = model(x, enhance=stage != "dfrm")
    if stage == "dfrm":
        return rescaling_loss(out, x, scale, cfg.lambda_gui)
    loss, logs = enhancement_loss(out, x, cfg.lambda_perc, perceptual)
    logs["t_mean"] = out.t.mean().item()
    if stage == "joint":
        rescale, more = rescaling_loss(out, x, scale, cfg.lambda_gui)
        loss = loss + rescale
        logs.update(more)
    return loss, logs


COLOUR_GAIN = 0.2  # colour augmentation: each channel scaled by a gain in 1 +- this


class RandomCrops:
    """Random crops with flips from images held in memory (uint8 HWC arrays).

    Images smaller than the crop are reflect-padded up to it, so every image can be used. With
    `colour`, each crop also gets its RGB channels in a random order and a random gain per
    channel: a few dozen photos hold few palettes, and a model trained on them alone shifts
    the hues of photos it has not seen (tadm/checkpoints/MODEL_CARD.md).
    """

    def __init__(
        self, images: list[np.ndarray], crop: int, seed: int = 0, colour: bool = False
    ) -> None:
        if not images:
            raise ValueError("no training images")
        self.images = images
        self.crop = crop
        self.colour = colour
        self.rng = random.Random(seed)

    def _one(self) -> np.ndarray:
        img = self.images[self.rng.randrange(len(self.images))]
        h, w = img.shape[:2]
        if h < self.crop or w < self.crop:
            ph, pw = max(0, self.crop - h), max(0, self.crop - w)
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
            h, w = img.shape[:2]
        y, x = self.rng.randrange(h - self.crop + 1), self.rng.randrange(w - self.crop + 1)
        patch = img[y : y + self.crop, x : x + self.crop]
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        if self.rng.random() < 0.5:
            patch = patch[::-1]
        patch = patch.astype(np.float32)
        if self.colour:
            order = self.rng.sample(range(3), 3)
            gains = [1 + self.rng.uniform(-COLOUR_GAIN, COLOUR_GAIN) for _ in range(3)]
            patch = np.clip(patch[..., order] * np.float32(gains), 0, 255)
        return patch

    def batch(self, size: int) -> Tensor:
        """(size, 3, crop, crop) float in [-1, 1]."""
        arr = np.stack([self._one() for _ in range(size)])
        return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0
