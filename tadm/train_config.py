"""TrainConfig: one training stage's settings, saved as `train_config.json` beside each
checkpoint it writes (next to the model's `config.json`)."""

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from tadm.config import SCALES

TRAIN_CONFIG_FILE = "train_config.json"
PRESETS = ("tiny", "sd21")
STAGES = ("vae", "dfrm", "enhance", "joint")  # tadm/training.py trains each


@dataclass(frozen=True)
class TrainConfig:
    stage: str  # one of STAGES; vae trains the tiny preset's own VAE
    data: str  # URI of the training images (read recursively, held in memory)
    out: str  # URI for the checkpoints, `latest`, `final/` and log.jsonl
    val: str | None = None  # URI of held-out images to validate on; None: no validation
    preset: str | None = None  # "tiny" or "sd21": a fresh model when init is None (None: tiny)
    init: str | None = None  # checkpoint to start from: path, URI or shipped name
    scale: int | None = None  # 16 or 32; None: init's, or 16; another than init's: a new DFRM
    base_model: str | None = None  # diffusers folder of the SD 2.1-base weights (sd21)
    unet_lora_rank: int | None = None  # LoRA on the UNet; None: the preset's or init's; 0: none
    vae_lora_rank: int | None = None  # LoRA on the VAE decoder; None and 0 as unet_lora_rank
    steps: int = 1000  # optimizer steps of the stage (its learning rate decays over them)
    max_minutes: float | None = None  # end the stage sooner after this many minutes
    batch_size: int = 8  # crops per worker and step
    crop: int = 128  # crop size in HR pixels
    colour_aug: bool = False  # each crop's RGB channels shuffled and scaled by random gains
    lr: float = 1e-4  # peak learning rate (joint runs at StageConfig.joint_lr_factor of it)
    lambda_gui: float = 1.0  # weight of L_gui (Eq. 8)
    lambda_perc: float = 0.5  # weight of the perceptual term (Eq. 11); 0: L1 only
    lpips: str | None = None  # LPIPS weights file; None: the weight-free substitute
    log_every: int = 20  # steps between log lines
    val_every: int = 500  # steps between validations
    checkpoint_every: int = 500  # steps between checkpoints
    resume: bool = False  # continue from OUT/latest when there is one
    threads: int = 0  # torch threads per worker; 0: torch's default
    seed: int = 0  # worker `rank` seeds torch and its crops with seed + rank

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.preset not in (None, *PRESETS):
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.preset is not None and self.init is not None:
            raise ValueError(f"give --preset or --init, not both (got {self.preset}, {self.init})")
        if self.stage == "vae" and self.preset == "sd21":
            raise ValueError("--stage vae is for the tiny preset (sd21 uses SD's VAE)")
        if self.scale not in (None, *SCALES):
            raise ValueError(f"--scale must be 16 or 32, got {self.scale}")
        for name in ("max_minutes", "lr", "lambda_gui", "lambda_perc"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{flag(name)} must be a finite number, got {value}")
        at_least = {"unet_lora_rank": 0, "vae_lora_rank": 0, "steps": 1, "batch_size": 1,
                    "crop": 1, "lambda_gui": 0, "lambda_perc": 0, "log_every": 1, "val_every": 1,
                    "checkpoint_every": 1, "threads": 0}  # fmt: skip
        for name, least in at_least.items():
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"{flag(name)} must be {least} or more, got {value}")
        for name in ("max_minutes", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{flag(name)} must be more than 0, got {value}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """The config that `to_json` wrote (a `train_config.json`)."""
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a train config is a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown train config fields {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)


def flag(name: str) -> str:
    """The command-line flag of TrainConfig field `name`."""
    return "--" + name.replace("_", "-")
