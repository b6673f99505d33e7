"""One training worker of `tadm train`, without Ray: `fit` runs a stage in this process.

`jobs.train` calls `fit` inside each Ray Train worker (rank, device and DDP from Ray); a machine
without Ray (one GPU box) can call it directly, as `scripts/train_tiny_single.py` does. Rank 0
validates and writes checkpoints to OUT (a path or s3:// URI):

    OUT/step-000500/{config.json, model.safetensors, ..., train_config.json, trainer_state.pt}
    OUT/latest        the name of the newest complete checkpoint (written last)
    OUT/final/        the model after the last step (and its train_config.json)
    OUT/log.jsonl     one line of figures per logged step and per validation
"""

import dataclasses
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.decode import decode_image
from pipeline.sources import list_sources
from pipeline.storage import Location, write_atomic
from tadm import TADM, lora
from tadm.config import TADMConfig
from tadm.evaluation import evaluate, mean_scores, scores, vae_round_trip
from tadm.images import to_float_batch
from tadm.losses import SUBSTITUTE, Perceptual, perceptual_loss
from tadm.lpips import LPIPS
from tadm.train_config import TRAIN_CONFIG_FILE, TrainConfig, flag
from tadm.training import RandomCrops, StageConfig, stage_loss, trainable_parameters

log = logging.getLogger("tadm.train")

WARMUP_STEPS = 50
LORA_RANKS = ("unet_lora_rank", "vae_lora_rank")  # fields of TADMConfig and TrainConfig


def load_training_images(uri: str, storage_options: dict) -> list[np.ndarray]:
    """Every decodable image under `uri`, whole, as (H, W, 3) uint8; undecodable ones are
    logged and skipped."""
    loc = Location.parse(uri, storage_options)
    files, _ = list_sources(loc)
    fs = loc.filesystem()
    images = []
    for f in files:
        try:
            images.append(decode_image(fs.cat_file(f.path)).pixels)
        except ValueError as err:
            log.warning("skipping %s: %s", f.rel_path, err)
    if not images:
        raise ValueError(f"no readable images under {uri}")
    return images


def init_model(init: str, scale: int | None, storage_options: dict[str, Any]) -> TADM:
    """The checkpoint `init` (a remote one read with `storage_options`); at another scale, a
    new DFRM with every other weight kept."""
    model = TADM.from_pretrained(init, storage_options=storage_options)
    if scale is None or scale == model.scale:
        return model
    other = TADM.from_config(dataclasses.replace(model.config, scale=scale))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("dfrm.")}
    other.load_state_dict(kept, strict=False)
    return other


def lora_changes(config: TADMConfig, unet_rank: int | None, vae_rank: int | None) -> dict:
    """The LoRA ranks to change in `config`, a checkpoint's (None keeps its own). Adapters once
    trained keep their rank: asking for another one is a ValueError."""
    wanted = dict(zip(LORA_RANKS, (unet_rank, vae_rank), strict=True))
    changes = {k: v for k, v in wanted.items() if v is not None and v != getattr(config, k)}
    for key in changes:
        if getattr(config, key):
            raise ValueError(
                f"the model already has {key.replace('_', ' ')} {getattr(config, key)}; a "
                f"trained adapter keeps its rank (leave {flag(key)} out)"
            )
    return changes


def with_lora_ranks(model: TADM, unet_rank: int | None, vae_rank: int | None) -> TADM:
    """`model` with LoRA adapters of these ranks (None keeps the model's own).

    A part without adapters gets fresh ones over its trained weights (e.g. the tiny VAE
    decoder in `enhance`, so the adapters, not the decoder, follow the enhanced latents).
    """
    changes = lora_changes(model.config, unet_rank, vae_rank)
    if changes.get("unet_lora_rank"):
        lora.add_unet_lora(model.unet, changes["unet_lora_rank"])
    if changes.get("vae_lora_rank"):
        lora.add_vae_decoder_lora(model.vae, changes["vae_lora_rank"])
    model.config = dataclasses.replace(model.config, **changes)
    return model


def validate(model: TADM, images: list[np.ndarray], stage: str) -> dict[str, float]:
    """Mean figures on held-out images: the VAE bound in stage vae, else restore vs bicubic."""
    model.eval()
    if stage == "vae":
        rows = [scores("vae_", vae_round_trip(model, to_float_batch(img)), img) for img in images]
    else:
        rows = [evaluate(model, img, vae_bound=False) for img in images]
    model.train()
    return mean_scores(rows)


def save_checkpoint(
    model: TADM, config: TrainConfig, out: Location, name: str, state: dict | None
) -> None:
    """Write checkpoint `name` under OUT with the config that trained it (files first, the
    `latest` marker last)."""
    fs = out.filesystem()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        (Path(tmp) / TRAIN_CONFIG_FILE).write_text(config.to_json())
        if state is not None:
            torch.save(state, Path(tmp) / "trainer_state.pt")
        for file in sorted(Path(tmp).rglob("*")):
            if file.is_file():
                rel = file.relative_to(tmp).as_posix()
                write_atomic(fs, out.path(name, rel), file.read_bytes())
    if state is not None:
        write_atomic(fs, out.path("latest"), name.encode())


def append_log(out: Location, record: dict) -> None:
    fs = out.filesystem()
    path = out.path("log.jsonl")
    old = fs.cat_file(path) if fs.exists(path) else b""
    write_atomic(fs, path, old + (json.dumps(record) + "\n").encode())


