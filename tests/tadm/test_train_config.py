"""TrainConfig: tadm train's defaults, validation naming the flag and value, JSON round trip."""

import dataclasses
import json

import pytest

from tadm.train_config import TrainConfig


def test_defaults_are_tadm_trains():
    assert dataclasses.asdict(TrainConfig("dfrm", "d", "o")) == {
        "stage": "dfrm", "data": "d", "out": "o", "val": None, "preset": None, "init": None,
        "scale": None, "base_model": None, "unet_lora_rank": None, "vae_lora_rank": None,
        "steps": 1000, "max_minutes": None, "batch_size": 8, "crop": 128, "colour_aug": False,
        "lr": 1e-4, "lambda_gui": 1.0, "lambda_perc": 0.5, "lpips": None, "log_every": 20,
        "val_every": 500, "checkpoint_every": 500, "resume": False, "threads": 0, "seed": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stage": "warmup"}, "--stage must be one of vae, dfrm, enhance, joint, got 'warmup'"),
        ({"preset": "sd15"}, "--preset must be one of tiny, sd21, got 'sd15'"),
        ({"preset": "tiny", "init": "ck"}, "give --preset or --init, not both (got tiny, ck)"),
        ({"stage": "vae", "preset": "sd21"}, "--stage vae is for the tiny preset"),
        ({"scale": 8}, "--scale must be 16 or 32, got 8"),
        ({"unet_lora_rank": -1}, "--unet-lora-rank must be 0 or more, got -1"),
        ({"vae_lora_rank": -2}, "--vae-lora-rank must be 0 or more, got -2"),
        ({"steps": 0}, "--steps must be 1 or more, got 0"),
        ({"max_minutes": 0.0}, "--max-minutes must be more than 0, got 0.0"),
        ({"batch_size": 0}, "--batch-size must be 1 or more, got 0"),
        ({"crop": 0}, "--crop must be 1 or more, got 0"),
        ({"lr": -1e-3}, "--lr must be more than 0, got -0.001"),
        ({"lambda_gui": -1.0}, "--lambda-gui must be 0 or more, got -1.0"),
        ({"lambda_perc": -0.5}, "--lambda-perc must be 0 or more, got -0.5"),
        ({"log_every": 0}, "--log-every must be 1 or more, got 0"),
        ({"val_every": 0}, "--val-every must be 1 or more, got 0"),
        ({"checkpoint_every": -5}, "--checkpoint-every must be 1 or more, got -5"),
        ({"threads": -1}, "--threads must be 0 or more, got -1"),
    ],
)
def test_a_bad_value_is_refused_naming_its_flag_and_value(changes, message):
    with pytest.raises(ValueError) as caught:
        TrainConfig(**{"stage": "dfrm", "data": "d", "out": "o", **changes})
    assert str(caught.value).startswith(message)


def test_the_limits_themselves_are_accepted():
    config = TrainConfig("vae", "d", "o", preset="tiny", unet_lora_rank=0, vae_lora_rank=0,
                         steps=1, batch_size=1, crop=1, lambda_gui=0.0, lambda_perc=0.0,
                         log_every=1, val_every=1, checkpoint_every=1, threads=0)  # fmt: skip
    assert config.steps == 1 and config.lambda_perc == 0.0


def test_json_round_trip_keeps_every_field_and_its_type():
    config = TrainConfig(
        stage="enhance", data="s3://b/train", out="/tmp/out", val="s3://b/val", init="tiny-x32",
        scale=32, base_model="/sd21", unet_lora_rank=4, vae_lora_rank=8, steps=7,
        max_minutes=2.5, batch_size=3, crop=96, colour_aug=True, lr=2e-3, lambda_gui=0.25,
        lambda_perc=0.0, lpips="/w/lpips.pth", log_every=3, val_every=9, checkpoint_every=11,
        resume=True, threads=2, seed=5,
    )  # fmt: skip
    defaults = TrainConfig("dfrm", "d", "o")
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if getattr(config, f.name) == getattr(defaults, f.name)]  # fmt: skip
    assert changed == ["preset"]  # every other field differs from its default
    text = config.to_json()
    loaded = TrainConfig.from_json(text)
    assert loaded == config
    assert all(
        type(getattr(loaded, f.name)) is type(getattr(config, f.name))
        for f in dataclasses.fields(TrainConfig)
    )
    assert loaded.to_json() == text
    assert TrainConfig.from_json(defaults.to_json()) == defaults


def test_from_json_refuses_unknown_fields_bad_values_and_non_objects():
    data = json.loads(TrainConfig("dfrm", "d", "o").to_json())
    with pytest.raises(ValueError, match=r"unknown train config fields \['storage_options'\]"):
        TrainConfig.from_json(json.dumps({**data, "storage_options": {}}))
    with pytest.raises(ValueError, match="--crop must be 1 or more, got -4"):
        TrainConfig.from_json(json.dumps({**data, "crop": -4}))
    with pytest.raises(ValueError, match="a train config is a JSON object, got list"):
        TrainConfig.from_json("[]")


def test_the_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig("dfrm", "d", "o").steps = 5  # type: ignore[misc]
