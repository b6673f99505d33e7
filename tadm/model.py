"""TADM: the whole model (paper Sec. 3, Fig. 1) with its training and inference APIs.

Training: `forward(x)` runs one crop through every part and returns a `TADMOutput` for the losses.
Inference: `downscale(hr)` and `upscale(lr, size)` run tiled on any image size, every part per
latent tile by default (`tiling`, see TILINGS), tiles batched within `max_latent_pixels`.
`to_precision` casts the heavy parts to half precision (tadm/precision.py).

Pixel convention: the public API takes and returns [0, 1] images; inside, x is in [-1, 1].
Latent convention: z = latent_scaling * mean(E(x)) and x_hat = D(z / latent_scaling), applied once.
"""

import dataclasses
import hashlib
import json
import math
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tadm import hub, lora
from tadm.config import TILINGS, TADMConfig
from tadm.modules.dfrm import DFRM, from_uint8, quantize, to_uint8
from tadm.modules.tpm import TPM
from tadm.precision import cast_parts, check_precision, dtype_of
from tadm.presets import build_config
from tadm.scheduler import HybridScheduler
from tadm.tiling import Blender, Tile, bounding_box, chunk_grid, grid_shape, overlaps, tile_grid

# How inference tiles an image (`tiling`, one of TILINGS). "all" (the default): every part runs
# per latent tile (E, G_e and F blended on y; F^-1 and G_d with LR_CONTEXT pixels of context; D
# blended in pixel space).
# "unet": only the TPM and the UNet run per latent tile, blended in latent space; E, the DFRM and
# D see the whole image, or chunks of at most max_latent_pixels when it is larger. On the shipped
# tiny checkpoints "all" restores the held-out photos 0.01-0.10 dB better (benchmarks/README.md).
LR_CONTEXT = 4  # LR pixels of context around each tile for the inverse DFRM ("all" tiling)
# Latent pixels E, the DFRM, the UNet (tiles per call) and D see in one call, unless
# model.max_latent_pixels says otherwise: 2048x2048 HR pixels for sd21, 1024x1024 for tiny.
MAX_LATENT_PIXELS = 256 * 256
CHUNK_MARGIN = 16  # latent pixels of overlap on each side of E and D chunks (blended over)
WEIGHTS_FILE = "model.safetensors"


def int_tuple(value: Any, name: str, form: str) -> tuple[int, ...]:
    """`value` as a tuple of ints of the length of `form` (how the message names the items,
    e.g. "(H, W)"); ValueError naming `name` otherwise. Floats and bools are refused."""
    length = form.count(",") + 1
    try:
        items = tuple(value)
        if len(items) == length and not any(isinstance(v, bool) for v in items):
            return tuple(operator.index(v) for v in items)
    except TypeError:  # not iterable, or an item that is no integer
        pass
    raise ValueError(f"{name} must be {length} integers {form}, got {value!r}")


def check_hr(hr: Any, scale: int) -> None:
    """Raise unless `hr` is what `TADM.downscale` takes: a float tensor (B, 3, H, W), B >= 1,
    H and W >= `scale`, every value in [0, 1]."""
    if not isinstance(hr, Tensor):
        raise TypeError(
            f"hr must be a torch tensor (B, 3, H, W), got {type(hr).__name__}: convert it with "
            "torch.from_numpy or torch.as_tensor"
        )
    if hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
        raise ValueError(
            f"hr must be a float tensor (B, 3, H, W), got {tuple(hr.shape)} {hr.dtype}"
        )
    batch, _, height, width = hr.shape
    if batch == 0:
        raise ValueError("hr is an empty batch (B = 0): give at least one image")
    if min(height, width) < scale:
        raise ValueError(f"hr is {width}x{height}, smaller than the scale {scale}")
    low, high = torch.aminmax(hr)  # NaN in hr makes both NaN
    if not (low.isfinite() and high.isfinite()):
        raise ValueError("hr has NaN or infinite values: give finite values in [0, 1]")
    if low < 0 or high > 1:
        raise ValueError(f"hr values must lie in [0, 1], got [{low:g}, {high:g}]")