def schedule(step: int, progress: float) -> float:
    """The learning-rate factor: a short linear warm-up, then cosine decay over `progress`."""
    return min(1.0, step / WARMUP_STEPS) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def stage_progress(step: int, steps: int, elapsed_s: float, max_seconds: float | None) -> float:
    """How far the stage is, in [0, 1+): by steps, or by time when a time budget ends it
    sooner. The stage ends when this reaches 1, with the learning rate decayed to 0."""
    by_steps = step / steps
    return max(by_steps, elapsed_s / max_seconds) if max_seconds else by_steps


def latest_checkpoint(config: TrainConfig, out: Location) -> str | None:
    """The name of the checkpoint the stage resumes: the one OUT/latest names with --resume,
    None without --resume or when OUT has no `latest` yet."""
    fs = out.filesystem()
    latest = out.path("latest")
    if config.resume and fs.exists(latest):
        return fs.cat_file(latest).decode().strip()
    return None


def start_model(
    config: TrainConfig, out: Location, storage_options: dict[str, Any]
) -> tuple[TADM, dict | None]:
    """The model the stage starts from, with the trainer state when it resumes OUT/latest;
    remote checkpoints are read with `storage_options`."""
    name = latest_checkpoint(config, out)
    if name is not None:
        model = TADM.from_pretrained(out.uri_of(out.path(name)), storage_options=storage_options)
        state = torch.load(
            io.BytesIO(out.filesystem().cat_file(out.path(name, "trainer_state.pt"))),
            weights_only=True,
        )
        return model, state
    if config.init:
        model = init_model(config.init, config.scale, storage_options)
        return with_lora_ranks(model, config.unet_lora_rank, config.vae_lora_rank), None
    ranks = {k: getattr(config, k) for k in LORA_RANKS if getattr(config, k) is not None}
    preset = config.preset or "tiny"
    return TADM.from_preset(preset, config.scale or 16, config.base_model, **ranks), None


def perceptual_term(config: TrainConfig, device: torch.device) -> tuple[Perceptual, str]:
    """The perceptual loss of the stage, and its name for the log."""
    if not config.lambda_perc:
        return perceptual_loss, "none (--lambda-perc 0)"
    if config.lpips:
        return LPIPS.from_file(config.lpips).to(device), "lpips"
    return perceptual_loss, SUBSTITUTE


def fit(
    config: TrainConfig,
    storage_options: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    prepare: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Run one stage as worker `rank` of `world_size`; the record of its last step ({} when
    a resumed stage had no step left).

    `storage_options` (s3fs options) reach OUT and the images; unlike `config`, they are not
    saved with the checkpoints. `prepare` wraps the model for data-parallel training (DDP) when
    world_size > 1. Rank 0 appends each logged record to OUT/log.jsonl and logs it (logger
    tadm.train, INFO)."""
    device = device or torch.device("cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed + rank)
    options = storage_options or {}
    out = Location.parse(config.out, options)
    model, state = start_model(config, out, options)
    start_step = state["step"] if state is not None else 0
    stage = StageConfig(
        config.stage, config.lr, lambda_gui=config.lambda_gui, lambda_perc=config.lambda_perc
    )
    params = trainable_parameters(model, stage.stage)
    lr = stage.lr * (stage.joint_lr_factor if stage.stage == "joint" else 1.0)
    model.to(device).train()
    wrapped = prepare(model) if prepare is not None and world_size > 1 else model
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    perceptual, perceptual_name = perceptual_term(config, device)
    images = load_training_images(config.data, options)
    crops = RandomCrops(images, config.crop, config.seed + rank, config.colour_aug)
    val_images = load_training_images(config.val, options) if config.val and rank == 0 else []
    # a time budget counts from this run's start; a resumed run gets the whole budget again
    max_seconds = config.max_minutes * 60 if config.max_minutes else None
    if rank == 0:
        start = {"stage": stage.stage, "event": "start", "step": start_step, "lr": lr,
                 "trainable_parameters": sum(p.numel() for p in params),
                 "perceptual": perceptual_name, "colour_aug": config.colour_aug,
                 "device": str(device)}  # fmt: skip
        append_log(out, start)
        log.info("tadm train: %s", json.dumps(start))

    t_start = time.time()
    step = start_step
    last = start_step >= config.steps
    record: dict[str, Any] = {}
    while not last:
        step += 1
        progress = stage_progress(step, config.steps, time.time() - t_start, max_seconds)
        if world_size > 1 and max_seconds:  # workers' clocks differ: stop at the same step
            shared = torch.tensor([progress], device=device)
            torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
            progress = shared.item()
        last = progress >= 1.0
        for group in optimizer.param_groups:
            group["lr"] = lr * schedule(step, progress)
        x = crops.batch(config.batch_size).to(device)
        loss, logs = stage_loss(wrapped, x, stage.stage, stage, model.scale, perceptual)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        record = {}
        if step % config.log_every == 0 or last:
            elapsed = time.time() - t_start
            record = {
                "step": step,
                "loss": loss.item(),
                **logs,
                "steps_per_s": (step - start_step) / elapsed,
                "elapsed_s": elapsed,
            }
        if rank == 0 and val_images and (step % config.val_every == 0 or last):
            val = validate(model, val_images, stage.stage)
            record.update({"step": step, **{f"val_{k}": v for k, v in val.items()}})
        if rank == 0 and record:
            append_log(out, {"stage": stage.stage, **record})
            log.info("%s", json.dumps(record))
        if rank == 0 and (step % config.checkpoint_every == 0 or last):
            trainer_state = {"step": step, "optimizer": optimizer.state_dict()}
            save_checkpoint(model, config, out, f"step-{step:06d}", trainer_state)
    if rank == 0:
        save_checkpoint(model.eval(), config, out, "final", None)
    return record
