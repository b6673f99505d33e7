"""Converter from the official TADM release (github.com/wwangcece/TADM) into an `sd21` TADM.

The official code writes two checkpoints with `torch.save`. They are read here with safetensors or
`torch.load(weights_only=True)`, which refuses any pickled object that is not a tensor or a plain
container; nothing else is ever unpickled.

1. DFRM (`src/modules/ae_arch_inv_cnn.py`, `DFRM.save_model`): `{"state_dict": DFRM.state_dict()}`
   (its training and inference scripts also load a bare state dict). Our `DFRM` has the same keys.
   Other common wrappers ("params_ema", "params", "model", "net") and "module." or "_orig_mod."
   prefixes are accepted too.
2. TADM (`src/tadm.py`, `TADM.save_model`), a dict:
   - `rank_unet`, `rank_vae`: the LoRA ranks (paper: 48 and 16);
   - `unet_lora_target_modules`, `vae_lora_target_modules`: the peft targets (below);
   - `state_dict_unet`: the UNet's peft LoRA weights (adapter "default",
     `<module>.lora_A.default.weight`) and its fully trained `conv_in.weight`/`conv_in.bias`;
   - `state_dict_vae`: the VAE decoder's LoRA weights (adapter "vae_skip");
   - `state_dict_timemapping`: TimeMapping, our TPM (same keys);
   - `state_dict_refiner`: Refiner, our S_learned (`scheduler.learned`, same keys).
   Its `LoraConfig` leaves `lora_alpha` at peft's default 8, so an official adapter scales its
   update by 8 / rank; ours use alpha = rank (scale 1), so the converter folds 8 / rank into
   `lora_B`. A safetensors file with the same sections flattened ("state_dict_unet.<key>", ...)
   is read as well.

What is converted computes the same function module by module (tests/data/official/ holds the
official modules' test vectors). The end-to-end chain follows this package's conventions instead
of copying the known defects of the official scripts: the latent is scaled once by
0.18215 (DFRM, TPM, UNet and S_learned all see that latent; the official TPM saw the unscaled
latent in training but the scaled one in its tiled inference), and quantization rounds at
inference. The official enhancement stage used the UNet of `stabilityai/stable-diffusion-2-1`
(v_prediction) and the VAE `stabilityai/sd-vae-ft-mse`: pass a diffusers folder holding those as
`base_model`; the prediction type is read from its `scheduler/scheduler_config.json`.
"""

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from tadm import lora
from tadm.config import SCALES, TADMConfig
from tadm.model import TADM
from tadm.modules.dfrm import DFRM
from tadm.modules.refiner import LearnedScheduler
from tadm.modules.tpm import TPM
from tadm.presets import build_config

PRESET = "sd21"
# peft's default lora_alpha, which the official LoraConfig leaves unchanged.
OFFICIAL_LORA_ALPHA = 8.0
# The official peft targets (src/tadm.py); tadm.lora targets the same modules.
OFFICIAL_UNET_LORA_TARGETS = [
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
    "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj",
]  # fmt: skip
OFFICIAL_VAE_LORA_TARGETS = (
    r"^decoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"
)
SECTIONS = (
    "state_dict_unet",
    "state_dict_vae",
    "state_dict_timemapping",
    "state_dict_refiner",
)
WRAPPERS = ("state_dict", "params_ema", "params", "model", "net")
PREFIXES = ("module.", "_orig_mod.")
LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$"
)

Source = str | Path | Mapping[str, Any]


# ---- reading checkpoints safely ----------------------------------------------------------------


