"""Train the tiny preset's stages in one process, without Ray: one GPU machine (or a CPU).

The same stages and losses as `tadm train` (both call `jobs.train_worker.fit`), each stage under
OUT/<stage> starting from the previous stage's `final`; a stage whose `final` exists is skipped,
so re-running continues. Each stage ends after --minutes or --steps, whichever comes first, with
its learning rate decayed to 0. This trained the shipped checkpoints (see MODEL_CARD.md):

    python scripts/train_tiny_single.py DATA VAL OUT/vae-x --stages vae --init VAE_CKPT
    python scripts/train_tiny_single.py DATA VAL OUT/x16 --stages dfrm,enhance,joint \
        --init OUT/vae-x/vae/final --scale 16

With --vae CKPT the first stage starts from --init with CKPT's VAE put in (saved as OUT/init):
a DFRM trained on another VAE re-fits the new latents faster than one trained from scratch.
With --decoder-keep-width it starts from --init's weights in a G_d that keeps its width after
each pixel shuffle (DFRMConfig.decoder_keep_width), computing what --init computes.
"""

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch

from jobs.train_worker import fit
from tadm import TADM
from tadm.train_config import TrainConfig

LR = {"vae": 3e-4, "dfrm": 1e-3, "enhance": 5e-4, "joint": 2e-3}  # joint runs at x0.1: 2e-4


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="training images (folder or URI)")
    p.add_argument("val", help="held-out images to validate on ('' for none)")
    p.add_argument("out", help="folder of the stages' outputs, OUT/<stage>")
    p.add_argument("--stages", default="dfrm,enhance,joint")
    p.add_argument("--init", help="checkpoint the first stage starts from (default: preset)")
    p.add_argument("--vae", help="checkpoint whose VAE weights replace --init's")
    p.add_argument(
        "--decoder-keep-width", action="store_true", help="widen --init's G_d (see above)"
    )
    p.add_argument("--scale", type=int, choices=(16, 32))
    p.add_argument("--minutes", type=float, default=2.0, help="per stage")
    p.add_argument("--steps", type=int, default=100_000, help="per stage, at most")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--lr", type=float, help="peak learning rate (default: per stage, LR)")
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--vae-lora-rank", type=int, help="LoRA on the decoder from this stage on")
    p.add_argument("--lambda-perc", type=float, default=0.5, help="weight of the perceptual term")
    p.add_argument("--lambda-gui", type=float, default=1.0, help="weight of L_gui (Eq. 7)")
    p.add_argument("--colour-aug", action="store_true", help="as tadm train --colour-aug")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def stage_config(args: argparse.Namespace, stage: str, init: str | None) -> TrainConfig:
    """The TrainConfig of `stage`, under OUT/<stage>, starting from `init` (None: the tiny
    preset); it resumes, so that re-running continues a stage."""
    return TrainConfig(
        stage=stage, data=args.data, val=args.val or None, out=str(Path(args.out) / stage),
        preset=None if init else "tiny", init=init, scale=args.scale,
        vae_lora_rank=args.vae_lora_rank, steps=args.steps, max_minutes=args.minutes,
        batch_size=args.batch_size, crop=args.crop, colour_aug=args.colour_aug,
        lr=args.lr or LR[stage], lambda_gui=args.lambda_gui, lambda_perc=args.lambda_perc,
        log_every=100, val_every=args.val_every, checkpoint_every=args.val_every, resume=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    init = args.init
    if args.vae:
        init = with_vae(init, args.vae, Path(args.out) / "init")
    if args.decoder_keep_width:
        init = with_wide_decoder(init, Path(args.out) / "init-wide")
    for stage in args.stages.split(","):
        config = stage_config(args, stage, init)
        if not (Path(config.out) / "final" / "config.json").exists():
            print(json.dumps({"event": "stage", **dataclasses.asdict(config)}), flush=True)
            fit(config, device=torch.device(args.device))
        init = str(Path(config.out) / "final")


def with_vae(init: str | None, vae: str, out: Path) -> str:
    """Checkpoint `init` with the VAE weights of checkpoint `vae`, saved at `out` (kept)."""
    if not init:
        raise SystemExit("--vae needs --init: the checkpoint to put the VAE into")
    if not (out / "config.json").exists():
        model, source = TADM.from_pretrained(init), TADM.from_pretrained(vae)
        if source.config.vae != model.config.vae:
            raise SystemExit(f"--vae {vae}: its VAE config differs from --init {init}'s")
        if source.config.vae_lora_rank or model.config.vae_lora_rank:
            raise SystemExit(
                "--vae: neither checkpoint may have decoder adapters (merge them first: "
                "scripts/ship_checkpoint.py)"
            )
        model.vae.load_state_dict(source.vae.state_dict())
        model.save_pretrained(out)
    return str(out)


def with_wide_decoder(init: str | None, out: Path) -> str:
    """Checkpoint `init` with decoder_keep_width set, saved at `out` (kept), computing the same
    function: each grown conv holds `init`'s weights in its first rows and columns, zeros where
    the new input channels meet the old outputs, and a fresh initialisation in its new rows (the
    next conv's zero columns ignore them until training moves both)."""
    if not init:
        raise SystemExit("--decoder-keep-width needs --init: the checkpoint to widen")
    if not (out / "config.json").exists():
        model = TADM.from_pretrained(init)
        if model.config.dfrm.decoder_keep_width:
            raise SystemExit(f"--decoder-keep-width: {init}'s G_d already keeps its width")
        dfrm = dataclasses.replace(model.config.dfrm, decoder_keep_width=True)
        torch.manual_seed(0)
        wide = TADM.from_config(dataclasses.replace(model.config, dfrm=dfrm))
        state = wide.state_dict()
        grown = []
        for key, old in model.state_dict().items():
            new = state[key]
            if new.shape != old.shape:
                grown.append(key)
                rows = old.shape[0]
                new[:rows] = 0
                new[(slice(0, rows), *(slice(0, n) for n in old.shape[1:]))] = old
            else:
                new.copy_(old)
        print(json.dumps({"event": "widened", "init": init, "grown": grown}), flush=True)
        wide.save_pretrained(out)
    return str(out)


if __name__ == "__main__":
    main()
