"""Where weights come from (tadm/hub.py): local folders, file://, remote fsspec URIs and s3://."""

import uuid

import fsspec
import pytest
import torch
from conftest import make_bucket
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

from tadm import TADM, hub
from tadm.presets import TINY_UNET, TINY_VAE


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture
def memory_folder():
    """A unique folder on fsspec's in-memory filesystem (a real remote filesystem, no network)."""
    fs = fsspec.filesystem("memory")
    root = f"/tadm-test-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_local_paths_and_file_uris(tmp_path):
    assert hub.local_dir(str(tmp_path)) == tmp_path
    assert hub.local_dir(f"file://{tmp_path}") == tmp_path
    for missing in (str(tmp_path / "nope"), f"file://{tmp_path}/nope"):
        with pytest.raises(ValueError, match="does not exist"):
            hub.local_dir(missing)


def test_remote_folders_are_copied_once_per_version_into_the_cache(cache, memory_folder):
    fs, root = memory_folder
    fs.pipe(f"{root}/ckpt/config.json", b"{}")
    fs.pipe(f"{root}/ckpt/sub/weights.bin", b"\x00\x01")
    local = hub.local_dir(f"memory://{root}/ckpt")
    assert local.parent == cache
    assert (local / "config.json").read_bytes() == b"{}"
    assert (local / "sub" / "weights.bin").read_bytes() == b"\x00\x01"
    assert hub.local_dir(f"memory://{root}/ckpt") == local  # the same content: one copy
    assert [p.name for p in cache.iterdir()] == [local.name]  # no staging folder left behind
    fs.pipe(f"{root}/ckpt/config.json", b'{"changed": 1}')
    changed = hub.local_dir(f"memory://{root}/ckpt")  # a new version of the model: copied again
    assert changed != local and (changed / "config.json").read_bytes() == b'{"changed": 1}'
    with pytest.raises(ValueError, match="does not exist"):
        hub.local_dir(f"memory://{root}/missing")


def test_checkpoint_from_a_remote_uri(cache, memory_folder, tmp_path):
    fs, root = memory_folder
    torch.manual_seed(0)
    model = TADM.from_preset("tiny", 16).eval()
    model.save_pretrained(tmp_path / "ckpt")
    fs.put(str(tmp_path / "ckpt"), f"{root}/ckpt", recursive=True)
    remote = TADM.from_pretrained(f"memory://{root}/ckpt")
    assert remote.model_id == model.model_id


def test_s3_checkpoint_honours_the_storage_options(cache, s3_endpoint, tmp_path, monkeypatch):
    """An s3:// checkpoint is read with the options passed, not with the environment's."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    make_bucket(s3_endpoint, "models")
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    torch.manual_seed(0)
    model = TADM.from_preset("tiny", 16).eval()
    model.save_pretrained(tmp_path / "ckpt")
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
    fs.put(str(tmp_path / "ckpt"), "models/ckpt", recursive=True)
    remote = TADM.from_pretrained("s3://models/ckpt", storage_options=options)
    assert remote.model_id == model.model_id
    assert hub.resolve("s3://models/ckpt", options).parent == cache


@pytest.mark.parametrize("key", ["../../evil.txt", "a/../../../evil.txt", "/../../evil.txt"])
def test_a_model_key_that_would_leave_the_cache_is_refused_on_s3(
    cache, s3_endpoint, tmp_path, monkeypatch, key
):
    """A key with ".." segments in a model prefix copies nothing: it would land in tmp_path."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    make_bucket(s3_endpoint, bucket)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
    fs.pipe_file(f"{bucket}/m/config.json", b"{}")
    fs.pipe_file(f"{bucket}/m/{key}", b"evil")
    assert f"{bucket}/m/{key}".replace("//", "/") in {p.replace("//", "/") for p in fs.find(bucket)}
    with pytest.raises(ValueError, match=r"lists '.*evil\.txt', which would be copied outside"):
        hub.local_dir(f"s3://{bucket}/m", options)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not cache.exists() or not list(cache.iterdir())  # no copy, no staging folder left


def test_resolve_refuses_unknown_names(tmp_path):
    assert hub.resolve(str(tmp_path)) == tmp_path
    assert isinstance(hub.shipped_names(), list)
    with pytest.raises(ValueError, match="unknown model 'no-such-model'.*shipped"):
        hub.resolve("no-such-model")


def test_load_base_reads_a_diffusers_folder(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(TINY_VAE)
    unet = UNet2DConditionModel.from_config(TINY_UNET)
    vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match="not a diffusers model folder: no unet/config.json"):
        hub.load_base(tmp_path)
    unet.save_pretrained(tmp_path / "unet")
    with pytest.raises(ValueError, match="neither null_prompt.safetensors nor a text_encoder"):
        hub.load_base(tmp_path)
    null_prompt = torch.randn(1, 4, 32)
    save_file({"null_prompt": null_prompt}, str(tmp_path / "null_prompt.safetensors"))
    loaded_vae, loaded_unet, loaded_null, scheduler = hub.load_base(tmp_path)
    assert scheduler == {}  # no scheduler/ folder: the preset's prediction type stays
    assert torch.equal(loaded_null, null_prompt)
    assert torch.equal(loaded_unet.conv_in.weight, unet.conv_in.weight)
    assert torch.equal(loaded_vae.decoder.conv_out.weight, vae.decoder.conv_out.weight)