def check_lr(
    lr: Any, size: Any, region: Any, scale: int
) -> tuple[int, int, tuple[int, int, int, int]]:
    """(H, W, region (x, y, w, h)) of the arguments of `TADM.upscale`, the region the whole
    image when None; raise unless `lr` is a uint8 tensor (B, 3, ceil(H/scale), ceil(W/scale)),
    B >= 1, and the region lies inside the image."""
    if not isinstance(lr, Tensor):
        raise TypeError(
            f"lr must be a torch tensor (B, 3, h, w), got {type(lr).__name__}: convert it with "
            "torch.from_numpy or torch.as_tensor"
        )
    if lr.ndim != 4 or lr.shape[1] != 3 or lr.dtype != torch.uint8:
        raise ValueError(
            f"lr must be a uint8 tensor (B, 3, h, w), got {tuple(lr.shape)} {lr.dtype}"
        )
    if lr.shape[0] == 0:
        raise ValueError("lr is an empty batch (B = 0): give at least one image")
    height, width = int_tuple(size, "size", "(H, W)")
    expected = (math.ceil(height / scale), math.ceil(width / scale))
    if min(height, width) < 1 or tuple(lr.shape[-2:]) != expected:
        raise ValueError(
            f"size {height}x{width} (H x W) needs an LR of {expected[0]}x{expected[1]} at "
            f"scale {scale}, got {lr.shape[-2]}x{lr.shape[-1]}"
        )
    if region is None:
        return height, width, (0, 0, width, height)
    rx, ry, rw, rh = int_tuple(region, "region", "(x, y, w, h)")
    if rw < 1 or rh < 1 or rx < 0 or ry < 0 or rx + rw > width or ry + rh > height:
        raise ValueError(f"region {region} is not inside the {width}x{height} image")
    return height, width, (rx, ry, rw, rh)


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
    """The config.json of checkpoint folder `directory` (`name`: what the user called it);
    ValueError naming the checkpoint when it is missing, not JSON or not a TADM config."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{name!r} has no config.json: not a TADM checkpoint")
    try:
        data = json.loads(config_file.read_text())
    except ValueError as e:  # not UTF-8, or not JSON
        raise ValueError(f"checkpoint {name!r}: config.json is not valid JSON ({e})") from None
    try:
        return TADMConfig.from_dict(data)
    except ValueError as e:
        raise ValueError(f"checkpoint {name!r}: config.json is not a TADM config: {e}") from None


@contextmanager
def reading(directory: Path, file: str, name: str) -> Iterator[Path]:
    """The path of safetensors `file` inside checkpoint folder `directory` (`name`: what the
    user called the checkpoint), to read in the block; ValueError when the file is missing or
    the block finds it unreadable."""
    path = directory / file
    if not path.is_file():
        raise ValueError(f"checkpoint {name!r} has no {file}: save or copy the checkpoint again")
    try:
        yield path
    except SafetensorError as e:
        raise ValueError(
            f"checkpoint {name!r}: {file} is truncated or not a safetensors file ({e}): "
            "save or copy the checkpoint again"
        ) from None


def load_adapter(part: nn.Module, directory: Path, folder: str, rank: int, name: str) -> None:
    """Load the LoRA adapter of `part` from `folder` of checkpoint folder `directory`;
    ValueError naming the checkpoint when it is missing, unreadable or not of `rank` (the
    rank config.json gives it)."""
    with reading(directory, f"{folder}/adapter_model.safetensors", name):
        try:
            lora.load_adapter(part, directory / folder)
        except RuntimeError as e:  # load_state_dict: "size mismatch for KEY: ..." per weight
            lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
            more = f", and {len(lines) - 1} more" if len(lines) > 1 else ""
            raise ValueError(
                f"checkpoint {name!r}: the adapter in {folder}/ does not fit the LoRA rank "
                f"{rank} of config.json ({lines[0] if lines else e}{more})"
            ) from None


def state_mismatch(expected: dict[str, torch.Size], state: dict[str, Tensor]) -> str | None:
    """What keeps the tensors `state` from loading into weights of the `expected` shapes (a
    few names of each kind, with counts), or None when they fit: missing weights, unexpected
    ones and ones of another shape."""
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = [
        f"{k} {list(state[k].shape)} in the file, {list(expected[k])} in the model"
        for k in sorted(expected.keys() & state.keys())
        if state[k].shape != expected[k]
    ]
    parts = [
        f"{len(keys)} {kind} ({'; '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for kind, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape", reshaped),
        )
        if keys
    ]
    return ", ".join(parts) or None


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
        self._precision = "fp32"
        self._fp32_model_id: str | None = None  # set when the weights are cast to half
        self.tiling = "all"  # one of TILINGS
        self.max_latent_pixels = MAX_LATENT_PIXELS

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

        A checkpoint that cannot be loaded (no or unreadable config.json or weights, weights
        that do not fit the config) raises ValueError naming it and what is wrong.
        """
        name = str(path_or_name)
        directory = hub.resolve(name, storage_options)
        config = read_config(directory, name)
        try:
            model = cls.from_config(config)
        except (TypeError, KeyError, IndexError, RuntimeError) as e:
            # Values the config's field checks cannot see (a negative width, a diffusers
            # config diffusers cannot build) fail inside torch or diffusers.
            raise ValueError(
                f"checkpoint {name!r}: config.json describes no model that can be built "
                f"({type(e).__name__}: {e})"
            ) from None
        with reading(directory, WEIGHTS_FILE, name) as path:
            state = load_file(str(path))
        # Weights saved elsewhere (LoRA, a base model's) need not be in the file; they load
        # from it when they are.
        shapes = {
            k: v.shape
            for k, v in model.state_dict().items()
            if k in state or not model._saved_elsewhere(k)
        }
        mismatch = state_mismatch(shapes, state)
        if mismatch:
            raise ValueError(
                f"checkpoint {name!r}: {WEIGHTS_FILE} does not match config.json (scale "
                f"{config.scale}): {mismatch}; the weights were saved from another config"
            )
        model.load_state_dict(state, strict=False)
        for rank, part, folder in (
            (config.unet_lora_rank, model.unet, "unet_lora"),
            (config.vae_lora_rank, model.vae, "vae_decoder_lora"),
        ):
            if rank:
                load_adapter(part, directory, folder, rank, name)
        return model.eval()

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json, model.safetensors and the LoRA adapters (peft layout).

        Only a float32 model: the weights of a model cast by `to_precision` are rounded, so
        saved they would make a model of another model_id than the one it stamps on its LRs.
        """
        if self._precision != "fp32":
            raise ValueError(
                f"the model is cast to {self._precision}: its rounded weights would save as "
                f"another model than {self.model_id}, the id its LRs carry; save it before "
                "to_precision, or load the checkpoint again and save that"
            )
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
        """Stable content hash of the config (less the base-model location) and every weight,
        as float32: a model cast by `to_precision` keeps the id of the weights it was cast from."""
        if self._fp32_model_id is not None:
            return self._fp32_model_id
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

    @property
    def precision(self) -> str:
        """'fp32', or the half precision `to_precision` cast the model to."""
        return self._precision

    def to_precision(self, precision: str) -> "TADM":
        """Run inference in `precision` ('fp32', 'fp16' or 'bf16') on the model's device: casts
        the weights of the VAE, the UNet and the DFRM's CNNs (tadm/precision.py says which and
        why; fp16 needs CUDA). One-way: a half model cannot go back to fp32, nor be saved.
        Returns the model.
        """
        check_precision(precision, self.device)
        if precision == self._precision:
            return self
        if self._precision != "fp32":
            raise ValueError(
                f"the model is already cast to {self._precision}: load it again to run {precision}"
            )
        self._fp32_model_id = self.model_id
        cast_parts(self, precision)
        self._precision = precision
        return self

    def _check_inference(self) -> None:
        check_precision(self._precision, self.device)
        if self.tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {TILINGS}, got {self.tiling!r}")
        if self.max_latent_pixels < 1:
            raise ValueError(f"max_latent_pixels must be positive, got {self.max_latent_pixels}")

    # ---- the parts, as numbered steps ---------------------------------------------------------

    # Each step takes float32 tensors, runs its part in the part's dtype and returns float32.

    def encode_latent(self, x: Tensor) -> Tensor:
        """Step 1: z = s * mean(E(x)). x (B, 3, H, W) in [-1, 1] -> (B, C, H/8, W/8)."""
        z = self.vae.encode(x.to(dtype_of(self.vae.encoder))).latent_dist.mode()
        return z.float() * self.config.latent_scaling

    def dfrm_downscale(self, x: Tensor, z: Tensor) -> Tensor:
        """Step 2, down: y = F(G_e(x, z)) before quantization (Eq. 3-4); F runs in float32.
        x (B, 3, H, W), z (B, C, H/8, W/8) -> (B, 3, H/N, W/N)."""
        dtype = dtype_of(self.dfrm.fusing_module)
        return self.dfrm.inv_module(self.dfrm.g_e(x.to(dtype), z.to(dtype)).float())

    def dfrm_upscale(self, y: Tensor) -> Tensor:
        """Step 2, up: z_hat = G_d(F^-1(y)) (Eq. 4-5); F^-1 runs in float32.
        y (B, 3, H/N, W/N) -> (B, C, H/8, W/8)."""
        z_lr = self.dfrm.inv_module.inverse(y.float())
        return self.dfrm.g_d(z_lr.to(dtype_of(self.dfrm.final_module))).float()

    def decode_latent(self, z: Tensor) -> Tensor:
        """Step 4: x_hat = D(z / s). (B, C, H/8, W/8) -> (B, 3, H, W) in [-1, 1] nominally."""
        z = (z / self.config.latent_scaling).to(dtype_of(self.vae.decoder))
        return self.vae.decode(z).sample.float()

    def enhance(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """Step 3, one-step enhancement (Sec. 3.3): z_hat (B, C, h, w) -> (z0_hat, t (B,))."""
        z_hat = z_hat.float()
        t = self.tpm(z_hat)  # 3a. time step from the rescaled latent
        dtype = dtype_of(self.unet)
        context = self.null_prompt.expand(z_hat.shape[0], -1, -1).to(dtype)
        eps = self.unet(z_hat.to(dtype), t, encoder_hidden_states=context).sample  # 3b. one call
        z0_hat = self.scheduler(z_hat, eps.float(), t)  # 3c. hybrid scheduler, Eq. 10
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

    @property
    def dfrm_context(self) -> int:
        """LR pixels of context that make z_hat of a window equal to the whole image's: the
        receptive field of F^-1 (10 per coupling block: two dense blocks of five 3x3 convs in
        series) and of G_d (a conv, two per residual block, one per pixel-shuffle step)."""
        d = self.config.dfrm
        steps = int(math.log2(self.scale // self.config.vae_factor))
        return 10 * d.inn_blocks + 1 + 2 * d.num_res_blocks + steps

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        m = self.size_multiple
        return math.ceil(height / m) * m, math.ceil(width / m) * m

    def _tiles(self, height: int, width: int) -> list[Tile]:
        f = self.config.vae_factor
        return tile_grid(height // f, width // f, self.config.tile, self.config.tile_stride)

    def _chunks(self, height: int, width: int) -> list[Tile]:
        """Chunks of E or D for an HR (height, width): the whole latent when it fits the budget,
        else a fixed grid of chunks overlapping by 2 * CHUNK_MARGIN latent pixels."""
        f, m = self.config.vae_factor, self.config.latent_multiple
        margin = m * math.ceil(CHUNK_MARGIN / m)
        return chunk_grid(height // f, width // f, self.max_latent_pixels, margin, m)

    @torch.inference_mode()
    def downscale(self, hr: Tensor) -> Tensor:
        """hr (B, 3, H, W) float in [0, 1] -> LR (B, 3, ceil(H/N), ceil(W/N)) uint8.

        E, G_e and F run on the whole image, or on overlapping chunks (latent tiles with the
        "all" tiling) whose continuous y is blended with Gaussian weights; y is quantized once.
        """
        check_hr(hr, self.scale)
        self._check_inference()
        s, f = self.scale, self.config.vae_factor
        height, width = hr.shape[-2:]
        hp, wp = self._padded(height, width)
        x = pad_to(hr.to(self.device, torch.float32).mul(2).sub_(1), hp, wp)
        r = s // f  # latent pixels per LR pixel
        chunks = self._tiles(hp, wp) if self.tiling == "all" else self._chunks(hp, wp)
        if len(chunks) == 1:
            y = self.dfrm_downscale(x, self.encode_latent(x))
        else:
            batch, per_call = x.shape[0], self._tiles_per_call(chunks[0])
            blender = Blender(batch, 3, (0, 0, hp // s, wp // s), self.device)
            for i in range(0, len(chunks), per_call):
                group = chunks[i : i + per_call]  # equal sizes: one batch of chunks x images
                x_g = torch.cat(
                    [x[..., f * c.y : f * (c.y + c.h), f * c.x : f * (c.x + c.w)] for c in group]
                )
                y_g = self.dfrm_downscale(x_g, self.encode_latent(x_g))
                for k, c in enumerate(group):
                    blender.add(y_g[k * batch : (k + 1) * batch], c.y // r, c.x // r)
            y = blender.result()
        y = y[..., : math.ceil(height / s), : math.ceil(width / s)]
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
        height, width, (rx, ry, rw, rh) = check_lr(lr, size, region, self.scale)
        self._check_inference()
        s, f = self.scale, self.config.vae_factor
        hp, wp = self._padded(height, width)
        y = pad_to(from_uint8(lr.to(self.device)), hp // s, wp // s)
        rows, cols = grid_shape(hp // f, wp // f, self.config.tile, self.config.tile_stride)
        t_map = torch.full((lr.shape[0], rows, cols), float("nan"))
        window = (ry, rx, rh, rw)
        if self.tiling == "all":
            x_hat = self._upscale_every_tile(y, hp, wp, window, t_map, latents)
        else:
            x_hat = self._upscale_unet_tiles(y, hp, wp, window, t_map, latents)
        # In place: the HR canvas is the largest buffer, one float copy of it is enough.
        hr = x_hat.add_(1).div_(2).clamp_(0, 1).to(lr.device)
        return (hr, t_map) if return_timesteps else hr

    def _upscale_unet_tiles(
        self,
        y: Tensor,
        hp: int,
        wp: int,
        window: tuple[int, int, int, int],
        t_map: Tensor,
        latents: LatentStore | None,
    ) -> Tensor:
        """Algorithm 1 for the HR window (y0, x0, h, w) of the padded LR y: z_hat of the whole
        image (exact windows), the TPM and UNet per latent tile in batches, z0_hat blended in
        latent space, D on the chunks of a fixed grid that cover the window, blended."""
        f = self.config.vae_factor
        chunks = [c for c in self._chunks(hp, wp) if overlaps(window, _scaled(c, f))]
        box = bounding_box(chunks)  # latent (y0, x0, h, w) that D needs
        tiles = [t for t in self._tiles(hp, wp) if overlaps(box, (t.y, t.x, t.h, t.w))]
        enhanced = self._enhanced_tiles(y, tiles, latents)
        batch, channels = y.shape[0], self.config.latent_channels
        z0_blender = Blender(batch, channels, box, self.device)  # latent space
        for tile, (z0_hat, t) in zip(tiles, enhanced, strict=True):
            z0_blender.add(z0_hat, tile.y, tile.x)
            t_map[:, tile.row, tile.col] = t.float().cpu()
        z0_hat = z0_blender.result()  # (B, C, box h, box w)
        by, bx = box[0], box[1]
        if len(chunks) == 1:
            (c,) = chunks
            z_c = z0_hat[..., c.y - by : c.y + c.h - by, c.x - bx : c.x + c.w - bx]
            x_c = self.decode_latent(z_c)
            wy, wx, wh, ww = window
            return x_c[..., wy - f * c.y : wy + wh - f * c.y, wx - f * c.x : wx + ww - f * c.x]
        blender = Blender(batch, 3, window, self.device)
        for c in chunks:
            z_c = z0_hat[..., c.y - by : c.y + c.h - by, c.x - bx : c.x + c.w - bx]
            blender.add(self.decode_latent(z_c), f * c.y, f * c.x)
        return blender.result()

    def _tiles_per_call(self, tile: Tile) -> int:
        return max(1, self.max_latent_pixels // (tile.h * tile.w))

    def _enhanced_tiles(
        self, y: Tensor, tiles: list[Tile], latents: LatentStore | None
    ) -> list[tuple[Tensor, Tensor]]:
        """(z0_hat, t) of each tile: from `latents` where it holds them, else from z_hat (of
        the whole image, or of each tile with LR_CONTEXT for the "all" tiling) through TPM,
        UNet and scheduler, as many tiles per call as the latent budget allows."""
        found = {t: latents.get((t.row, t.col)) if latents is not None else None for t in tiles}
        todo = [t for t in tiles if found[t] is None]
        if not todo:
            return [found[t] for t in tiles]  # type: ignore[misc]
        if self.tiling == "all":
            # Made per call: each crop is a view of its tile's z_hat with context, and holding
            # every tile's would cost several times the HR image.
            def crop(t: Tile) -> Tensor:
                return self._tile_z_hat(y, t)
        else:
            by, bx, _, _ = box = bounding_box(todo)
            z_hat = self._z_hat(y, box)  # (B, C, box h, box w)

            def crop(t: Tile) -> Tensor:
                return z_hat[..., t.y - by : t.y - by + t.h, t.x - bx : t.x - bx + t.w]

        per_call, batch = self._tiles_per_call(todo[0]), y.shape[0]
        for i in range(0, len(todo), per_call):
            group = torch.cat([crop(t) for t in todo[i : i + per_call]])  # tiles x images
            z0_hat, t_step = self.enhance(group)
            for k, tile in enumerate(todo[i : i + per_call]):
                part = slice(k * batch, (k + 1) * batch)
                found[tile] = (z0_hat[part], t_step[part])
                if latents is not None:
                    latents[(tile.row, tile.col)] = found[tile]
        return [found[t] for t in tiles]  # type: ignore[misc]

    def _z_hat(self, y: Tensor, box: tuple[int, int, int, int]) -> Tensor:
        """z_hat = G_d(F^-1(y)) over the latent box (y0, x0, h, w) of the padded LR y, equal to
        the whole image's: computed in cores of at most the latent budget, each read with
        `dfrm_context` LR pixels of context."""
        r = self.scale // self.config.vae_factor
        y0, x0, h, w = (v // r for v in box)  # LR pixels
        lr_h, lr_w = y.shape[-2:]
        core = max(1, math.isqrt(self.max_latent_pixels) // r)
        ctx = self.dfrm_context
        out = torch.empty(y.shape[0], self.config.latent_channels, h * r, w * r, device=self.device)
        for a in range(y0, y0 + h, core):
            a1 = min(a + core, y0 + h)
            for b in range(x0, x0 + w, core):
                b1 = min(b + core, x0 + w)
                wa, wb = max(0, a - ctx), max(0, b - ctx)
                z = self.dfrm_upscale(y[..., wa : min(lr_h, a1 + ctx), wb : min(lr_w, b1 + ctx)])
                out[..., (a - y0) * r : (a1 - y0) * r, (b - x0) * r : (b1 - x0) * r] = z[
                    ..., (a - wa) * r : (a1 - wa) * r, (b - wb) * r : (b1 - wb) * r
                ]
        return out

    def _upscale_every_tile(
        self,
        y: Tensor,
        hp: int,
        wp: int,
        window: tuple[int, int, int, int],
        t_map: Tensor,
        latents: LatentStore | None,
    ) -> Tensor:
        """The "all" tiling: per latent tile, F^-1 and G_d with LR_CONTEXT, TPM, UNet and D
        (batched as the budget allows); the decoded tiles blended in pixel space over the HR
        window (y0, x0, h, w)."""
        f = self.config.vae_factor
        blender = Blender(y.shape[0], 3, window, self.device)
        tiles = [t for t in self._tiles(hp, wp) if overlaps(window, _scaled(t, f))]
        enhanced = self._enhanced_tiles(y, tiles, latents)
        per_call, batch = self._tiles_per_call(tiles[0]), y.shape[0]
        for i in range(0, len(tiles), per_call):
            group = list(zip(tiles[i : i + per_call], enhanced[i : i + per_call], strict=True))
            x_hat = self.decode_latent(torch.cat([z0_hat for _, (z0_hat, _) in group]))
            for k, (tile, (_, t)) in enumerate(group):
                blender.add(x_hat[k * batch : (k + 1) * batch], f * tile.y, f * tile.x)
                t_map[:, tile.row, tile.col] = t.float().cpu()
        return blender.result()

    def _tile_z_hat(self, y: Tensor, tile: Tile) -> Tensor:
        """z_hat of one latent tile from the padded LR y, read with LR_CONTEXT pixels of context
        around it ("all" tiling)."""
        r = self.scale // self.config.vae_factor
        y0, x0 = tile.y // r, tile.x // r
        a0, b0 = max(0, y0 - LR_CONTEXT), max(0, x0 - LR_CONTEXT)
        a1 = min(y.shape[-2], (tile.y + tile.h) // r + LR_CONTEXT)
        b1 = min(y.shape[-1], (tile.x + tile.w) // r + LR_CONTEXT)
        z_hat = self.dfrm_upscale(y[..., a0:a1, b0:b1])
        oy, ox = (y0 - a0) * r, (x0 - b0) * r
        return z_hat[..., oy : oy + tile.h, ox : ox + tile.w]


def _scaled(tile: Tile, factor: int) -> tuple[int, int, int, int]:
    """A latent tile's (y, x, h, w) in HR pixels."""
    return factor * tile.y, factor * tile.x, factor * tile.h, factor * tile.w
