"""`tadm train`: the three training stages (plus the tiny preset's VAE stage) on Ray Train.

Runs `TorchTrainer` with --workers workers (one CPU worker locally, GPUs on a cluster); each runs
`jobs.train_worker.fit`, which loads the training images into memory and draws random crops.
Rank 0 validates and writes checkpoints, `latest`, `final/` and `log.jsonl` under OUT (a path or
s3:// URI); see jobs/train_worker.py for the layout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import tempfile
from typing import TYPE_CHECKING, Any

from jobs.common import (
    Parser,
    QuietFilter,
    add_storage_options,
    ray_session,
    require_extra,
    run_job,
    whole_number,
)
from pipeline.storage import Location
from tadm.train_config import PRESETS, STAGES, TrainConfig

if TYPE_CHECKING:
    from tadm.config import TADMConfig

PROG = "tadm train"
log = logging.getLogger("tadm.train")
# The TrainConfig fields that name a file or folder: a local path, or a URI.
PATH_FIELDS = ("data", "out", "val", "init", "base_model", "lpips")


def gpu_share(text: str) -> float:
    """--gpus-per-worker: a finite number, 0 (CPU workers) or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be 0 (CPU workers) or more, got {text}")
    return value


def parser() -> Parser:
    """`tadm train`'s flags: one per TrainConfig field (its defaults), plus how to run."""
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True, choices=STAGES, help="training stage")
    p.add_argument("--data", required=True, help="URI of training images (recursive)")
    p.add_argument("--out", required=True, help="URI for checkpoints and logs")
    p.add_argument("--val", help="URI of held-out validation images (never trained on)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--preset", choices=PRESETS, help="start from a fresh preset (the default: tiny)"
    )
    group.add_argument("--init", help="start from a checkpoint (path, URI or shipped name)")
    p.add_argument(
        "--scale",
        type=int,
        choices=(16, 32),
        help="16 (default) or 32; with --init, a different scale keeps every weight but the DFRM's",
    )
    p.add_argument("--base-model", help="diffusers folder with the SD 2.1-base weights (sd21)")
    p.add_argument(
        "--unet-lora-rank",
        type=int,
        help="LoRA rank on the UNet (default: the preset's or the checkpoint's; sd21 48, tiny 0 "
        "= trained in full)",
    )
    p.add_argument(
        "--vae-lora-rank",
        type=int,
        help="LoRA rank on the VAE decoder (default as --unet-lora-rank; sd21 16, tiny 0); a "
        "checkpoint without adapters gets fresh ones over its weights",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=TrainConfig.steps,
        help=f"optimizer steps of the stage (default {TrainConfig.steps})",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        help="end the stage after this many minutes (the learning rate decays over the "
        "steps or the minutes, whichever ends first)",
    )
    p.add_argument(
        "--batch-size", type=int, default=TrainConfig.batch_size, help="crops per worker and step"
    )
    p.add_argument("--crop", type=int, default=TrainConfig.crop, help="crop size in HR pixels")
    p.add_argument(
        "--colour-aug",
        action="store_true",
        help="shuffle each crop's RGB channels and scale each by a random gain (0.8-1.2), so "
        "that the model learns to carry colour rather than the palettes of its photos",
    )
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="learning rate (joint: x0.1)")
    p.add_argument(
        "--lambda-gui",
        type=float,
        default=TrainConfig.lambda_gui,
        help="weight of L_gui: the LR against the bicubic downscale of the HR (Eq. 8)",
    )
    p.add_argument(
        "--lambda-perc",
        type=float,
        default=TrainConfig.lambda_perc,
        help="weight of the perceptual term (0: L1 only, the term is not computed)",
    )
    p.add_argument(
        "--lpips",
        help="LPIPS weights file (VGG16 features + lin heads); without "
        "it a weight-free substitute is used",
    )
    for name, what in (
        ("log_every", "steps between log lines"),
        ("val_every", "steps between validations on --val"),
        ("checkpoint_every", "steps between checkpoints (OUT/step-N/, named by OUT/latest)"),
    ):
        default = getattr(TrainConfig, name)
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=int, default=default, help=f"{what} (default {default})")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/latest (none yet: the stage starts over, with a warning)",
    )
    p.add_argument(
        "--workers", type=whole_number(1), default=1, help="Ray Train workers (default 1)"
    )
    p.add_argument(
        "--gpus-per-worker", type=gpu_share, default=0.0, help="GPUs per worker (default 0: CPU)"
    )
    p.add_argument(
        "--threads", type=int, default=TrainConfig.threads, help="torch threads per worker (0: all)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=TrainConfig.seed,
        help="worker N seeds torch and its crops with SEED + N (default 0)",
    )
    add_storage_options(p)
    return p


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed flags (each field has the flag of its name)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """`config` with each local path (data, out, val, init, base_model, lpips) made absolute
    from this process's working folder, as the Ray Train workers run in folders of their own.
    URIs (s3://, file://) and the names of shipped checkpoints ("tiny-x16") stay as they are."""
    from tadm.hub import shipped_names

    changes = {}
    for name in PATH_FIELDS:
        value = getattr(config, name)
        if not value or "://" in value or (name == "init" and value in shipped_names()):
            continue
        changes[name] = os.path.abspath(os.path.expanduser(value))
    return dataclasses.replace(config, **changes)


