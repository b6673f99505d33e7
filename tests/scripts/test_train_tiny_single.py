"""scripts/train_tiny_single.py: stages in one process, --vae and --decoder-keep-width, and the
same TrainConfig as `tadm train` from equivalent flags."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_tiny

from jobs.train import parser as train_parser
from jobs.train import train_config
from tadm import TADM
from tadm.presets import build_config
from tadm.train_config import TrainConfig

SCRIPT = Path(__file__).parents[2] / "scripts" / "train_tiny_single.py"
_spec = importlib.util.spec_from_file_location("train_tiny_single", SCRIPT)
train_tiny_single = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_tiny_single)


def test_vae_weights_come_from_the_vae_checkpoint_and_the_rest_from_init(
    tmp_path, small_photos, monkeypatch
):
    init = save_tiny(tmp_path / "init", seed=0)
    vae = save_tiny(tmp_path / "vae", seed=1, scale=32)  # another scale: the VAE is the same kind
    out = tmp_path / "run"
    argv = [str(SCRIPT), str(small_photos), "", str(out), "--stages", "dfrm", "--init", init,
            "--vae", vae, "--scale", "16", "--steps", "2", "--batch-size", "1", "--crop", "64",
            "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    train_tiny_single.main()

    started = TADM.from_pretrained(str(out / "init")).state_dict()
    source, first = TADM.from_pretrained(vae).state_dict(), TADM.from_pretrained(init).state_dict()
    assert any(not torch.equal(source[k], first[k]) for k in source if k.startswith("vae."))
    for key, value in started.items():
        assert torch.equal(value, (source if key.startswith("vae.") else first)[key]), key
    log = [json.loads(line) for line in (out / "dfrm" / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[-1]["step"] == 2
    assert (out / "dfrm" / "final" / "config.json").exists()
    saved = TrainConfig.from_json((out / "dfrm" / "final" / "train_config.json").read_text())
    args = train_tiny_single.parser().parse_args(argv[1:])
    assert saved == train_tiny_single.stage_config(args, "dfrm", str(out / "init"))
    assert saved.init == str(out / "init") and saved.val is None and saved.max_minutes == 2.0


def test_tadm_train_and_the_script_build_the_same_config_from_equivalent_flags(tmp_path):
    shared = ["--scale", "32", "--steps", "50", "--batch-size", "4", "--crop", "96",
              "--val-every", "25", "--vae-lora-rank", "8", "--lambda-perc", "0",
              "--lambda-gui", "0.5", "--colour-aug"]  # fmt: skip
    script = train_tiny_single.parser().parse_args(
        ["DATA", "VAL", str(tmp_path), "--stages", "enhance", "--init", "CK", "--minutes", "3",
         "--lr", "5e-4", *shared]
    )  # fmt: skip
    train = ["--data", "DATA", "--val", "VAL", "--max-minutes", "3", "--checkpoint-every", "25",
             "--log-every", "100", "--resume", *shared]  # fmt: skip
    config = train_tiny_single.stage_config(script, "enhance", "CK")
    assert config == train_config(
        train_parser().parse_args(["--stage", "enhance", "--out", str(tmp_path / "enhance"),
                                   "--init", "CK", "--lr", "5e-4", *train])
    )  # fmt: skip
    assert (config.crop, config.max_minutes, config.vae_lora_rank) == (96, 3.0, 8)
    # without a checkpoint: the tiny preset, at the script's learning rate of the stage
    script = train_tiny_single.parser().parse_args(
        ["DATA", "VAL", str(tmp_path), "--stages", "dfrm", "--minutes", "3", *shared]
    )
    assert train_tiny_single.stage_config(script, "dfrm", None) == train_config(
        train_parser().parse_args(["--stage", "dfrm", "--out", str(tmp_path / "dfrm"),
                                   "--preset", "tiny", "--lr", "1e-3", *train])
    )  # fmt: skip


def test_vae_checkpoints_with_adapters_or_another_vae_are_refused(tmp_path):
    init = save_tiny(tmp_path / "init", seed=0)
    torch.manual_seed(0)
    TADM.from_preset("tiny", 16, vae_lora_rank=2).save_pretrained(tmp_path / "adapted")
    with pytest.raises(SystemExit, match="adapters"):
        train_tiny_single.with_vae(init, str(tmp_path / "adapted"), tmp_path / "a")
    narrow = {**TADM.from_pretrained(init).config.vae, "block_out_channels": [16, 32, 32]}
    TADM.from_preset("tiny", 16, vae=narrow).save_pretrained(tmp_path / "narrow")
    with pytest.raises(SystemExit, match="VAE config differs"):
        train_tiny_single.with_vae(init, str(tmp_path / "narrow"), tmp_path / "c")
    with pytest.raises(SystemExit, match="needs --init"):
        train_tiny_single.with_vae(None, init, tmp_path / "b")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_decoder_keep_width_widens_g_d_into_the_same_function_and_trains_it(
    tmp_path, small_photos, monkeypatch
):
    torch.manual_seed(0)
    official = dataclasses.replace(build_config("tiny", 32).dfrm, decoder_keep_width=False)
    TADM.from_preset("tiny", 32, dfrm=official).save_pretrained(init := str(tmp_path / "init"))
    out = tmp_path / "run"
    argv = [str(SCRIPT), str(small_photos), "", str(out), "--stages", "dfrm", "--init", init,
            "--decoder-keep-width", "--scale", "32", "--steps", "2", "--batch-size", "1",
            "--crop", "64", "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    train_tiny_single.main()

    wide = TADM.from_pretrained(str(out / "init-wide"))
    assert wide.config.dfrm.decoder_keep_width
    narrow = TADM.from_pretrained(init)
    before, after = narrow.state_dict(), wide.state_dict()
    grown = {k for k in after if after[k].shape != before[k].shape}
    convs = [f"dfrm.final_module.{i}.conv_in" for i in (4, 6, 8)]  # after the 3 pixel shuffles
    assert grown == {f"{c}.{p}" for c in convs for p in ("weight", "bias")} - {f"{convs[2]}.bias"}
    assert all(torch.equal(after[k], before[k]) for k in after if k not in grown)
    z_lr = torch.randn(2, 3, 3, 4)
    with torch.no_grad():
        assert torch.allclose(wide.dfrm.g_d(z_lr), narrow.dfrm.g_d(z_lr), atol=1e-6)
        assert after[f"{convs[0]}.weight"][48:].abs().sum() > 0  # new rows start random
    trained = TADM.from_pretrained(str(out / "dfrm" / "final"))
    assert trained.config.dfrm.decoder_keep_width
    with pytest.raises(SystemExit, match="already keeps its width"):
        train_tiny_single.with_wide_decoder(str(out / "dfrm" / "final"), tmp_path / "again")
