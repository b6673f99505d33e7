"""`tadm train` through Ray Train on CPU: every stage runs, checkpoints reload, resume works."""

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.train import absolute_paths, main, parser, start_config, train_config
from jobs.train_worker import fit, schedule, stage_progress, with_lora_ranks
from tadm import TADM
from tadm.presets import build_config
from tadm.train_config import TrainConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(48, 64), (40, 40), (70, 33)]):
        smooth = np.cumsum(rng.integers(-6, 7, size=(h, w, 3)), axis=0) + 128
        Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).save(root / f"img{i}.png")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG broken")
    return root


def flags(data, out, *extra: str) -> list[str]:
    return ["--data", str(data), "--val", str(data), "--out", str(out), "--crop", "32",
            "--batch-size", "2", "--log-every", "1", "--val-every", "2",
            "--checkpoint-every", "2", "--threads", "1", *extra]  # fmt: skip


def run(data, out, *extra: str) -> int:
    return main(flags(data, out, *extra))


def log_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_all_stages_chain_and_checkpoints_reload(ray_cluster, data, tmp_path):
    assert run(data, tmp_path / "vae", "--stage", "vae", "--preset", "tiny", "--steps", "2") == 0
    assert any("val_vae_psnr" in r for r in log_lines(tmp_path / "vae"))
    start = log_lines(tmp_path / "vae")[0]
    assert start["event"] == "start" and start["perceptual"].startswith("ssim+gradient")
    previous = tmp_path / "vae" / "final"
    for stage in ("dfrm", "enhance", "joint"):
        out = tmp_path / stage
        extra = {"dfrm": ["--scale", "32"], "joint": ["--colour-aug"]}.get(stage, [])
        assert run(data, out, "--stage", stage, "--init", str(previous), "--steps", "2",
                   *extra) == 0  # fmt: skip
        assert (out / "latest").read_text() == "step-000002"
        model = TADM.from_pretrained(str(out / "final"))
        assert model.scale == 32
        lines = log_lines(out)
        assert [r["step"] for r in lines if "loss" in r] == [1, 2]
        assert any("val_psnr" in r and "val_bicubic_psnr" in r for r in lines)
        assert lines[0]["colour_aug"] == (stage == "joint")
        previous = out / "final"
    vae = TADM.from_pretrained(str(tmp_path / "vae" / "final"))
    joint = TADM.from_pretrained(str(previous))
    # --scale 32 from a 16x checkpoint keeps every weight but the DFRM's
    assert torch.equal(vae.state_dict()["vae.encoder.conv_in.weight"],
                       TADM.from_pretrained(str(tmp_path / "dfrm" / "final"))
                       .state_dict()["vae.encoder.conv_in.weight"])  # fmt: skip
    assert vae.model_id != joint.model_id


