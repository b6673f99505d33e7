"""Inference precision: which parts of TADM run in half precision, and the rules per device.

`TADM.to_precision(p)` casts the weights of the heavy parts (VAE, UNet, the CNNs of the DFRM)
to p's dtype; each step casts its input to its part's dtype and returns float32. The parts that
decide the stored bytes or the time step stay float32 in every precision: the invertible
network F (y is rounded to the 8-bit LR right after it; bf16 alone would move y by half a
level), the TPM and the learned scheduler (small). With fp16, the VAE decoder also stays
float32: SD VAE decoders can overflow fp16 at high resolution; bf16 has float32's range.

Rules: CPU runs fp32 by default and refuses fp16 (slow or missing CPU kernels); bf16 runs on a
CPU when asked for (oneDNN kernels). CUDA defaults to fp16: its LR is closer to fp32's (on the
shipped checkpoints 2-4% of LR pixels move by one level, against 17-47% with bf16).
Casting is one-way: a half model keeps the model_id of the float32 weights it was cast from and
cannot go back to fp32 (its weights were rounded), nor be saved (`save_pretrained`: the saved
weights would be another model than its id says): load it again instead.
"""

import torch
from torch import nn

# The dtype of each of tadm.config.PRECISIONS (which names them without torch, for the CLI).
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Parts (attribute paths on TADM) that run in the chosen dtype; everything else stays float32.
HALF_PARTS = (
    "vae.encoder",
    "vae.quant_conv",
    "unet",
    "dfrm.down_module",
    "dfrm.latent_module",
    "dfrm.fusing_module",
    "dfrm.final_module",
)
DECODER_PARTS = ("vae.decoder", "vae.post_quant_conv")  # half only with bf16


def default_precision(device: torch.device | str) -> str:
    """fp16 on CUDA, fp32 elsewhere."""
    return "fp16" if torch.device(device).type == "cuda" else "fp32"


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """`precision`, or the default of `device` when None; ValueError unless `device` allows it."""
    device = torch.device(device)
    precision = precision or default_precision(device)
    check_precision(precision, device)
    return precision


def check_precision(precision: str, device: torch.device) -> None:
    """Raise ValueError unless `precision` is known and allowed on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision fp16 needs a CUDA device, the model is on {device.type}: "
            "use fp32 (the CPU default) or bf16"
        )


def part_names(precision: str) -> tuple[str, ...]:
    """The attribute paths of the parts cast to `precision`'s dtype."""
    if precision == "fp32":
        return ()
    return HALF_PARTS + DECODER_PARTS if precision == "bf16" else HALF_PARTS


def cast_parts(model: nn.Module, precision: str) -> None:
    """Cast the weights of `part_names(precision)` of `model` in place. Through nn.Module.to:
    diffusers' override warns of modules to keep in float32 even where a model has none (the
    UNet and the VAE have none)."""
    for name in part_names(precision):
        nn.Module.to(model.get_submodule(name), PRECISIONS[precision])


def dtype_of(module: nn.Module) -> torch.dtype:
    """The dtype of a part's weights."""
    return next(module.parameters()).dtype