def init_config(init: str, storage_options: dict[str, Any]) -> TADMConfig:
    """The model config of the --init checkpoint, found as TADM.from_pretrained finds it
    (tadm.hub.resolve); a ValueError saying what to give when it is no checkpoint."""
    from tadm import hub
    from tadm.model import WEIGHTS_FILE, read_config

    try:
        directory = hub.resolve(init, storage_options)
        config = read_config(directory, init)
        if not (directory / WEIGHTS_FILE).is_file():
            raise ValueError(f"{init!r} has no {WEIGHTS_FILE}: not a TADM checkpoint")
    except (ValueError, OSError) as e:
        raise ValueError(
            f"--init cannot be loaded: {e}; give a checkpoint folder (config.json and "
            f"{WEIGHTS_FILE}), its URI, or a shipped checkpoint's name"
        ) from None
    return config


def start_config(config: TrainConfig, storage_options: dict[str, Any]) -> tuple[TADMConfig, str]:
    """The model config the stage starts from, as jobs.train_worker.start_model picks its
    model, and what to call that model in a message: with --resume, the checkpoint OUT/latest
    names; else the --init checkpoint (at --scale, with the LoRA ranks it can take); else the
    preset at --scale. A ValueError when --init does not load or refuses the ranks."""
    from jobs.train_worker import latest_checkpoint, lora_changes
    from tadm.config import TADMConfig
    from tadm.presets import build_config

    out = Location.parse(config.out, storage_options)
    name = latest_checkpoint(config, out)
    if name is not None:
        text = out.filesystem().cat_file(out.path(name, "config.json"))
        what = f"the checkpoint {out.uri_of(out.path(name))} that --resume continues"
        return TADMConfig.from_dict(json.loads(text)), what
    if config.resume:
        log.warning(
            "--resume: %s has no checkpoint yet (no `latest`): the stage starts over", out.uri
        )
    if config.init:
        model = init_config(config.init, storage_options)
        lora_changes(model, config.unet_lora_rank, config.vae_lora_rank)
        scale = config.scale or model.scale
        return dataclasses.replace(model, scale=scale), f"--init {config.init} at scale {scale}"
    preset, scale = config.preset or "tiny", config.scale or 16
    return build_config(preset, scale), f"the {preset} preset at scale {scale}"


def check_crop(config: TrainConfig, model: TADMConfig, what: str) -> None:
    """Refuse a --crop the model cannot take: stage vae runs the VAE alone, which takes
    multiples of its downscaling factor; the other stages also run the DFRM and the UNet,
    which take multiples of TADM.size_multiple (latent multiple x VAE factor). `what` names
    the model in the message."""
    multiple = model.vae_factor
    if config.stage != "vae":
        multiple *= model.latent_multiple
    if config.crop % multiple:
        below = config.crop - config.crop % multiple
        sizes = " or ".join(str(n) for n in (below, below + multiple) if n)
        raise ValueError(
            f"--crop must be a multiple of {multiple} for {what} in stage {config.stage}, got "
            f"{config.crop}: give {sizes}"
        )