def read_checkpoint(source: Source, name: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint as a dict: a mapping as is, a `.safetensors` file, or a torch file
    (`.pt`, `.pth`, `.ckpt`, `.pkl`, `.bin`) read with `torch.load(weights_only=True)`.

    Raises ValueError naming `name` for a missing file, a file that would unpickle arbitrary
    objects (refused), or one whose top level is not a dict.
    """
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValueError(f"{name}: file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            return dict(load_file(str(path)))
        except SafetensorError as error:
            raise ValueError(f"{name}: {str(path)!r} is not a valid safetensors file") from error
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = next(
            (line.strip() for line in str(error).splitlines() if "WeightsUnpickler" in line),
            "not a tensor checkpoint",
        )
        raise ValueError(
            f"{name}: refusing to load {str(path)!r}: torch.load(weights_only=True) rejects it "
            f"({reason}); only tensors and plain containers are read, never arbitrary objects"
        ) from error
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: {str(path)!r} holds a {type(data).__name__}, not a dict")
    return dict(data)


def unwrap_state_dict(data: Mapping[str, Any], name: str = "state dict") -> dict[str, Tensor]:
    """The state dict inside `data`: descends into "state_dict"/"params_ema"/"params"/"model"/
    "net" wrappers, strips "module." and "_orig_mod." prefixes, and casts floats to float32."""
    state: Mapping[str, Any] = data
    while not (state and all(isinstance(v, Tensor) for v in state.values())):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(
                f"{name}: no state dict found (top-level keys {sorted(map(str, state))[:10]}; "
                f"expected tensors, or one of the wrappers {list(WRAPPERS)})"
            )
        state = inner
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        while key.startswith(PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value.float() if value.is_floating_point() else value
    return out


def _nest_sections(data: dict[str, Any]) -> dict[str, Any]:
    """Regroup a flat (safetensors) official TADM checkpoint into its sections."""
    if any(section in data for section in SECTIONS):
        return data
    nested: dict[str, Any] = {}
    for key, value in data.items():
        section, _, rest = key.partition(".")
        if section in SECTIONS and rest:
            nested.setdefault(section, {})[rest] = value
        else:
            nested[key] = value
    return nested


# ---- validation ---------------------------------------------------------------------------------


def _shapes(module: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def _check(name: str, state: Mapping[str, Tensor], expected: Mapping[str, torch.Size]) -> None:
    """Raise ValueError naming the missing, unexpected and wrongly shaped keys of `state`."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(s)})"
        for k, s in expected.items()
        if k in state and state[k].shape != s
    ]
    if missing or unexpected or wrong:

        def listing(keys: list[str]) -> str:
            more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
            return f"{keys[:8]}{more}"

        raise ValueError(
            f"{name} does not match the official layout: missing keys {listing(missing)}, "
            f"unexpected keys {listing(unexpected)}, wrong shapes {listing(wrong)}"
        )


def _official_config(scale: int) -> TADMConfig:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale}")
    return build_config(PRESET, scale)


# ---- DFRM, TPM and S_learned ------------------------------------------------------------------


def dfrm_scale(state: Mapping[str, Any]) -> int:
    """The scale N of an official DFRM state dict: its pixel branch has log2(N) downsamplers."""
    state = unwrap_state_dict(state, "dfrm")
    steps = [k for k in state if re.fullmatch(r"down_module\.\d+\.downsample\.1\.weight", k)]
    scale = 2 ** len(steps)
    if scale not in SCALES:
        raise ValueError(
            f"dfrm: {len(steps)} downsampling steps in down_module means scale {scale}; "
            f"supported scales are {SCALES}"
        )
    return scale


def convert_dfrm(state: Mapping[str, Any], scale: int | None = None) -> dict[str, Tensor]:
    """Official `DFRM(4, 3, ir_scale=N)` state dict -> `TADM.dfrm` state dict (same keys).

    scale: N, inferred from the keys when None; ValueError when given and different.
    """
    state = unwrap_state_dict(state, "dfrm")
    found = dfrm_scale(state)
    if scale is not None and scale != found:
        raise ValueError(f"scale {scale} was given, but the dfrm state dict is for scale {found}")
    config = _official_config(found)
    d = config.dfrm
    with torch.device("meta"):
        expected = DFRM(
            config.scale, config.latent_channels, config.vae_factor, d.pixel_width,
            d.latent_width, d.num_res_blocks, d.inn_blocks, d.inn_growth,
        )  # fmt: skip
    _check(f"dfrm (scale {found})", state, _shapes(expected))
    return state


