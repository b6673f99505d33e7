"""TADM: the whole model (paper Sec. 3, Fig. 1) with its training and inference APIs.

Training: `forward(x)` runs one crop through every part and returns a `TADMOutput` for the losses.
Inference: `downscale(hr)` and `upscale(lr, size)` run tiled (Algorithm 1) on any image size.

Pixel convention: the public API takes and returns [0, 1] images; inside, x is in [-1, 1].
Latent convention: z = latent_scaling * mean(E(x)) and x_hat = D(z / latent_scaling), applied once.
"""

import contextlib
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tadm import hub, lora
from tadm.config import TADMConfig
from tadm.modules.dfrm import DFRM, from_uint8, quantize, to_uint8
from tadm.modules.tpm import TPM
from tadm.presets import build_config
from tadm.scheduler import HybridScheduler
from tadm.tiling import Blender, Tile, grid_shape, tile_grid

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LR_CONTEXT = 4  # LR pixels of context around each tile for the inverse DFRM (cropped after)
WEIGHTS_FILE = "model.safetensors"


class LatentStore(Protocol):
    """Where `upscale` keeps and finds the enhanced latent of each tile of one image (one LR,
    one size, one model): key (tile row, tile col), value (z0_hat, t)."""

    def get(self, key: tuple[int, int]) -> tuple[Tensor, Tensor] | None: ...

    def __setitem__(self, key: tuple[int, int], value: tuple[Tensor, Tensor]) -> None: ...


@dataclass
class TADMOutput:
    """Every intermediate of one training forward pass (shapes for x of (B, 3, H, W))."""

    z: Tensor  # (B, C, H/8, W/8) latent of x
    z_lr: Tensor  # (B, 3, H/N, W/N) G_e(x, z)
    y: Tensor  # (B, 3, H/N, W/N) F(z_lr), before quantization
    y_q: Tensor  # (B, 3, H/N, W/N) Q(y): uniform-noise relaxation in training, rounded in eval
    z_hat_direct: Tensor  # (B, C, H/8, W/8) G_d(z_lr), the chain without F and Q
    z_hat: Tensor  # (B, C, H/8, W/8) G_d(F^-1(y_q))
    t: Tensor | None = None  # (B,) TPM time step
    z0_hat: Tensor | None = None  # (B, C, H/8, W/8) enhanced latent
    x_hat: Tensor | None = None  # (B, 3, H, W) in [-1, 1]


def pad_to(x: Tensor, height: int, width: int) -> Tensor:
    """Pad (B, C, h, w) at the bottom/right to (height, width) by reflection (replicate where a
    side is 1 pixel)."""
    while x.shape[-2] < height or x.shape[-1] < width:
        ph = min(height - x.shape[-2], x.shape[-2] - 1)
        pw = min(width - x.shape[-1], x.shape[-1] - 1)
        if ph <= 0 and pw <= 0:  # a 1-pixel side cannot reflect
            ph, pw = height - x.shape[-2], width - x.shape[-1]
            return F.pad(x, (0, pw, 0, ph), mode="replicate")
        x = F.pad(x, (0, max(pw, 0), 0, max(ph, 0)), mode="reflect")
    return x


