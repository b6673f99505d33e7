"""`tadm train`: the three training stages (plus the tiny preset's VAE stage) on Ray Train.

Runs `TorchTrainer` with --workers workers (one CPU worker locally, GPUs on a cluster); each runs
`jobs.train_worker.fit`, which loads the training images into memory and draws random crops.
Rank 0 validates and writes checkpoints, `latest`, `final/` and `log.jsonl` under OUT (a path or
s3:// URI); see jobs/train_worker.py for the layout.
"""

import argparse
import json
import logging
import sys
import tempfile
from typing import Any

import ray
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from jobs.train_worker import LORA_RANKS, fit, lora_changes
from pipeline.storage import Location
from tadm import hub
from tadm.model import read_config
from tadm.training import STAGES

log = logging.getLogger("tadm.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tadm train", description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True, choices=STAGES, help="training stage")
    p.add_argument("--data", required=True, help="URI of training images (recursive)")
    p.add_argument("--out", required=True, help="URI for checkpoints and logs")
    p.add_argument("--val", help="URI of held-out validation images (never trained on)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=("tiny", "sd21"), help="start from a fresh preset")
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
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument(
        "--max-minutes",
        type=float,
        help="end the stage after this many minutes (the learning rate decays over the "
        "steps or the minutes, whichever ends first)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="crops per worker and step")
    p.add_argument("--crop", type=int, default=128, help="crop size in HR pixels")
    p.add_argument(
        "--colour-aug",
        action="store_true",
        help="shuffle each crop's RGB channels and scale each by a random gain (0.8-1.2), so "
        "that the model learns to carry colour rather than the palettes of its photos",
    )
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (joint: x0.1)")
    p.add_argument("--lambda-gui", type=float, default=1.0)
    p.add_argument(
        "--lambda-perc",
        type=float,
        default=0.5,
        help="weight of the perceptual term (0: L1 only, the term is not computed)",
    )
    p.add_argument(
        "--lpips",
        help="LPIPS weights file (VGG16 features + lin heads); without "
        "it a weight-free substitute is used",
    )
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="continue from OUT/latest")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage-options", default="{}", help="JSON options for s3fs")
    return p


def train_loop(cfg: dict[str, Any]) -> None:
    """One Ray Train worker."""
    ctx = ray.train.get_context()
    fit(
        cfg,
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        prepare=ray.train.torch.prepare_model,
        report=ray.train.report,
    )


def check_lora_ranks(args: argparse.Namespace) -> None:
    """Refuse negative ranks, and a rank that differs from the --init checkpoint's adapters."""
    for key in LORA_RANKS:
        rank = getattr(args, key)
        if rank is not None and rank < 0:
            raise ValueError(f"--{key.replace('_', '-')} must be 0 or more, got {rank}")
    if args.init and not args.resume and (args.unet_lora_rank, args.vae_lora_rank) != (None, None):
        config = read_config(hub.resolve(args.init), args.init)
        lora_changes(config, args.unet_lora_rank, args.vae_lora_rank)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        Location.parse(args.out, json.loads(args.storage_options))
        Location.parse(args.data, json.loads(args.storage_options))
    except (ValueError, json.JSONDecodeError) as err:
        print(f"tadm train: {err}", file=sys.stderr)
        return 2
    if args.stage == "vae" and args.preset == "sd21":
        print(
            "tadm train: stage 'vae' is for the tiny preset (sd21 uses SD's VAE)", file=sys.stderr
        )
        return 2
    try:
        check_lora_ranks(args)
    except ValueError as err:
        print(f"tadm train: {err}", file=sys.stderr)
        return 2
    cfg = vars(args)
    log.info("tadm train: %s", json.dumps({k: v for k, v in cfg.items() if k != "storage_options"}))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=True)
    use_gpu = args.gpus_per_worker > 0
    scaling = ScalingConfig(
        num_workers=args.workers,
        use_gpu=use_gpu,
        resources_per_worker={"GPU": args.gpus_per_worker} if use_gpu else {"CPU": 1},
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=cfg,
        scaling_config=scaling,
        run_config=ray.train.RunConfig(storage_path=tempfile.mkdtemp(prefix="tadm-train-")),
    )
    trainer.fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