def convert_time_mapping(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """Official `TimeMapping` state dict -> `TADM.tpm` state dict (same keys)."""
    state = unwrap_state_dict(state, "state_dict_timemapping")
    config = _official_config(16)
    p = config.tpm
    with torch.device("meta"):
        expected = TPM(config.latent_channels, p.width, p.num_res_blocks, p.hidden)
    _check("state_dict_timemapping", state, _shapes(expected))
    return state


def convert_refiner(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """Official `Refiner` state dict -> `TADM.scheduler.learned` state dict (same keys)."""
    state = unwrap_state_dict(state, "state_dict_refiner")
    config = _official_config(16)
    s = config.scheduler
    with torch.device("meta"):
        expected = LearnedScheduler(config.latent_channels, s.learned_width, s.learned_res_blocks)
    _check("state_dict_refiner", state, _shapes(expected))
    return state


# ---- LoRA and the UNet's conv_in ----------------------------------------------------------------


def split_lora(state: Mapping[str, Tensor], name: str) -> tuple[dict[str, Tensor], dict]:
    """(LoRA weights keyed the peft way, `<module>.lora_A.weight`; every other entry)."""
    lora_state: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    adapters = set()
    for key, value in state.items():
        match = LORA_KEY.match(key)
        if match is None:
            if lora.is_lora_key(key):
                raise ValueError(f"{name}: unsupported LoRA key {key!r}")
            rest[key] = value
            continue
        adapters.add(match["adapter"])
        lora_state[f"{match['module']}.lora_{match['ab']}.weight"] = value
    if len(adapters) > 1:
        names = sorted(map(str, adapters))
        raise ValueError(f"{name}: LoRA weights of several adapters {names}, expected one")
    return lora_state, rest


def lora_rank(state: Mapping[str, Tensor], name: str) -> int:
    """The rank of peft LoRA weights (0 when there are none); ValueError when ranks differ."""
    ranks = {v.shape[0] for k, v in state.items() if k.endswith(".lora_A.weight")}
    if len(ranks) > 1:
        raise ValueError(f"{name}: LoRA weights of several ranks {sorted(ranks)}")
    return ranks.pop() if ranks else 0


def convert_lora(
    state: Mapping[str, Tensor], module: nn.Module, name: str, alpha: float = OFFICIAL_LORA_ALPHA
) -> dict[str, Tensor]:
    """Official peft LoRA weights of `module` (a UNet or VAE with a `tadm.lora` adapter) -> the
    adapter's state dict, keyed the peft way (`<module>.lora_A.weight`).

    The official update is (alpha / r) B A; ours is (alpha' / r) B' A, so B' = B alpha / alpha'.
    """
    lora_state, rest = split_lora(unwrap_state_dict(state, name), name)
    if rest:
        raise ValueError(
            f"{name}: entries that are not LoRA weights (e.g. S3Diff's skip_conv, which TADM "
            f"does not have): {sorted(rest)[:8]}"
        )
    peft_config = getattr(module, "peft_config", {}).get(lora.ADAPTER)
    if peft_config is None:
        raise ValueError(f"{name}: the target model has no LoRA adapter (its LoRA rank is 0)")
    expected = get_peft_model_state_dict(module, adapter_name=lora.ADAPTER)
    _check(name, lora_state, {k: v.shape for k, v in expected.items()})
    factor = alpha / peft_config.lora_alpha
    return {k: v * factor if ".lora_B." in k else v for k, v in lora_state.items()}


def convert_conv_in(state: Mapping[str, Tensor], unet: nn.Module) -> dict[str, Tensor]:
    """The official UNet `conv_in` weights (trained fully) -> `unet.conv_in` state dict."""
    others = sorted(k for k in state if not k.startswith("conv_in."))
    if others:
        raise ValueError(f"state_dict_unet: entries neither LoRA nor conv_in: {others[:8]}")
    conv_in = {k.removeprefix("conv_in.").replace("base_layer.", ""): v for k, v in state.items()}
    _check("state_dict_unet (conv_in)", conv_in, _shapes(unet.conv_in))
    return conv_in


# ---- whole models -------------------------------------------------------------------------------


def _check_layout(model: TADM) -> None:
    """apply_official needs DFRM, TPM and S_learned in the official widths (the sd21 preset)."""
    reference = build_config(PRESET, model.scale)
    c = model.config
    if (c.dfrm, c.tpm, c.latent_channels, c.vae_factor) != (
        reference.dfrm, reference.tpm, reference.latent_channels, reference.vae_factor,
    ) or (c.scheduler.learned_width, c.scheduler.learned_res_blocks) != (
        reference.scheduler.learned_width, reference.scheduler.learned_res_blocks,
    ):  # fmt: skip
        raise ValueError(
            "model: official weights need the sd21 layout (DFRM, TPM, S_learned widths, 4 latent "
            "channels, VAE factor 8); build it with TADM.from_preset('sd21', ...)"
        )


def read_tadm_checkpoint(source: Source) -> dict[str, Any]:
    """The official TADM checkpoint as a dict of sections (see the module docstring)."""
    data = _nest_sections(read_checkpoint(source, "tadm"))
    if not any(section in data for section in SECTIONS):
        raise ValueError(
            f"tadm: not an official TADM checkpoint: none of {list(SECTIONS)} in its keys "
            f"{sorted(map(str, data))[:10]}"
        )
    return data


def tadm_lora_ranks(data: Mapping[str, Any]) -> tuple[int, int]:
    """(UNet rank, VAE rank) of an official TADM checkpoint, from its LoRA weights; ValueError
    when they contradict its `rank_unet`/`rank_vae` entries."""
    ranks = []
    for section, entry in (("state_dict_unet", "rank_unet"), ("state_dict_vae", "rank_vae")):
        state = unwrap_state_dict(data[section], section) if data.get(section) else {}
        rank = lora_rank(split_lora(state, section)[0], section)
        stated = data.get(entry)
        if stated is not None and rank and int(stated) != rank:
            raise ValueError(f"tadm: {entry} is {stated} but its LoRA weights have rank {rank}")
        ranks.append(rank)
    return ranks[0], ranks[1]


def apply_official(model: TADM, dfrm: Source | None = None, tadm: Source | None = None) -> TADM:
    """Load official weights into `model` (sd21 layout), in place; returns it in eval mode.

    dfrm: the official DFRM checkpoint (path or dict); its scale must be `model.scale`.
    tadm: the official TADM checkpoint (path or dict): TPM, S_learned, UNet conv_in and the UNet
        and VAE-decoder LoRA, whose ranks must be the model's.
    Everything is converted and checked before anything is loaded.
    """
    _check_layout(model)
    loads: list[tuple[nn.Module, dict[str, Tensor]]] = []
    if dfrm is not None:
        loads.append((model.dfrm, convert_dfrm(read_checkpoint(dfrm, "dfrm"), model.scale)))
    lora_loads: list[tuple[nn.Module, dict[str, Tensor]]] = []
    if tadm is not None:
        data = read_tadm_checkpoint(tadm)
        if data.get("state_dict_timemapping") is not None:
            loads.append((model.tpm, convert_time_mapping(data["state_dict_timemapping"])))
        if data.get("state_dict_refiner") is not None:
            loads.append((model.scheduler.learned, convert_refiner(data["state_dict_refiner"])))
        if data.get("state_dict_unet"):
            unet_state = unwrap_state_dict(data["state_dict_unet"], "state_dict_unet")
            weights, rest = split_lora(unet_state, "state_dict_unet")
            if rest:
                loads.append((model.unet.conv_in, convert_conv_in(rest, model.unet)))
            if weights:
                unet_lora = convert_lora(weights, model.unet, "state_dict_unet")
                lora_loads.append((model.unet, unet_lora))
        if data.get("state_dict_vae"):
            vae_state = unwrap_state_dict(data["state_dict_vae"], "state_dict_vae")
            lora_loads.append((model.vae, convert_lora(vae_state, model.vae, "state_dict_vae")))
    for module, state in loads:
        module.load_state_dict(state, strict=True)
    for module, state in lora_loads:
        result = set_peft_model_state_dict(module, state, adapter_name=lora.ADAPTER)
        if getattr(result, "unexpected_keys", []):
            raise ValueError(f"LoRA keys not loaded: {result.unexpected_keys[:8]}")
    return model.eval()


def load_official(
    dfrm: Source,
    tadm: Source | None = None,
    base_model: str | None = None,
    scale: int | None = None,
) -> TADM:
    """An sd21 TADM holding the official release's weights.

    dfrm: the official DFRM checkpoint (path or dict); its keys give the scale.
    tadm: the official TADM checkpoint (path or dict), or None to keep TPM, S_learned and the
        LoRA adapters fresh (preset ranks).
    base_model: diffusers folder (path or URI) with the frozen SD UNet and VAE; random weights
        when None (tests only).
    scale: 16 or 32; checked against the DFRM when given.
    """
    dfrm_state = read_checkpoint(dfrm, "dfrm")
    found = dfrm_scale(dfrm_state)
    if scale is not None and scale != found:
        raise ValueError(f"scale {scale} was given, but the dfrm checkpoint is for scale {found}")
    preset = build_config(PRESET, found)
    ranks = (preset.unet_lora_rank, preset.vae_lora_rank)
    tadm_data = None
    if tadm is not None:
        tadm_data = read_tadm_checkpoint(tadm)
        ranks = tadm_lora_ranks(tadm_data)
    model = TADM.from_preset(
        PRESET, found, base_model, unet_lora_rank=ranks[0], vae_lora_rank=ranks[1]
    )
    return apply_official(model, dfrm_state, tadm_data)


def save_official(
    path: str | Path,
    dfrm: Source,
    tadm: Source | None = None,
    base_model: str | None = None,
    scale: int | None = None,
) -> TADM:
    """`load_official` then `save_pretrained(path)`: a TADM checkpoint folder. With a
    `base_model`, the frozen base weights stay there and are not copied. Returns the model."""
    model = load_official(dfrm, tadm, base_model=base_model, scale=scale)
    model.save_pretrained(path)
    return model
