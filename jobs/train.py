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
import tempfile
from typing import Any

from jobs.common import Parser, add_storage_options, ray_session, require_extra, run_job
from pipeline.storage import Location
from tadm.train_config import PRESETS, STAGES, TrainConfig

PROG = "tadm train"
log = logging.getLogger("tadm.train")


def parser() -> Parser:
    """`tadm train`'s flags: one per TrainConfig field (its defaults), plus how to run."""
    p = Parser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True, choices=STAGES, help="training stage")
    p.add_argument("--data", required=True, help="URI of training images (recursive)")
    p.add_argument("--out", required=True, help="URI for checkpoints and logs")
    p.add_argument("--val", help="URI of held-out validation images (never trained on)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=PRESETS, help="start from a fresh preset")
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
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
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
    p.add_argument("--lambda-gui", type=float, default=TrainConfig.lambda_gui)
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
    p.add_argument("--log-every", type=int, default=TrainConfig.log_every)
    p.add_argument("--val-every", type=int, default=TrainConfig.val_every)
    p.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    p.add_argument("--resume", action="store_true", help="continue from OUT/latest")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument(
        "--threads", type=int, default=TrainConfig.threads, help="torch threads per worker (0: all)"
    )
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    add_storage_options(p)
    return p


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed flags (each field has the flag of its name)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker."""
    import ray.train.torch

    from jobs.train_worker import fit

    ctx = ray.train.get_context()
    fit(
        loop_config["config"],
        loop_config["storage_options"],
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        prepare=ray.train.torch.prepare_model,
        report=ray.train.report,
    )


def check_init_lora_ranks(config: TrainConfig) -> None:
    """Refuse a LoRA rank that differs from the rank of the --init checkpoint's adapters."""
    from jobs.train_worker import lora_changes
    from tadm import hub
    from tadm.model import read_config

    ranks = (config.unet_lora_rank, config.vae_lora_rank)
    if config.init and not config.resume and ranks != (None, None):
        lora_changes(read_config(hub.resolve(config.init), config.init), *ranks)


def job(args: argparse.Namespace) -> int:
    require_extra("train")
    import ray.train
    from ray.train.torch import TorchTrainer

    config = train_config(args)
    Location.parse(config.out, args.storage_options)
    Location.parse(config.data, args.storage_options)
    check_init_lora_ranks(config)
    log.info("%s: %s", PROG, json.dumps(dataclasses.asdict(config)))
    use_gpu = args.gpus_per_worker > 0
    scaling = ray.train.ScalingConfig(
        num_workers=args.workers,
        use_gpu=use_gpu,
        resources_per_worker={"GPU": args.gpus_per_worker} if use_gpu else {"CPU": 1},
    )
    with ray_session():
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"config": config, "storage_options": args.storage_options},
            scaling_config=scaling,
            run_config=ray.train.RunConfig(storage_path=tempfile.mkdtemp(prefix="tadm-train-")),
        )
        trainer.fit()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_job(PROG, parser(), argv, job)
