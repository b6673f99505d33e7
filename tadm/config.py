"""TADMConfig: everything needed to rebuild a model, saved as `config.json` beside its weights."""

import dataclasses
import json
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

SCALES = (16, 32)
TILINGS = ("unet", "all")  # how inference tiles an image: see tadm/model.py
PRECISIONS = ("fp32", "fp16", "bf16")  # what inference runs in: see tadm/precision.py
# Keys of the diffusers VAE and UNet configs that TADMConfig reads itself.
VAE_KEYS = ("block_out_channels", "latent_channels")
UNET_KEYS = ("block_out_channels", "cross_attention_dim")


def type_name(kind: Any) -> str:
    """How an error message names the field type `kind`: "int", "dict", "str or None"."""
    if isinstance(kind, types.UnionType):
        return " or ".join(type_name(k) for k in typing.get_args(kind))
    if kind is type(None):
        return "None"
    return getattr(typing.get_origin(kind) or kind, "__name__", str(kind))


def has_type(value: Any, kind: Any) -> bool:
    """Whether `value` fits the field type `kind`: a bool is no int, an int is a float."""
    if isinstance(kind, types.UnionType):
        return any(has_type(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(kind) or kind)


def check_types(config: Any, section: str = "") -> None:
    """Raise ValueError naming the first field of dataclass `config` whose value is not of its
    declared type (`section`: the field's prefix in config.json, e.g. "dfrm.")."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not has_type(value, f.type):
            raise ValueError(f"{section}{f.name} must be {type_name(f.type)}, got {value!r}")


def fields_of(cls: type, data: Any, section: str) -> dict[str, Any]:
    """`data` as keyword arguments of dataclass `cls`: ValueError unless it is a JSON object
    with every field `cls` requires and no field `cls` lacks (`section`: the fields' prefix in
    config.json, "" at the top, e.g. "dfrm." for a nested section)."""
    where = f"config section {section[:-1]!r}" if section else "the config"
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
    fields = dataclasses.fields(cls)
    known = sorted(section + f.name for f in fields)
    unknown = sorted(section + k for k in set(data) - {f.name for f in fields})
    if unknown:
        raise ValueError(f"unknown config fields {unknown}; known: {known}")
    required = [f.name for f in fields if f.default is MISSING and f.default_factory is MISSING]
    missing = [section + name for name in required if name not in data]
    if missing:
        raise ValueError(f"{where} lacks the required fields {missing}")
    return dict(data)


@dataclass(frozen=True)
class DFRMConfig:
    pixel_width: int = 16  # width of the pixel-guidance branch output (official 16)
    latent_width: int = 128  # width of the latent branch and of G_d (official 128)
    num_res_blocks: int = 8  # residual blocks per CNN stage (official 8)
    inn_blocks: int = 12  # coupling blocks of the invertible network F (official 12)
    inn_growth: int = 32  # growth rate of F's dense blocks (official 32)
    # G_d's upsampling convs back to latent_width after each pixel shuffle; the official layout
    # (False) quarters the width at each, which leaves 3 channels before the latent at tiny's 32x.
    decoder_keep_width: bool = False

    def __post_init__(self) -> None:
        check_types(self, "dfrm.")


@dataclass(frozen=True)
class TPMConfig:
    width: int = 32  # conv trunk width (official 32)
    num_res_blocks: int = 6  # residual blocks of the trunk (official 6)
    hidden: int = 512  # MLP width (official 512)
    t_min: float = 10.0  # smallest predicted time step (official 10)
    t_max: float = 200.0  # largest predicted time step (official 200)

    def __post_init__(self) -> None:
        check_types(self, "tpm.")


@dataclass(frozen=True)
class SchedulerConfig:
    num_train_timesteps: int = 1000  # DDPM steps of the base model
    beta_start: float = 0.00085  # scaled_linear betas, as SD 2.x
    beta_end: float = 0.012
    prediction_type: str = "epsilon"  # what the UNet predicts: "epsilon" or "v_prediction"
    t0: int = 50  # fixed time step of S_fixed (Eq. 10; official 50)
    learned_width: int = 64  # width of S_learned (official 64)
    learned_res_blocks: int = 6  # residual blocks of S_learned (official 6)

    def __post_init__(self) -> None:
        check_types(self, "scheduler.")


@dataclass(frozen=True)
class TADMConfig:
    scale: int  # LR downscaling factor N: 16 or 32
    vae: dict[str, Any]  # diffusers AutoencoderKL config
    unet: dict[str, Any]  # diffusers UNet2DConditionModel config
    # Latent convention: z = latent_scaling * mean(E(x)), x_hat = D(z / latent_scaling). Applied
    # exactly once, so DFRM, TPM and the UNet all see the same unit-variance latent.
    latent_scaling: float
    null_prompt_tokens: int  # length of the stored null-prompt embedding (77 for CLIP)
    dfrm: DFRMConfig = field(default_factory=DFRMConfig)
    tpm: TPMConfig = field(default_factory=TPMConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    unet_lora_rank: int = 0  # LoRA rank on the UNet (official 48); 0: the UNet trains fully
    vae_lora_rank: int = 0  # LoRA rank on the VAE decoder (official 16); 0: trains fully
    tile: int = 96  # latent tile size of tiled inference (Algorithm 1)
    tile_stride: int = 64  # latent tile stride
    base_model: str | None = None  # diffusers directory holding the frozen UNet/VAE weights

    def __post_init__(self) -> None:
        check_types(self)
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        for part, keys in (("vae", VAE_KEYS), ("unet", UNET_KEYS)):
            missing = [key for key in keys if key not in getattr(self, part)]
            if missing:
                raise ValueError(f"the {part} config lacks {missing}")
        if self.scheduler.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                "scheduler.prediction_type must be 'epsilon' or 'v_prediction', "
                f"got {self.scheduler.prediction_type!r}"
            )
        if not 0 < self.tile_stride <= self.tile:
            raise ValueError(f"need 0 < tile_stride <= tile, got {self.tile_stride}, {self.tile}")
        step = self.latent_multiple
        if self.tile % step or self.tile_stride % step:
            raise ValueError(
                f"tile ({self.tile}) and tile_stride ({self.tile_stride}) must be multiples of "
                f"{step} latent pixels for scale {self.scale}"
            )

    @property
    def vae_factor(self) -> int:
        """Spatial factor between x and z."""
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae["latent_channels"])

    @property
    def latent_multiple(self) -> int:
        """Latent sizes must be multiples of this (UNet downsampling, LR grid)."""
        unet_factor = 2 ** (len(self.unet["block_out_channels"]) - 1)
        lr_step = self.scale // self.vae_factor
        return max(unet_factor, lr_step)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if not self.dfrm.decoder_keep_width:  # added later: absent is the official layout, so
            del data["dfrm"]["decoder_keep_width"]  # older checkpoints keep their model_id
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "TADMConfig":
        """The config of `data` (config.json as parsed JSON); ValueError naming the field when a
        field is unknown, missing or of the wrong type, or a value is out of range."""
        data = fields_of(cls, data, "")
        for name, section in SECTIONS.items():
            data[name] = section(**fields_of(section, data.get(name, {}), f"{name}."))
        return cls(**data)


# The nested sections of config.json and their dataclasses.
SECTIONS = {"dfrm": DFRMConfig, "tpm": TPMConfig, "scheduler": SchedulerConfig}
