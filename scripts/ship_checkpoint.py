"""Make a checkpoint fit to ship: LoRA adapters merged into the layers they adapt, weights in fp16.

A shipped checkpoint (tadm/checkpoints/) is one file with no adapter folders: merging computes
W + B @ A once, so restoring runs the plain layers, and fp16 halves the file (the model runs in
fp32; from_pretrained casts). Only for checkpoints without a base model (the tiny preset): an
sd21 checkpoint would have to carry the whole SD 2.1 base.

Usage: python scripts/ship_checkpoint.py CHECKPOINT OUT
"""

import argparse
import dataclasses

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from tadm import TADM, lora


def merged(model: TADM) -> TADM:
    """The same model with its LoRA adapters folded into the weights, and no adapters (the
    adapted layers of `model` are merged in place)."""
    if model.config.base_model is not None:
        raise ValueError("this checkpoint has a base model; merging would copy it into the file")
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    state = {
        key.replace(".base_layer.", "."): value
        for key, value in model.state_dict().items()
        if not lora.is_lora_key(key)
    }
    config = dataclasses.replace(model.config, unet_lora_rank=0, vae_lora_rank=0)
    plain = TADM.from_config(config)
    plain.load_state_dict(state)
    return plain.eval()


def main(checkpoint: str, out: str) -> None:
    merged(TADM.from_pretrained(checkpoint)).half().save_pretrained(out)
    shipped = TADM.from_pretrained(out)
    params = sum(p.numel() for p in shipped.parameters())
    print(f"{out}: model_id {shipped.model_id}, {params / 1e6:.2f} M parameters")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder, URI or shipped name")
    parser.add_argument("out", help="folder to write config.json and model.safetensors to")
    args = parser.parse_args()
    with torch.no_grad():
        main(args.checkpoint, args.out)