def test_resume_continues_from_latest(ray_cluster, data, tmp_path):
    out = tmp_path / "run"
    assert run(data, out, "--stage", "dfrm", "--preset", "tiny", "--steps", "2") == 0
    first = TADM.from_pretrained(str(out / "step-000002")).state_dict()
    assert run(data, out, "--stage", "dfrm", "--preset", "tiny", "--steps", "4", "--resume") == 0
    steps = [r["step"] for r in log_lines(out) if "loss" in r]
    assert steps == [1, 2, 3, 4]  # resumed at 3, not restarted at 1
    # each checkpoint holds the config of the run that wrote it
    second = train_config(
        parser().parse_args(flags(data, out, "--stage", "dfrm", "--preset", "tiny", "--steps",
                                  "4", "--resume"))
    )  # fmt: skip
    for name in ("step-000004", "final"):
        saved = TrainConfig.from_json((out / name / "train_config.json").read_text())
        assert saved == second and saved.steps == 4 and saved.resume
    assert TrainConfig.from_json((out / "step-000002" / "train_config.json").read_text()) == (
        dataclasses.replace(second, steps=2, resume=False)
    )
    state = torch.load(out / "step-000004" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 4
    resumed = TADM.from_pretrained(str(out / "final")).state_dict()
    dfrm = [k for k in first if k.startswith("dfrm.")]
    assert any(not torch.equal(first[k], resumed[k]) for k in dfrm)


def test_bad_arguments_exit_2(data, tmp_path, capsys):
    assert main(["--stage", "dfrm", "--data", "ftp://host/x", "--out", str(tmp_path)]) == 2
    assert "URI" in capsys.readouterr().err
    assert main(["--stage", "vae", "--preset", "sd21", "--data", str(data),
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert capsys.readouterr().err == (
        "tadm train: error: --stage vae is for the tiny preset (sd21 uses SD's VAE)\n"
    )
    assert main(["--stage", "dfrm", "--data", str(data), "--out", str(tmp_path),
                 "--storage-options", "[]"]) == 2  # fmt: skip
    assert "--storage-options" in capsys.readouterr().err
    assert main(["--stage", "dfrm", "--data", str(data), "--out", str(tmp_path),
                 "--batch-size", "0"]) == 2  # fmt: skip
    assert capsys.readouterr().err == "tadm train: error: --batch-size must be 1 or more, got 0\n"


def test_relative_paths_are_the_working_folders_and_quiet_prints_the_summary_only(
    ray_cluster, data, tmp_path, monkeypatch, capfd
):
    """The Ray Train workers run in folders of their own: relative --data and --out are the
    driver's working folder's. -q leaves the workers' progress lines and Ray Train's notices
    out, and prints the summary."""
    monkeypatch.chdir(tmp_path)
    argv = ["-q", "--stage", "dfrm", "--preset", "tiny", "--data", os.path.relpath(data),
            "--out", "relout", "--steps", "1", "--crop", "32", "--batch-size", "1",
            "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    final = tmp_path / "relout" / "final"
    assert TADM.from_pretrained(str(final)).scale == 16
    saved = TrainConfig.from_json((final / "train_config.json").read_text())
    assert (saved.data, saved.out) == (str(data), str(tmp_path / "relout"))
    err = capfd.readouterr().err
    where = re.escape(str(final))
    summary = re.compile(
        rf"tadm train: dfrm done at step 1, loss [\d.e-]+; the model is in {where}"
    )
    assert any(summary.fullmatch(line) for line in err.splitlines())
    assert '"loss"' not in err and "Reporting training result" not in err


def test_absolute_paths_leave_uris_and_shipped_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainConfig("enhance", "s3://b/data", "file:///o", val="v", init="tiny-x16",
                         base_model="sd/base", lpips="w.pth")  # fmt: skip
    assert absolute_paths(config) == dataclasses.replace(
        config, val=str(tmp_path / "v"), base_model=str(tmp_path / "sd" / "base"),
        lpips=str(tmp_path / "w.pth"),
    )  # fmt: skip
    local = absolute_paths(TrainConfig("dfrm", "../d", "o", init="ck"))
    assert (local.data, local.out, local.init) == (
        str(tmp_path.parent / "d"), str(tmp_path / "o"), str(tmp_path / "ck"),
    )  # fmt: skip


RAY_LOG = re.compile(r"(\x1b\[\d+m)?\(\w+ pid=\d+(, ip=[\d.]+)?\)")  # "(Actor pid=1) ..."


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--init", "nonexistent"], "--init cannot be loaded: unknown model "),
        (
            ["--init", "photo.jpg"],
            "--init cannot be loaded: model folder '{tmp}/photo.jpg' is a file, not a folder",
        ),
        (
            ["--preset", "sd21", "--base-model", "nocheckpoint"],
            "--base-model: {tmp}/nocheckpoint is not a diffusers model folder: no vae/config.json;"
            " give the diffusers folder of SD 2.1-base (vae/, unet/)",
        ),
        (
            ["--preset", "sd21", "--base-model", "absent"],
            "--base-model: model folder '{tmp}/absent' does not exist; give the diffusers",
        ),
        (
            ["--init", "nocheckpoint"],
            "--init cannot be loaded: '{tmp}/nocheckpoint' has no config.json: not a TADM "
            "checkpoint; give a checkpoint folder (config.json and model.safetensors), its URI, "
            "or a shipped checkpoint's name",
        ),
        (
            ["--crop", "17"],
            "--crop must be a multiple of 16 for the tiny preset at scale 16 in "
            "stage dfrm, got 17: give 16 or 32",
        ),
        (
            ["--crop", "48", "--scale", "32"],
            "--crop must be a multiple of 32 for the tiny preset at scale 32 in stage dfrm, "
            "got 48: give 32 or 64",
        ),
        (
            ["--crop", "24", "--init", "tiny-x32"],
            "--crop must be a multiple of 32 for --init tiny-x32 at scale 32",
        ),
        (
            ["--crop", "96", "--preset", "sd21"],
            "--crop must be a multiple of 64 for the sd21 preset at scale 16 in stage dfrm, "
            "got 96: give 64 or 128",
        ),
        (["--data", "empty"], "--data {tmp}/empty holds no image files (png, jpg, "),
        (["--val", "empty"], "--val {tmp}/empty holds no image files (png, jpg, "),
        (["--lpips", "vgg.pth"], "--lpips {tmp}/vgg.pth is not a file: give the LPIPS weights"),
        (["--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--lr", "0"], "--lr must be more than 0, got 0.0"),
        (["--lambda-perc", "nan"], "--lambda-perc must be a finite number, got nan"),
        (["--max-minutes", "inf"], "--max-minutes must be a finite number, got inf"),
        (["--workers", "0"], "argument --workers: must be 1 or more, got 0"),
        (["--workers", "-1"], "argument --workers: must be 1 or more, got -1"),
        (
            ["--gpus-per-worker", "-1"],
            "argument --gpus-per-worker: must be 0 (CPU workers) or more, got -1",
        ),
    ],
)
def test_bad_usage_is_one_line_before_ray_starts(
    extra, message, data, tmp_path, monkeypatch, capsys
):
    """Each is refused up front, exit 2, with one line naming the problem; relative paths are
    the working folder's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "nocheckpoint").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    monkeypatch.setattr("jobs.train.ray_session", None)  # calling it fails: Ray never starts
    assert main(["--stage", "dfrm", "--data", str(data), "--out", "o", *extra]) == 2
    # Only this command's lines: the session's Ray streams its workers' logs to this process,
    # and an earlier test's Ray Train actor may log while this test runs.
    lines = [line for line in capsys.readouterr().err.splitlines() if not RAY_LOG.match(line)]
    assert len(lines) == 1
    assert lines[0].startswith("tadm train: error: " + message.format(tmp=tmp_path))


def test_every_train_config_field_has_its_flag_and_default():
    args = parser().parse_args(["--stage", "dfrm", "--data", "d", "--out", "o"])
    assert train_config(args) == TrainConfig("dfrm", "d", "o")


def test_fit_runs_without_ray_and_stops_at_its_time_budget(data, tmp_path):
    """`fit` is the worker without Ray (one GPU box); --max-minutes ends a stage early."""
    code = (
        "import sys; sys.modules['ray'] = None\n"  # importing ray now fails
        "from jobs.train_worker import fit\n"
        "from tadm.train_config import TrainConfig\n"
        f"fit(TrainConfig(stage='dfrm', data={str(data)!r}, val=None,\n"
        f"    out={str(tmp_path / 'out')!r}, init=None, preset='tiny', base_model=None,\n"
        "    scale=16, steps=1000, max_minutes=6e-5, batch_size=2, crop=32, lr=1e-3,\n"
        "    lambda_gui=1.0, lambda_perc=0.5, lpips=None, log_every=100, val_every=100,\n"
        "    checkpoint_every=100, resume=False, threads=1, seed=0))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    out = tmp_path / "out"
    # of 1000 steps, the 3.6 ms budget ended it at the first check after the first step
    last = (out / "latest").read_text()
    assert last in ("step-000001", "step-000002")
    assert TADM.from_pretrained(str(out / "final")).scale == 16
    assert [r["step"] for r in log_lines(out) if "loss" in r] == [int(last[-6:])]


def test_schedule_decays_over_steps_or_time():
    assert stage_progress(50, 100, 0.0, None) == 0.5
    assert stage_progress(50, 100, 90.0, 60.0) == 1.5  # the time budget ends it first
    assert stage_progress(10, 100, 1.0, 60.0) == 0.1
    assert schedule(25, 0.0) == 0.5  # warm-up
    assert schedule(100, 0.5) == pytest.approx(0.5)
    assert schedule(100, 1.0) == 0.0


def fit_config(data, out, **changes) -> TrainConfig:
    cfg = dict(stage="enhance", data=str(data), val=None, out=str(out), init=None, preset="tiny",
               base_model=None, scale=16, steps=2, max_minutes=None, batch_size=2, crop=32,
               lr=1e-2, lambda_gui=1.0, lambda_perc=0.5, lpips=None, log_every=1, val_every=10,
               checkpoint_every=10, resume=False, threads=1, seed=0)  # fmt: skip
    return TrainConfig(**{**cfg, **changes})


def test_fit_logs_each_record_and_returns_the_last(data, tmp_path, caplog):
    """The records go to the tadm.train logger, which the driver's -q and -v set in each Ray
    Train worker (a print there reaches the driver twice: Ray Train also logs what it prints)."""
    with caplog.at_level(logging.INFO, logger="tadm.train"):
        last = fit(fit_config(data, tmp_path / "o", stage="dfrm"))
    records = [json.loads(m) for m in caplog.messages if m.startswith('{"step"')]
    assert [r["step"] for r in records] == [1, 2]
    assert last == records[-1] and last["loss"] > 0


def test_vae_lora_rank_puts_adapters_on_a_trained_tiny_decoder(data, tmp_path):
    """--vae-lora-rank on a checkpoint without adapters: `enhance` trains adapters over the
    decoder and leaves its weights as they were."""
    torch.manual_seed(0)
    base = TADM.from_preset("tiny", 16)
    base.save_pretrained(tmp_path / "base")
    fit(fit_config(data, tmp_path / "lora", init=str(tmp_path / "base"), preset=None,
                   vae_lora_rank=2))  # fmt: skip
    tuned = TADM.from_pretrained(str(tmp_path / "lora" / "final"))
    assert tuned.config.vae_lora_rank == 2 and tuned.config.unet_lora_rank == 0
    assert (tmp_path / "lora" / "final" / "vae_decoder_lora" / "adapter_model.safetensors").exists()
    before, after = base.state_dict(), tuned.state_dict()
    key = "vae.decoder.conv_in.weight"
    assert torch.equal(before[key], after[key.replace("conv_in.", "conv_in.base_layer.")])
    adapters = [k for k in after if "lora_B" in k and k.startswith("vae.decoder.")]
    assert adapters and any(after[k].abs().sum() > 0 for k in adapters)  # trained from zero
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("unet."))


def test_lora_ranks_refuse_a_negative_rank_or_a_trained_adapters_other_rank(data, tmp_path, capsys):
    config = dataclasses.replace(build_config("tiny", 16), unet_lora_rank=2)
    TADM.from_config(config).save_pretrained(tmp_path / "ck")
    assert run(data, tmp_path / "o", "--stage", "enhance", "--init", str(tmp_path / "ck"),
               "--unet-lora-rank", "4") == 2  # fmt: skip
    assert "already has unet lora rank 2" in capsys.readouterr().err
    assert run(data, tmp_path / "o", "--stage", "dfrm", "--vae-lora-rank", "-1") == 2
    assert "--vae-lora-rank must be 0 or more" in capsys.readouterr().err
    assert run(data, tmp_path / "o", "--stage", "enhance", "--init", str(data),
               "--vae-lora-rank", "4") == 2  # fmt: skip
    assert "not a TADM checkpoint" in capsys.readouterr().err
    # the rank a model already has is no change; the other part can still get adapters
    model = TADM.from_config(config)
    assert with_lora_ranks(model, 2, 3).config.vae_lora_rank == 3
    assert any("lora_" in n for n, _ in model.vae.named_parameters())


def test_resume_without_a_checkpoint_says_the_stage_starts_over(tmp_path, caplog):
    """--resume on a first run (a scheduled command) starts from the preset, and says so."""
    config = TrainConfig(stage="dfrm", data=str(tmp_path), out=str(tmp_path / "out"), resume=True)
    with caplog.at_level(logging.WARNING, logger="tadm.train"):
        model, what = start_config(config, {})
    assert what == "the tiny preset at scale 16"
    assert caplog.messages == [
        f"--resume: {tmp_path / 'out'} has no checkpoint yet (no `latest`): the stage starts over"
    ]