def check_inputs(config: TrainConfig, storage_options: dict[str, Any]) -> None:
    """Refuse a --data or --val folder that holds no image file, --lpips weights that are no
    file and a local --base-model that is no diffusers folder. (The workers skip the image
    files that do not decode.)"""
    from pipeline.sources import list_sources
    from tadm import hub

    for flag, uri in (("--data", config.data), ("--val", config.val)):
        if uri is not None and not list_sources(Location.parse(uri, storage_options))[0]:
            raise ValueError(
                f"{flag} {uri} holds no image files (png, jpg, webp, tif, bmp, ...) or does not "
                "exist: give the folder of the training images"
            )
    if config.lpips and not os.path.isfile(config.lpips):
        raise ValueError(
            f"--lpips {config.lpips} is not a file: give the LPIPS weights (VGG16 + LPIPS heads)"
        )
    if config.base_model and "://" not in config.base_model:
        try:
            hub.check_base(hub.local_dir(config.base_model))
        except ValueError as e:
            raise ValueError(
                f"--base-model: {e}; give the diffusers folder of SD 2.1-base (vae/, unet/)"
            ) from None


def worker_log_level() -> int:
    """The level of the workers' tadm messages: the driver's (-v: DEBUG, else INFO), or
    WARNING with -q, whose summary the driver prints."""
    logger = logging.getLogger("tadm")
    quiet = any(isinstance(f, QuietFilter) for h in logger.handlers for f in h.filters)
    return logging.WARNING if quiet else logger.getEffectiveLevel()


def train_loop(loop_config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker; the record of its last step. Its tadm messages go at the driver's
    level to Ray Train's console log, which Ray sends to the driver."""
    import ray.train.torch

    from jobs.train_worker import fit

    logging.getLogger("tadm").setLevel(loop_config["log_level"])
    ctx = ray.train.get_context()
    return fit(
        loop_config["config"],
        loop_config["storage_options"],
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        prepare=ray.train.torch.prepare_model,
    )


def job(args: argparse.Namespace) -> int:
    """Check the options, the model the stage starts from and the crop it takes (before Ray
    starts), then run the stage on Ray Train and log a summary line."""
    require_extra("train")
    import ray.train
    from ray.train.torch import TorchTrainer

    config = absolute_paths(train_config(args))
    options = args.storage_options
    for uri in (config.out, config.data, config.val):
        if uri is not None:
            Location.parse(uri, options)
    check_inputs(config, options)
    model, what = start_config(config, options)
    check_crop(config, model, what)
    log.info("%s: %s", PROG, json.dumps(dataclasses.asdict(config)))
    use_gpu = args.gpus_per_worker > 0
    scaling = ray.train.ScalingConfig(
        num_workers=args.workers,
        use_gpu=use_gpu,
        resources_per_worker={"GPU": args.gpus_per_worker} if use_gpu else {"CPU": 1},
    )
    # Ray Train's own messages (resources, the worker group) only with -v
    verbose = log.isEnabledFor(logging.DEBUG)
    run_config = ray.train.RunConfig(
        storage_path=tempfile.mkdtemp(prefix="tadm-train-"),
        logging_config=ray.train.LoggingConfig("INFO" if verbose else "WARNING"),
    )
    loop_config = {"config": config, "storage_options": options, "log_level": worker_log_level()}
    # Ray Train's placement group cleaner polls the state API the dashboard serves: without
    # it, a warning a second. The dashboard needs ray[default]'s packages (the train extra's).
    with ray_session(dashboard=None):
        trainer = TorchTrainer(
            train_loop,
            train_loop_config=loop_config,
            scaling_config=scaling,
            run_config=run_config,
        )
        last = trainer.fit().return_value or {}
    out = Location.parse(config.out, options)
    final = out.uri_of(out.path("final"))
    at = f" at step {last['step']}, loss {last['loss']:.4g}" if "loss" in last else ""
    summary = f"{PROG}: {config.stage} done{at}; the model is in {final}"
    log.info("%s", summary, extra={"summary": True})
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_job(
        PROG,
        parser(),
        argv,
        job,
        interrupted="interrupted; the checkpoints written so far (every --checkpoint-every "
        "steps) are kept in OUT: the same command with --resume continues from the last, and "
        "starts over when there is none",
    )