def read_config(directory: Path, name: str) -> TADMConfig:
    """The config.json of checkpoint folder `directory` (`name`: what the user called it)."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{name!r} has no config.json: not a TADM checkpoint")
    return TADMConfig.from_dict(json.loads(config_file.read_text()))


class TADM(nn.Module):
    """Timestep-Aware Diffusion Model for extreme image rescaling.

    Args:
        config: the full configuration (saved as config.json).
        vae: diffusers AutoencoderKL (E and D).
        unet: diffusers UNet2DConditionModel (the one-step denoiser).
        null_prompt: (1, L, D) text embedding of the empty prompt, so inference needs no text
            encoder. Zeros when None.
    """

    def __init__(
        self,
        config: TADMConfig,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        null_prompt: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.vae = vae
        self.unet = unet
        c = config.latent_channels
        d = config.dfrm
        self.dfrm = DFRM(
            config.scale,
            c,
            config.vae_factor,
            d.pixel_width,
            d.latent_width,
            d.num_res_blocks,
            d.inn_blocks,
            d.inn_growth,
            d.decoder_keep_width,
        )
        p = config.tpm
        self.tpm = TPM(c, p.width, p.num_res_blocks, p.hidden, p.t_min, p.t_max)
        self.scheduler = HybridScheduler(config.scheduler, c)
        if null_prompt is None:
            null_prompt = torch.zeros(
                1, config.null_prompt_tokens, config.unet["cross_attention_dim"]
            )
        self.register_buffer("null_prompt", null_prompt.detach().float().clone())
        if config.unet_lora_rank:
            lora.add_unet_lora(unet, config.unet_lora_rank)
        if config.vae_lora_rank:
            lora.add_vae_decoder_lora(vae, config.vae_lora_rank)
        self.precision = "fp32"

    # ---- construction and checkpoints -------------------------------------------------------

    @classmethod
    def from_config(cls, config: TADMConfig) -> "TADM":
        """Build from a config: base weights from config.base_model, or random ones."""
        if config.base_model is None:
            vae = AutoencoderKL.from_config(config.vae)
            unet = UNet2DConditionModel.from_config(config.unet)
            # A UNet trained from scratch starts with a zero output: eps = 0 makes S_fixed a
            # near-identity (z / sqrt(alpha_bar_t0)), so the one-step enhancement starts from
            # the DFRM's latent instead of adding noise to it.
            nn.init.zeros_(unet.conv_out.weight)
            nn.init.zeros_(unet.conv_out.bias)
            return cls(config, vae, unet)
        vae, unet, null_prompt, _ = hub.load_base(hub.local_dir(config.base_model))
        return cls(config, vae, unet, null_prompt)

    @classmethod
    def from_preset(
        cls, name: str, scale: int = 16, base_model: str | None = None, **overrides: Any
    ) -> "TADM":
        """A model of preset `name` at `scale` (16 or 32); `overrides` replace config fields
        (e.g. unet_lora_rank).

        Without `base_model`, every weight is random. With it (a diffusers folder: local path or
        URI), the VAE, UNet, their configs, the scheduler's prediction type and the null-prompt
        embedding come from that folder; DFRM, TPM and S_learned start fresh.
        """
        config = build_config(name, scale, **overrides)
        if base_model is None:
            return cls.from_config(config)
        directory = hub.local_dir(base_model)
        vae, unet, null_prompt, scheduler = hub.load_base(directory)
        sched = dataclasses.replace(
            config.scheduler,
            prediction_type=scheduler.get("prediction_type", config.scheduler.prediction_type),
        )
        config = dataclasses.replace(
            config,
            # Private entries ("_name_or_path": where the folder was read) are not the model's.
            vae={k: v for k, v in vae.config.items() if not k.startswith("_")},
            unet={k: v for k, v in unet.config.items() if not k.startswith("_")},
            latent_scaling=float(vae.config.scaling_factor),
            null_prompt_tokens=null_prompt.shape[1],
            scheduler=sched,
            base_model=base_model,
        )
        return cls(config, vae, unet, null_prompt)

    @classmethod
    def from_pretrained(cls, path_or_name: str, storage_options: dict | None = None) -> "TADM":
        """Load a folder written by `save_pretrained`, or a shipped checkpoint, by name.

        A folder is a local path or a URI (file://, s3://, any fsspec protocol); a remote folder
        is read with `storage_options` (s3fs options: endpoint_url, key, secret, ...) and cached
        locally (tadm.hub.cached_copy).
        """
        directory = hub.resolve(str(path_or_name), storage_options)
        config = read_config(directory, path_or_name)
        model = cls.from_config(config)
        state = load_file(str(directory / WEIGHTS_FILE))
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not model._saved_elsewhere(k)]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"checkpoint {path_or_name!r} does not match its config: missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        if config.unet_lora_rank:
            lora.load_adapter(model.unet, directory / "unet_lora")
        if config.vae_lora_rank:
            lora.load_adapter(model.vae, directory / "vae_decoder_lora")
        return model.eval()

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json, model.safetensors and the LoRA adapters (peft layout)."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if not self._saved_elsewhere(k)
        }
        save_file(state, str(directory / WEIGHTS_FILE))
        if self.config.unet_lora_rank:
            lora.save_adapter(self.unet, directory / "unet_lora")
        if self.config.vae_lora_rank:
            lora.save_adapter(self.vae, directory / "vae_decoder_lora")
        (directory / "config.json").write_text(self.config.to_json())

    def _saved_elsewhere(self, key: str) -> bool:
        """LoRA weights live in the adapter folders; frozen base weights in config.base_model."""
        if lora.is_lora_key(key):
            return True
        frozen_base = key.startswith(("unet.", "vae.")) and not key.startswith("unet.conv_in.")
        return self.config.base_model is not None and frozen_base

    # ---- identity ---------------------------------------------------------------------------

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def model_id(self) -> str:
        """Stable content hash of the config (less the base-model location) and every weight."""
        h = hashlib.sha256()
        config = json.loads(self.config.to_json())
        config.pop("base_model")
        h.update(json.dumps(config, sort_keys=True).encode())
        for key, value in sorted(self.state_dict().items()):
            data = value.detach().cpu().contiguous()
            h.update(f"{key}:{data.dtype}:{tuple(data.shape)}".encode())
            h.update(data.view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return self.null_prompt.device

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=PRECISIONS[self.precision])

    # ---- the parts, as numbered steps ---------------------------------------------------------

    def encode_latent(self, x: Tensor) -> Tensor:
        """Step 1: z = s * mean(E(x)). x (B, 3, H, W) in [-1, 1] -> (B, C, H/8, W/8)."""
        return self.vae.encode(x).latent_dist.mode() * self.config.latent_scaling

    def decode_latent(self, z: Tensor) -> Tensor:
        """Step 4: x_hat = D(z / s). (B, C, H/8, W/8) -> (B, 3, H, W) in [-1, 1] nominally."""
        return self.vae.decode(z / self.config.latent_scaling).sample

    def enhance(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """Step 3, one-step enhancement (Sec. 3.3): z_hat (B, C, h, w) -> (z0_hat, t (B,))."""
        t = self.tpm(z_hat)  # 3a. time step from the rescaled latent
        context = self.null_prompt.expand(z_hat.shape[0], -1, -1).to(z_hat.dtype)
        eps = self.unet(z_hat, t, encoder_hidden_states=context).sample  # 3b. one UNet call
        z0_hat = self.scheduler(z_hat, eps, t)  # 3c. hybrid scheduler, Eq. 10
        return z0_hat, t

    def forward(self, x: Tensor, enhance: bool = True) -> TADMOutput:
        """Training pass on one crop. x (B, 3, H, W) in [-1, 1], H and W multiples of
        `self.size_multiple`. With enhance=False only the DFRM chains run (training stage 1)."""
        z = self.encode_latent(x)  # 1. latent encoding
        z_lr = self.dfrm.g_e(x, z)  # 2. DFRM: Eq. 3-5
        y = self.dfrm.inv_module(z_lr)
        y_q = quantize(y, self.training)
        z_hat_direct = self.dfrm.g_d(z_lr)
        z_hat = self.dfrm.upscale(y_q)
        out = TADMOutput(z, z_lr, y, y_q, z_hat_direct, z_hat)
        if enhance:
            out.z0_hat, out.t = self.enhance(z_hat)  # 3. one-step enhancement
            out.x_hat = self.decode_latent(out.z0_hat)  # 4. latent decoding
        return out

    # ---- inference --------------------------------------------------------------------------

    @property
    def size_multiple(self) -> int:
        """HR sizes are padded to multiples of this inside downscale/upscale."""
        return self.config.latent_multiple * self.config.vae_factor

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        m = self.size_multiple
        return math.ceil(height / m) * m, math.ceil(width / m) * m

    def _tiles(self, height: int, width: int):
        f = self.config.vae_factor
        return tile_grid(height // f, width // f, self.config.tile, self.config.tile_stride)

    @torch.inference_mode()
    def downscale(self, hr: Tensor) -> Tensor:
        """hr (B, 3, H, W) float in [0, 1] -> LR (B, 3, ceil(H/N), ceil(W/N)) uint8.

        Tiled: each latent tile runs E, G_e and F; the continuous y is blended with Gaussian
        weights across tiles, then quantized once.
        """
        if hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
            raise ValueError(
                f"hr must be a float tensor (B, 3, H, W), got {tuple(hr.shape)} {hr.dtype}"
            )
        s, f = self.scale, self.config.vae_factor
        _, _, height, width = hr.shape
        if min(height, width) < s:
            raise ValueError(f"hr is {width}x{height}, smaller than the scale {s}")
        if hr.min() < 0 or hr.max() > 1:
            raise ValueError("hr values must lie in [0, 1]")
        hp, wp = self._padded(height, width)
        x = pad_to(hr.to(self.device, torch.float32).mul(2).sub_(1), hp, wp)
        r = s // f  # latent pixels per LR pixel
        blender = Blender(x.shape[0], 3, (0, 0, hp // s, wp // s), self.device)
        for tile in self._tiles(hp, wp):
            x_t = x[..., f * tile.y : f * (tile.y + tile.h), f * tile.x : f * (tile.x + tile.w)]
            with self._autocast():
                y_t = self.dfrm.downscale(x_t, self.encode_latent(x_t))
            blender.add(y_t, tile.y // r, tile.x // r)
        y = blender.result()[..., : math.ceil(height / s), : math.ceil(width / s)]
        return to_uint8(quantize(y, training=False)).to(hr.device)

    @torch.inference_mode()
    def upscale(
        self,
        lr: Tensor,
        size: tuple[int, int],
        region: tuple[int, int, int, int] | None = None,
        return_timesteps: bool = False,
        latents: LatentStore | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """LR (B, 3, h, w) uint8 -> HR (B, 3, H, W) float in [0, 1], size = (H, W).

        region (x, y, w, h) in HR pixels restores only that window, from the tiles that cover
        it. With return_timesteps, also returns the per-tile TPM time steps
        (B, tile rows, tile cols), NaN for tiles a region did not need. `latents` (a cache for
        this LR and size, e.g. a dict) skips G_d, TPM and the UNet for the tiles it holds and
        keeps the ones computed, so overlapping regions only decode again.
        """
        height, width = (int(v) for v in size)
        s, f = self.scale, self.config.vae_factor
        if lr.ndim != 4 or lr.shape[1] != 3 or lr.dtype != torch.uint8:
            raise ValueError(
                f"lr must be a uint8 tensor (B, 3, h, w), got {tuple(lr.shape)} {lr.dtype}"
            )
        expected = (math.ceil(height / s), math.ceil(width / s))
        if min(height, width) < 1 or tuple(lr.shape[-2:]) != expected:
            raise ValueError(
                f"size {height}x{width} (H x W) needs an LR of {expected[0]}x{expected[1]} at "
                f"scale {s}, got {lr.shape[-2]}x{lr.shape[-1]}"
            )
        rx, ry, rw, rh = region if region is not None else (0, 0, width, height)
        if rw < 1 or rh < 1 or rx < 0 or ry < 0 or rx + rw > width or ry + rh > height:
            raise ValueError(f"region {region} is not inside the {width}x{height} image")
        hp, wp = self._padded(height, width)
        y = pad_to(from_uint8(lr.to(self.device)), hp // s, wp // s)
        r = s // f
        tiles = self._tiles(hp, wp)
        rows, cols = grid_shape(hp // f, wp // f, self.config.tile, self.config.tile_stride)
        t_map = torch.full((lr.shape[0], rows, cols), float("nan"))
        blender = Blender(lr.shape[0], 3, (ry, rx, rh, rw), self.device)
        for tile in tiles:
            if not blender.overlaps(f * tile.y, f * tile.x, f * tile.h, f * tile.w):
                continue
            key = (tile.row, tile.col)
            found = latents.get(key) if latents is not None else None
            with self._autocast():
                if found is None:
                    z0_hat, t = self._enhanced_tile(y, tile, r)
                    if latents is not None:
                        latents[key] = (z0_hat, t)
                else:
                    z0_hat, t = found
                x_t = self.decode_latent(z0_hat)
            blender.add(x_t, f * tile.y, f * tile.x)
            t_map[:, tile.row, tile.col] = t.float().cpu()
        # In place: the HR canvas is the largest buffer, one float copy of it is enough.
        hr = blender.result().add_(1).div_(2).clamp_(0, 1).to(lr.device)
        return (hr, t_map) if return_timesteps else hr

    def _enhanced_tile(self, y: Tensor, tile: Tile, r: int) -> tuple[Tensor, Tensor]:
        """(z0_hat, t) of one latent tile from the padded LR y, read with LR_CONTEXT pixels of
        context around it (r: LR pixels -> latent pixels)."""
        y0, x0 = tile.y // r, tile.x // r
        a0, b0 = max(0, y0 - LR_CONTEXT), max(0, x0 - LR_CONTEXT)
        a1 = min(y.shape[-2], (tile.y + tile.h) // r + LR_CONTEXT)
        b1 = min(y.shape[-1], (tile.x + tile.w) // r + LR_CONTEXT)
        z_hat = self.dfrm.upscale(y[..., a0:a1, b0:b1])
        oy, ox = (y0 - a0) * r, (x0 - b0) * r
        return self.enhance(z_hat[..., oy : oy + tile.h, ox : ox + tile.w])
