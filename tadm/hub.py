"""Where weights come from: local folders, object storage (fsspec), and shipped checkpoints.

Nothing is ever downloaded from a model hub: remote folders are copied from the URI given.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import fsspec
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file
from torch import Tensor

SHIPPED_DIR = Path(__file__).parent / "checkpoints"
CACHE_DIR = Path(os.environ.get("TADM_CACHE", Path(tempfile.gettempdir()) / "tadm-cache"))


def shipped_names() -> list[str]:
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


def default_model(scale: int) -> str:
    """The shipped checkpoint used when no model is named: "tiny-x16" or "tiny-x32"."""
    return f"tiny-x{scale}"


def local_dir(uri: str, storage_options: dict | None = None) -> Path:
    """A local folder with the contents of `uri` (a path, file:// or a remote fsspec URI such
    as s3://, read with `storage_options`); remote folders go through `cached_copy`."""
    if "://" not in uri or uri.startswith("file://"):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_dir():
            problem = "is a file, not a folder" if path.exists() else "does not exist"
            raise ValueError(f"model folder {uri!r} {problem}")
        return path
    try:
        fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ImportError, ValueError) as e:
        raise ValueError(f"model URI {uri!r} cannot be read: {e}") from None
    return cached_copy(fs, root, uri)


def cached_copy(fs: fsspec.AbstractFileSystem, root: str, uri: str) -> Path:
    """A local copy of the remote folder `root` on `fs` (`uri` names it), made once per content
    version in TADM_CACHE.

    The cache key hashes the URI and every file's name, size and ETag (or mtime), so a changed
    model is copied again; the copy goes to a temporary folder renamed into place, so a half-done
    copy is never used, and workers copying the same model at once on one machine agree. A
    listed key that would land outside the copy (a ".." segment, an absolute part) is a
    ValueError naming it, before any file is copied.
    """
    root = root.rstrip("/")
    files = fs.find(root, detail=True) if fs.isdir(root) else {}
    if not files:
        raise ValueError(f"model folder {uri!r} is empty or does not exist")
    listing = sorted((p, i.get("size"), i.get("ETag", i.get("mtime"))) for p, i in files.items())
    key = hashlib.sha256(repr((uri, listing)).encode()).hexdigest()[:16]
    target = CACHE_DIR / key
    if target.is_dir():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=CACHE_DIR, prefix=".staging-"))
    try:
        copies = {path: inside(staging, root, path, uri) for path in files}
        for path, local in copies.items():
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(local))
        staging.rename(target)
    except (OSError, ValueError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        # another worker on this machine finished the same copy first
        if isinstance(e, OSError) and target.is_dir():
            return target
        raise
    return target


def inside(staging: Path, root: str, path: str, uri: str) -> Path:
    """Where the listed file `path` (under `root`) is copied: a file strictly inside
    `staging`, or ValueError naming the key."""
    local = (staging / path[len(root) + 1 :]).resolve()
    real = staging.resolve()
    if not path.startswith(root + "/") or local == real or not local.is_relative_to(real):
        raise ValueError(
            f"model folder {uri!r} lists {path!r}, which would be copied outside the model's "
            "cache folder: refused"
        )
    return local


def resolve(path_or_name: str, storage_options: dict | None = None) -> Path:
    """A checkpoint folder from the name of a shipped checkpoint, a local path, or a URI
    (file://, s3://, any fsspec protocol) read with `storage_options`."""
    if path_or_name in shipped_names():
        return SHIPPED_DIR / path_or_name
    if "://" not in path_or_name and not Path(path_or_name).expanduser().exists():
        raise ValueError(
            f"unknown model {path_or_name!r}: not a folder, not a URI, and not a shipped "
            f"checkpoint (shipped: {', '.join(shipped_names()) or 'none'})"
        )
    return local_dir(path_or_name, storage_options)


def load_base(directory: Path) -> tuple[AutoencoderKL, UNet2DConditionModel, Tensor, dict]:
    """VAE, UNet, null-prompt embedding (1, L, D) and scheduler config of a diffusers folder.

    The null-prompt embedding comes from `null_prompt.safetensors` when the folder has one, or
    else is computed once from its CLIP text encoder (needs `transformers`).
    """
    check_base(directory)
    vae = AutoencoderKL.from_pretrained(directory / "vae", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(directory / "unet", local_files_only=True)
    scheduler_file = directory / "scheduler" / "scheduler_config.json"
    scheduler = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else {}
    null_file = directory / "null_prompt.safetensors"
    if null_file.is_file():
        null_prompt = load_file(str(null_file))["null_prompt"]
    else:
        null_prompt = encode_null_prompt(directory)
    return vae, unet, null_prompt, scheduler


def check_base(directory: Path) -> None:
    """ValueError unless `directory` is a diffusers model folder with a VAE and a UNet."""
    for sub in ("vae", "unet"):
        if not (directory / sub / "config.json").is_file():
            raise ValueError(f"{directory} is not a diffusers model folder: no {sub}/config.json")


@torch.no_grad()
def encode_null_prompt(directory: Path) -> Tensor:
    """CLIP embedding of the empty prompt, (1, 77, D), from the folder's text encoder."""
    if not (directory / "text_encoder").is_dir():
        raise ValueError(
            f"{directory} has neither null_prompt.safetensors nor a text_encoder/ to compute it"
        )
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(directory / "text_encoder", local_files_only=True)
    ids = tokenizer(
        "", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    return encoder(ids)[0]
