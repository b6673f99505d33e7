"""`tadm train`: the three training stages (plus the tiny preset's VAE stage) on Ray Train.

Runs `TorchTrainer` with --workers workers (one CPU worker locally, GPUs on a cluster). Each
worker loads the training images into memory and draws random crops; rank 0 validates and writes
checkpoints to OUT (a path or s3:// URI):

    OUT/step-000500/{config.json, model.safetensors, ..., trainer_state.pt}
    OUT/latest        the name of the newest complete checkpoint (written last)
    OUT/final/        the model after the last step
    OUT/log.jsonl     one line of figures per logged step and per validation
"""

import argparse
import dataclasses
import io
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.decode import decode_image
from pipeline.evaluation import evaluate, mean_scores, scores, to_tensor, vae_round_trip
from pipeline.sources import list_sources
from pipeline.storage import Location, write_atomic
from tadm import TADM
from tadm.losses import SUBSTITUTE, perceptual_loss
from tadm.lpips import LPIPS
from tadm.training import STAGES, RandomCrops, StageConfig, stage_loss, trainable_parameters

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
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8, help="crops per worker and step")
    p.add_argument("--crop", type=int, default=128, help="crop size in HR pixels")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (joint: x0.1)")
    p.add_argument("--lambda-gui", type=float, default=1.0)
    p.add_argument("--lambda-perc", type=float, default=0.5)
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


def load_images(uri: str, storage_options: dict) -> list[np.ndarray]:
    """Every decodable image under `uri`, as (H, W, 3) uint8; undecodable ones are logged."""
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


def init_model(init: str, scale: int | None) -> TADM:
    """The checkpoint `init`; at another scale, a new DFRM with every other weight kept."""
    model = TADM.from_pretrained(init)
    if scale is None or scale == model.scale:
        return model
    other = TADM.from_config(dataclasses.replace(model.config, scale=scale))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("dfrm.")}
    other.load_state_dict(kept, strict=False)
    return other


def validate(model: TADM, images: list[np.ndarray], stage: str) -> dict[str, float]:
    """Mean figures on held-out images: the VAE bound in stage vae, else restore vs bicubic."""
    model.eval()
    if stage == "vae":
        rows = [scores("vae_", vae_round_trip(model, to_tensor(img)), img) for img in images]
    else:
        rows = [evaluate(model, img, vae_bound=False) for img in images]
    model.train()
    return mean_scores(rows)


def save_checkpoint(model: TADM, out: Location, name: str, state: dict | None) -> None:
    """Write checkpoint `name` under OUT (files first, the `latest` marker last)."""
    fs = out.filesystem()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
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


def train_loop(cfg: dict[str, Any]) -> None:
    """One Ray Train worker."""
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"] + rank)
    options = json.loads(cfg["storage_options"])
    out = Location.parse(cfg["out"], options)
    fs = out.filesystem()

    start_step, state = 0, None
    latest = out.path("latest")
    if cfg["resume"] and fs.exists(latest):
        name = fs.cat_file(latest).decode().strip()
        model = TADM.from_pretrained(out.uri_of(out.path(name)))
        state = torch.load(
            io.BytesIO(fs.cat_file(out.path(name, "trainer_state.pt"))), weights_only=True
        )
        start_step = state["step"]
    elif cfg["init"]:
        model = init_model(cfg["init"], cfg["scale"])
    else:
        model = TADM.from_preset(cfg["preset"] or "tiny", cfg["scale"] or 16, cfg["base_model"])
    stage = StageConfig(
        cfg["stage"], cfg["lr"], lambda_gui=cfg["lambda_gui"], lambda_perc=cfg["lambda_perc"]
    )
    params = trainable_parameters(model, stage.stage)
    lr = stage.lr * (stage.joint_lr_factor if stage.stage == "joint" else 1.0)
    device = ray.train.torch.get_device()
    model.to(device).train()
    wrapped = ray.train.torch.prepare_model(model) if ctx.get_world_size() > 1 else model
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    if cfg["lpips"]:
        perceptual, perceptual_name = LPIPS.from_file(cfg["lpips"]).to(device), "lpips"
    else:
        perceptual, perceptual_name = perceptual_loss, SUBSTITUTE
    crops = RandomCrops(load_images(cfg["data"], options), cfg["crop"], cfg["seed"] + rank)
    val_images = load_images(cfg["val"], options) if cfg["val"] and rank == 0 else []
    if rank == 0:
        start = {"stage": stage.stage, "event": "start", "step": start_step, "lr": lr,
                 "trainable_parameters": sum(p.numel() for p in params),
                 "perceptual": perceptual_name}  # fmt: skip
        append_log(out, start)
        log.info("tadm train: %s", json.dumps(start))

    t_start = time.time()
    for step in range(start_step + 1, cfg["steps"] + 1):
        for group in optimizer.param_groups:  # cosine decay with a short warm-up
            warm = min(1.0, step / 50)
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg["steps"]))
        x = crops.batch(cfg["batch_size"]).to(device)
        loss, logs = stage_loss(wrapped, x, stage.stage, stage, model.scale, perceptual)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        record: dict[str, Any] = {}
        if step % cfg["log_every"] == 0 or step == cfg["steps"]:
            elapsed = time.time() - t_start
            record = {
                "step": step,
                "loss": loss.item(),
                **logs,
                "steps_per_s": (step - start_step) / elapsed,
                "elapsed_s": elapsed,
            }
        if rank == 0 and val_images and (step % cfg["val_every"] == 0 or step == cfg["steps"]):
            record.update(
                {
                    "step": step,
                    **{f"val_{k}": v for k, v in validate(model, val_images, stage.stage).items()},
                }
            )
        if rank == 0 and record:
            append_log(out, {"stage": stage.stage, **record})
            print(json.dumps(record), file=sys.stderr, flush=True)
        if rank == 0 and (step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]):
            save_checkpoint(
                model, out, f"step-{step:06d}", {"step": step, "optimizer": optimizer.state_dict()}
            )
        if record:
            ray.train.report({k: v for k, v in record.items() if isinstance(v, int | float)})
    if rank == 0:
        save_checkpoint(model.eval(), out, "final", None)


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
