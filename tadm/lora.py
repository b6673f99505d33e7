"""LoRA adapters (peft) on the UNet and on the VAE decoder (paper Sec. 3.3).

Adapters are saved the peft way: a folder with `adapter_config.json` and
`adapter_model.safetensors`.
"""

from pathlib import Path

from diffusers import AutoencoderKL, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

# The official release's target modules (src/tadm.py), so its adapters load unchanged: "conv" is
# every down/upsampler conv, "conv_out" the UNet's last conv.
UNET_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv",
    "conv_out",
]
# Decoder layers only: a regex on the full module name, so the encoder stays untouched. As the
# official release's, it includes the upsamplers' "conv".
VAE_DECODER_TARGETS = (
    r"decoder\..*(conv1|conv2|conv_shortcut|conv_in|conv_out|conv|to_q|to_k|to_v|to_out\.0)"
)

ADAPTER = "default"


def lora_config(rank: int, targets: list[str] | str) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)


def add_unet_lora(unet: UNet2DConditionModel, rank: int) -> None:
    unet.add_adapter(lora_config(rank, UNET_TARGETS), adapter_name=ADAPTER)


def add_vae_decoder_lora(vae: AutoencoderKL, rank: int) -> None:
    vae.add_adapter(lora_config(rank, VAE_DECODER_TARGETS), adapter_name=ADAPTER)


def is_lora_key(key: str) -> bool:
    return "lora_" in key


def save_adapter(module: nn.Module, directory: Path) -> None:
    """Write `directory/adapter_config.json` and `directory/adapter_model.safetensors`."""
    directory.mkdir(parents=True, exist_ok=True)
    module.peft_config[ADAPTER].save_pretrained(str(directory))
    state = get_peft_model_state_dict(module, adapter_name=ADAPTER)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        str(directory / "adapter_model.safetensors"),
    )


def load_adapter(module: nn.Module, directory: Path) -> None:
    state = load_file(str(directory / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(module, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA adapter in {directory} has unexpected keys {unexpected[:5]}")
